//! `keygen`, `info`, `inspect`, `encrypt`, `decrypt`.

use crate::{assert_one_line_error, manna, stderr, stdout};

fn keygen() -> String {
    let o = manna(&["keygen"], &[], b"");
    assert!(o.status.success(), "{}", stderr(&o));
    stdout(&o).trim().to_owned()
}

#[test]
fn keygen_prints_a_fresh_valid_key() {
    let (a, b) = (keygen(), keygen());
    assert_ne!(a, b);
    let key = manna_crypto::AesKey::from_base64(&a).expect("keygen output is a valid AES-256 key");
    assert_eq!(key.to_base64().as_str(), a);
}

#[test]
fn encrypt_decrypt_round_trip_binary_stdin_with_aad() {
    let key = keygen();
    let env = [("MANNA_ENCRYPTION_KEY_AES256", key.as_str())];
    let plaintext: Vec<u8> = (0..=255u8).chain([0, 10, 13]).collect();
    let enc = manna(
        &["encrypt", "--aad", "plaid_items.access_token"],
        &env,
        &plaintext,
    );
    assert!(enc.status.success(), "{}", stderr(&enc));
    let token = stdout(&enc);
    assert!(token.starts_with("mn1:"), "{token}");

    let dec = manna(
        &["decrypt", "--aad", "plaid_items.access_token"],
        &env,
        token.as_bytes(),
    );
    assert!(dec.status.success(), "{}", stderr(&dec));
    assert_eq!(dec.stdout, plaintext);

    // Wrong AAD: one opaque line, nothing of the plaintext or key.
    let bad = manna(
        &["decrypt", "--aad", "users.api_key"],
        &env,
        token.as_bytes(),
    );
    let err = assert_one_line_error(&bad);
    assert!(err.contains("not authentic"), "{err}");
    assert!(!err.contains(&key), "{err}");
    assert!(bad.stdout.is_empty());
}

/// docs/format.md §2: `--aad TEXT` is TEXT's UTF-8 bytes, not normalized
/// (vector 5 of that page), and no `--aad` is the empty AAD.
#[test]
fn aad_text_is_exact_utf8_and_none_is_empty() {
    let env = [(
        "MANNA_ENCRYPTION_KEY_AES256",
        "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
    )];
    let vector5 = b"mn1:db4daed658e3313c:AgMEBQYHCAkKCwwNDrRnfRwAtr-uypa5yuxLE5m5bcclZW0";
    let dec = manna(&["decrypt", "--aad", "Z\u{fc}rich"], &env, vector5);
    assert!(dec.status.success(), "{}", stderr(&dec));
    assert_eq!(dec.stdout, "gr\u{fc}ezi".as_bytes());
    // The same text with `ü` decomposed (u + U+0308) is another AAD.
    let nfd = manna(&["decrypt", "--aad", "Zu\u{308}rich"], &env, vector5);
    assert!(assert_one_line_error(&nfd).contains("not authentic"));

    let token = stdout(&manna(&["encrypt"], &env, b"no aad"));
    let dec = manna(&["decrypt", "--aad", ""], &env, token.as_bytes());
    assert!(dec.status.success(), "{}", stderr(&dec));
    assert_eq!(dec.stdout, b"no aad");
    let token = stdout(&manna(&["encrypt", "--aad", ""], &env, b"empty aad"));
    let dec = manna(&["decrypt"], &env, token.as_bytes());
    assert_eq!(dec.stdout, b"empty aad");
}

