//! Field-crypto benchmarks: manna's envelope (text form `manna`, binary
//! form `manna-binary`) against the raw `aes-gcm` primitive in the same
//! group, round trips, and legacy Fernet.
//!
//! Run: `cargo bench -p manna-crypto --bench crypto`
//! Compare with Python: `python3 ../shared/peers/crypto_peer.py 64`.

#![allow(missing_docs)] // criterion_group! generates an undocumented fn

use std::hint::black_box;

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use manna_crypto::{AesKey, FernetKey, Keyring};
use rand::RngCore;

const SIZES: [usize; 3] = [64, 1024, 16 * 1024];
const AAD: &[u8] = b"plaid_items.access_token:42";
const KEY: [u8; 32] = [7; 32];

fn keyring() -> Keyring {
    Keyring::builder()
        .primary(AesKey::from_bytes(KEY))
        .fernet(FernetKey::from_bytes([9; 32]))
        .build()
        .expect("valid keyring")
}

/// The raw primitive as a caller would use it: a random nonce from the same
/// RNG manna uses, then `Aes256Gcm::encrypt`, output `nonce || ct || tag`.
fn raw_encrypt(cipher: &Aes256Gcm, pt: &[u8]) -> Vec<u8> {
    let mut nonce = [0u8; 12];
    rand::thread_rng().fill_bytes(&mut nonce);
    let ct = cipher
        .encrypt(Nonce::from_slice(&nonce), Payload { msg: pt, aad: AAD })
        .expect("encrypt");
    let mut out = Vec::with_capacity(12 + ct.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    out
}

fn raw_decrypt(cipher: &Aes256Gcm, blob: &[u8]) -> Vec<u8> {
    cipher
        .decrypt(
            Nonce::from_slice(&blob[..12]),
            Payload {
                msg: &blob[12..],
                aad: AAD,
            },
        )
        .expect("decrypt")
}

fn encrypt(c: &mut Criterion) {
    let keyring = keyring();
    let cipher = Aes256Gcm::new(&KEY.into());
    let mut group = c.benchmark_group("encrypt");
    for size in SIZES {
        let pt = vec![0x5a; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("manna", size), &pt, |b, pt| {
            b.iter(|| keyring.encrypt(black_box(pt), AAD).expect("encrypt"))
        });
        group.bench_with_input(BenchmarkId::new("aes-gcm", size), &pt, |b, pt| {
            b.iter(|| raw_encrypt(&cipher, black_box(pt)))
        });
        group.bench_with_input(BenchmarkId::new("manna-binary", size), &pt, |b, pt| {
            b.iter(|| {
                keyring
                    .encrypt_to_bytes(black_box(pt), AAD)
                    .expect("encrypt")
            })
        });
    }
    group.finish();
}

fn decrypt(c: &mut Criterion) {
    let keyring = keyring();
    let cipher = Aes256Gcm::new(&KEY.into());
    let mut group = c.benchmark_group("decrypt");
    for size in SIZES {
        let pt = vec![0x5a; size];
        let token = keyring.encrypt(&pt, AAD).expect("encrypt");
        let blob = raw_encrypt(&cipher, &pt);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("manna", size), &token, |b, token| {
            b.iter(|| keyring.decrypt(black_box(token), AAD).expect("decrypt"))
        });
        group.bench_with_input(BenchmarkId::new("aes-gcm", size), &blob, |b, blob| {
            b.iter(|| raw_decrypt(&cipher, black_box(blob)))
        });
        let binary = keyring.encrypt_to_bytes(&pt, AAD).expect("encrypt");
        group.bench_with_input(BenchmarkId::new("manna-binary", size), &binary, |b, v| {
            b.iter(|| keyring.decrypt_bytes(black_box(v), AAD).expect("decrypt"))
        });
    }
    group.finish();
}

fn round_trip(c: &mut Criterion) {
    let keyring = keyring();
    let cipher = Aes256Gcm::new(&KEY.into());
    let mut group = c.benchmark_group("round_trip");
    for size in SIZES {
        let pt = vec![0x5a; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("manna", size), &pt, |b, pt| {
            b.iter(|| {
                let token = keyring.encrypt(black_box(pt), AAD).expect("encrypt");
                keyring.decrypt(&token, AAD).expect("decrypt")
            })
        });
        group.bench_with_input(BenchmarkId::new("aes-gcm", size), &pt, |b, pt| {
            b.iter(|| raw_decrypt(&cipher, &raw_encrypt(&cipher, black_box(pt))))
        });
        group.bench_with_input(BenchmarkId::new("fernet", size), &pt, |b, pt| {
            b.iter(|| {
                let token = keyring.encrypt_fernet(black_box(pt)).expect("encrypt");
                keyring.decrypt(&token, b"").expect("decrypt")
            })
        });
    }
    group.finish();
}

fn fernet(c: &mut Criterion) {
    let keyring = keyring();
    let mut group = c.benchmark_group("fernet");
    for size in SIZES {
        let pt = vec![0x5a; size];
        let token = keyring.encrypt_fernet(&pt).expect("encrypt");
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("decrypt", size), &token, |b, token| {
            b.iter(|| keyring.decrypt(black_box(token), b"").expect("decrypt"))
        });
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
