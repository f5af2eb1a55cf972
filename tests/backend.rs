//! The host backend's seam, natively: the SubjectPublicKeyInfo the filter hands the host is exactly the
//! DER openssl writes for the same key; the known-answer detection accepts only a host that answers
//! every case right; a host that cannot answer never decides a verification; binding checks run
//! before the host is asked.

// Tests panic on purpose; the crate-wide clippy denials are for the filter code.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{b64u, fixture_path, pem_der};
use jwt_guard::crypto::{Alg, Backend, HostError, SignatureHost, Verifier};
use jwt_guard::detect::{detect, known_answers};
use jwt_guard::jwks::parse_jwk_value;
use serde_json::{json, Value};
use std::cell::{Cell, RefCell};

/// The JWK of an EC fixture, from the uncompressed point at the end of its SPKI.
fn ec_jwk(name: &str, crv: &str, size: usize) -> Value {
    let spki = pem_der(&fixture_path(&format!("{name}.pub.pem")));
    let point = &spki[spki.len() - (1 + 2 * size)..];
    json!({"kty": "EC", "crv": crv, "x": b64u(&point[1..1 + size]), "y": b64u(&point[1 + size..])})
}

#[test]
fn the_host_gets_the_same_spki_openssl_writes() {
    use rsa::pkcs8::DecodePublicKey as _;
    use rsa::traits::PublicKeyParts as _;
    let pem =
        std::fs::read_to_string(common::manifest_path(&fixture_path("rsa-1.pub.pem"))).unwrap();
    let rsa = rsa::RsaPublicKey::from_public_key_pem(&pem).unwrap();
    let jwk =
        json!({"kty": "RSA", "n": b64u(&rsa.n().to_bytes_be()), "e": b64u(&rsa.e().to_bytes_be())});
    let cases = [
        ("rsa-1", jwk),
        ("ec-1", ec_jwk("ec-1", "P-256", 32)),
        ("ec-384", ec_jwk("ec-384", "P-384", 48)),
        ("ec-521", ec_jwk("ec-521", "P-521", 66)),
    ];
    for (name, jwk) in cases {
        let (_, key) = parse_jwk_value(&jwk).unwrap();
        let want = pem_der(&fixture_path(&format!("{name}.pub.pem")));
        assert_eq!(key.spki_der(), Some(&want[..]), "{name}");
    }
}

type Answer = Box<dyn Fn(&[u8]) -> Result<Vec<u8>, HostError>>;

/// A host that answers from a script and records what it was asked.
struct ScriptedHost {
    answer: Answer,
    calls: Cell<usize>,
    last: RefCell<Vec<u8>>,
}

impl ScriptedHost {
    fn new(answer: impl Fn(&[u8]) -> Result<Vec<u8>, HostError> + 'static) -> ScriptedHost {
        ScriptedHost {
            answer: Box::new(answer),
            calls: Cell::new(0),
            last: RefCell::new(Vec::new()),
        }
    }
}

impl SignatureHost for ScriptedHost {
    fn call_verify_signature(&self, args: &[u8]) -> Result<Vec<u8>, HostError> {
        self.calls.set(self.calls.get() + 1);
        *self.last.borrow_mut() = args.to_vec();
        (self.answer)(args)
    }
}

const TRUE: [u8; 2] = [0x08, 0x01];

#[test]
fn known_answers_are_right_in_wasm() {
    let cases = known_answers().unwrap();
    let algs: Vec<Alg> = cases.iter().map(|c| c.alg).collect();
    for alg in Alg::ALL.into_iter().filter(|a| a.host_capable()) {
        assert!(algs.contains(&alg), "{alg:?} has a known answer");
    }
    for c in &cases {
        let wasm = Verifier::wasm();
        assert!(
            wasm.verify(c.alg, &c.key, &c.text, &c.signature),
            "{:?}",
            c.alg
        );
        let mut bad = c.signature.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(!wasm.verify(c.alg, &c.key, &c.text, &bad), "{:?}", c.alg);
    }
}

