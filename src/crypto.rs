//! Algorithms, public keys and the two signature backends.
//!
//! A key knows its family; a signature is only checked when the token's algorithm (already checked
//! against the provider's allow-list) fits the key's family, so the header's `alg` can never pick a
//! verification method the key was not made for. HMAC and `none` do not exist here.
//!
//! **Backends.** `wasm` does the arithmetic inside the VM (every algorithm). `host` hands RS256/384/512
//! and ES256/384/512 to Envoy's own BoringSSL through the foreign function `verify_signature`
//! (Envoy ≥ 1.31); PS* and EdDSA always stay in wasm (the host has no PSS and no Ed25519). The host does
//! not bind the hash to the curve or the algorithm, accepts any key size, and takes DER ECDSA, so
//! every binding check happens here first: key family for the algorithm, the curve's own hash, the
//! RSA modulus size (at key parse), the exact signature length, `0 < r, s < n`. The key the host sees
//! is the SubjectPublicKeyInfo DER this module encodes once per key from the validated JWK members,
//! never bytes from outside.

use crate::rsa_fast::{Hash, RsaKey};
use jwt_compact::alg::{Ed25519, Es256};
use jwt_compact::{Algorithm, AlgorithmSignature};
use std::fmt;
use std::rc::Rc;

pub type Ed25519PublicKey = <Ed25519 as Algorithm>::VerifyingKey;
pub type P256PublicKey = <Es256 as Algorithm>::VerifyingKey;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Alg {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    ES512,
    EdDSA,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyFamily {
    Rsa,
    P256,
    P384,
    P521,
    Ed25519,
}

impl Alg {
    pub const ALL: [Alg; 10] = [
        Alg::RS256,
        Alg::RS384,
        Alg::RS512,
        Alg::PS256,
        Alg::PS384,
        Alg::PS512,
        Alg::ES256,
        Alg::ES384,
        Alg::ES512,
        Alg::EdDSA,
    ];

    /// JWS `alg` values are case-sensitive (RFC 7515 §4.1.1): only the exact registered names match.
    pub fn from_name(name: &str) -> Option<Alg> {
        Alg::ALL.into_iter().find(|a| a.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            Alg::RS256 => "RS256",
            Alg::RS384 => "RS384",
            Alg::RS512 => "RS512",
            Alg::PS256 => "PS256",
            Alg::PS384 => "PS384",
            Alg::PS512 => "PS512",
            Alg::ES256 => "ES256",
            Alg::ES384 => "ES384",
            Alg::ES512 => "ES512",
            Alg::EdDSA => "EdDSA",
        }
    }

    pub fn family(self) -> KeyFamily {
        match self {
            Alg::RS256 | Alg::RS384 | Alg::RS512 | Alg::PS256 | Alg::PS384 | Alg::PS512 => {
                KeyFamily::Rsa
            }
            Alg::ES256 => KeyFamily::P256,
            Alg::ES384 => KeyFamily::P384,
            Alg::ES512 => KeyFamily::P521,
            Alg::EdDSA => KeyFamily::Ed25519,
        }
    }

    /// The hash of RS*, PS* and ES* (RFC 7518 §3.3–3.5); for ES* it is the curve's own.
    fn hash(self) -> Option<Hash> {
        match self {
            Alg::RS256 | Alg::PS256 | Alg::ES256 => Some(Hash::Sha256),
            Alg::RS384 | Alg::PS384 | Alg::ES384 => Some(Hash::Sha384),
            Alg::RS512 | Alg::PS512 | Alg::ES512 => Some(Hash::Sha512),
            Alg::EdDSA => None,
        }
    }

    /// Whether Envoy's `verify_signature` can do this algorithm (PKCS#1 v1.5 and ECDSA only).
    pub fn host_capable(self) -> bool {
        matches!(
            self,
            Alg::RS256 | Alg::RS384 | Alg::RS512 | Alg::ES256 | Alg::ES384 | Alg::ES512
        )
    }
}

/// The NIST curves: coordinate (and scalar) size, group order, and the DER of their OID.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Curve {
    P256,
    P384,
    P521,
}

