//! Tokens made by Python's `cryptography` (Fernet and MultiFernet.rotate),
//! written by tests/data/python/make_fernet_tokens.py.

use base64::Engine as _;
use manna_crypto::{inspect, AesKey, FernetKey, Format, Keyring};
use serde::Deserialize;

#[derive(Deserialize)]
struct File {
    keys: Keys,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Keys {
    k1: String,
    k2: String,
}

#[derive(Deserialize)]
struct Case {
    how: String,
    key: String,
    token: String,
    plaintext_b64: String,
}

fn load() -> File {
    let path = format!(
        "{}/tests/data/python/fernet_tokens.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap()
}

#[test]
fn python_fernet_and_rotated_tokens_decrypt_in_multifernet_order() {
    let file = load();
    assert_eq!(file.cases.len(), 10);
    let k1 = FernetKey::from_base64(&file.keys.k1).unwrap();
    let k2 = FernetKey::from_base64(&file.keys.k2).unwrap();
    // MultiFernet order: the newer key first, as after `rotate`.
    let keyring = Keyring::builder()
        .primary(AesKey::generate())
        .fernet(k2.clone())
        .fernet(k1.clone())
        .build()
        .unwrap();
    for case in &file.cases {
        let expected = base64::engine::general_purpose::STANDARD
            .decode(&case.plaintext_b64)
            .unwrap();
        assert_eq!(inspect(&case.token), Format::Fernet, "{}", case.how);
        assert!(keyring.needs_reencryption(&case.token));
        assert_eq!(
            &*keyring.decrypt(&case.token, b"").unwrap(),
            expected.as_slice(),
            "{}",
            case.how
        );
        // Each token is authentic under exactly the key that made it.
        let (right, wrong) = if case.key == "k1" {
            (&k1, &k2)
        } else {
            (&k2, &k1)
        };
        assert_eq!(&*right.decrypt(&case.token).unwrap(), expected.as_slice());
        assert!(wrong.decrypt(&case.token).is_err(), "{}", case.how);
    }
}

#[test]
fn rotated_tokens_are_unreadable_with_only_the_old_key() {
    let file = load();
    let only_k1 = Keyring::builder()
        .primary(AesKey::generate())
        .fernet(FernetKey::from_base64(&file.keys.k1).unwrap())
        .build()
        .unwrap();
    for case in file.cases.iter().filter(|c| c.key == "k2") {
        assert!(only_k1.decrypt(&case.token, b"").is_err(), "{}", case.how);
    }
}
