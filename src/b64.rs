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

    /// Every accepted spelling is the canonical one: for all inputs of 1 to 3 characters (every tail
    /// length; longer inputs only add whole 4-character groups), decode then encode gives the input back,
    /// so no two spellings decode to the same bytes (a token cannot be respelled and still verify).
    #[test]
    fn accepted_input_is_canonical() {
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_+/= .";
        let mut accepted = 0;
        let mut check = |s: &[u8]| {
            if let Some(raw) = decode(s) {
                accepted += 1;
                assert_eq!(
                    URL_SAFE_NO_PAD.encode(raw).as_bytes(),
                    s,
                    "{:?}",
                    String::from_utf8_lossy(s)
                );
            }
        };
        for &a in alphabet {
            check(&[a]);
            for &b in alphabet {
                check(&[a, b]);
                for &c in alphabet {
                    check(&[a, b, c]);
                    check(&[b'Q', b'U', b'J', b'D', a, b, c]);
                }
            }
        }
        // 2 characters carry 1 byte (256 spellings), 3 carry 2 bytes (65536), twice.
        assert_eq!(accepted, 256 + 2 * 65_536);
    }
}
