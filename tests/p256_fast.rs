//! `p256_fast::P256Verifier` against today's ES256 path (`crypto::verify` with a P-256 key, i.e. the
//! `p256` crate through jwt-compact): same verdict on Wycheproof's P-256/SHA-256 P1363 vectors, on
//! random valid signatures and on mutations of them, and false for malformed signatures.

// Tests panic on purpose; the crate-wide clippy denials are for the filter code.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use arbtest::arbitrary::{Result as ArbResult, Unstructured};
use common::{hex, read_text};
use jwt_guard::p256_fast::P256Verifier;
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use serde_json::Value;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The group order n, big-endian.
const N: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
];

/// The reference verdict: the `p256` crate's own ECDSA verification (the in-wasm ES256 path before
/// `p256_fast`), which also accepts high-S signatures.
fn reference(key: &VerifyingKey, msg: &[u8], sig: &[u8]) -> bool {
    use p256::ecdsa::signature::Verifier as _;
    sig.len() == 64 && Signature::from_slice(sig).is_ok_and(|s| key.verify(msg, &s).is_ok())
}

/// Big-endian 256-bit arithmetic for building edge-case scalars.
fn add_be(a: &[u8; 32], b: &[u8; 32]) -> [u8; 32] {
    let mut out = [0u8; 32];
    let mut carry = 0u16;
    for i in (0..32).rev() {
        let v = u16::from(a[i]) + u16::from(b[i]) + carry;
        out[i] = v as u8;
        carry = v >> 8;
    }
    out
}

fn sub_be(a: &[u8; 32], b: &[u8; 32]) -> [u8; 32] {
    let mut out = [0u8; 32];
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let v = i16::from(a[i]) - i16::from(b[i]) - borrow;
        out[i] = v.rem_euclid(256) as u8;
        borrow = i16::from(v < 0);
    }
    out
}

fn be(v: u8) -> [u8; 32] {
    let mut out = [0u8; 32];
    out[31] = v;
    out
}

fn join(r: &[u8; 32], s: &[u8; 32]) -> Vec<u8> {
    [r.as_slice(), s.as_slice()].concat()
}

