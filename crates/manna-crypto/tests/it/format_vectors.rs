//! The envelope v1 test vectors of docs/format.md, read from that page: the
//! key id, the token for the given nonce, and decryption must all match.
//! The same blocks are checked by an independent Python implementation
//! (tests/data/format/envelope_v1.py check).

use std::collections::HashMap;

use manna_crypto::{inspect, inspect_bytes, AesKey, DecryptError, Format, Keyring};

fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn vectors() -> Vec<HashMap<String, String>> {
    let path = format!("{}/../../docs/format.md", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
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