const P256_ORDER: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
];
const P384_ORDER: [u8; 48] = [
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xc7, 0x63, 0x4d, 0x81, 0xf4, 0x37, 0x2d, 0xdf,
    0x58, 0x1a, 0x0d, 0xb2, 0x48, 0xb0, 0xa7, 0x7a, 0xec, 0xec, 0x19, 0x6a, 0xcc, 0xc5, 0x29, 0x73,
];
const P521_ORDER: [u8; 66] = [
    0x01, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xff, 0xfa, 0x51, 0x86, 0x87, 0x83, 0xbf, 0x2f, 0x96, 0x6b, 0x7f, 0xcc, 0x01, 0x48, 0xf7, 0x09,
    0xa5, 0xd0, 0x3b, 0xb5, 0xc9, 0xb8, 0x89, 0x9c, 0x47, 0xae, 0xbb, 0x6f, 0xb7, 0x1e, 0x91, 0x38,
    0x64, 0x09,
];

impl Curve {
    pub fn from_jwk_name(crv: &str) -> Option<Curve> {
        match crv {
            "P-256" => Some(Curve::P256),
            "P-384" => Some(Curve::P384),
            "P-521" => Some(Curve::P521),
            _ => None,
        }
    }

    /// Bytes of a coordinate, and of each of r and s in a JWS signature (RFC 7518 §3.4).
    pub fn size(self) -> usize {
        match self {
            Curve::P256 => 32,
            Curve::P384 => 48,
            Curve::P521 => 66,
        }
    }

    pub fn order(self) -> &'static [u8] {
        match self {
            Curve::P256 => &P256_ORDER,
            Curve::P384 => &P384_ORDER,
            Curve::P521 => &P521_ORDER,
        }
    }

    /// DER of the named-curve OID (RFC 5480 §2.1.1.1).
    fn oid_der(self) -> &'static [u8] {
        match self {
            // 1.2.840.10045.3.1.7
            Curve::P256 => &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07],
            // 1.3.132.0.34
            Curve::P384 => &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22],
            // 1.3.132.0.35
            Curve::P521 => &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x23],
        }
    }
}

/// A P-256 key with its precomputed tables (`p256_fast`), built the first time the wasm backend
/// verifies with it (about 0.85 ms in V8), so the host backend never pays for them.
#[derive(Clone)]
struct P256Key {
    key: P256PublicKey,
    tables: Rc<std::cell::OnceCell<crate::p256_fast::P256Verifier>>,
}

impl P256Key {
    fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        self.tables
            .get_or_init(|| crate::p256_fast::P256Verifier::new(&self.key))
            .verify(msg, sig)
    }
}

#[derive(Clone)]
enum Material {
    Rsa(RsaKey),
    P256(P256Key),
    P384(p384::ecdsa::VerifyingKey),
    P521(p521::ecdsa::VerifyingKey),
    Ed25519(Ed25519PublicKey),
}

/// A verification key: the parsed key for the wasm backend and, for the families the host can do,
/// its SubjectPublicKeyInfo DER (encoded once, here, from the validated members).
#[derive(Clone)]
pub struct PublicKey {
    material: Material,
    spki: Option<Rc<[u8]>>,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKey")
            .field("family", &self.family())
            .field("spki_bytes", &self.spki.as_ref().map(|s| s.len()))
            .finish()
    }
}

