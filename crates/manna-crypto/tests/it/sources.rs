//! Key sources: environment (through a lookup, never the process env),
//! static, key files (TOML and JSON) and the key-age warnings they enable.

use std::collections::HashMap;
use std::path::Path;

use manna_crypto::{
    parse_key_file, AesKey, EnvKeySource, FernetKey, FileKeySource, KeyError, KeyFileFormat,
    KeyRole, KeySource, KeySourceError, Keyring, StaticKeySource, ENV_AES_KEY, ENV_AES_PREVIOUS,
    ENV_FERNET_KEYS,
};
use time::macros::datetime;

fn env(vars: &[(&str, String)]) -> EnvKeySource {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect();
    EnvKeySource::from_lookup(move |name| map.get(name).cloned())
}

#[test]
fn env_source_reads_all_three_variables() {
    let primary = AesKey::generate();
    let prev1 = AesKey::generate();
    let prev2 = AesKey::generate();
    let f1 = FernetKey::generate();
    let f2 = FernetKey::generate();
    let source = env(&[
        (ENV_AES_KEY, primary.to_base64().to_string()),
        (
            ENV_AES_PREVIOUS,
            format!(
                " {} ,{},",
                prev1.to_base64().as_str(),
                prev2.to_base64().as_str()
            ),
        ),
        (
            ENV_FERNET_KEYS,
            format!("{},{}", f1.to_base64().as_str(), f2.to_base64().as_str()),
        ),
    ]);
    let keyring = source.load().unwrap();
    assert_eq!(keyring.primary_key_id(), primary.id());
    assert_eq!(keyring.decrypt_only_key_ids(), vec![prev1.id(), prev2.id()]);
    assert_eq!(keyring.fernet_key_ids(), vec![f1.id(), f2.id()]);
    assert!(!keyring.accepts_plaintext());
    // The first Fernet key encrypts (rollback), the second still decrypts.
    let rollback = keyring.encrypt_fernet(b"r").unwrap();
    assert_eq!(&*f1.decrypt(&rollback).unwrap(), b"r");
    assert_eq!(&*keyring.decrypt(&f2.encrypt(b"old"), b"").unwrap(), b"old");
}

#[test]
fn env_source_errors_are_actionable_and_secret_free() {
    match env(&[]).load() {
        Err(e @ KeySourceError::MissingVariable { .. }) => {
            assert!(e.to_string().contains(ENV_AES_KEY));
            // What to run to make one is the CLI's hint, not the library's.
            assert!(!e.to_string().contains("keygen"));
        }
        other => panic!("{other:?}"),
    }
    let a = AesKey::generate();
    let b = AesKey::generate();
    let two = format!("{},{}", a.to_base64().as_str(), b.to_base64().as_str());
    let err = env(&[(ENV_AES_KEY, two.clone())]).load().unwrap_err();
    assert!(matches!(err, KeySourceError::SeveralPrimaryKeys));
    assert!(err.to_string().contains(ENV_AES_PREVIOUS));

    let short = "AAAAAAAAAAAAAAAAAAAAAA==".to_owned();
    let err = env(&[
        (ENV_AES_KEY, a.to_base64().to_string()),
        (
            ENV_AES_PREVIOUS,
            format!("{},{short}", b.to_base64().as_str()),
        ),
    ])
    .load()
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("MANNA_ENCRYPTION_KEYS_AES256_PREVIOUS (entry 2)"),
        "{msg}"
    );
    assert!(msg.contains("16 bytes"), "{msg}");
    assert!(!msg.contains(b.to_base64().as_str()));

    // Entries are parsed as docs/format.md §1 spells keys: only ASCII
    // whitespace around them is ignored; positions count skipped empty ones.
    let nbsp = format!("\u{a0}{}", b.to_base64().as_str());
    let err = env(&[
        (ENV_AES_KEY, a.to_base64().to_string()),
        (
            ENV_FERNET_KEYS,
            format!("{},,{nbsp}", b.to_base64().as_str()),
        ),
    ])
    .load()
    .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("MANNA_ENCRYPTION_KEY (entry 3)"), "{msg}");
    assert!(msg.contains("not valid base64"), "{msg}");

    // The legacy Fernet key pasted into the AES variable too.
    let shared = FernetKey::generate();
    let err = env(&[
        (ENV_AES_KEY, shared.to_base64().to_string()),
        (ENV_FERNET_KEYS, shared.to_base64().to_string()),
    ])
    .load()
    .unwrap_err();
    assert!(
        matches!(
            err,
            KeySourceError::Keyring(KeyError::AesKeyUsedAsFernetKey { .. })
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("and as a Fernet key"));
    assert!(!format!("{err} {err:?}").contains(shared.to_base64().as_str()));
}

