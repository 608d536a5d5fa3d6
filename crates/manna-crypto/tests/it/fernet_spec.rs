//! The official Fernet specification vectors (tests/data/fernet-spec, see
//! PROVENANCE there): generate, verify and every invalid case, including the
//! TTL cases through the clock-taking API.

use std::time::Duration;

use manna_crypto::{inspect, AesKey, DecryptError, FernetKey, Format, Keyring};
use serde::Deserialize;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

#[derive(Deserialize)]
struct Generate {
    token: String,
    now: String,
    iv: Vec<u8>,
    src: String,
    secret: String,
}

#[derive(Deserialize)]
struct Verify {
    token: String,
    now: String,
    ttl_sec: u64,
    src: String,
    secret: String,
}

#[derive(Deserialize)]
struct Invalid {
    desc: String,
    token: String,
    now: String,
    ttl_sec: u64,
    secret: String,
}

fn load<T: for<'de> Deserialize<'de>>(name: &str) -> Vec<T> {
    let path = format!(
        "{}/tests/data/fernet-spec/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap()
}

fn at(rfc3339: &str) -> OffsetDateTime {
    OffsetDateTime::parse(rfc3339, &Rfc3339).unwrap()
}

fn keyring_with(secret: &str) -> Keyring {
    Keyring::builder()
        .primary(AesKey::generate())
        .fernet(FernetKey::from_base64(secret).unwrap())
        .build()
        .unwrap()
}

fn decode(token: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE
        .decode(token)
        .unwrap()
}

#[test]
fn generate_vectors() {
    let cases: Vec<Generate> = load("generate.json");
    assert!(!cases.is_empty());
    for case in cases {
        let key = FernetKey::from_base64(&case.secret).unwrap();
        let now = at(&case.now);
        // The expected token is authentic under the key and holds `src`.
        assert_eq!(
            &*key.decrypt_at(&case.token, None, now).unwrap(),
            case.src.as_bytes()
        );
        let expected = decode(&case.token);
        assert_eq!(
            &expected[9..25],
            case.iv.as_slice(),
            "IV field of the vector"
        );

        // The `fernet` crate draws the IV itself (no API takes one), so our
        // token can match the vector in everything but IV, ciphertext and
        // MAC: version byte, timestamp, length; and it must decrypt.
        let ours = key.encrypt_at(case.src.as_bytes(), now);
        let ours_raw = decode(&ours);
        assert_eq!(ours_raw[..9], expected[..9], "version and timestamp");
        assert_eq!(ours_raw.len(), expected.len());
        assert_eq!(inspect(&ours), Format::Fernet);
        assert_eq!(
            &*key.decrypt_at(&ours, None, now).unwrap(),
            case.src.as_bytes()
        );
    }
}

#[test]
fn verify_vectors() {
    let cases: Vec<Verify> = load("verify.json");
    assert!(!cases.is_empty());
    for case in cases {
        let now = at(&case.now);
        let ttl = Some(Duration::from_secs(case.ttl_sec));
        let key = FernetKey::from_base64(&case.secret).unwrap();
        assert_eq!(
            &*key.decrypt_at(&case.token, ttl, now).unwrap(),
            case.src.as_bytes()
        );
        let keyring = keyring_with(&case.secret);
        assert_eq!(inspect(&case.token), Format::Fernet);
        assert_eq!(
            &*keyring.decrypt_fernet_at(&case.token, ttl, now).unwrap(),
            case.src.as_bytes()
        );
        // Without a clock (the migration path) the token is read as well.
        assert_eq!(
            &*keyring.decrypt(&case.token, b"").unwrap(),
            case.src.as_bytes()
        );
    }
}

#[test]
fn invalid_vectors() {
    let cases: Vec<Invalid> = load("invalid.json");
    assert_eq!(cases.len(), 8, "all eight invalid cases of the spec");
    for case in cases {
        let now = at(&case.now);
        let ttl = Some(Duration::from_secs(case.ttl_sec));
        let expected = if case.desc.contains("TTL") || case.desc.contains("TS") {
            DecryptError::FernetTimestamp
        } else {
            DecryptError::Authentication
        };
        let key = FernetKey::from_base64(&case.secret).unwrap();
        assert_eq!(
            key.decrypt_at(&case.token, ttl, now).unwrap_err(),
            expected,
            "{}",
            case.desc
        );
        let keyring = keyring_with(&case.secret);
        assert_eq!(
            keyring
                .decrypt_fernet_at(&case.token, ttl, now)
                .unwrap_err(),
            expected,
            "{}",
            case.desc
        );
        // Through the clock-less path every malformed token is rejected too
        // (the time-window cases are authentic, so only they may pass).
        if expected == DecryptError::Authentication {
            assert!(keyring.decrypt(&case.token, b"").is_err(), "{}", case.desc);
        }
    }
}
