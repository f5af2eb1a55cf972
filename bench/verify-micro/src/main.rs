//! Signature-verification micro-benchmark for jwt-guard's core, runnable natively
//! (`cargo run --release -p verify-micro`) and as wasm32-wasip1 under node's V8 (`make bench-verify`).
//!
//! Keys are fixed (derived from constants), signatures are made at start-up and checked to verify
//! before anything is timed. Cases are interleaved: each round times every case once (a batch of
//! iterations sized to ~20 ms during calibration); the table shows the median and minimum over the
//! rounds, in µs per operation. Usage: `verify-micro [ROUNDS]` (default 7).

use jwt_guard::crypto::{verify, Alg, PublicKey};
use jwt_guard::p256_fast::P256Verifier;
use jwt_guard::rsa_fast::RsaKey;
use p256::ecdsa::signature::Signer as _;
use rsa::pkcs8::DecodePrivateKey as _;
use rsa::rand_core::{CryptoRng, RngCore};
use rsa::signature::{RandomizedSigner as _, SignatureEncoding as _};
use rsa::traits::PublicKeyParts as _;
use std::hint::black_box;
use std::time::Instant;

/// A JWS signing input of typical size (header.payload of a small access token).
const SIGNING_INPUT: &[u8] = b"eyJhbGciOiJFUzI1NiIsImtpZCI6ImJlbmNoIiwidHlwIjoiSldUIn0.eyJpc3MiOiJodHRwczovL2lkcC5leGFtcGxlIiwic3ViIjoidXNlci0xMjMiLCJhdWQiOiJhcGkiLCJleHAiOjE3MDAwMDM2MDAsImlhdCI6MTcwMDAwMDAwMCwic2NvcGUiOiJyZWFkIHdyaXRlIn0";

/// The harness's fixture RSA key (2048 bits).
const RSA_PEM: &str = include_str!("../../../wasm-test-harness/fixtures/rsa-1.pem");

/// Deterministic bytes for PSS salts (the benchmark needs reproducible inputs, not secrecy).
struct FixedRng(u64);

impl RngCore for FixedRng {
    fn next_u32(&mut self) -> u32 {
        self.next_u64() as u32
    }
    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for b in dest {
            *b = self.next_u64() as u8;
        }
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rsa::rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}
impl CryptoRng for FixedRng {}

struct Case {
    name: &'static str,
    run: Box<dyn Fn() -> bool>,
    iters: u32,
    samples: Vec<f64>,
}

fn case(name: &'static str, run: impl Fn() -> bool + 'static) -> Case {
    Case {
        name,
        run: Box::new(run),
        iters: 1,
        samples: Vec::new(),
    }
}