#[test]
fn env_source_can_accept_plaintext() {
    let key = AesKey::generate();
    let keyring = env(&[(ENV_AES_KEY, key.to_base64().to_string())])
        .accept_plaintext(true)
        .load()
        .unwrap();
    assert_eq!(&*keyring.decrypt("plain", b"").unwrap(), b"plain");
}

#[test]
fn static_source_serves_its_keyring() {
    let keyring = Keyring::new(AesKey::generate());
    let source = StaticKeySource::new(keyring.clone());
    let token = keyring.encrypt(b"v", b"").unwrap();
    assert_eq!(&*source.load().unwrap().decrypt(&token, b"").unwrap(), b"v");
    // A trait object works (the port).
    let dynamic: Box<dyn KeySource> = Box::new(source);
    assert_eq!(
        dynamic.load().unwrap().primary_key_id(),
        keyring.primary_key_id()
    );
}

fn toml_file(primary: &AesKey, old: &AesKey, fernet: &FernetKey) -> String {
    format!(
        r#"
[[keys]]
key = "{}"
id = "{}"
status = "primary"
created_at = 2025-01-01T00:00:00Z
expires_at = "2025-06-01T00:00:00Z"

[[keys]]
key = "{}"
status = "decrypt_only"
created_at = "2024-06-01T00:00:00Z"

[[keys]]
key = "{}"
algorithm = "fernet"
status = "decrypt_only"

[[keys]]
key = "not even base64 but retired, so never parsed"
status = "retired"
"#,
        primary.to_base64().as_str(),
        primary.id(),
        old.to_base64().as_str(),
        fernet.to_base64().as_str(),
    )
}

