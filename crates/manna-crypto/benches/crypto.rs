//! Field-crypto benchmarks: manna's envelope on each crypto provider (text
//! form `manna-<provider>`, binary form `manna-binary-<provider>`) against
//! the raw AES-256-GCM primitives of RustCrypto `aes-gcm`, `aws-lc-rs` and
//! `ring` in the same group, round trips, and legacy Fernet per provider.
//!
//! Run: `cargo bench -p manna-crypto --features aws-lc-rs --bench crypto`
//! (without the feature, the aws-lc-rs rows are left out).
//! Compare with Python: `python3 ../shared/peers/crypto_peer.py 64`.

#![allow(missing_docs)] // criterion_group! generates an undocumented fn

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use manna_crypto::provider::{self, Provider};
use manna_crypto::{AesKey, FernetKey, Keyring};
use rand::RngCore;

const SIZES: [usize; 3] = [64, 1024, 16 * 1024];
const AAD: &[u8] = b"plaid_items.access_token:42";
const KEY: [u8; 32] = [7; 32];
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

fn keyring(provider: &'static dyn Provider) -> Keyring {
    Keyring::builder()
        .provider(provider)
        .primary(AesKey::from_bytes(KEY))
        .fernet(FernetKey::from_bytes([9; 32]))
        .build()
        .expect("valid keyring")
}

fn random_nonce() -> [u8; NONCE_LEN] {
    let mut nonce = [0u8; NONCE_LEN];
    rand::thread_rng().fill_bytes(&mut nonce);
    nonce
}

/// A raw AES-256-GCM primitive as a caller would use it: a random nonce
/// from the same RNG manna uses, output `nonce || ct || tag` in a new
/// `Vec`; decryption of such a blob into a new `Vec`.
trait Raw {
    fn name(&self) -> &'static str;
    fn encrypt(&self, pt: &[u8]) -> Vec<u8>;
    fn decrypt(&self, blob: &[u8]) -> Vec<u8>;
}

struct RawAesGcm(aes_gcm::Aes256Gcm);

impl Raw for RawAesGcm {
    fn name(&self) -> &'static str {
        "aes-gcm"
    }
    fn encrypt(&self, pt: &[u8]) -> Vec<u8> {
        use aes_gcm::aead::{Aead, Payload};
        let nonce = random_nonce();
        let ct = self
            .0
            .encrypt((&nonce).into(), Payload { msg: pt, aad: AAD })
            .expect("encrypt");
        let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        out
    }
    fn decrypt(&self, blob: &[u8]) -> Vec<u8> {
        use aes_gcm::aead::{Aead, Payload};
        let nonce: &[u8; NONCE_LEN] = blob[..NONCE_LEN].try_into().expect("nonce");
        self.0
            .decrypt(
                nonce.into(),
                Payload {
                    msg: &blob[NONCE_LEN..],
                    aad: AAD,
                },
            )
            .expect("decrypt")
    }
}

struct RawRing(ring::aead::LessSafeKey);

impl Raw for RawRing {
    fn name(&self) -> &'static str {
        "ring"
    }
    fn encrypt(&self, pt: &[u8]) -> Vec<u8> {
        use ring::aead::{Aad, Nonce};
        let nonce = random_nonce();
        let mut out = Vec::with_capacity(NONCE_LEN + pt.len() + TAG_LEN);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(pt);
        let tag = self
            .0
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(AAD),
                &mut out[NONCE_LEN..],
            )
            .expect("encrypt");
        out.extend_from_slice(tag.as_ref());
        out
    }
    fn decrypt(&self, blob: &[u8]) -> Vec<u8> {
        use ring::aead::{Aad, Nonce};
        let nonce: [u8; NONCE_LEN] = blob[..NONCE_LEN].try_into().expect("nonce");
        let mut buf = blob[NONCE_LEN..].to_vec();
        let len = self
            .0
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(AAD),
                &mut buf,
            )
            .expect("decrypt")
            .len();
        buf.truncate(len);
        buf
    }
}

#[cfg(feature = "aws-lc-rs")]
struct RawAwsLc(aws_lc_rs::aead::LessSafeKey);

#[cfg(feature = "aws-lc-rs")]
impl Raw for RawAwsLc {
    fn name(&self) -> &'static str {
        "aws-lc-rs"
    }
    fn encrypt(&self, pt: &[u8]) -> Vec<u8> {
        use aws_lc_rs::aead::{Aad, Nonce};
        let nonce = random_nonce();
        let mut out = Vec::with_capacity(NONCE_LEN + pt.len() + TAG_LEN);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(pt);
        let tag = self
            .0
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(AAD),
                &mut out[NONCE_LEN..],
            )
            .expect("encrypt");
        out.extend_from_slice(tag.as_ref());
        out
    }
    fn decrypt(&self, blob: &[u8]) -> Vec<u8> {
        use aws_lc_rs::aead::{Aad, Nonce};
        let nonce: [u8; NONCE_LEN] = blob[..NONCE_LEN].try_into().expect("nonce");
        let (ct, tag) = blob[NONCE_LEN..].split_at(blob.len() - NONCE_LEN - TAG_LEN);
        // Out of place, the cheapest way aws-lc-rs offers.
        let mut out = vec![0u8; ct.len()];
        self.0
            .open_separate_gather(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(AAD),
                ct,
                tag,
                &mut out,
            )
            .expect("decrypt");
        out
    }
}