#[test]
fn decrypt_reads_previous_and_fernet_keys() {
    let old = keygen();
    let new = keygen();
    let old_env = [("MANNA_ENCRYPTION_KEY_AES256", old.as_str())];
    let token = stdout(&manna(&["encrypt"], &old_env, b"secret"));

    let rotated = [
        ("MANNA_ENCRYPTION_KEY_AES256", new.as_str()),
        ("MANNA_ENCRYPTION_KEYS_AES256_PREVIOUS", old.as_str()),
    ];
    let o = manna(&["decrypt"], &rotated, token.as_bytes());
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(o.stdout, b"secret");

    // Without the previous key the id in the header is unknown, and said so.
    let only_new = [("MANNA_ENCRYPTION_KEY_AES256", new.as_str())];
    let err = assert_one_line_error(&manna(&["decrypt"], &only_new, token.as_bytes()));
    let old_id = manna_crypto::AesKey::from_base64(&old)
        .unwrap()
        .id()
        .to_string();
    assert!(err.contains(&old_id), "{err}");

    // A Fernet token from the Python vectors' key.
    let fernet = manna_crypto::FernetKey::generate();
    let ftoken = fernet.encrypt(b"legacy");
    let fkey = fernet.to_base64();
    let with_fernet = [
        ("MANNA_ENCRYPTION_KEY_AES256", new.as_str()),
        ("MANNA_ENCRYPTION_KEY", fkey.as_str()),
    ];
    let o = manna(&["decrypt"], &with_fernet, ftoken.as_bytes());
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(o.stdout, b"legacy");
    let err = assert_one_line_error(&manna(&["decrypt"], &only_new, ftoken.as_bytes()));
    assert!(err.contains("MANNA_ENCRYPTION_KEY"), "{err}");

    // Issue 11: a Fernet token under a key nobody configured says a newer
    // MultiFernet key may be missing — not "wrong AAD": Fernet has none.
    let rotated_away = manna_crypto::FernetKey::generate().encrypt(b"newer");
    let err = assert_one_line_error(&manna(&["decrypt"], &with_fernet, rotated_away.as_bytes()));
    assert!(
        err.contains("does not open under any configured Fernet key"),
        "{err}"
    );
    assert!(
        err.contains("newer key first in MANNA_ENCRYPTION_KEY"),
        "{err}"
    );
    assert!(!err.contains("AAD"), "{err}");
}

#[test]
fn inspect_tells_formats_without_keys() {
    let key = keygen();
    let env = [("MANNA_ENCRYPTION_KEY_AES256", key.as_str())];
    let token = stdout(&manna(&["encrypt"], &env, b"x"));
    let id = manna_crypto::AesKey::from_base64(&key).unwrap().id();
    let o = manna(&["inspect", token.trim()], &[], b"");
    assert_eq!(stdout(&o).trim(), format!("aes256gcm({id})"));

    let ftoken = manna_crypto::FernetKey::generate().encrypt(b"x");
    assert_eq!(
        stdout(&manna(&["inspect", &ftoken], &[], b"")).trim(),
        "fernet"
    );
    assert_eq!(
        stdout(&manna(&["inspect", "hello world"], &[], b"")).trim(),
        "plaintext"
    );
    // The value exactly as given (docs/format.md §4): a token with
    // whitespace around it, as a CHAR(n) column stores it, is damaged.
    for padded in [format!("{} ", token.trim()), format!("{ftoken}\n")] {
        assert_eq!(
            stdout(&manna(&["inspect", &padded], &[], b"")).trim(),
            "unknown",
            "{padded:?}"
        );
    }
}

