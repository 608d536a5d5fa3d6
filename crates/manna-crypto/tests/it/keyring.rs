//! Keyring behaviour: round trips, error kinds, rotation.

use manna_crypto::{
    inspect, AesKey, CryptoError, DecryptError, FernetKey, Format, KeyError, Keyring, HEADER_LEN,
};

#[test]
fn round_trip_and_header() {
    let key = AesKey::generate();
    let id = key.id();
    let keyring = Keyring::new(key);
    let token = keyring.encrypt(b"hello", b"t.c").unwrap();
    assert_eq!(&token[..HEADER_LEN], format!("mn1:{id}:"));
    assert_eq!(inspect(&token), Format::Aes256Gcm { key_id: id });
    assert_eq!(&*keyring.decrypt(&token, b"t.c").unwrap(), b"hello");
    // Random nonces: two encryptions differ.
    assert_ne!(token, keyring.encrypt(b"hello", b"t.c").unwrap());
}

#[test]
fn wrong_aad_and_wrong_key_rejected() {
    let a = Keyring::new(AesKey::from_bytes([1; 32]));
    let token = a.encrypt(b"secret", b"aad").unwrap();
    assert_eq!(
        a.decrypt(&token, b"other"),
        Err(DecryptError::Authentication)
    );
    let b = Keyring::new(AesKey::from_bytes([2; 32]));
    match b.decrypt(&token, b"aad") {
        Err(DecryptError::UnknownKey { key_id, configured }) => {
            assert_eq!(key_id, a.primary_key_id());
            assert_eq!(configured, vec![b.primary_key_id()]);
        }
        other => panic!("expected UnknownKey, got {other:?}"),
    }
}

#[test]
fn fernet_tokens_read_with_any_configured_key_in_order() {
    let old = FernetKey::generate();
    let new = FernetKey::generate();
    let token = old.encrypt(b"legacy");
    let keyring = Keyring::builder()
        .primary(AesKey::generate())
        .fernet(new.clone())
        .fernet(old)
        .build()
        .unwrap();
    assert_eq!(inspect(&token), Format::Fernet);
    assert_eq!(&*keyring.decrypt(&token, b"ignored").unwrap(), b"legacy");
    let rollback = keyring.encrypt_fernet(b"back").unwrap();
    assert_eq!(&*new.decrypt(&rollback).unwrap(), b"back");

    let no_fernet = Keyring::new(AesKey::generate());
    assert_eq!(
        no_fernet.decrypt(&token, b""),
        Err(DecryptError::NoFernetKey)
    );
    assert_eq!(
        no_fernet.encrypt_fernet(b"x"),
        Err(CryptoError::NoFernetKey)
    );
    let wrong = Keyring::builder()
        .primary(AesKey::generate())
        .fernet(FernetKey::generate())
        .build()
        .unwrap();
    assert_eq!(
        wrong.decrypt(&token, b""),
        Err(DecryptError::Authentication)
    );
}

#[test]
fn plaintext_only_when_accepted() {
    let strict = Keyring::new(AesKey::generate());
    assert_eq!(
        strict.decrypt("hello", b""),
        Err(DecryptError::PlaintextNotAccepted)
    );
    assert_eq!(
        strict.decrypt("", b""),
        Err(DecryptError::PlaintextNotAccepted)
    );
    let lenient = Keyring::builder()
        .primary(AesKey::generate())
        .accept_plaintext(true)
        .build()
        .unwrap();
    assert_eq!(&*lenient.decrypt("hello", b"").unwrap(), b"hello");
    // A damaged token is never taken for plaintext.
    let token = lenient.encrypt(b"x", b"").unwrap();
    assert_eq!(
        lenient.decrypt(&token[..token.len() - 10], b""),
        Err(DecryptError::UnknownFormat)
    );
    assert_eq!(
        lenient.decrypt("gAAAAAbroken", b""),
        Err(DecryptError::UnknownFormat)
    );
}

