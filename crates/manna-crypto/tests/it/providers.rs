//! Crypto providers: each passes the conformance suite, and the envelope is
//! the same bytes whichever provider makes it.

use manna_crypto::provider::{self, Provider, RustCrypto};
use manna_crypto::testing::provider_conformance;

#[test]
fn rustcrypto_conforms() {
    provider_conformance(&RustCrypto);
}

#[cfg(feature = "aws-lc-rs")]
#[test]
fn aws_lc_rs_conforms() {
    provider_conformance(&provider::AwsLcRs);
}

#[test]
fn every_compiled_provider_conforms_and_the_default_is_one_of_them() {
    let all = provider::all();
    for p in &all {
        provider_conformance(*p);
    }
    let default = provider::default_provider().name();
    assert!(all.iter().any(|p| p.name() == default), "{default}");
    // The default is fixed once used: installing another one is refused.
    assert_eq!(
        provider::install_default(&RustCrypto).map_err(|p| p.name()),
        Err(default)
    );
}

#[test]
fn debug_names_the_provider_only() {
    let p: &dyn Provider = &RustCrypto;
    assert_eq!(format!("{p:?}"), "RustCrypto");
}

/// The same token from both providers, and each opens the other's: random
/// keys, nonces, AADs and plaintexts up to 1 MiB, text and binary forms,
/// and Fernet tokens read through both.
#[cfg(feature = "aws-lc-rs")]
mod cross {
    use manna_crypto::provider::{AwsLcRs, RustCrypto};
    use manna_crypto::{AesKey, FernetKey, Keyring};
    use proptest::prelude::*;
    use rand::{RngCore as _, SeedableRng as _};

    fn keyrings(key: [u8; 32], fernet: [u8; 32]) -> (Keyring, Keyring) {
        let build = |p: &'static dyn manna_crypto::provider::Provider| {
            Keyring::builder()
                .provider(p)
                .primary(AesKey::from_bytes(key))
                .fernet(FernetKey::from_bytes(fernet))
                .build()
                .unwrap()
        };
        (build(&RustCrypto), build(&AwsLcRs))
    }

    /// Plaintext lengths: mostly small, some up to 1 MiB (filled from a
    /// seed, so a big case is cheap to generate and to shrink).
    fn length() -> impl Strategy<Value = usize> {
        prop_oneof![
            4 => 0usize..300,
            2 => 300usize..20_000,
            1 => 20_000usize..=(1 << 20),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        #[test]
        fn same_envelope_and_each_opens_the_others(
            key in any::<[u8; 32]>(),
            fernet_key in any::<[u8; 32]>(),
            nonce in any::<[u8; 12]>(),
            aad in proptest::collection::vec(any::<u8>(), 0..200),
            len in length(),
            seed in any::<u64>(),
        ) {
            prop_assume!(key != fernet_key);
            let mut plaintext = vec![0u8; len];
            rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut plaintext);
            let (rc, lc) = keyrings(key, fernet_key);

            let token = rc.encrypt_with_nonce(&plaintext, &aad, nonce).unwrap();
            prop_assert_eq!(&token, &lc.encrypt_with_nonce(&plaintext, &aad, nonce).unwrap());
            let bytes = rc.encrypt_to_bytes_with_nonce(&plaintext, &aad, nonce).unwrap();
            prop_assert_eq!(&bytes, &lc.encrypt_to_bytes_with_nonce(&plaintext, &aad, nonce).unwrap());

            // Random nonces: each opens the other's.
            let from_rc = rc.encrypt(&plaintext, &aad).unwrap();
            let from_lc = lc.encrypt(&plaintext, &aad).unwrap();
            prop_assert_eq!(&*lc.decrypt(&from_rc, &aad).unwrap(), &plaintext[..]);
            prop_assert_eq!(&*rc.decrypt(&from_lc, &aad).unwrap(), &plaintext[..]);
            let bin_rc = rc.encrypt_to_bytes(&plaintext, &aad).unwrap();
            let bin_lc = lc.encrypt_to_bytes(&plaintext, &aad).unwrap();
            prop_assert_eq!(&*lc.decrypt_bytes(&bin_rc, &aad).unwrap(), &plaintext[..]);
            prop_assert_eq!(&*rc.decrypt_bytes(&bin_lc, &aad).unwrap(), &plaintext[..]);

            // A wrong AAD is the same opaque failure on both.
            let mut wrong = aad.clone();
            wrong.push(0);
            prop_assert_eq!(rc.decrypt(&from_lc, &wrong).unwrap_err(), lc.decrypt(&from_rc, &wrong).unwrap_err());

            // Fernet tokens read through both providers.
            if len <= 20_000 {
                let fernet = rc.encrypt_fernet(&plaintext).unwrap();
                prop_assert_eq!(&*rc.decrypt(&fernet, b"").unwrap(), &plaintext[..]);
                prop_assert_eq!(&*lc.decrypt(&fernet, b"").unwrap(), &plaintext[..]);
            }
        }
    }
}

#[test]
fn the_audit_event_names_the_provider() {
    use manna_crypto::testing::AuditLog;
    use manna_crypto::{audit, AesKey, Keyring};
    let log = AuditLog::capture();
    let keyring = Keyring::builder()
        .provider(&RustCrypto)
        .primary(AesKey::generate())
        .build()
        .unwrap();
    audit::keyring_loaded(&keyring, "a test");
    assert!(
        log.text().contains("provider=\"rustcrypto\""),
        "{}",
        log.text()
    );
}