impl PublicKey {
    /// An RSA key from big-endian `n` and `e` (size and exponent bounds in `RsaKey::new`).
    pub fn rsa(n: &[u8], e: &[u8]) -> Result<PublicKey, &'static str> {
        let key = RsaKey::new(n, e)?;
        let spki = rsa_spki(n, e);
        Ok(PublicKey {
            material: Material::Rsa(key),
            spki: Some(spki.into()),
        })
    }

    /// An EC key on `curve` from its affine coordinates, each exactly the curve's size. A point not
    /// on the curve is refused (invalid-curve attacks).
    pub fn ec(curve: Curve, x: &[u8], y: &[u8]) -> Result<PublicKey, &'static str> {
        if x.len() != curve.size() || y.len() != curve.size() {
            return Err(match curve {
                Curve::P256 => "P-256 coordinates must be 32 bytes",
                Curve::P384 => "P-384 coordinates must be 48 bytes",
                Curve::P521 => "P-521 coordinates must be 66 bytes",
            });
        }
        let mut sec1 = Vec::with_capacity(1 + 2 * curve.size());
        sec1.push(0x04);
        sec1.extend_from_slice(x);
        sec1.extend_from_slice(y);
        let material = match curve {
            Curve::P256 => P256PublicKey::from_sec1_bytes(&sec1)
                .map(|key| {
                    Material::P256(P256Key {
                        key,
                        tables: Rc::default(),
                    })
                })
                .map_err(|_| "P-256 point not on the curve")?,
            Curve::P384 => p384::ecdsa::VerifyingKey::from_sec1_bytes(&sec1)
                .map(Material::P384)
                .map_err(|_| "P-384 point not on the curve")?,
            Curve::P521 => p521::ecdsa::VerifyingKey::from_sec1_bytes(&sec1)
                .map(Material::P521)
                .map_err(|_| "P-521 point not on the curve")?,
        };
        Ok(PublicKey {
            material,
            spki: Some(ec_spki(curve, &sec1).into()),
        })
    }

    pub fn ed25519(x: &[u8]) -> Result<PublicKey, &'static str> {
        let key = Ed25519PublicKey::from_slice(x).map_err(|_| "bad Ed25519 key")?;
        Ok(PublicKey {
            material: Material::Ed25519(key),
            spki: None,
        })
    }

    pub fn family(&self) -> KeyFamily {
        match &self.material {
            Material::Rsa(_) => KeyFamily::Rsa,
            Material::P256(_) => KeyFamily::P256,
            Material::P384(_) => KeyFamily::P384,
            Material::P521(_) => KeyFamily::P521,
            Material::Ed25519(_) => KeyFamily::Ed25519,
        }
    }

    /// The SubjectPublicKeyInfo DER handed to the host (RSA and EC keys).
    pub fn spki_der(&self) -> Option<&[u8]> {
        self.spki.as_deref()
    }

    fn curve(&self) -> Option<Curve> {
        match &self.material {
            Material::P256(_) => Some(Curve::P256),
            Material::P384(_) => Some(Curve::P384),
            Material::P521(_) => Some(Curve::P521),
            Material::Rsa(_) | Material::Ed25519(_) => None,
        }
    }
}

// ---- DER (only the few shapes needed here) ----

fn der_push_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
}

fn der_tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 6);
    out.push(tag);
    der_push_len(&mut out, content.len());
    out.extend_from_slice(content);
    out
}

/// A non-negative INTEGER in its minimal encoding: leading zero bytes dropped, one 0x00 added when
/// the top bit is set (X.690 §8.3.2).
fn der_uint(big_endian: &[u8]) -> Vec<u8> {
    let first = big_endian
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(big_endian.len());
    let digits = &big_endian[first..];
    let mut content = Vec::with_capacity(digits.len() + 1);
    if digits.first().is_none_or(|b| b & 0x80 != 0) {
        content.push(0);
    }
    content.extend_from_slice(digits);
    der_tlv(0x02, &content)
}

fn der_bit_string(bytes: &[u8]) -> Vec<u8> {
    let mut content = Vec::with_capacity(bytes.len() + 1);
    content.push(0); // no unused bits
    content.extend_from_slice(bytes);
    der_tlv(0x03, &content)
}

fn rsa_spki(n: &[u8], e: &[u8]) -> Vec<u8> {
    // AlgorithmIdentifier { rsaEncryption (1.2.840.113549.1.1.1), NULL } (RFC 3279 §2.3.1)
    const RSA_ALG_ID: [u8; 15] = [
        0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    ];
    let rsa_public_key = der_tlv(0x30, &[der_uint(n), der_uint(e)].concat());
    der_tlv(
        0x30,
        &[&RSA_ALG_ID[..], &der_bit_string(&rsa_public_key)].concat(),
    )
}