#[test]
fn decrypt_says_what_it_did_not_check() {
    let key = keygen();
    let fernet = manna_crypto::FernetKey::generate();
    let env = [
        ("MANNA_ENCRYPTION_KEY_AES256", key.as_str()),
        ("MANNA_ENCRYPTION_KEY", &*fernet.to_base64()),
    ];
    let err = assert_one_line_error(&manna(&["decrypt"], &env, b" \n"));
    assert!(err.contains("no token on stdin"), "{err}");

    let token = fernet.encrypt(b"legacy");
    let o = manna(&["decrypt", "--aad", "t.c"], &env, token.as_bytes());
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(o.stdout, b"legacy");
    assert!(
        stderr(&o).contains("warning: a Fernet token binds no AAD: --aad was not checked"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn info_reports_configuration_without_key_material() {
    let o = manna(&["info", "--json"], &[], b"");
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["initialized"], false);

    let key = keygen();
    let fkey = manna_crypto::FernetKey::generate().to_base64();
    let env = [
        ("MANNA_ENCRYPTION_KEY_AES256", key.as_str()),
        ("MANNA_ENCRYPTION_KEY", fkey.as_str()),
    ];
    let o = manna(&["info", "--json"], &env, b"");
    let text = stdout(&o);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let id = manna_crypto::AesKey::from_base64(&key)
        .unwrap()
        .id()
        .to_string();
    assert_eq!(v["initialized"], true);
    assert_eq!(v["algorithm"], "AES-256-GCM");
    assert_eq!(v["primary_key_id"], id.as_str());
    assert_eq!(v["fernet_fallback"], true);
    assert!(!text.contains(&key) && !text.contains(fkey.as_str()));

    let human = stdout(&manna(&["info"], &env, b""));
    assert!(
        human.contains(&id) && human.contains("fernet fallback:    on"),
        "{human}"
    );
    assert!(!human.contains(&key));
}

#[test]
fn bad_key_configuration_is_one_clear_line() {
    let err = assert_one_line_error(&manna(&["encrypt"], &[], b"x"));
    assert!(err.contains("MANNA_ENCRYPTION_KEY_AES256"), "{err}");

    let err = assert_one_line_error(&manna(
        &["encrypt"],
        &[("MANNA_ENCRYPTION_KEY_AES256", "not base64!")],
        b"x",
    ));
    assert!(err.contains("MANNA_ENCRYPTION_KEY_AES256"), "{err}");
    assert!(!err.contains("not base64!"), "key text echoed: {err}");
    assert_eq!(
        err.matches("not valid base64").count(),
        1,
        "cause repeated: {err}"
    );

    // Both kinds are 32 random bytes, so the mistake that can be caught is
    // the legacy Fernet key copied into the AES variable as well.
    let fkey = manna_crypto::FernetKey::generate().to_base64();
    let err = assert_one_line_error(&manna(
        &["info"],
        &[
            ("MANNA_ENCRYPTION_KEY_AES256", fkey.as_str()),
            ("MANNA_ENCRYPTION_KEY", fkey.as_str()),
        ],
        b"",
    ));
    assert!(err.contains("MANNA_ENCRYPTION_KEY"), "{err}");
    assert!(!err.contains(fkey.as_str()), "{err}");

    // A token pasted where a key belongs.
    let token = manna_crypto::FernetKey::generate().encrypt(b"x");
    let err = assert_one_line_error(&manna(
        &["info"],
        &[("MANNA_ENCRYPTION_KEY_AES256", token.as_str())],
        b"",
    ));
    assert!(err.contains("token"), "{err}");
}

#[test]
fn decrypt_rejects_garbage_input_cleanly() {
    let key = keygen();
    let env = [("MANNA_ENCRYPTION_KEY_AES256", key.as_str())];
    for input in [&b""[..], b"mn1:", b"mn1:zzzz:!!!", b"\xff\xfe", b"gAAAAA"] {
        let o = manna(&["decrypt"], &env, input);
        assert_one_line_error(&o);
    }
}

/// Issue 9 item 14: `info` warns while Fernet fallback is on, saying that
/// tokens from other columns, rows or backups are accepted and until when
/// (`MANNA_ENCRYPTION_FERNET_UNTIL`), and while plaintext is accepted (a key
/// file's `accept_plaintext`); a bad date is one line naming the variable.
#[test]
fn info_warns_about_fernet_fallback_until_and_plaintext() {
    let key = keygen();
    let fkey = manna_crypto::FernetKey::generate().to_base64();
    let env = [
        ("MANNA_ENCRYPTION_KEY_AES256", key.as_str()),
        ("MANNA_ENCRYPTION_KEY", fkey.as_str()),
        ("MANNA_ENCRYPTION_FERNET_UNTIL", "2099-01-01T00:00:00Z"),
    ];
    let human = stdout(&manna(&["info"], &env, b""));
    assert!(
        human.contains("fernet fallback:    on until 2099-01-01T00:00:00Z"),
        "{human}"
    );
    assert!(
        human.lines().any(|l| l
            .starts_with("warning: Fernet fallback is on until 2099-01-01T00:00:00Z")
            && l.contains("another column, row or backup is accepted")),
        "{human}"
    );
    let v: serde_json::Value =
        serde_json::from_str(&stdout(&manna(&["info", "--json"], &env, b""))).unwrap();
    assert_eq!(v["fernet_until"], "2099-01-01T00:00:00Z");
    assert!(v["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|w| w.as_str().unwrap().contains("until 2099-01-01T00:00:00Z")));

    // Past the date: fallback off, and the status says Fernet reading ended.
    let ended = [
        ("MANNA_ENCRYPTION_KEY_AES256", key.as_str()),
        ("MANNA_ENCRYPTION_KEY", fkey.as_str()),
        ("MANNA_ENCRYPTION_FERNET_UNTIL", "2020-01-01T00:00:00Z"),
    ];
    let human = stdout(&manna(&["info"], &ended, b""));
    assert!(
        human.contains("fernet fallback:    off: ended at 2020-01-01T00:00:00Z"),
        "{human}"
    );
    assert!(
        human.contains("warning: Fernet reading ended at 2020-01-01T00:00:00Z"),
        "{human}"
    );

    // A key pasted into the date variable: one line, the value not echoed.
    let pasted = [
        ("MANNA_ENCRYPTION_KEY_AES256", key.as_str()),
        ("MANNA_ENCRYPTION_FERNET_UNTIL", fkey.as_str()),
    ];
    let err = assert_one_line_error(&manna(&["info"], &pasted, b""));
    assert!(
        err.contains("MANNA_ENCRYPTION_FERNET_UNTIL") && err.contains("RFC 3339"),
        "{err}"
    );
    assert!(!err.contains(fkey.as_str()), "{err}");

    // Plaintext acceptance from a key file.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.toml");
    std::fs::write(
        &path,
        format!("accept_plaintext = true\n[[keys]]\nkey = \"{key}\"\nstatus = \"primary\"\n"),
    )
    .unwrap();
    let human = stdout(&manna(
        &["info", "--key-file", path.to_str().unwrap()],
        &[],
        b"",
    ));
    assert!(
        human.contains("warning: plaintext acceptance is on"),
        "{human}"
    );
    assert!(!human.contains("Fernet fallback is on"), "{human}");
}

/// The libraries state facts; the CLI adds the fix, in terms of where the
/// keys came from: environment variables for the environment, the key file
/// for a key file (never a variable the operator does not use).
#[test]
fn hints_name_the_key_file_or_the_variables_whichever_is_used() {
    let key = keygen();
    let fernet = manna_crypto::FernetKey::generate();
    let ftoken = fernet.encrypt(b"legacy");
    let old = manna_crypto::AesKey::generate();
    let old_token = manna_crypto::Keyring::builder()
        .primary(old)
        .build()
        .unwrap()
        .encrypt(b"older", b"")
        .unwrap();

    let env = [("MANNA_ENCRYPTION_KEY_AES256", key.as_str())];
    let err = assert_one_line_error(&manna(&["decrypt"], &env, ftoken.as_bytes()));
    assert!(
        err.contains("no Fernet key is configured; set MANNA_ENCRYPTION_KEY to"),
        "{err}"
    );
    let err = assert_one_line_error(&manna(&["decrypt"], &env, old_token.as_bytes()));
    assert!(
        err.contains("which is not configured")
            && err.contains("MANNA_ENCRYPTION_KEYS_AES256_PREVIOUS"),
        "{err}"
    );
    let err = assert_one_line_error(&manna(&["encrypt"], &[], b"x"));
    assert!(
        err.contains("MANNA_ENCRYPTION_KEY_AES256 is not set; generate a key with `manna keygen`"),
        "{err}"
    );

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.toml");
    std::fs::write(
        &path,
        format!("[[keys]]\nkey = \"{key}\"\nstatus = \"primary\"\n"),
    )
    .unwrap();
    let file = ["--key-file", path.to_str().unwrap()];
    for (token, fix) in [
        (&ftoken, "add the legacy Fernet key(s) to the key file"),
        (&old_token, "add it to the key file as decrypt-only"),
    ] {
        let err = assert_one_line_error(&manna(
            &["decrypt", file[0], file[1]],
            &[],
            token.as_bytes(),
        ));
        assert!(err.contains(fix), "{err}");
        assert!(!err.contains("MANNA_"), "{err}");
    }
}

/// Issue 11: `keys escrow` seals the keys from the environment to an age
/// recipient; `keys escrow-open` recovers a key file that loads the same
/// keyring, written 0600, never printed; a wrong identity is refused.
#[test]
fn escrow_round_trip_through_the_cli() {
    use age::secrecy::ExposeSecret;
    let dir = tempfile::tempdir().unwrap();
    let primary = keygen();
    let fernet = manna_crypto::FernetKey::generate();
    let fkey = fernet.to_base64();
    let env = [
        ("MANNA_ENCRYPTION_KEY_AES256", primary.as_str()),
        ("MANNA_ENCRYPTION_KEY", fkey.as_str()),
    ];
    let escrow_agent = age::x25519::Identity::generate();
    let recipient = escrow_agent.to_public().to_string();
    let sealed = dir.path().join("keys.age");
    let sealed_arg = sealed.to_str().unwrap();
    let o = manna(
        &[
            "keys",
            "escrow",
            "--recipient",
            &recipient,
            "--out",
            sealed_arg,
        ],
        &env,
        b"",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let armored = std::fs::read_to_string(&sealed).unwrap();
    assert!(
        armored.starts_with("-----BEGIN AGE ENCRYPTED FILE-----"),
        "{armored}"
    );
    for secret in [primary.as_str(), &*fkey] {
        assert!(!armored.contains(secret) && !stderr(&o).contains(secret));
    }

    let identity = dir.path().join("escrow.key");
    std::fs::write(&identity, escrow_agent.to_string().expose_secret()).unwrap();
    let recovered = dir.path().join("recovered.toml");
    let o = manna(
        &[
            "keys",
            "escrow-open",
            "--identity",
            identity.to_str().unwrap(),
            "--out",
            recovered.to_str().unwrap(),
            sealed_arg,
        ],
        &[],
        b"",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(o.stdout.is_empty(), "the key file is never printed");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&recovered).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let original = manna_crypto::Keyring::builder()
        .primary(manna_crypto::AesKey::from_base64(&primary).unwrap())
        .fernet(fernet.clone())
        .build()
        .unwrap();
    let again =
        manna_crypto::KeySource::load(&manna_crypto::FileKeySource::new(&recovered)).unwrap();
    assert_eq!(again.primary_key_id(), original.primary_key_id());
    assert_eq!(again.fernet_key_ids(), original.fernet_key_ids());

    // Someone else's identity opens nothing, and says so in one line.
    std::fs::write(
        &identity,
        age::x25519::Identity::generate()
            .to_string()
            .expose_secret(),
    )
    .unwrap();
    let elsewhere = dir.path().join("other.toml");
    let err = assert_one_line_error(&manna(
        &[
            "keys",
            "escrow-open",
            "--identity",
            identity.to_str().unwrap(),
            "--out",
            elsewhere.to_str().unwrap(),
            sealed_arg,
        ],
        &[],
        b"",
    ));
    assert!(!elsewhere.exists(), "{err}");
}

/// Issue 11: flags are named as the CLI spells them — the library states
/// that plaintext is not accepted, the CLI says `--accept-plaintext`.
#[test]
fn plaintext_refusal_names_the_flag_as_spelled() {
    let key = keygen();
    let env = [("MANNA_ENCRYPTION_KEY_AES256", key.as_str())];
    let err = assert_one_line_error(&manna(&["decrypt"], &env, b"just some text"));
    assert!(err.contains("--accept-plaintext"), "{err}");
    assert!(!err.contains("accept_plaintext"), "{err}");
}