/// µs per iteration of `iters` runs; Err if a run returned false.
fn time(c: &Case, iters: u32) -> Result<f64, String> {
    let start = Instant::now();
    for _ in 0..iters {
        if !black_box((c.run)()) {
            return Err(format!("{}: returned false", c.name));
        }
    }
    Ok(start.elapsed().as_secs_f64() * 1e6 / f64::from(iters))
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

fn main() -> Result<(), String> {
    let rounds: usize = match std::env::args().nth(1) {
        Some(a) => a.parse().map_err(|e| format!("ROUNDS {a:?}: {e}"))?,
        None => 7,
    };
    let platform = if cfg!(target_arch = "wasm32") {
        "wasm32-wasip1 (node V8)"
    } else {
        "native"
    };

    // The generator table is built once per process: time that first, on its own.
    let start = Instant::now();
    P256Verifier::warm_up();
    let g_build_us = start.elapsed().as_secs_f64() * 1e6;

    // ES256: a fixed key, one signature.
    let ec_secret = [0x42u8; 32];
    let ec = p256::ecdsa::SigningKey::from_slice(&ec_secret).map_err(|e| e.to_string())?;
    let ec_vk = *ec.verifying_key();
    let ec_sig: p256::ecdsa::Signature = ec.sign(SIGNING_INPUT);
    let ec_sig: Vec<u8> = ec_sig.to_bytes().to_vec();
    let ec_key = PublicKey::P256(ec_vk);
    let fast = P256Verifier::new(&ec_vk);

    // RS256 / PS256 with the fixture key.
    let rsa_sk = rsa::RsaPrivateKey::from_pkcs8_pem(RSA_PEM).map_err(|e| e.to_string())?;
    let rs_sig = rsa::pkcs1v15::SigningKey::<rsa::sha2::Sha256>::new(rsa_sk.clone())
        .sign(SIGNING_INPUT)
        .to_vec();
    let ps_sig = rsa::pss::SigningKey::<rsa::sha2::Sha256>::new(rsa_sk.clone())
        .sign_with_rng(&mut FixedRng(0x9e37_79b9_7f4a_7c15), SIGNING_INPUT)
        .to_vec();
    let rsa_pub = rsa_sk.to_public_key();
    let rsa_key = RsaKey::new(&rsa_pub.n().to_bytes_be(), &rsa_pub.e().to_bytes_be())
        .map_err(|e| e.to_string())?;
    let rsa_key = PublicKey::Rsa(rsa_key);

    // EdDSA.
    let ed = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new([0x17; 32]));
    let ed_sig = ed.sk.sign(SIGNING_INPUT, None).to_vec();
    let ed_key = PublicKey::Ed25519(ed.pk);

    let mut cases = vec![
        {
            let (k, s) = (ec_key.clone(), ec_sig.clone());
            case("ES256 today (crypto::verify)", move || {
                verify(Alg::ES256, &k, SIGNING_INPUT, &s)
            })
        },
        {
            let (v, s) = (fast.clone(), ec_sig.clone());
            case("ES256 P256Verifier::verify", move || {
                v.verify(SIGNING_INPUT, &s)
            })
        },
        case("P256Verifier::new (per key)", move || {
            black_box(P256Verifier::new(black_box(&ec_vk))).table_bytes() > 0
        }),
        {
            let (k, s) = (rsa_key.clone(), rs_sig);
            case("RS256 crypto::verify", move || {
                verify(Alg::RS256, &k, SIGNING_INPUT, &s)
            })
        },
        {
            let (k, s) = (rsa_key, ps_sig);
            case("PS256 crypto::verify", move || {
                verify(Alg::PS256, &k, SIGNING_INPUT, &s)
            })
        },
        case("EdDSA crypto::verify", move || {
            verify(Alg::EdDSA, &ed_key, SIGNING_INPUT, &ed_sig)
        }),
    ];

    // Calibrate: double the batch until it takes ~20 ms (the first batches also warm up / tier up).
    for c in &mut cases {
        let mut iters = 1u32;
        while time(c, iters)? * f64::from(iters) < 20_000.0 && iters < 1 << 16 {
            iters *= 2;
        }
        c.iters = iters;
    }
    for _ in 0..rounds {
        for c in &mut cases {
            let us = time(c, c.iters)?;
            c.samples.push(us);
        }
    }

    println!("verify-micro, {platform}: µs per operation, {rounds} interleaved rounds");
    println!(
        "{:<32} {:>10} {:>10} {:>7}",
        "case", "median", "min", "iters"
    );
    for c in &cases {
        let min = c.samples.iter().copied().fold(f64::INFINITY, f64::min);
        println!(
            "{:<32} {:>10.1} {:>10.1} {:>7}",
            c.name,
            median(&c.samples),
            min,
            c.iters
        );
    }
    println!(
        "{:<32} {:>10.1} {:>10} {:>7}",
        "generator table (once)", g_build_us, "", 1
    );
    let today = median(&cases[0].samples);
    let now = median(&cases[1].samples);
    println!(
        "ES256 speed-up {:.1}x; key table {} B, generator table {} B",
        today / now,
        fast.table_bytes(),
        P256Verifier::generator_table_bytes()
    );
    Ok(())
}
