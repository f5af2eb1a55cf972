//! Strict base64url (RFC 7515 §2): URL-safe alphabet, no padding, no stray bits, no whitespace.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

/// Decodes base64url without padding; anything else (padding, `+`/`/`, whitespace,
/// non-canonical trailing bits) is an error.
pub fn decode(input: &[u8]) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(input).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_canonical_url_safe() {
        assert_eq!(decode(b"-_8").as_deref(), Some(&[0xfb, 0xff][..]));
        assert_eq!(decode(b"").as_deref(), Some(&[][..]));
    }

    #[test]
    fn rejects_padding_std_alphabet_whitespace_and_trailing_bits() {
        for bad in [&b"YQ=="[..], b"+/8", b"YW J", b"YR", b"Y"] {
            assert!(decode(bad).is_none(), "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
