//! Property tests of the envelope and the keyring.

use manna_crypto::testing::{
    aad, aes_key, fernet_key, flip_bit, keyring, keyring_with_fernet, plaintext, token_for,
    token_like,
};
use manna_crypto::{
    inspect, inspect_bytes, AesKey, DecryptError, FernetKey, Format, KeyId, Keyring,
};
use proptest::prelude::*;
use rand::{RngCore as _, SeedableRng as _};

/// Decrypts a possibly non-UTF-8 value the way a column of either type would.
fn decrypt_any(keyring: &Keyring, value: &[u8], aad: &[u8]) -> Result<Vec<u8>, DecryptError> {
    match std::str::from_utf8(value) {
        Ok(text) => keyring.decrypt(text, aad),
        Err(_) => keyring.decrypt_bytes(value, aad),
    }
    .map(|p| p.to_vec())
}

proptest! {
    #[test]
    fn round_trip_text_and_binary(keyring in keyring(), value in plaintext(), aad in aad()) {
        let token = keyring.encrypt(&value, &aad).unwrap();
        prop_assert_eq!(inspect(&token), Format::Aes256Gcm { key_id: keyring.primary_key_id() });
        prop_assert!(!keyring.needs_reencryption(&token));
        prop_assert_eq!(&*keyring.decrypt(&token, &aad).unwrap(), &value[..]);
        let bytes = keyring.encrypt_to_bytes(&value, &aad).unwrap();
        prop_assert_eq!(inspect_bytes(&bytes), Format::Aes256Gcm { key_id: keyring.primary_key_id() });
        prop_assert_eq!(&*keyring.decrypt_bytes(&bytes, &aad).unwrap(), &value[..]);
        // A text token stored in a binary column reads too.
        prop_assert_eq!(&*keyring.decrypt_bytes(token.as_bytes(), &aad).unwrap(), &value[..]);
    }

    #[test]
    fn any_single_bit_flip_is_rejected(
        keys in three_keys(),
        accept in any::<bool>(),
        seed in any::<u64>(),
        bit_choice in any::<prop::sample::Index>(),
    ) {
        // With plaintext accepted too: a damaged token must never pass for
        // plaintext.
        let keyring = build(keys, accept);
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut value = vec![0u8; (rng.next_u32() % 200) as usize];
        rng.fill_bytes(&mut value);
        let aad = b"t.c";
        for stored in [
            keyring.encrypt(&value, aad).unwrap().into_bytes(),
            keyring.encrypt_fernet(&value).unwrap().into_bytes(),
            keyring.encrypt_to_bytes(&value, aad).unwrap(),
        ] {
            let bit = bit_choice.index(stored.len() * 8);
            let flipped = flip_bit(&stored, bit);
            prop_assert!(
                decrypt_any(&keyring, &flipped, aad).is_err(),
                "bit {} of {:?}", bit, String::from_utf8_lossy(&stored)
            );
        }
    }

    #[test]
    fn wrong_aad_is_one_opaque_error(keyring in keyring(), value in plaintext(), a in aad(), b in aad()) {
        prop_assume!(a != b);
        let token = keyring.encrypt(&value, &a).unwrap();
        prop_assert_eq!(keyring.decrypt(&token, &b), Err(DecryptError::Authentication));
    }

    #[test]
    fn wrong_key_names_the_missing_id(a in keyring(), b in keyring(), value in plaintext()) {
        prop_assume!(!b.contains(a.primary_key_id()));
        let token = a.encrypt(&value, b"").unwrap();
        let err = b.decrypt(&token, b"").unwrap_err();
        let named = matches!(err, DecryptError::UnknownKey { key_id, .. } if key_id == a.primary_key_id());
        prop_assert!(named, "{:?}", err);
        prop_assert!(b.needs_reencryption(&token));
    }

    #[test]
    fn truncated_tokens_are_rejected(
        keys in three_keys(),
        value in plaintext(),
        cut in any::<prop::sample::Index>(),
    ) {
        let strict = build(keys.clone(), false);
        let accepting = build(keys, true);
        for token in [strict.encrypt(&value, b"").unwrap(), strict.encrypt_fernet(&value).unwrap()] {
            let len = cut.index(token.len());
            let truncated = &token[..len];
            if truncated.trim_end_matches('=') == token.trim_end_matches('=') {
                // Only Fernet's `=` padding was cut: every byte is still
                // there, and (like the `fernet` crate) padding is optional.
                continue;
            }
            prop_assert!(strict.decrypt(truncated, b"").is_err());
            // With plaintext accepted, anything longer than the formats'
            // fixed prefixes ("mn1:", "gAAAAA") is still seen as damaged.
            if len >= 6 {
                prop_assert!(accepting.decrypt(truncated, b"").is_err(), "{}", truncated);
            }
        }
    }

    #[test]
    fn non_base64_body_is_unknown_format(keyring in keyring(), value in plaintext(), pos in any::<prop::sample::Index>(), bad in "[!@#$%^&*()+/=~ ]") {
        let token = keyring.encrypt(&value, b"").unwrap();
        let body_len = token.len() - 21;
        let at = 21 + pos.index(body_len);
        let mangled = format!("{}{}{}", &token[..at], bad, &token[at + 1..]);
        prop_assert_eq!(keyring.decrypt(&mangled, b""), Err(DecryptError::UnknownFormat));
        prop_assert_eq!(inspect(&mangled), Format::Unknown);
    }

    #[test]
    fn arbitrary_input_never_panics_and_errors_match_inspect(keyring in keyring_with_fernet(), input in token_like()) {
        let format = inspect(&input);
        let _ = keyring.needs_reencryption(&input);
        let _ = inspect_bytes(input.as_bytes());
        let _ = keyring.decrypt_bytes(input.as_bytes(), b"x");
        let result = keyring.decrypt(&input, b"x");
        let err = result.expect_err("random input is never an authentic token");
        let consistent = match format {
            Format::Aes256Gcm { .. } => matches!(err, DecryptError::UnknownKey { .. } | DecryptError::Authentication),
            Format::Fernet => err == DecryptError::Authentication,
            Format::Plaintext => err == DecryptError::PlaintextNotAccepted,
            _ => matches!(err, DecryptError::UnknownFormat | DecryptError::UnsupportedVersion { .. }),
        };
        prop_assert!(consistent, "{:?} for {:?}", err, format);
    }

    #[test]
    fn tokens_from_the_strategy_decrypt(keyring in keyring_with_fernet().prop_flat_map(|k| (Just(k.clone()), token_for(k)))) {
        let (keyring, stored) = keyring;
        prop_assert_eq!(inspect(&stored.value).label(), stored.format);
        prop_assert_eq!(&*keyring.decrypt(&stored.value, &stored.aad).unwrap(), &stored.plaintext[..]);
    }

    #[test]
    fn key_text_and_id_round_trip(key in aes_key()) {
        let again = AesKey::from_base64(&key.to_base64()).unwrap();
        prop_assert_eq!(again.id(), key.id());
        prop_assert_eq!(key.id().to_string().parse::<KeyId>().unwrap(), key.id());
        let shown = format!("{key:?} {:?}", Keyring::new(key.clone()));
        prop_assert!(!shown.contains(key.to_base64().as_str()));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4))]

    #[test]
    fn one_mebibyte_round_trip(seed in any::<u64>(), aad in aad()) {
        let keyring = Keyring::new(AesKey::generate());
        // Cheap pseudo-random content (the cipher does not care); the run
        // stays fast even when PROPTEST_CASES raises the case count.
        let value: Vec<u8> = (0..1u64 << 20)
            .map(|i| (seed.wrapping_add(i).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56) as u8)
            .collect();
        let token = keyring.encrypt(&value, &aad).unwrap();
        prop_assert_eq!(&*keyring.decrypt(&token, &aad).unwrap(), &value[..]);
    }
}

