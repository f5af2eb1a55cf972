//! Algorithms and public keys. A key knows its family; `verify` only runs when the token's algorithm
//! (already checked against the provider's allow-list) fits the key's family, so the header's `alg`
//! can never pick a verification method the key was not made for. HMAC and `none` do not exist here.

use crate::rsa_fast::{Hash, RsaKey};
use jwt_compact::alg::{Ed25519, Es256};
use jwt_compact::{Algorithm, AlgorithmSignature};

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
    EdDSA,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyFamily {
    Rsa,
    P256,
    Ed25519,
}

impl Alg {
    pub const ALL: [Alg; 8] = [
        Alg::RS256,
        Alg::RS384,
        Alg::RS512,
        Alg::PS256,
        Alg::PS384,
        Alg::PS512,
        Alg::ES256,
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
            Alg::EdDSA => "EdDSA",
        }
    }

    pub fn family(self) -> KeyFamily {
        match self {
            Alg::RS256 | Alg::RS384 | Alg::RS512 | Alg::PS256 | Alg::PS384 | Alg::PS512 => {
                KeyFamily::Rsa
            }
            Alg::ES256 => KeyFamily::P256,
            Alg::EdDSA => KeyFamily::Ed25519,
        }
    }

    /// Padding (PSS or PKCS#1 v1.5) and hash of the RSA algorithms.
    fn rsa(self) -> Option<(bool, Hash)> {
        Some(match self {
            Alg::RS256 => (false, Hash::Sha256),
            Alg::RS384 => (false, Hash::Sha384),
            Alg::RS512 => (false, Hash::Sha512),
            Alg::PS256 => (true, Hash::Sha256),
            Alg::PS384 => (true, Hash::Sha384),
            Alg::PS512 => (true, Hash::Sha512),
            Alg::ES256 | Alg::EdDSA => return None,
        })
    }
}

#[derive(Clone, Debug)]
pub enum PublicKey {
    Rsa(RsaKey),
    P256(P256PublicKey),
    Ed25519(Ed25519PublicKey),
}

impl PublicKey {
    pub fn family(&self) -> KeyFamily {
        match self {
            PublicKey::Rsa(_) => KeyFamily::Rsa,
            PublicKey::P256(_) => KeyFamily::P256,
            PublicKey::Ed25519(_) => KeyFamily::Ed25519,
        }
    }
}

/// Verifies a JWS signature. Returns false (never panics) for a key of another family, a signature of
/// the wrong length, or a signature that does not verify.
pub fn verify(alg: Alg, key: &PublicKey, signing_input: &[u8], signature: &[u8]) -> bool {
    match (key, alg.family()) {
        (PublicKey::Rsa(k), KeyFamily::Rsa) => {
            let Some((pss, hash)) = alg.rsa() else {
                return false;
            };
            // RSA signatures are exactly the modulus length (RFC 7518 §3.3, §3.5); checked in `open`.
            if pss {
                k.verify_pss(hash, signing_input, signature)
            } else {
                k.verify_pkcs1(hash, signing_input, signature)
            }
        }
        (PublicKey::P256(k), KeyFamily::P256) => {
            // JWS ECDSA signatures are the 64-byte R || S form (RFC 7518 §3.4), never DER.
            if signature.len() != 64 {
                return false;
            }
            match <Es256 as Algorithm>::Signature::try_from_slice(signature) {
                Ok(sig) => Es256.verify_signature(&sig, k, signing_input),
                Err(_) => false,
            }
        }
        (PublicKey::Ed25519(k), KeyFamily::Ed25519) => {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alg_names_are_exact_and_case_sensitive() {
        for a in Alg::ALL {
            assert_eq!(Alg::from_name(a.name()), Some(a));
        }
        for bad in [
            "none", "None", "NONE", "nOnE", "HS256", "rs256", "ES384", "", "RS256 ",
        ] {
            assert_eq!(Alg::from_name(bad), None, "{bad}");
        }
    }
}