#[test]
fn builder_rejects_bad_configurations() {
    assert_eq!(
        Keyring::builder().build().unwrap_err(),
        KeyError::NoPrimaryKey
    );
    let k = AesKey::from_bytes([5; 32]);
    assert_eq!(
        Keyring::builder()
            .primary(k.clone())
            .previous(k.clone())
            .build()
            .unwrap_err(),
        KeyError::DuplicateKeyId { key_id: k.id() }
    );
    assert_eq!(
        Keyring::builder()
            .primary(k.clone())
            .fernet(FernetKey::from_bytes([5; 32]))
            .build()
            .unwrap_err(),
        KeyError::AesKeyUsedAsFernetKey { aes_key_id: k.id() }
    );
    let f = FernetKey::from_bytes([6; 32]);
    assert!(matches!(
        Keyring::builder()
            .primary(k)
            .fernet(f.clone())
            .fernet(f)
            .build(),
        Err(KeyError::DuplicateKeyId { .. })
    ));
}

#[test]
fn rotation_scenario() {
    let a = AesKey::generate();
    let b = AesKey::generate();
    let before = Keyring::new(a.clone());
    let old_tokens: Vec<String> = (0..5)
        .map(|i| {
            before
                .encrypt(format!("value {i}").as_bytes(), b"t.c")
                .unwrap()
        })
        .collect();

    let after = Keyring::builder()
        .primary(b)
        .previous(a.clone())
        .build()
        .unwrap();
    let new_token = after.encrypt(b"fresh", b"t.c").unwrap();
    for (i, t) in old_tokens.iter().enumerate() {
        assert_eq!(
            &*after.decrypt(t, b"t.c").unwrap(),
            format!("value {i}").as_bytes()
        );
        assert!(after.needs_reencryption(t));
        assert_eq!(after.inspect(t), Format::Aes256Gcm { key_id: a.id() });
    }
    assert!(!after.needs_reencryption(&new_token));
    assert_eq!(after.status().decrypt_only_key_ids, vec![a.id()]);
    // The old keyring alone cannot read the new key's tokens.
    assert!(matches!(
        before.decrypt(&new_token, b"t.c"),
        Err(DecryptError::UnknownKey { .. })
    ));
}

#[test]
fn status_counts_encryptions_and_serializes() {
    let keyring = Keyring::builder()
        .primary(AesKey::generate())
        .fernet(FernetKey::generate())
        .build()
        .unwrap();
    let clone = keyring.clone();
    for _ in 0..3 {
        clone.encrypt(b"x", b"").unwrap();
    }
    let status = keyring.status();
    assert!(status.initialized);
    assert_eq!(status.keys[0].encryptions, 3);
    let json = serde_json::to_value(&status).unwrap();
    assert_eq!(json["algorithm"], "AES-256-GCM");
    assert_eq!(json["primary_key_id"], keyring.primary_key_id().to_string());
    assert_eq!(json["fernet_fallback"], true);
    assert_eq!(json["keys"][0]["role"], "primary");
}

#[test]
fn nonce_budget_warns_at_2_pow_31_and_refuses_at_2_pow_32() {
    use manna_crypto::{NONCE_LIMIT, NONCE_WARNING_THRESHOLD};
    let keyring = Keyring::new(AesKey::generate());
    let id = keyring.primary_key_id();
    assert!(keyring.status().warnings.is_empty());
    assert!(keyring.record_external_encryptions(id, NONCE_WARNING_THRESHOLD - 1));
    assert!(keyring.status().warnings.is_empty());
    keyring.encrypt(b"x", b"").unwrap();
    let status = keyring.status();
    assert_eq!(status.keys[0].encryptions, NONCE_WARNING_THRESHOLD);
    assert_eq!(status.warnings.len(), 1, "{:?}", status.warnings);
    assert!(status.warnings[0].contains("2^32"));
    assert!(keyring.record_external_encryptions(id, NONCE_LIMIT - NONCE_WARNING_THRESHOLD - 1));
    keyring.encrypt(b"last", b"").unwrap();
    assert_eq!(
        keyring.encrypt(b"one too many", b""),
        Err(CryptoError::NonceLimitReached { key_id: id })
    );
    assert!(keyring.encrypt_to_bytes(b"x", b"").is_err());
    assert_eq!(keyring.status().keys[0].encryptions, NONCE_LIMIT);
    // Unknown ids are reported, not silently ignored.
    assert!(!keyring.record_external_encryptions(AesKey::generate().id(), 1));
}