/// A primary, a decrypt-only and a Fernet key, all distinct.
fn three_keys() -> impl Strategy<Value = (AesKey, AesKey, FernetKey)> {
    (aes_key(), aes_key(), fernet_key()).prop_filter("distinct keys", |(a, b, f)| {
        Keyring::builder()
            .primary(a.clone())
            .previous(b.clone())
            .fernet(f.clone())
            .build()
            .is_ok()
    })
}

/// A keyring with a primary, a decrypt-only and a Fernet key.
fn build((primary, previous, fernet): (AesKey, AesKey, FernetKey), accept: bool) -> Keyring {
    Keyring::builder()
        .primary(primary)
        .previous(previous)
        .fernet(fernet)
        .accept_plaintext(accept)
        .build()
        .expect("random keys are distinct")
}

#[test]
fn empty_plaintext_and_empty_input() {
    let keyring = Keyring::new(AesKey::generate());
    let token = keyring.encrypt(b"", b"").unwrap();
    assert!(keyring.decrypt(&token, b"").unwrap().is_empty());
    assert_eq!(
        keyring.decrypt("", b""),
        Err(DecryptError::PlaintextNotAccepted)
    );
    assert_eq!(
        keyring.decrypt_bytes(b"", b""),
        Err(DecryptError::PlaintextNotAccepted)
    );
    assert!(keyring.needs_reencryption(""));
}
