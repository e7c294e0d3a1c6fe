//! The server's share of each key exchange gatehouse offers, without the
//! SSH framing: what one login costs in arithmetic. curve25519 is one
//! X25519 key pair and one shared point; the hybrids add an encapsulation
//! to the client's post-quantum key (sntrup761, ML-KEM-768) and a hash.
//! The same crates the vendored russh uses (patch 0009 for sntrup761).
//!
//! `cargo bench -p gatehouse-jump --bench kex` (add `-- --quick` for a
//! fast pass); `benches/run micro` runs it with `--quick` and tabulates it.

use std::{hint::black_box, time::Duration};

use criterion::{Criterion, criterion_group, criterion_main};
use curve25519_dalek::montgomery::MontgomeryPoint;
use ml_kem::{Kem, KeyExport, MlKem768, TryKeyInit, kem::Encapsulate};
use sha2::{Digest, Sha256, Sha512};

/// The server's X25519 half: a fresh key pair and the shared point.
fn x25519(client: &MontgomeryPoint) -> (MontgomeryPoint, MontgomeryPoint) {
    let secret = rand::random::<[u8; 32]>();
    (
        MontgomeryPoint::mul_base_clamped(secret),
        client.mul_clamped(secret),
    )
}

fn kex(c: &mut Criterion) {
    let client_x25519 = MontgomeryPoint::mul_base_clamped(rand::random::<[u8; 32]>());
    let (sntrup_public, _) = sntrup761::generate_key(rand::rng());
    let sntrup_bytes = sntrup_public.as_ref().to_vec();
    let (_, mlkem_public) = ml_kem::MlKem768::generate_keypair_from_rng(&mut rand::rng());
    let mlkem_bytes = mlkem_public.to_bytes().to_vec();

    let mut group = c.benchmark_group("server key exchange");
    group.measurement_time(Duration::from_secs(3));
    group.bench_function("curve25519-sha256", |b| {
        b.iter(|| black_box(x25519(black_box(&client_x25519))))
    });
    group.bench_function("sntrup761x25519-sha512", |b| {
        b.iter(|| {
            let key = sntrup761::EncapsulationKey::try_from(black_box(&sntrup_bytes[..]))
                .expect("a sntrup761 key");
            let (ciphertext, shared) = key.encapsulate(rand::rng());
            let (public, point) = x25519(&client_x25519);
            let k = Sha512::new()
                .chain_update(shared.as_ref())
                .chain_update(point.0)
                .finalize();
            black_box((ciphertext, public, k))
        })
    });
    group.bench_function("mlkem768x25519-sha256", |b| {
        b.iter(|| {
            let key = ml_kem::kem::EncapsulationKey::<MlKem768>::new_from_slice(black_box(
                &mlkem_bytes[..],
            ))
            .expect("an ML-KEM-768 key");
            let (ciphertext, shared) = key.encapsulate_with_rng(&mut rand::rng());
            let (public, point) = x25519(&client_x25519);
            let k = Sha256::new()
                .chain_update(shared)
                .chain_update(point.0)
                .finalize();
            black_box((ciphertext, public, k))
        })
    });
    group.finish();
}

criterion_group!(benches, kex);
criterion_main!(benches);