fn raws() -> Vec<Box<dyn Raw>> {
    use aes_gcm::KeyInit as _;
    let ring_key = ring::aead::UnboundKey::new(&ring::aead::AES_256_GCM, &KEY).expect("key");
    vec![
        Box::new(RawAesGcm(aes_gcm::Aes256Gcm::new(&KEY.into()))),
        #[cfg(feature = "aws-lc-rs")]
        Box::new(RawAwsLc(aws_lc_rs::aead::LessSafeKey::new(
            aws_lc_rs::aead::UnboundKey::new(&aws_lc_rs::aead::AES_256_GCM, &KEY).expect("key"),
        ))),
        Box::new(RawRing(ring::aead::LessSafeKey::new(ring_key))),
    ]
}

/// The envelope on every compiled provider, with its id suffix.
fn keyrings() -> Vec<(&'static str, Keyring)> {
    provider::all()
        .into_iter()
        .map(|p| (p.name(), keyring(p)))
        .collect()
}

fn encrypt(c: &mut Criterion) {
    let keyrings = keyrings();
    let raws = raws();
    let mut group = c.benchmark_group("encrypt");
    for size in SIZES {
        let pt = vec![0x5a; size];
        group.throughput(Throughput::Bytes(size as u64));
        for (name, keyring) in &keyrings {
            group.bench_with_input(
                BenchmarkId::new(format!("manna-{name}"), size),
                &pt,
                |b, pt| b.iter(|| keyring.encrypt(black_box(pt), AAD).expect("encrypt")),
            );
            group.bench_with_input(
                BenchmarkId::new(format!("manna-binary-{name}"), size),
                &pt,
                |b, pt| {
                    b.iter(|| {
                        keyring
                            .encrypt_to_bytes(black_box(pt), AAD)
                            .expect("encrypt")
                    })
                },
            );
        }
        for raw in &raws {
            group.bench_with_input(BenchmarkId::new(raw.name(), size), &pt, |b, pt| {
                b.iter(|| raw.encrypt(black_box(pt)))
            });
        }
    }
    group.finish();
}

fn decrypt(c: &mut Criterion) {
    let keyrings = keyrings();
    let raws = raws();
    let mut group = c.benchmark_group("decrypt");
    for size in SIZES {
        let pt = vec![0x5a; size];
        group.throughput(Throughput::Bytes(size as u64));
        for (name, keyring) in &keyrings {
            let token = keyring.encrypt(&pt, AAD).expect("encrypt");
            group.bench_with_input(
                BenchmarkId::new(format!("manna-{name}"), size),
                &token,
                |b, token| b.iter(|| keyring.decrypt(black_box(token), AAD).expect("decrypt")),
            );
            let binary = keyring.encrypt_to_bytes(&pt, AAD).expect("encrypt");
            group.bench_with_input(
                BenchmarkId::new(format!("manna-binary-{name}"), size),
                &binary,
                |b, v| b.iter(|| keyring.decrypt_bytes(black_box(v), AAD).expect("decrypt")),
            );
        }
        for raw in &raws {
            let blob = raw.encrypt(&pt);
            group.bench_with_input(BenchmarkId::new(raw.name(), size), &blob, |b, blob| {
                b.iter(|| raw.decrypt(black_box(blob)))
            });
        }
    }
    group.finish();
}

fn round_trip(c: &mut Criterion) {
    let keyrings = keyrings();
    let raws = raws();
    let mut group = c.benchmark_group("round_trip");
    for size in SIZES {
        let pt = vec![0x5a; size];
        group.throughput(Throughput::Bytes(size as u64));
        for (name, keyring) in &keyrings {
            group.bench_with_input(
                BenchmarkId::new(format!("manna-{name}"), size),
                &pt,
                |b, pt| {
                    b.iter(|| {
                        let token = keyring.encrypt(black_box(pt), AAD).expect("encrypt");
                        keyring.decrypt(&token, AAD).expect("decrypt")
                    })
                },
            );
            group.bench_with_input(
                BenchmarkId::new(format!("manna-binary-{name}"), size),
                &pt,
                |b, pt| {
                    b.iter(|| {
                        let value = keyring
                            .encrypt_to_bytes(black_box(pt), AAD)
                            .expect("encrypt");
                        keyring.decrypt_bytes(&value, AAD).expect("decrypt")
                    })
                },
            );
        }
        for raw in &raws {
            group.bench_with_input(BenchmarkId::new(raw.name(), size), &pt, |b, pt| {
                b.iter(|| raw.decrypt(&raw.encrypt(black_box(pt))))
            });
        }
    }
    group.finish();
}

fn fernet(c: &mut Criterion) {
    let keyrings = keyrings();
    let mut group = c.benchmark_group("fernet");
    for size in SIZES {
        let pt = vec![0x5a; size];
        group.throughput(Throughput::Bytes(size as u64));
        for (name, keyring) in &keyrings {
            let token = keyring.encrypt_fernet(&pt).expect("encrypt");
            group.bench_with_input(
                BenchmarkId::new(format!("decrypt-{name}"), size),
                &token,
                |b, token| b.iter(|| keyring.decrypt(black_box(token), b"").expect("decrypt")),
            );
        }
        // Encryption is the `fernet` crate's whatever the provider.
        let keyring = &keyrings[0].1;
        group.bench_with_input(BenchmarkId::new("encrypt", size), &pt, |b, pt| {
            b.iter(|| keyring.encrypt_fernet(black_box(pt)).expect("encrypt"))
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default();
    targets = encrypt, decrypt, round_trip, fernet
}
criterion_main!(benches);
