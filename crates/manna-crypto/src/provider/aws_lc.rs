//! The aws-lc-rs provider: AWS-LC's AES-256-GCM, HMAC-SHA256 and
//! AES-128-CBC.

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use aws_lc_rs::cipher::{DecryptionContext, PaddedBlockDecryptingKey, UnboundCipherKey, AES_128};
use aws_lc_rs::hmac;

use super::{
    Aes256GcmKey, FernetPrimitives, Provider, Unspecified, AES_BLOCK_LEN, FERNET_HALF_LEN,
    HMAC_SHA256_LEN,
};
use crate::envelope::{NONCE_LEN, TAG_LEN};
use crate::key::KEY_LEN;

/// AWS-LC (C and assembly) through `aws-lc-rs` (feature `aws-lc-rs`).
/// Fastest on x86-64 and aarch64; needs a C compiler to build (no cmake,
/// no Go). Keys live in AWS-LC's own structures, which AWS-LC wipes when
/// they are freed.
#[derive(Debug, Clone, Copy, Default)]
pub struct AwsLcRs;

impl Provider for AwsLcRs {
    fn name(&self) -> &'static str {
        "aws-lc-rs"
    }

    fn aes256gcm(&self, key: &[u8; KEY_LEN]) -> Box<dyn Aes256GcmKey> {
        let key = UnboundKey::new(&AES_256_GCM, key)
            .expect("AES-256-GCM accepts any 32-byte key, which is what we pass");
        Box::new(Gcm(LessSafeKey::new(key)))
    }

    fn fernet(
        &self,
        signing_key: &[u8; FERNET_HALF_LEN],
        encryption_key: &[u8; FERNET_HALF_LEN],
    ) -> Box<dyn FernetPrimitives> {
        let cipher_key = UnboundCipherKey::new(&AES_128, encryption_key)
            .expect("AES-128 accepts any 16-byte key, which is what we pass");
        Box::new(Fernet {
            hmac: hmac::Key::new(hmac::HMAC_SHA256, signing_key),
            cbc: PaddedBlockDecryptingKey::cbc_pkcs7(cipher_key)
                .expect("AES-128-CBC with PKCS#7 padding is supported"),
        })
    }
}

struct Gcm(LessSafeKey);

impl Aes256GcmKey for Gcm {
    fn seal_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        in_out: &mut [u8],
    ) -> Result<[u8; TAG_LEN], Unspecified> {
        let tag = self
            .0
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(*nonce),
                Aad::from(aad),
                in_out,
            )
            .map_err(|_| Unspecified)?;
        tag.as_ref().try_into().map_err(|_| Unspecified)
    }

    fn open_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        in_out: &mut [u8],
    ) -> Result<usize, Unspecified> {
        self.0
            .open_in_place(Nonce::assume_unique_for_key(*nonce), Aad::from(aad), in_out)
            .map(|plain| plain.len())
            .map_err(|_| Unspecified)
    }

    fn open_detached(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        ciphertext: &[u8],
        tag: &[u8; TAG_LEN],
        out: &mut [u8],
    ) -> Result<(), Unspecified> {
        if out.len() != ciphertext.len() {
            return Err(Unspecified);
        }
        // Decrypts straight from the input into `out`: no copy first.
        self.0
            .open_separate_gather(
                Nonce::assume_unique_for_key(*nonce),
                Aad::from(aad),
                ciphertext,
                tag,
                out,
            )
            .map_err(|_| Unspecified)
    }
}

/// HMAC key and CBC key schedule both live in AWS-LC structures
/// (`HMAC_CTX`, `AES_KEY`), cleansed on drop.
struct Fernet {
    hmac: hmac::Key,
    cbc: PaddedBlockDecryptingKey,
}

impl FernetPrimitives for Fernet {
    fn verify_hmac_sha256(
        &self,
        data: &[u8],
        tag: &[u8; HMAC_SHA256_LEN],
    ) -> Result<(), Unspecified> {
        // Compares in constant time inside aws-lc-rs.
        hmac::verify(&self.hmac, data, tag).map_err(|_| Unspecified)
    }

    fn aes128_cbc_decrypt_in_place(
        &self,
        iv: &[u8; AES_BLOCK_LEN],
        in_out: &mut [u8],
    ) -> Result<usize, Unspecified> {
        self.cbc
            .decrypt(in_out, DecryptionContext::Iv128((*iv).into()))
            .map(|plain| plain.len())
            .map_err(|_| Unspecified)
    }
}