fn ec_spki(curve: Curve, sec1_uncompressed: &[u8]) -> Vec<u8> {
    // id-ecPublicKey 1.2.840.10045.2.1 (RFC 5480 §2.1.1)
    const EC_PUBLIC_KEY: [u8; 9] = [0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
    let alg_id = der_tlv(0x30, &[&EC_PUBLIC_KEY[..], curve.oid_der()].concat());
    der_tlv(0x30, &[alg_id, der_bit_string(sec1_uncompressed)].concat())
}

/// Whether a big-endian number of the curve's size is in `1..n`.
fn in_scalar_range(v: &[u8], order: &[u8]) -> bool {
    v.len() == order.len() && v.iter().any(|b| *b != 0) && v < order
}

/// A JWS ECDSA signature (`r || s`, each the curve's size) as the DER `Ecdsa-Sig-Value` BoringSSL
/// takes, or `None` when it is not exactly that shape or r or s is outside `1..n`.
pub fn ecdsa_jws_to_der(curve: Curve, sig: &[u8]) -> Option<Vec<u8>> {
    if sig.len() != 2 * curve.size() {
        return None;
    }
    let (r, s) = sig.split_at(curve.size());
    if !in_scalar_range(r, curve.order()) || !in_scalar_range(s, curve.order()) {
        return None;
    }
    Some(der_tlv(0x30, &[der_uint(r), der_uint(s)].concat()))
}

// ---- the host's `verify_signature` (protobuf in, protobuf out) ----

/// The name Envoy registers the foreign function under.
pub const HOST_VERIFY_FUNCTION: &str = "verify_signature";

/// Why the host could not answer (not: the signature is wrong).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostError {
    /// No host to ask (native code, tests, or a host without foreign functions).
    Unavailable,
    /// The call returned this proxy-wasm status (e.g. 1 = NotFound: no such function).
    Status(u32),
    /// The answer was not a `VerifySignatureResult`.
    BadAnswer,
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostError::Unavailable => write!(f, "no host crypto here"),
            HostError::Status(1) => write!(
                f,
                "the host has no foreign function `{HOST_VERIFY_FUNCTION}` (Envoy before 1.31?)"
            ),
            HostError::Status(s) => write!(f, "`{HOST_VERIFY_FUNCTION}` returned status {s}"),
            HostError::BadAnswer => write!(f, "`{HOST_VERIFY_FUNCTION}` gave an unreadable answer"),
        }
    }
}

/// The host side of the `host` backend: one call of the foreign function with serialized
/// `VerifySignatureArguments`, returning the serialized `VerifySignatureResult`.
pub trait SignatureHost {
    fn call_verify_signature(&self, args: &[u8]) -> Result<Vec<u8>, HostError>;
}

/// No host: every call is `Unavailable`.
pub struct NoHost;

impl SignatureHost for NoHost {
    fn call_verify_signature(&self, _args: &[u8]) -> Result<Vec<u8>, HostError> {
        Err(HostError::Unavailable)
    }
}

fn pb_push_varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn pb_push_bytes(out: &mut Vec<u8>, field: u64, bytes: &[u8]) {
    pb_push_varint(out, (field << 3) | 2);
    pb_push_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// `VerifySignatureArguments { string hash_function = 1; bytes public_key = 2; bytes signature = 3;
/// bytes text = 4; }` (Envoy's source/extensions/common/wasm/ext/verify_signature.proto).
pub fn encode_verify_args(hash: &str, spki: &[u8], sig_der: &[u8], text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(hash.len() + spki.len() + sig_der.len() + text.len() + 16);
    pb_push_bytes(&mut out, 1, hash.as_bytes());
    pb_push_bytes(&mut out, 2, spki);
    pb_push_bytes(&mut out, 3, sig_der);
    pb_push_bytes(&mut out, 4, text);
    out
}

fn pb_varint(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *bytes.get(*at)?;
        *at += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// `VerifySignatureResult { bool result = 1; string error = 2; }` → `result`. proto3 leaves out a
/// false `result`, so an absent field 1 is false. Unknown fields are skipped; anything that does not
/// parse is `None`.
pub fn decode_verify_result(bytes: &[u8]) -> Option<bool> {
    let mut at = 0;
    let mut result = false;
    while at < bytes.len() {
        let tag = pb_varint(bytes, &mut at)?;
        match (tag >> 3, tag & 7) {
            (1, 0) => result = pb_varint(bytes, &mut at)? != 0,
            (_, 0) => {
                pb_varint(bytes, &mut at)?;
            }
            (_, 2) => {
                let len = usize::try_from(pb_varint(bytes, &mut at)?).ok()?;
                at = at.checked_add(len).filter(|end| *end <= bytes.len())?;
            }
            (_, 1) => at = at.checked_add(8).filter(|end| *end <= bytes.len())?,
            (_, 5) => at = at.checked_add(4).filter(|end| *end <= bytes.len())?,
            _ => return None,
        }
    }
    Some(result)
}

fn hash_name(hash: Hash) -> &'static str {
    match hash {
        Hash::Sha256 => "sha256",
        Hash::Sha384 => "sha384",
        Hash::Sha512 => "sha512",
    }
}

/// Which implementation does the arithmetic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Envoy's BoringSSL through `verify_signature` (RS*, ES*; PS* and EdDSA still in wasm).
    Host,
    /// Everything inside the VM.
    Wasm,
}