#[test]
fn detection_accepts_only_a_host_that_answers_every_case_right() {
    // A host that says yes to everything fails on the first tampered signature.
    let yes = ScriptedHost::new(|_| Ok(TRUE.to_vec()));
    assert!(
        detect(&yes).unwrap_err().contains("tampered"),
        "always-yes host"
    );
    // A host that says no to everything fails on the first valid one.
    let no = ScriptedHost::new(|_| Ok(Vec::new()));
    assert!(detect(&no).unwrap_err().contains("rejected a valid"));
    // No such foreign function (older Envoy): NotFound.
    let old = ScriptedHost::new(|_| Err(HostError::Status(1)));
    assert!(detect(&old).unwrap_err().contains("1.31"));
    let garbage = ScriptedHost::new(|_| Ok(vec![0xff]));
    assert!(detect(&garbage).is_err());
    // A host that answers right: the tampered cases are exactly the ones whose signature differs
    // from the known answer.
    let cases = known_answers().unwrap();
    let sigs: Vec<Vec<u8>> = cases
        .iter()
        .map(|c| {
            let v = Verifier::new(Backend::Host, &yes);
            assert!(v.verify(c.alg, &c.key, &c.text, &c.signature));
            yes.last.borrow().clone()
        })
        .collect();
    let right = ScriptedHost::new(move |args| {
        Ok(if sigs.iter().any(|s| s == args) {
            TRUE.to_vec()
        } else {
            Vec::new()
        })
    });
    assert_eq!(detect(&right), Ok(()));
    assert_eq!(right.calls.get(), 2 * cases.len());
}

#[test]
fn a_host_that_cannot_answer_never_decides() {
    let cases = known_answers().unwrap();
    for status in [
        HostError::Status(1),
        HostError::Status(2),
        HostError::BadAnswer,
    ] {
        let host = ScriptedHost::new(move |_| Err(status.clone()));
        let v = Verifier::new(Backend::Host, &host);
        for c in &cases {
            assert!(
                v.verify(c.alg, &c.key, &c.text, &c.signature),
                "{:?}",
                c.alg
            );
            let mut bad = c.signature.clone();
            *bad.last_mut().unwrap() ^= 1;
            assert!(!v.verify(c.alg, &c.key, &c.text, &bad), "{:?}", c.alg);
        }
        assert_eq!(
            host.calls.get(),
            2 * cases.len(),
            "each was asked, then wasm decided"
        );
    }
}

#[test]
fn binding_checks_run_before_the_host_is_asked() {
    let host = ScriptedHost::new(|_| Ok(TRUE.to_vec()));
    let v = Verifier::new(Backend::Host, &host);
    let cases = known_answers().unwrap();
    let es256 = cases.iter().find(|c| c.alg == Alg::ES256).unwrap();
    let es384 = cases.iter().find(|c| c.alg == Alg::ES384).unwrap();
    let rs256 = cases.iter().find(|c| c.alg == Alg::RS256).unwrap();
    // Another curve's algorithm, an RSA algorithm on an EC key, PSS on the host: never asked.
    assert!(!v.verify(Alg::ES384, &es256.key, &es256.text, &es384.signature));
    assert!(!v.verify(Alg::RS256, &es256.key, &es256.text, &rs256.signature));
    assert!(!v.verify(Alg::ES256, &rs256.key, &rs256.text, &es256.signature));
    // Wrong lengths and r or s out of range: never asked.
    let sig = &es256.signature;
    for bad in [
        sig[..63].to_vec(),
        [sig.clone(), vec![0]].concat(),
        [vec![0u8; 32], sig[32..].to_vec()].concat(),
        [sig[..32].to_vec(), vec![0xff; 32]].concat(),
    ] {
        assert!(!v.verify(Alg::ES256, &es256.key, &es256.text, &bad));
    }
    assert!(!v.verify(Alg::RS256, &rs256.key, &rs256.text, &rs256.signature[1..]));
    assert_eq!(host.calls.get(), 0, "the host was never asked");
    // PS256 stays in wasm even with the host backend (a host that says yes is not asked).
    assert!(!v.verify(Alg::PS256, &rs256.key, &rs256.text, &rs256.signature));
    assert_eq!(host.calls.get(), 0);
    // What the host is asked for ES384: sha384 and the P-384 SPKI.
    assert!(v.verify(Alg::ES384, &es384.key, &es384.text, &es384.signature));
    let args = host.last.borrow().clone();
    assert!(args.starts_with(&[0x0a, 6, b's', b'h', b'a', b'3', b'8', b'4']));
    assert!(args
        .windows(es384.key.spki_der().unwrap().len())
        .any(|w| w == es384.key.spki_der().unwrap()));
}