#[test]
fn toml_key_file_with_ages_and_warnings() {
    let (primary, old, fernet) = (
        AesKey::generate(),
        AesKey::generate(),
        FernetKey::generate(),
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.toml");
    std::fs::write(&path, toml_file(&primary, &old, &fernet)).unwrap();
    let keyring = FileKeySource::new(&path).load().unwrap();
    assert_eq!(keyring.primary_key_id(), primary.id());
    assert_eq!(keyring.decrypt_only_key_ids(), vec![old.id()]);
    assert_eq!(keyring.fernet_key_ids(), vec![fernet.id()]);

    // 2025-03-01: primary is 59 days old, nothing due.
    let early = keyring.status_at(datetime!(2025-03-01 0:00 UTC));
    assert_eq!(early.keys[0].age_days, Some(59));
    assert!(
        early.keys.iter().all(|k| k.warnings.is_empty()),
        "{:?}",
        early.warnings
    );
    // The one keyring-wide warning: a Fernet key is configured.
    assert_eq!(early.warnings.len(), 1, "{:?}", early.warnings);
    assert!(early.warnings[0].starts_with("Fernet fallback is on"));
    // 2025-05-10: 129 days old (rotation due), expiry in 22 days.
    let late = keyring.status_at(datetime!(2025-05-10 0:00 UTC));
    let primary_status = &late.keys[0];
    assert_eq!(primary_status.role, KeyRole::Primary);
    assert_eq!(
        primary_status.warnings.len(),
        2,
        "{:?}",
        primary_status.warnings
    );
    assert!(primary_status.warnings[0].contains("rotation is due"));
    assert!(primary_status.warnings[1].contains("expires on 2025-06-01 (in 22 days)"));
    // Decrypt-only keys are not "due for rotation": they already were rotated.
    assert!(late.keys[1].warnings.is_empty());
    let json = serde_json::to_value(&late).unwrap();
    assert_eq!(json["keys"][0]["created_at"], "2025-01-01T00:00:00Z");
    assert_eq!(json["keys"][0]["age_days"], 129);
    // After expiry it says so.
    let after = keyring.status_at(datetime!(2025-06-02 0:00 UTC));
    assert!(after
        .warnings
        .iter()
        .any(|w| w.contains("expired on 2025-06-01")));
}

#[test]
fn json_key_file() {
    let primary = AesKey::generate();
    let text = format!(
        r#"{{"accept_plaintext": true, "keys": [{{"key": "{}", "status": "primary", "created_at": "2025-01-01T00:00:00Z"}}]}}"#,
        primary.to_base64().as_str()
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.json");
    std::fs::write(&path, text).unwrap();
    let keyring = FileKeySource::new(&path).load().unwrap();
    assert_eq!(keyring.primary_key_id(), primary.id());
    assert!(keyring.accepts_plaintext());
}

#[test]
fn key_file_errors_never_quote_keys() {
    let p = Path::new("keys.toml");
    let key = AesKey::generate();
    let key_text = key.to_base64().to_string();
    let cases = [
        // Syntax error on the line holding the key.
        format!("[[keys]]\nkey = \"{key_text}\" status = \"primary\"\n"),
        // No primary.
        format!("[[keys]]\nkey = \"{key_text}\"\nstatus = \"decrypt_only\"\n"),
        // Stated id does not match.
        format!("[[keys]]\nkey = \"{key_text}\"\nid = \"0000000000000000\"\nstatus = \"primary\"\n"),
        // Bad date.
        format!("[[keys]]\nkey = \"{key_text}\"\nstatus = \"primary\"\ncreated_at = \"yesterday\"\n"),
        // Two primaries.
        format!("[[keys]]\nkey = \"{key_text}\"\nstatus = \"primary\"\n[[keys]]\nkey = \"{}\"\nstatus = \"primary\"\n",
            AesKey::generate().to_base64().as_str()),
        // Unknown status.
        format!("[[keys]]\nkey = \"{key_text}\"\nstatus = \"active\"\n"),
    ];
    for text in &cases {
        let err = parse_key_file(text, KeyFileFormat::Toml, p).unwrap_err();
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains(&key_text), "{shown}");
        assert!(!shown.contains(&key_text[..20]), "{shown}");
        assert!(shown.contains("keys.toml"), "{shown}");
    }
    let err = parse_key_file(
        &format!("{{\"keys\": [\"{key_text}\" x]}}"),
        KeyFileFormat::Json,
        p,
    )
    .unwrap_err();
    assert!(matches!(
        err,
        KeySourceError::FileSyntax { format: "JSON", .. }
    ));
    assert!(!format!("{err} {err:?}").contains(&key_text));

    let err = FileKeySource::new("/nonexistent/manna/keys.toml")
        .load()
        .unwrap_err();
    assert!(matches!(
        err,
        KeySourceError::FileRead {
            kind: std::io::ErrorKind::NotFound,
            ..
        }
    ));
}

/// Issue 9: a key pasted into any string field of a key file is never
/// echoed, in whole or in part (no 8-character substring of it), in TOML or
/// JSON; the error names the field and the entry instead.
#[test]
fn key_pasted_into_any_field_is_never_echoed() {
    let p = Path::new("keys.toml");
    let pasted = AesKey::generate().to_base64().to_string();
    let valid = AesKey::generate().to_base64().to_string();
    // (field, other fields of the entry)
    let cases: [(&str, &[(&str, &str)]); 6] = [
        ("key", &[("status", "primary"), ("algorithm", "fernet")]),
        ("id", &[("key", &valid), ("status", "primary")]),
        ("status", &[("key", &valid)]),
        ("algorithm", &[("key", &valid), ("status", "primary")]),
        ("created_at", &[("key", &valid), ("status", "primary")]),
        ("expires_at", &[("key", &valid), ("status", "primary")]),
    ];
    for (field, others) in cases {
        let mut fields: Vec<(&str, &str)> = others.to_vec();
        fields.push((field, &pasted));
        let toml_text = fields.iter().fold("[[keys]]\n".to_owned(), |acc, (k, v)| {
            acc + &format!("{k} = \"{v}\"\n")
        });
        let json_text = format!(
            "{{\"keys\": [{{{}}}]}}",
            fields
                .iter()
                .map(|(k, v)| format!("\"{k}\": \"{v}\""))
                .collect::<Vec<_>>()
                .join(", ")
        );
        for (text, format) in [
            (toml_text, KeyFileFormat::Toml),
            (json_text, KeyFileFormat::Json),
        ] {
            let err = parse_key_file(&text, format, p).unwrap_err();
            let shown = format!("{err} {err:?}");
            for secret in [&pasted, &valid] {
                for start in 0..=secret.len() - 8 {
                    let piece = &secret[start..start + 8];
                    assert!(
                        !shown.contains(piece),
                        "{field} ({format:?}): {piece:?} echoed in {shown}"
                    );
                }
            }
            assert!(
                shown.contains("keys entry 1"),
                "{field} ({format:?}): {shown}"
            );
            if field != "key" {
                assert!(shown.contains(field), "{field} ({format:?}): {shown}");
            }
        }
    }
}

/// Issue 9: a primary key whose stated expiry has passed refuses to encrypt
/// (naming the key and the date) but still decrypts; the status warns.
#[test]
fn expired_primary_decrypts_but_refuses_to_encrypt() {
    let key = AesKey::generate();
    let id = key.id();
    let before = Keyring::new(AesKey::from_base64(&key.to_base64()).unwrap());
    let token = before.encrypt(b"still readable", b"t.c").unwrap();
    let text = format!(
        "[[keys]]\nkey = \"{}\"\nstatus = \"primary\"\nexpires_at = 2020-01-01T00:00:00Z\n",
        key.to_base64().as_str()
    );
    let keyring = parse_key_file(&text, KeyFileFormat::Toml, Path::new("keys.toml")).unwrap();
    assert_eq!(
        &*keyring.decrypt(&token, b"t.c").unwrap(),
        b"still readable"
    );
    for err in [
        keyring.encrypt(b"x", b"t.c").unwrap_err(),
        keyring.encrypt_to_bytes(b"x", b"t.c").unwrap_err(),
        keyring.check_primary_not_expired().unwrap_err(),
    ] {
        assert!(
            matches!(err, manna_crypto::CryptoError::PrimaryKeyExpired { key_id, .. } if key_id == id),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(msg.contains(&id.to_string()), "{msg}");
        assert!(msg.contains("2020-01-01T00:00:00Z"), "{msg}");
    }
    assert!(keyring
        .status()
        .warnings
        .iter()
        .any(|w| w.contains("expired on 2020-01-01")));
    // Not yet expired: encrypts.
    let later = text.replace("2020-01-01", "2999-01-01");
    let keyring = parse_key_file(&later, KeyFileFormat::Toml, Path::new("keys.toml")).unwrap();
    assert!(keyring.encrypt(b"x", b"t.c").is_ok());
}

/// Issue 9: a key file that group or others can read gets a warning.
#[cfg(unix)]
#[test]
fn readable_key_file_gets_a_warning() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.toml");
    std::fs::write(&path, "").unwrap();
    let source = FileKeySource::new(&path);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let warning = source.permission_warning().expect("a warning");
    assert!(
        warning.contains("mode 644") && warning.contains("chmod 600"),
        "{warning}"
    );
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(source.permission_warning(), None);
}

/// Issue 9 item 14: `fernet_until` from the environment and from TOML and
/// JSON key files; a bad value names the setting, never the value.
#[test]
fn fernet_until_from_env_and_key_files() {
    use manna_crypto::ENV_FERNET_UNTIL;
    let primary = AesKey::generate();
    let fernet = FernetKey::generate();
    let until = datetime!(2027-01-01 0:00 UTC);

    let keyring = env(&[
        (ENV_AES_KEY, primary.to_base64().to_string()),
        (ENV_FERNET_KEYS, fernet.to_base64().to_string()),
        (ENV_FERNET_UNTIL, " 2027-01-01T00:00:00Z ".to_owned()),
    ])
    .load()
    .unwrap();
    assert_eq!(keyring.fernet_until(), Some(until));
    // Unset: no end.
    let keyring = env(&[(ENV_AES_KEY, primary.to_base64().to_string())])
        .load()
        .unwrap();
    assert_eq!(keyring.fernet_until(), None);

    // A key pasted into the variable is not echoed.
    let pasted = fernet.to_base64().to_string();
    let err = env(&[
        (ENV_AES_KEY, primary.to_base64().to_string()),
        (ENV_FERNET_UNTIL, pasted.clone()),
    ])
    .load()
    .unwrap_err();
    let shown = format!("{err} {err:?}");
    assert!(
        matches!(err, KeySourceError::InvalidSetting { .. }),
        "{shown}"
    );
    assert!(
        shown.contains(ENV_FERNET_UNTIL) && shown.contains("RFC 3339"),
        "{shown}"
    );
    assert!(!shown.contains(&pasted), "{shown}");

    let p = Path::new("keys.toml");
    let entry = format!(
        "[[keys]]\nkey = \"{}\"\nstatus = \"primary\"\n",
        primary.to_base64().as_str()
    );
    for value in ["2027-01-01T00:00:00Z", "\"2027-01-01T00:00:00Z\""] {
        let text = format!("fernet_until = {value}\n{entry}");
        let keyring = parse_key_file(&text, KeyFileFormat::Toml, p).unwrap();
        assert_eq!(keyring.fernet_until(), Some(until), "{value}");
    }
    let json = format!(
        r#"{{"fernet_until": "2027-01-01T00:00:00Z", "keys": [{{"key": "{}", "status": "primary"}}]}}"#,
        primary.to_base64().as_str()
    );
    let keyring = parse_key_file(&json, KeyFileFormat::Json, Path::new("k.json")).unwrap();
    assert_eq!(keyring.fernet_until(), Some(until));

    for (text, format) in [
        (
            format!("fernet_until = \"{pasted}\"\n{entry}"),
            KeyFileFormat::Toml,
        ),
        // A local date-time has no offset: not an instant.
        (
            format!("fernet_until = 2027-01-01T00:00:00\n{entry}"),
            KeyFileFormat::Toml,
        ),
        (format!("fernet_until = 7\n{entry}"), KeyFileFormat::Toml),
        (
            format!(
                r#"{{"fernet_until": "{pasted}", "keys": [{{"key": "{}", "status": "primary"}}]}}"#,
                primary.to_base64().as_str()
            ),
            KeyFileFormat::Json,
        ),
    ] {
        let err = parse_key_file(&text, format, p).unwrap_err();
        let shown = format!("{err} {err:?}");
        assert!(
            shown.contains("`fernet_until`") && shown.contains("RFC 3339"),
            "{shown}"
        );
        assert!(!shown.contains(&pasted), "{shown}");
    }
}

/// Issue 10: the typed key-file model names the field, never the value,
/// also when a value has the wrong type (a key pasted as a flag, a list, a
/// table), in TOML and JSON alike.
#[test]
fn values_of_the_wrong_type_are_named_never_echoed() {
    let p = Path::new("keys.toml");
    let pasted = AesKey::generate().to_base64().to_string();
    let valid = AesKey::generate().to_base64().to_string();
    let toml_cases = [
        format!(
            "accept_plaintext = \"{pasted}\"\n[[keys]]\nkey = \"{valid}\"\nstatus = \"primary\"\n"
        ),
        format!("[[keys]]\nkey = \"{valid}\"\nstatus = [\"{pasted}\"]\n"),
        format!("[[keys]]\nkey = \"{valid}\"\nstatus = \"primary\"\nid = {{ x = \"{pasted}\" }}\n"),
        format!("keys = [\"{pasted}\"]\n"),
    ];
    let json_cases = [
        format!("{{\"accept_plaintext\": \"{pasted}\", \"keys\": []}}"),
        format!("{{\"keys\": [{{\"key\": \"{valid}\", \"status\": [\"{pasted}\"]}}]}}"),
        format!("{{\"keys\": [{{\"key\": [\"{pasted}\"], \"status\": \"primary\"}}]}}"),
        format!("{{\"keys\": \"{pasted}\"}}"),
    ];
    let cases = toml_cases
        .iter()
        .map(|t| (t, KeyFileFormat::Toml))
        .chain(json_cases.iter().map(|t| (t, KeyFileFormat::Json)));
    for (text, format) in cases {
        let err = parse_key_file(text, format, p).unwrap_err();
        let shown = format!("{err} {err:?}");
        for start in 0..=pasted.len() - 8 {
            let piece = &pasted[start..start + 8];
            assert!(
                !shown.contains(piece),
                "{format:?}: {piece:?} echoed in {shown}"
            );
        }
    }
    let err = parse_key_file(&toml_cases[0], KeyFileFormat::Toml, p).unwrap_err();
    assert!(err.to_string().contains("`accept_plaintext`"), "{err}");
    let err = parse_key_file(&toml_cases[1], KeyFileFormat::Toml, p).unwrap_err();
    assert!(err.to_string().contains("keys entry 1"), "{err}");
}

#[test]
fn env_keys_render_to_a_key_file_that_loads_the_same_keyring() {
    let (primary, previous, fernet) = (
        AesKey::generate(),
        AesKey::generate(),
        FernetKey::generate(),
    );
    let (pid, oid, fid) = (primary.id(), previous.id(), fernet.id());
    let vars = [
        (
            "MANNA_ENCRYPTION_KEY_AES256",
            primary.to_base64().to_string(),
        ),
        (
            "MANNA_ENCRYPTION_KEYS_AES256_PREVIOUS",
            previous.to_base64().to_string(),
        ),
        ("MANNA_ENCRYPTION_KEY", fernet.to_base64().to_string()),
        (
            "MANNA_ENCRYPTION_FERNET_UNTIL",
            "2027-01-01T00:00:00Z".to_owned(),
        ),
    ];
    let source = EnvKeySource::from_lookup(move |name| {
        vars.iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
    });
    let from_env = source.load().unwrap();
    let text = source.key_file().unwrap();
    let from_file = parse_key_file(&text, KeyFileFormat::Toml, "k.toml".as_ref()).unwrap();
    assert_eq!(from_file.primary_key_id(), pid);
    assert_eq!(from_file.decrypt_only_key_ids(), vec![oid]);
    assert_eq!(from_file.fernet_key_ids(), vec![fid]);
    assert_eq!(from_file.fernet_until(), from_env.fernet_until());
    let token = from_env.encrypt(b"v", b"").unwrap();
    assert_eq!(&*from_file.decrypt(&token, b"").unwrap(), b"v");
}