impl Backend {
    pub const ALL: [Backend; 2] = [Backend::Host, Backend::Wasm];

    pub fn name(self) -> &'static str {
        match self {
            Backend::Host => "host",
            Backend::Wasm => "wasm",
        }
    }
}

/// The signature checks of one VM: a backend and, for `Host`, the host to ask.
#[derive(Clone, Copy)]
pub struct Verifier<'a> {
    backend: Backend,
    host: &'a dyn SignatureHost,
}

impl Verifier<'static> {
    pub fn wasm() -> Verifier<'static> {
        Verifier {
            backend: Backend::Wasm,
            host: &NoHost,
        }
    }
}

impl<'a> Verifier<'a> {
    pub fn new(backend: Backend, host: &'a dyn SignatureHost) -> Verifier<'a> {
        Verifier { backend, host }
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Verifies a JWS signature over `signing_input`. False (never a panic) for a key of another
    /// family, a signature of the wrong shape, or one that does not verify. With the `host` backend,
    /// a host that cannot answer (a status other than Ok, an unreadable answer) does not decide: the
    /// same check runs in wasm instead, so a host fault never turns into an allow or a false deny.
    pub fn verify(
        &self,
        alg: Alg,
        key: &PublicKey,
        signing_input: &[u8],
        signature: &[u8],
    ) -> bool {
        if key.family() != alg.family() {
            return false;
        }
        if self.backend == Backend::Host && alg.host_capable() {
            if let Ok(verdict) = host_verify(self.host, alg, key, signing_input, signature) {
                return verdict;
            }
        }
        wasm_verify(alg, key, signing_input, signature)
    }
}

/// One verification through the host, with every binding check done here first. `Ok(false)` for a
/// signature this filter refuses before asking (wrong length, r or s out of range).
pub(crate) fn host_verify(
    host: &dyn SignatureHost,
    alg: Alg,
    key: &PublicKey,
    signing_input: &[u8],
    signature: &[u8],
) -> Result<bool, HostError> {
    let (Some(hash), Some(spki)) = (alg.hash(), key.spki_der()) else {
        return Err(HostError::Unavailable);
    };
    if !alg.host_capable() || key.family() != alg.family() {
        return Ok(false);
    }
    let der;
    let sig: &[u8] = match (&key.material, key.curve()) {
        (Material::Rsa(k), _) => {
            // RSA signatures are exactly the modulus length (RFC 7518 §3.3).
            if signature.len() != k.size() {
                return Ok(false);
            }
            signature
        }
        (_, Some(curve)) => match ecdsa_jws_to_der(curve, signature) {
            Some(d) => {
                der = d;
                &der
            }
            None => return Ok(false),
        },
        _ => return Err(HostError::Unavailable),
    };
    let args = encode_verify_args(hash_name(hash), spki, sig, signing_input);
    let answer = host.call_verify_signature(&args)?;
    decode_verify_result(&answer).ok_or(HostError::BadAnswer)
}

/// The in-VM implementations.
fn wasm_verify(alg: Alg, key: &PublicKey, signing_input: &[u8], signature: &[u8]) -> bool {
    match (&key.material, alg) {
        (Material::Rsa(k), _) => {
            let Some(hash) = alg.hash() else {
                return false;
            };
            // RSA signatures are exactly the modulus length (RFC 7518 §3.3, §3.5); checked in `open`.
            match alg {
                Alg::PS256 | Alg::PS384 | Alg::PS512 => {
                    k.verify_pss(hash, signing_input, signature)
                }
                Alg::RS256 | Alg::RS384 | Alg::RS512 => {
                    k.verify_pkcs1(hash, signing_input, signature)
                }
                _ => false,
            }
        }
        // JWS ECDSA signatures are the fixed-size R || S form (RFC 7518 §3.4), never DER; the
        // length and the range of r and s are checked by each implementation.
        (Material::P256(k), Alg::ES256) => k.verify(signing_input, signature),
        (Material::P384(k), Alg::ES384) => {
            use p384::ecdsa::signature::Verifier as _;
            if signature.len() != 96 {
                return false;
            }
            match p384::ecdsa::Signature::from_slice(signature) {
                Ok(sig) => k.verify(signing_input, &sig).is_ok(),
                Err(_) => false,
            }
        }
        (Material::P521(k), Alg::ES512) => {
            use p521::ecdsa::signature::Verifier as _;
            if signature.len() != 132 {
                return false;
            }
            match p521::ecdsa::Signature::from_slice(signature) {
                Ok(sig) => k.verify(signing_input, &sig).is_ok(),
                Err(_) => false,
            }
        }
        (Material::Ed25519(k), Alg::EdDSA) => {
            // Checked here: the library copies the slice into a fixed array without checking.
            if signature.len() != 64 {
                return false;
            }
            match <Ed25519 as Algorithm>::Signature::try_from_slice(signature) {
                Ok(sig) => Ed25519.verify_signature(&sig, k, signing_input),
                Err(_) => false,
            }
        }
        _ => false,
    }
}

/// Verifies with the in-VM implementations (the `wasm` backend).
pub fn verify(alg: Alg, key: &PublicKey, signing_input: &[u8], signature: &[u8]) -> bool {
    Verifier::wasm().verify(alg, key, signing_input, signature)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alg_names_are_exact_and_case_sensitive() {
        for a in Alg::ALL {
            assert_eq!(Alg::from_name(a.name()), Some(a));
        }
        for bad in [
            "none", "None", "NONE", "nOnE", "HS256", "rs256", "es384", "ES256K", "", "RS256 ",
        ] {
            assert_eq!(Alg::from_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn curve_orders_are_the_curves_own() {
        use p256::elliptic_curve::bigint::Encoding as _;
        use p256::elliptic_curve::Curve as _;
        assert_eq!(
            Curve::P256.order(),
            &p256::NistP256::ORDER.to_be_bytes()[..]
        );
        assert_eq!(
            Curve::P384.order(),
            &p384::NistP384::ORDER.to_be_bytes()[..]
        );
        let p521 = p521::NistP521::ORDER.to_be_bytes();
        // 576-bit limbs: the order is the low 66 bytes.
        assert!(p521[..p521.len() - 66].iter().all(|b| *b == 0));
        assert_eq!(Curve::P521.order(), &p521[p521.len() - 66..]);
    }

    #[test]
    fn der_integers_are_minimal() {
        assert_eq!(der_uint(&[0, 0, 0x7f]), vec![2, 1, 0x7f]);
        assert_eq!(der_uint(&[0, 0x80]), vec![2, 2, 0, 0x80]);
        assert_eq!(der_uint(&[0, 0]), vec![2, 1, 0]);
        let mut long = vec![0x30];
        der_push_len(&mut long, 300);
        assert_eq!(long, vec![0x30, 0x82, 0x01, 0x2c]);
    }

    #[test]
    fn jws_ecdsa_signatures_become_der_only_in_range() {
        for curve in [Curve::P256, Curve::P384, Curve::P521] {
            let n = curve.order();
            let size = curve.size();
            let one = {
                let mut v = vec![0u8; size];
                v[size - 1] = 1;
                v
            };
            let mut n_minus_1 = n.to_vec();
            n_minus_1[size - 1] -= 1;
            let zero = vec![0u8; size];
            let ok = [one.clone(), n_minus_1.clone()].concat();
            let der = ecdsa_jws_to_der(curve, &ok).unwrap();
            assert_eq!(der[0], 0x30);
            for bad in [
                [zero.clone(), one.clone()].concat(),
                [one.clone(), zero.clone()].concat(),
                [n.to_vec(), one.clone()].concat(),
                [one.clone(), n.to_vec()].concat(),
                [vec![0xff; size], one.clone()].concat(),
                ok[1..].to_vec(),
                [ok.clone(), vec![0]].concat(),
            ] {
                assert_eq!(ecdsa_jws_to_der(curve, &bad), None, "{curve:?}");
            }
        }
    }

    #[test]
    fn results_decode_as_proto3() {
        assert_eq!(decode_verify_result(&[0x08, 0x01]), Some(true));
        assert_eq!(decode_verify_result(&[]), Some(false));
        // result absent, error "x": false
        assert_eq!(decode_verify_result(&[0x12, 0x01, b'x']), Some(false));
        // unknown fields skipped
        assert_eq!(
            decode_verify_result(&[0x18, 0x05, 0x22, 0x00, 0x08, 0x01]),
            Some(true)
        );
        // truncated
        assert_eq!(decode_verify_result(&[0x12, 0x05, b'x']), None);
        assert_eq!(decode_verify_result(&[0x08]), None);
        assert_eq!(decode_verify_result(&[0x0f]), None);
    }
}