#[test]
fn keyring_is_send_sync_and_nothing_secret_is_printed() {
    fn assert_send_sync<T: Send + Sync + Clone>() {}
    assert_send_sync::<Keyring>();
    let key = AesKey::generate();
    let fernet = FernetKey::generate();
    let keyring = Keyring::builder()
        .primary(key.clone())
        .fernet(fernet.clone())
        .build()
        .unwrap();
    let plain = keyring
        .decrypt(&keyring.encrypt(b"top-secret", b"").unwrap(), b"")
        .unwrap();
    let shown = format!("{keyring:?} {key:?} {fernet:?} {plain:?}");
    assert!(!shown.contains(key.to_base64().as_str()));
    assert!(!shown.contains(fernet.to_base64().as_str()));
    assert!(!shown.contains("top-secret"));
    assert_eq!(format!("{plain:?}"), "Plaintext(<10 bytes redacted>)");
}

/// Issue 9: the status warns while Fernet fallback or plaintext acceptance
/// is on, and only then.
#[test]
fn status_warns_while_fernet_or_plaintext_is_accepted() {
    let plain = Keyring::new(AesKey::generate());
    assert!(plain.status().warnings.is_empty());
    let both = Keyring::builder()
        .primary(AesKey::generate())
        .fernet(manna_crypto::FernetKey::generate())
        .accept_plaintext(true)
        .build()
        .unwrap();
    let warnings = both.status().warnings;
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(warnings[0].contains("Fernet fallback is on") && warnings[0].contains("no AAD"));
    assert!(warnings[1].contains("plaintext acceptance is on"));
}

/// Issue 9 item 14: after `fernet_until` the keyring refuses Fernet tokens
/// (a policy error naming the date, no key tried) and refuses to write them;
/// before it nothing changes; the key a token is under is still told.
#[test]
fn fernet_until_ends_fernet_reading_and_writing() {
    use time::macros::datetime;
    let fernet = FernetKey::generate();
    let token = fernet.encrypt(b"legacy secret");
    let build = |until| {
        Keyring::builder()
            .primary(AesKey::generate())
            .fernet(fernet.clone())
            .fernet_until(until)
            .build()
            .unwrap()
    };

    let open = build(time::OffsetDateTime::now_utc() + time::Duration::days(30));
    assert_eq!(&*open.decrypt(&token, b"t.c").unwrap(), b"legacy secret");
    assert!(open.encrypt_fernet(b"x").is_ok());
    assert_eq!(open.check_fernet_not_ended(), Ok(()));
    assert!(open.status().fernet_fallback);

    let ended = build(datetime!(2026-01-31 12:00 UTC));
    assert_eq!(ended.fernet_until(), Some(datetime!(2026-01-31 12:00 UTC)));
    let err = ended.decrypt(&token, b"t.c").unwrap_err();
    assert_eq!(
        err,
        DecryptError::FernetEnded {
            until: "2026-01-31T12:00:00Z".to_owned()
        }
    );
    assert_eq!(err.kind(), "fernet_ended");
    let shown = format!("{err} {err:?}");
    assert!(
        shown.contains("Fernet reading ended at 2026-01-31T12:00:00Z"),
        "{shown}"
    );
    assert!(!shown.contains("legacy secret") && !shown.contains(fernet.to_base64().as_str()));
    // Any token shaped like Fernet is refused the same way: no key is tried.
    let foreign = FernetKey::generate().encrypt(b"x");
    assert_eq!(
        ended.decrypt(&foreign, b"").unwrap_err().kind(),
        "fernet_ended"
    );
    assert_eq!(
        ended
            .decrypt_bytes(token.as_bytes(), b"")
            .unwrap_err()
            .kind(),
        "fernet_ended"
    );
    assert!(matches!(
        ended.encrypt_fernet(b"x"),
        Err(CryptoError::FernetEnded { .. })
    ));
    assert!(ended.check_fernet_not_ended().is_err());
    // The census still tells which key the token is under.
    assert_eq!(ended.fernet_key_of(&token), Some(fernet.id()));
    // AES envelopes are not affected.
    let aes = ended.encrypt(b"new", b"t.c").unwrap();
    assert_eq!(&*ended.decrypt(&aes, b"t.c").unwrap(), b"new");
}

