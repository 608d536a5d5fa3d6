//! The RustCrypto provider: `aes-gcm`, `aes` + `cbc`, `hmac` + `sha2`.

use aes::cipher::block_padding::Pkcs7;
use aes::cipher::{BlockDecryptMut as _, InnerIvInit as _, KeyInit as _};
use aes_gcm::aead::AeadInPlace as _;
use aes_gcm::Aes256Gcm;
use hmac::{Hmac, Mac as _};
use sha2::Sha256;
use zeroize::Zeroizing;

use super::{
    Aes256GcmKey, FernetPrimitives, Provider, Unspecified, AES_BLOCK_LEN, FERNET_HALF_LEN,
    HMAC_SHA256_LEN,
};
use crate::envelope::{NONCE_LEN, TAG_LEN};
use crate::key::KEY_LEN;

/// The RustCrypto crates: pure Rust (with AES-NI/CLMUL or ARMv8 crypto
/// instructions detected at run time), no C toolchain, builds for every
/// target `rustc` does. Key schedules and GHASH keys are wiped on drop (the
/// workspace turns on the crates' `zeroize` features).
#[derive(Debug, Clone, Copy, Default)]
pub struct RustCrypto;

impl Provider for RustCrypto {
    fn name(&self) -> &'static str {
        "rustcrypto"
    }

    fn aes256gcm(&self, key: &[u8; KEY_LEN]) -> Box<dyn Aes256GcmKey> {
        Box::new(Gcm(Aes256Gcm::new(key.into())))
    }

    fn fernet(
        &self,
        signing_key: &[u8; FERNET_HALF_LEN],
        encryption_key: &[u8; FERNET_HALF_LEN],
    ) -> Box<dyn FernetPrimitives> {
        Box::new(Fernet {
            signing_key: Zeroizing::new(*signing_key),
            aes: aes::Aes128::new(encryption_key.into()),
        })
    }
}

struct Gcm(Aes256Gcm);

impl Aes256GcmKey for Gcm {
    fn seal_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        in_out: &mut [u8],
    ) -> Result<[u8; TAG_LEN], Unspecified> {
        self.0
            .encrypt_in_place_detached(nonce.into(), aad, in_out)
            .map(Into::into)
            .map_err(|_| Unspecified)
    }

    fn open_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        in_out: &mut [u8],
    ) -> Result<usize, Unspecified> {
        let ct_len = in_out.len().checked_sub(TAG_LEN).ok_or(Unspecified)?;
        let (ct, tag) = in_out.split_at_mut(ct_len);
        let tag: &[u8] = tag;
        self.0
            .decrypt_in_place_detached(nonce.into(), aad, ct, tag.into())
            .map_err(|_| Unspecified)?;
        Ok(ct_len)
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
        // `aes-gcm` 0.10 only decrypts in place: copy, then open.
        out.copy_from_slice(ciphertext);
        self.0
            .decrypt_in_place_detached(nonce.into(), aad, out, tag.into())
            .map_err(|_| Unspecified)
    }
}

/// The signing key stays as bytes (the `hmac` crate cannot wipe its keyed
/// state, so that state only lives for one verification); the AES-128 key
/// schedule is wiped on drop.
struct Fernet {
    signing_key: Zeroizing<[u8; FERNET_HALF_LEN]>,
    aes: aes::Aes128,
}

impl FernetPrimitives for Fernet {
    fn verify_hmac_sha256(
        &self,
        data: &[u8],
        tag: &[u8; HMAC_SHA256_LEN],
    ) -> Result<(), Unspecified> {
        let mut mac = <Hmac<Sha256> as hmac::Mac>::new_from_slice(&*self.signing_key)
            .map_err(|_| Unspecified)?;
        mac.update(data);
        // `verify_slice` compares in constant time.
        mac.verify_slice(tag).map_err(|_| Unspecified)
    }

    fn aes128_cbc_decrypt_in_place(
        &self,
        iv: &[u8; AES_BLOCK_LEN],
        in_out: &mut [u8],
    ) -> Result<usize, Unspecified> {
        cbc::Decryptor::<aes::Aes128>::inner_iv_init(self.aes.clone(), iv.into())
            .decrypt_padded_mut::<Pkcs7>(in_out)
            .map(|plain| plain.len())
            .map_err(|_| Unspecified)
    }
}