#[test]
fn wycheproof_p1363_vectors_agree_with_the_reference() {
    let text = read_text("tests/vectors/wycheproof/ecdsa_secp256r1_sha256_p1363_test.json");
    let doc: Value = serde_json::from_str(&text).unwrap();
    let (mut ran, mut valid, mut invalid) = (0, 0, 0);
    let mut failures = Vec::new();
    for g in doc["testGroups"].as_array().unwrap() {
        let point = hex(g["publicKey"]["uncompressed"].as_str().unwrap());
        let key = VerifyingKey::from_sec1_bytes(&point).unwrap();
        let fast = P256Verifier::new(&key);
        for t in g["tests"].as_array().unwrap() {
            let id = t["tcId"].as_u64().unwrap();
            let msg = hex(t["msg"].as_str().unwrap());
            let sig = hex(t["sig"].as_str().unwrap());
            let got = fast.verify(&msg, &sig);
            let want = reference(&key, &msg, &sig);
            ran += 1;
            match t["result"].as_str().unwrap() {
                "valid" => {
                    valid += 1;
                    if !got {
                        failures.push(format!("tc {id}: valid, fast says false"));
                    }
                }
                "invalid" => {
                    invalid += 1;
                    if got {
                        failures.push(format!("tc {id}: invalid, fast says true"));
                    }
                }
                // The P-256/SHA-256 P1363 file has none; if a later copy does, agreement suffices.
                _ => {}
            }
            if got != want {
                failures.push(format!("tc {id}: fast {got}, reference {want}"));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    assert_eq!(ran, doc["numberOfTests"].as_u64().unwrap());
    assert!(
        valid > 100 && invalid > 50,
        "valid {valid}, invalid {invalid}"
    );
}

/// A signature's variants that must get the reference's verdict (most are invalid, a few stay valid).
fn variants(sig: &[u8; 64], u: &mut Unstructured) -> ArbResult<Vec<Vec<u8>>> {
    let r: [u8; 32] = sig[..32].try_into().unwrap();
    let s: [u8; 32] = sig[32..].try_into().unwrap();
    let n_plus_1 = add_be(&N, &be(1));
    let specials = [be(0), N, n_plus_1, [0xff; 32], be(1), sub_be(&N, &be(1))];
    let mut out = vec![
        join(&s, &r),
        join(&r, &sub_be(&N, &s)), // (r, n − s): the high/low-S twin, valid too
        join(&add_be(&r, &N), &s), // r + n (may wrap or exceed n)
        join(&r, &add_be(&s, &N)),
    ];
    for x in &specials {
        out.push(join(x, &s));
        out.push(join(&r, x));
    }
    for _ in 0..4 {
        let mut m = sig.to_vec();
        let bit = u.int_in_range(0..=511usize)?;
        m[bit / 8] ^= 1 << (bit % 8);
        out.push(m);
        let mut m = sig.to_vec();
        let i = u.int_in_range(0..=63usize)?;
        m[i] = u.arbitrary()?;
        out.push(m);
    }
    Ok(out)
}

#[test]
fn random_keys_and_messages_agree_with_the_reference() {
    let cases = AtomicUsize::new(0);
    let test = arbtest::arbtest(|u| {
        let secret: [u8; 32] = u.arbitrary()?;
        let Ok(signing) = SigningKey::from_slice(&secret) else {
            return Ok(()); // zero or ≥ n: not a key
        };
        let key = *signing.verifying_key();
        let fast = P256Verifier::new(&key);
        let msg: Vec<u8> = u.arbitrary()?;
        let sig: Signature = signing.sign(&msg);
        let sig: [u8; 64] = sig.to_bytes().into();
        cases.fetch_add(1, Ordering::Relaxed);
        assert!(fast.verify(&msg, &sig), "valid signature refused");
        assert!(reference(&key, &msg, &sig));

        // A clone shares the table and verifies the same.
        assert!(fast.clone().verify(&msg, &sig));

        for v in variants(&sig, u)? {
            assert_eq!(
                fast.verify(&msg, &v),
                reference(&key, &msg, &v),
                "sig {v:02x?}"
            );
        }
        // Message mutations: a flipped bit, a changed byte, one byte more or less.
        let mut msgs = Vec::new();
        if !msg.is_empty() {
            let mut m = msg.clone();
            let bit = u.int_in_range(0..=msg.len() * 8 - 1)?;
            m[bit / 8] ^= 1 << (bit % 8);
            msgs.push(m);
            let mut m = msg.clone();
            let i = u.int_in_range(0..=msg.len() - 1)?;
            m[i] = m[i].wrapping_add(u.int_in_range(1..=255)?);
            msgs.push(m);
            msgs.push(msg[..msg.len() - 1].to_vec());
        }
        let mut longer = msg.clone();
        longer.push(u.arbitrary()?);
        msgs.push(longer);
        for m in msgs {
            let want = reference(&key, &m, &sig);
            assert!(!want, "mutated message verified by the reference");
            assert_eq!(fast.verify(&m, &sig), want);
        }
        Ok(())
    });
    // ARBTEST_BUDGET_MS=60000 for a longer run.
    if std::env::var_os("ARBTEST_BUDGET_MS").is_some() {
        test.run();
    } else {
        test.budget_ms(3_000).run();
    }
    let cases = cases.load(Ordering::Relaxed);
    eprintln!("{cases} random keys, each with ~30 signature and message variants");
    assert!(cases > 0);
}

#[test]
fn high_s_signatures_are_accepted_like_the_reference() {
    let signing = SigningKey::from_slice(&[7u8; 32]).unwrap();
    let key = *signing.verifying_key();
    let fast = P256Verifier::new(&key);
    for i in 0..8u8 {
        let msg = [b'm', i];
        let sig: Signature = signing.sign(&msg);
        let bytes: [u8; 64] = sig.to_bytes().into();
        let r: [u8; 32] = bytes[..32].try_into().unwrap();
        let s: [u8; 32] = bytes[32..].try_into().unwrap();
        let twin = join(&r, &sub_be(&N, &s));
        assert!(reference(&key, &msg, &twin));
        assert!(fast.verify(&msg, &twin));
        assert!(fast.verify(&msg, &bytes));
    }
}

#[test]
fn wrong_lengths_are_false() {
    let signing = SigningKey::from_slice(&[3u8; 32]).unwrap();
    let fast = P256Verifier::new(signing.verifying_key());
    let msg = b"header.payload";
    let sig: Signature = signing.sign(msg);
    let sig: [u8; 64] = sig.to_bytes().into();
    assert!(fast.verify(msg, &sig));
    let doubled = [sig.as_slice(), sig.as_slice()].concat();
    for bad in [
        &[][..],
        &sig[..63],
        &[sig.as_slice(), &[0]].concat(),
        &doubled[..],
    ] {
        assert!(!fast.verify(msg, bad), "length {}", bad.len());
    }
    // A DER signature is not JWS.
    let der = Signature::from_slice(&sig).unwrap().to_der();
    assert!(!fast.verify(msg, der.as_bytes()));
}

#[test]
fn debug_is_short_and_clone_shares_the_table() {
    let signing = SigningKey::from_slice(&[5u8; 32]).unwrap();
    let fast = P256Verifier::new(signing.verifying_key());
    let text = format!("{fast:?}");
    assert!(text.len() < 100, "{text}");
    assert!(fast.table_bytes() <= 64 * 1024, "{}", fast.table_bytes());
    assert!(P256Verifier::generator_table_bytes() <= 256 * 1024);
    assert_eq!(fast.clone().table_bytes(), fast.table_bytes());
}