/// Issue 9 item 14: a caller that opts out of Fernet never accepts a Fernet
/// token, even while the keyring has the key; the error is the opaque one.
#[test]
fn decrypt_without_fernet_refuses_fernet_tokens_opaquely() {
    let fernet = FernetKey::generate();
    let keyring = Keyring::builder()
        .primary(AesKey::generate())
        .fernet(fernet.clone())
        .accept_plaintext(true)
        .build()
        .unwrap();
    let token = fernet.encrypt(b"copied");
    assert!(keyring.decrypt(&token, b"t.c").is_ok());
    assert_eq!(
        keyring.decrypt_without_fernet(&token, b"t.c"),
        Err(DecryptError::Authentication)
    );
    assert_eq!(
        keyring.decrypt_bytes_without_fernet(token.as_bytes(), b"t.c"),
        Err(DecryptError::Authentication)
    );
    let aes = keyring.encrypt(b"native", b"t.c").unwrap();
    assert_eq!(
        &*keyring.decrypt_without_fernet(&aes, b"t.c").unwrap(),
        b"native"
    );
    let bin = keyring.encrypt_to_bytes(b"native", b"t.c").unwrap();
    assert_eq!(
        &*keyring.decrypt_bytes_without_fernet(&bin, b"t.c").unwrap(),
        b"native"
    );
    // Plaintext acceptance still applies to plaintext.
    assert_eq!(
        &*keyring.decrypt_without_fernet("hello", b"t.c").unwrap(),
        b"hello"
    );
}

/// Issue 9 item 14: the Fernet fallback warning says until when, and once
/// `fernet_until` has passed the status says Fernet reading ended.
#[test]
fn status_states_fernet_until() {
    use time::macros::datetime;
    let keyring = Keyring::builder()
        .primary(AesKey::generate())
        .fernet(FernetKey::generate())
        .fernet_until(datetime!(2027-01-01 0:00 UTC))
        .build()
        .unwrap();
    let before = keyring.status_at(datetime!(2026-06-01 0:00 UTC));
    assert!(before.fernet_fallback);
    assert_eq!(before.acceptance_warnings().len(), 1);
    assert!(
        before.warnings[0].starts_with("Fernet fallback is on until 2027-01-01T00:00:00Z")
            && before.warnings[0].contains("another column, row or backup is accepted"),
        "{:?}",
        before.warnings
    );
    let json = serde_json::to_value(&before).unwrap();
    assert_eq!(json["fernet_until"], "2027-01-01T00:00:00Z");

    let after = keyring.status_at(datetime!(2027-01-02 0:00 UTC));
    assert!(!after.fernet_fallback);
    assert_eq!(after.warnings.len(), 1, "{:?}", after.warnings);
    assert!(after.warnings[0].starts_with("Fernet reading ended at 2027-01-01T00:00:00Z"));
}

/// Library errors state facts: no command, flag or variable to set (the
/// CLI adds those, knowing where its keys came from). A key source may
/// name what it read (`EnvKeySource` its variables), nothing else.
#[test]
fn error_messages_carry_no_cli_hints() {
    use manna_crypto::{AesKey, CryptoError, DecryptError, KeyError, KeyKind};
    let id = AesKey::generate().id();
    let messages = [
        KeyError::NoPrimaryKey.to_string(),
        KeyError::WrongLength {
            kind: KeyKind::Aes256,
            actual: 16,
        }
        .to_string(),
        KeyError::AesKeyUsedAsFernetKey { aes_key_id: id }.to_string(),
        CryptoError::NoFernetKey.to_string(),
        DecryptError::NoFernetKey.to_string(),
        DecryptError::UnknownKey {
            key_id: id,
            configured: vec![id],
        }
        .to_string(),
        manna_crypto::Status::uninitialized().warnings.join("; "),
    ];
    for m in messages {
        for hint in ["MANNA_", "xtask", "keygen", "--"] {
            assert!(!m.contains(hint), "{m:?} contains {hint:?}");
        }
    }
}
