//! The envelope v1 test vectors of docs/format.md, read from that page: the
//! key id, the token for the given nonce, and decryption must all match.
//! The same blocks are checked by an independent Python implementation
//! (tests/data/format/envelope_v1.py check).

use std::collections::HashMap;

use manna_crypto::{inspect, inspect_bytes, AesKey, DecryptError, FernetKey, Format, Keyring};

fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn format_md() -> String {
    let path = format!("{}/../../docs/format.md", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The lines of the docs/format.md table block whose first line is `name`,
/// as (first word, the JSON string after it).
fn table(name: &str) -> Vec<(String, String)> {
    let text = format_md();
    let block = text
        .split("```text\n")
        .find_map(|b| b.strip_prefix(&format!("{name}\n")))
        .unwrap_or_else(|| panic!("docs/format.md lost its {name} table"));
    let body = block.split("```").next().unwrap();
    body.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (expected, json) = l.split_once(' ').expect("`expected \"value\"`");
            let value: String = serde_json::from_str(json)
                .unwrap_or_else(|e| panic!("{name}: {json} is not a JSON string: {e}"));
            (expected.to_owned(), value)
        })
        .collect()
}

fn vectors() -> Vec<HashMap<String, String>> {
    let text = format_md();
    let mut out = Vec::new();
    for block in text.split("```text\n").skip(1) {
        let body = block.split("```").next().unwrap();
        if !body.starts_with("vector") {
            continue;
        }
        let fields = body
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect();
        out.push(fields);
    }
    out
}

#[test]
fn docs_format_md_vectors() {
    let vectors = vectors();
    assert!(vectors.len() >= 4, "docs/format.md lost its test vectors");
    for v in &vectors {
        let name = &v["vector"];
        let key_bytes: [u8; 32] = unhex(&v["key_hex"]).try_into().unwrap();
        let key = AesKey::from_base64(&v["key_base64"]).unwrap();
        assert_eq!(key.id(), AesKey::from_bytes(key_bytes).id(), "{name}");
        assert_eq!(key.id().to_string(), v["key_id"], "{name}");
        let nonce: [u8; 12] = unhex(&v["nonce_hex"]).try_into().unwrap();
        let aad = unhex(&v["aad_hex"]);
        let plaintext = unhex(&v["plaintext_hex"]);
        let gcm_aad = unhex(&v["gcm_aad_hex"]);
        assert_eq!(&gcm_aad[21..], aad.as_slice(), "{name}");
        let keyring = Keyring::new(key);
        let wrong_aad = [aad.as_slice(), b"x"].concat();
        match v["form"].as_str() {
            "text" => {
                let token = &v["token"];
                assert_eq!(gcm_aad[..21], token.as_bytes()[..21], "{name}");
                assert_eq!(
                    &keyring.encrypt_with_nonce(&plaintext, &aad, nonce).unwrap(),
                    token,
                    "{name}"
                );
                assert_eq!(
                    &*keyring.decrypt(token, &aad).unwrap(),
                    plaintext.as_slice()
                );
                assert_eq!(
                    inspect(token),
                    Format::Aes256Gcm {
                        key_id: keyring.primary_key_id()
                    }
                );
                assert_eq!(
                    keyring.decrypt(token, &wrong_aad),
                    Err(DecryptError::Authentication)
                );
            }
            "binary" => {
                let value = unhex(&v["value_hex"]);
                assert_eq!(gcm_aad[..21], value[..21], "{name}");
                assert_eq!(
                    keyring
                        .encrypt_to_bytes_with_nonce(&plaintext, &aad, nonce)
                        .unwrap(),
                    value,
                    "{name}"
                );
                assert_eq!(
                    &*keyring.decrypt_bytes(&value, &aad).unwrap(),
                    plaintext.as_slice(),
                    "{name}"
                );
                assert_eq!(
                    inspect_bytes(&value),
                    Format::Aes256Gcm {
                        key_id: keyring.primary_key_id()
                    }
                );
                assert_eq!(
                    keyring.decrypt_bytes(&value, &wrong_aad),
                    Err(DecryptError::Authentication)
                );
            }
            other => panic!("unknown form {other}"),
        }
    }
}

/// §1: every spelling decodes to the listed key, or is refused, for AES
/// and Fernet keys alike.
#[test]
fn docs_format_md_key_spellings() {
    let rows = table("key-spellings");
    assert!(rows.len() >= 10);
    for (expected, spelling) in rows {
        let aes = AesKey::from_base64(&spelling);
        let fernet = FernetKey::from_base64(&spelling);
        if expected == "invalid" {
            assert!(aes.is_err(), "{spelling:?} accepted");
            assert!(fernet.is_err(), "{spelling:?} accepted as a Fernet key");
        } else {
            let bytes: [u8; 32] = unhex(&expected).try_into().unwrap();
            let aes = aes.unwrap_or_else(|e| panic!("{spelling:?}: {e}"));
            assert_eq!(aes.id(), AesKey::from_bytes(bytes).id(), "{spelling:?}");
            let fernet = fernet.unwrap_or_else(|e| panic!("{spelling:?}: {e}"));
            assert_eq!(
                fernet.id(),
                FernetKey::from_bytes(bytes).id(),
                "{spelling:?}"
            );
        }
    }
}

/// §1: the Fernet key fingerprint example.
#[test]
fn docs_format_md_fernet_key_id() {
    let key: [u8; 32] = std::array::from_fn(|i| i as u8);
    let id = FernetKey::from_bytes(key).id().to_string();
    assert!(format_md().contains(&format!("it is\n`{id}`")), "{id}");
}

/// §4: every listed value is classified as listed, as text and (but for
/// the binary header) as bytes: text in a bytes column is classified as
/// text.
#[test]
fn docs_format_md_classification() {
    let rows = table("classification");
    assert!(rows.len() >= 20);
    for (expected, value) in rows {
        assert_eq!(inspect(&value).to_string(), expected, "{value:?}");
        // In a bytes column, a header ending in `.` is the binary form.
        if value.as_bytes().get(20) != Some(&b'.') {
            let as_bytes = inspect_bytes(value.as_bytes()).to_string();
            assert_eq!(as_bytes, expected, "{value:?}");
        }
    }
}

/// §7: a version prefix of another version is "unsupported version" naming
/// its digits, whatever their number; ten digits are no version prefix.
#[test]
fn other_versions_are_unsupported_by_their_digits() {
    let keyring = Keyring::new(AesKey::generate());
    for (value, version) in [
        ("mn2:x", "2"),
        ("mn0:x", "0"),
        ("mn01:db4daed658e3313c:AAAA", "01"),
        ("mn10:db4daed658e3313c:AAAA", "10"),
        ("mn123456789:", "123456789"),
    ] {
        assert_eq!(
            keyring.decrypt(value, b""),
            Err(DecryptError::UnsupportedVersion {
                version: version.to_owned()
            }),
            "{value}"
        );
        assert_eq!(
            keyring
                .decrypt_bytes(value.as_bytes(), b"")
                .unwrap_err()
                .kind(),
            "unsupported_version"
        );
    }
    assert_ne!(
        keyring.decrypt("mn1234567890:x", b"").unwrap_err().kind(),
        "unsupported_version"
    );
}
