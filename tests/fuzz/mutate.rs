//! Mutators shared by the fuzz targets: bytes (flips, truncation, splicing, odd bytes), JSON trees
//! re-encoded with duplicate members, odd numbers, deep nesting, huge strings and non-UTF-8, and
//! compact-JWS segments (swapped, re-encoded with padding, the standard alphabet or stray bits).

use arbtest::arbitrary::{Result as ArbResult, Unstructured};
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine as _;
use serde_json::Value;

/// Bytes that matter to the parsers: separators, padding, both alphabets, whitespace, JSON syntax,
/// invalid UTF-8.
const INTERESTING: &[&[u8]] = &[
    b".",
    b"=",
    b"==",
    b"+",
    b"/",
    b"-",
    b"_",
    b" ",
    b"\n",
    b"\r\n",
    b"\t",
    b"\0",
    b"\"",
    b"\\",
    b"{",
    b"}",
    b"[",
    b"]",
    b":",
    b",",
    b"\xff",
    b"\xc3\x28",
    b"\xed\xa0\x80",
    b"\xe2\x80\xae",
    b"\\u0000",
    b"\\ud800",
    b"null",
    b"true",
    b"1e400",
    b"-0",
    b"..",
    b"eyJ",
    b"%2e",
];

/// Numbers as text that JSON parsers disagree on or that overflow.
const ODD_NUMBERS: &[&str] = &[
    "0",
    "-0",
    "1e400",
    "-1e400",
    "1e-400",
    "18446744073709551615",
    "18446744073709551616",
    "-9223372036854775809",
    "1.0",
    "0.5",
    "1E3",
    "1e+2",
    "4e9",
    "1700000000.999999999",
    "-1",
    "2147483648",
    "9007199254740993",
    "0.0000000000000000000001",
    "123456789012345678901234567890",
];

pub fn byte_mutation(u: &mut Unstructured<'_>, data: &mut Vec<u8>, other: &[u8]) -> ArbResult<()> {
    let len = data.len();
    let at = |u: &mut Unstructured<'_>, n: usize| u.int_in_range(0..=n);
    match u.int_in_range(0..=10)? {
        0 if len > 0 => {
            let i = at(u, len - 1)?;
            data[i] ^= 1 << u.int_in_range(0..=7)?;
        }
        1 if len > 0 => {
            let i = at(u, len - 1)?;
            data[i] = u.arbitrary()?;
        }
        2 => {
            let i = at(u, len)?;
            let piece = *u.choose(INTERESTING)?;
            data.splice(i..i, piece.iter().copied());
        }
        3 if len > 0 => {
            let a = at(u, len - 1)?;
            let b = at(u, (len - a).min(64))?;
            data.drain(a..a + b);
        }
        4 => {
            let cut = at(u, len)?;
            data.truncate(cut);
        }
        5 if len > 0 => {
            // Duplicate a slice in place.
            let a = at(u, len - 1)?;
            let b = at(u, (len - a).min(256))?;
            let piece = data[a..a + b].to_vec();
            let i = at(u, data.len())?;
            data.splice(i..i, piece);
        }
        6 => {
            // Splice: our prefix, the other input's suffix.
            let a = at(u, len)?;
            let b = at(u, other.len())?;
            data.truncate(a);
            data.extend_from_slice(&other[b..]);
        }
        7 => {
            let i = at(u, len)?;
            let n = u.int_in_range(1..=16)?;
            let bytes: Vec<u8> = (0..n).map(|_| u.arbitrary()).collect::<ArbResult<_>>()?;
            data.splice(i..i, bytes);
        }
        8 => {
            // A long run, as huge strings or long segments.
            let i = at(u, len)?;
            let byte = *u.choose(b"AaZz09-_.={\"[\\ \xff")?;
            let n = *u.choose(&[100usize, 1000, 9000, 70_000, 300_000])?;
            data.splice(i..i, std::iter::repeat_n(byte, n));
        }
        9 if len > 1 => {
            let i = at(u, len - 2)?;
            data.swap(i, i + 1);
        }
        _ => data.push(u.arbitrary()?),
    }
    Ok(())
}

// ---------- JSON trees ----------

/// JSON as written: members in order (duplicates allowed), numbers as their text.
#[derive(Clone, Debug)]
pub enum J {
    Null,
    Bool(bool),
    Num(String),
    Str(String),
    /// Written raw between quotes: may be non-UTF-8 or hold bad escapes.
    RawStr(Vec<u8>),
    Arr(Vec<J>),
    Obj(Vec<(String, J)>),
}

impl J {
    pub fn from_value(v: &Value) -> J {
        match v {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Number(n) => J::Num(n.to_string()),
            Value::String(s) => J::Str(s.clone()),
            Value::Array(a) => J::Arr(a.iter().map(J::from_value).collect()),
            Value::Object(o) => J::Obj(
                o.iter()
                    .map(|(k, v)| (k.clone(), J::from_value(v)))
                    .collect(),
            ),
        }
    }

    pub fn write(&self, out: &mut Vec<u8>, escape_ascii: bool) {
        match self {
            J::Null => out.extend_from_slice(b"null"),
            J::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
            J::Num(n) => out.extend_from_slice(n.as_bytes()),
            J::Str(s) => write_str(out, s, escape_ascii),
            J::RawStr(b) => {
                out.push(b'"');
                out.extend_from_slice(b);
                out.push(b'"');
            }
            J::Arr(a) => {
                out.push(b'[');
                for (i, x) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    x.write(out, escape_ascii);
                }
                out.push(b']');
            }
            J::Obj(o) => {
                out.push(b'{');
                for (i, (k, v)) in o.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write_str(out, k, escape_ascii);
                    out.push(b':');
                    v.write(out, escape_ascii);
                }
                out.push(b'}');
            }
        }
    }

    pub fn to_bytes(&self, escape_ascii: bool) -> Vec<u8> {
        let mut out = Vec::new();
        self.write(&mut out, escape_ascii);
        out
    }

    /// Number of nodes (for picking one).
    fn size(&self) -> usize {
        1 + match self {
            J::Arr(a) => a.iter().map(J::size).sum(),
            J::Obj(o) => o.iter().map(|(_, v)| v.size()).sum(),
            _ => 0,
        }
    }

    fn nth(&mut self, n: usize) -> Option<&mut J> {
        if n == 0 {
            return Some(self);
        }
        let mut n = n - 1;
        let children: Vec<&mut J> = match self {
            J::Arr(a) => a.iter_mut().collect(),
            J::Obj(o) => o.iter_mut().map(|(_, v)| v).collect(),
            _ => return None,
        };
        for c in children {
            let s = c.size();
            if n < s {
                return c.nth(n);
            }
            n -= s;
        }
        None
    }
}

/// Writes a JSON string; with `escape_ascii`, some plain characters become `\u00XX` (same value,
/// other bytes).
fn write_str(out: &mut Vec<u8>, s: &str, escape_ascii: bool) {
    out.push(b'"');
    for c in s.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            c if (c as u32) < 0x20 => {
                out.extend_from_slice(format!("\\u{:04x}", c as u32).as_bytes())
            }
            c if escape_ascii && c.is_ascii_alphabetic() => {
                out.extend_from_slice(format!("\\u{:04x}", c as u32).as_bytes())
            }
            c => {
                let mut buf = [0; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out.push(b'"');
}

/// Strings and member names worth trying in these documents.
pub const WORDS: &[&str] = &[
    "alg",
    "kid",
    "typ",
    "cty",
    "jku",
    "jwk",
    "x5u",
    "x5c",
    "crit",
    "b64",
    "enc",
    "zip",
    "iss",
    "sub",
    "aud",
    "exp",
    "nbf",
    "iat",
    "jti",
    "scope",
    "scp",
    "tenant",
    "org",
    "keys",
    "kty",
    "crv",
    "use",
    "key_ops",
    "n",
    "e",
    "x",
    "y",
    "d",
    "k",
    "issuer",
    "jwks_uri",
    "retired",
    "until_ms",
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "EdDSA",
    "HS256",
    "none",
    "None",
    "RSA",
    "EC",
    "OKP",
    "oct",
    "P-256",
    "P-384",
    "Ed25519",
    "X25519",
    "sig",
    "verify",
    "sign",
    "JWT",
    "rsa-1",
    "rsa-2",
    "ec-1",
    "ed-1",
    "enc-1",
    "ec-384",
    "https://idp.demo.local",
    "demo-api",
    "https://",
    "http://",
    "https://idp.demo.local/jwks.json",
    "http://idp.demo.local/jwks.json",
    "https://login.example.com/",
    "",
    " ",
    "AQAB",
    "AA",
    "__proto__",
    "\u{0}",
    "ålice",
    "\u{202e}",
];

fn random_leaf(u: &mut Unstructured<'_>) -> ArbResult<J> {
    Ok(match u.int_in_range(0..=9)? {
        0 => J::Null,
        1 => J::Bool(u.arbitrary()?),
        2 | 3 => J::Num((*u.choose(ODD_NUMBERS)?).to_owned()),
        4 => J::Num(u.arbitrary::<i64>()?.to_string()),
        5 => J::Str("x".repeat(*u.choose(&[0usize, 1, 255, 4096, 70_000])?)),
        6 => J::RawStr(
            (*u.choose(&[
                &b"\xff\xfe"[..],
                b"\\ud800",
                b"\\udc00\\ud800",
                b"\\x41",
                b"\\u12",
                b"\x01raw control",
                b"\xc3\x28",
                b"a\"b",
            ])?)
            .to_vec(),
        ),
        _ => J::Str((*u.choose(WORDS)?).to_owned()),
    })
}

fn deep(u: &mut Unstructured<'_>) -> ArbResult<J> {
    let depth = *u.choose(&[10usize, 100, 127, 128, 129, 200, 300])?;
    let mut j = random_leaf(u)?;
    let obj = u.arbitrary::<bool>()?;
    for _ in 0..depth {
        j = if obj {
            J::Obj(vec![("a".to_owned(), j)])
        } else {
            J::Arr(vec![j])
        };
    }
    Ok(j)
}

pub fn random_json(u: &mut Unstructured<'_>, depth: u32) -> ArbResult<J> {
    if depth == 0 || u.ratio(1, 2)? {
        return random_leaf(u);
    }
    let n = u.int_in_range(0..=4)?;
    Ok(if u.arbitrary()? {
        J::Arr(
            (0..n)
                .map(|_| random_json(u, depth - 1))
                .collect::<ArbResult<_>>()?,
        )
    } else {
        J::Obj(
            (0..n)
                .map(|_| Ok(((*u.choose(WORDS)?).to_owned(), random_json(u, depth - 1)?)))
                .collect::<ArbResult<_>>()?,
        )
    })
}

/// One structural change somewhere in the tree.
pub fn json_mutation(u: &mut Unstructured<'_>, root: &mut J, donor: Option<&J>) -> ArbResult<()> {
    let size = root.size();
    let n = u.choose_index(size)?;
    let Some(node) = root.nth(n) else {
        return Ok(());
    };
    match u.int_in_range(0..=9)? {
        0 => *node = random_leaf(u)?,
        1 => *node = deep(u)?,
        2 => *node = random_json(u, 3)?,
        3 => {
            // Graft a piece of another document (or of this one).
            if let Some(d) = donor {
                let k = u.choose_index(d.size())?;
                let mut d = d.clone();
                if let Some(piece) = d.nth(k) {
                    *node = piece.clone();
                }
            }
        }
        4 => match node {
            // Duplicate a member: same name, same or another value.
            J::Obj(o) if !o.is_empty() => {
                let i = u.choose_index(o.len())?;
                let (k, v) = o[i].clone();
                let v = if u.arbitrary()? { v } else { random_leaf(u)? };
                let at = u.int_in_range(0..=o.len())?;
                o.insert(at, (k, v));
            }
            _ => {
                *node = J::Obj(vec![
                    ("alg".into(), J::Str("none".into())),
                    ("alg".into(), node.clone()),
                ])
            }
        },
        5 => match node {
            J::Obj(o) if !o.is_empty() => {
                let i = u.choose_index(o.len())?;
                o.remove(i);
            }
            J::Arr(a) if !a.is_empty() => {
                let i = u.choose_index(a.len())?;
                a.remove(i);
            }
            _ => *node = J::Null,
        },
        6 => match node {
            J::Obj(o) => {
                let at = u.int_in_range(0..=o.len())?;
                o.insert(at, ((*u.choose(WORDS)?).to_owned(), random_json(u, 2)?));
            }
            J::Arr(a) => {
                let at = u.int_in_range(0..=a.len())?;
                a.insert(at, random_json(u, 2)?);
            }
            other => *other = J::Arr(vec![other.clone()]),
        },
        7 => match node {
            J::Str(s) => {
                // Change the text a little: case, a suffix, a prefix, a stray character.
                *s = match u.int_in_range(0..=4)? {
                    0 => s.to_ascii_uppercase(),
                    1 => format!("{s}/"),
                    2 => format!(" {s}"),
                    3 => s.chars().skip(1).collect(),
                    _ => format!(
                        "{s}{}",
                        *u.choose(&["\0", "\n", "#", "?", "é", "\u{FEFF}"])?
                    ),
                }
            }
            J::Num(t) => *t = (*u.choose(ODD_NUMBERS)?).to_owned(),
            _ => *node = J::Str((*u.choose(WORDS)?).to_owned()),
        },
        8 => {
            // Swap types: a value as a string of itself, a string as a number.
            let swapped = match &*node {
                J::Num(t) => J::Str(t.clone()),
                J::Str(s) if s.parse::<f64>().is_ok() => J::Num(s.clone()),
                J::Str(s) => J::Arr(vec![J::Str(s.clone())]),
                other => J::Str(String::from_utf8_lossy(&other.to_bytes(false)).into_owned()),
            };
            *node = swapped;
        }
        _ => match node {
            J::Obj(o) if o.len() > 1 => {
                let i = u.choose_index(o.len() - 1)?;
                o.swap(i, i + 1);
            }
            _ => *node = random_leaf(u)?,
        },
    }
    Ok(())
}

/// Parses `bytes` as JSON into a tree, or `None`.
pub fn tree(bytes: &[u8]) -> Option<J> {
    serde_json::from_slice::<Value>(bytes)
        .ok()
        .map(|v| J::from_value(&v))
}

/// Mutates a JSON document as a tree (1–4 changes) and writes it back, sometimes with whitespace,
/// escaped letters or trailing bytes; falls back to byte mutations for non-JSON input.
pub fn mutate_json_doc(u: &mut Unstructured<'_>, doc: &[u8], donor: &[u8]) -> ArbResult<Vec<u8>> {
    let Some(mut t) = tree(doc) else {
        let mut d = doc.to_vec();
        byte_mutation(u, &mut d, donor)?;
        return Ok(d);
    };
    let donor = tree(donor);
    for _ in 0..u.int_in_range(1..=4)? {
        json_mutation(u, &mut t, donor.as_ref())?;
    }
    let mut out = t.to_bytes(u.ratio(1, 8)?);
    match u.int_in_range(0..=15)? {
        0 => {
            let lead = *u.choose(&[&b"\xef\xbb\xbf"[..], b" \n", b"\t"])?;
            out.splice(0..0, lead.iter().copied());
        }
        1 => out.extend_from_slice(u.choose(&[&b"\n"[..], b" ", b"{}", b"\0", b"x", b"]"])?),
        2 => byte_mutation(u, &mut out, &[])?,
        _ => {}
    }
    Ok(out)
}

// ---------- base64url and JWS segments ----------

pub fn b64u(bytes: &[u8]) -> Vec<u8> {
    URL_SAFE_NO_PAD.encode(bytes).into_bytes()
}

/// Decodes base64 leniently (either alphabet, padding optional, stray trailing bits ignored), by hand,
/// independently of the code under test.
pub fn lenient_decode(seg: &[u8]) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' | b'+' => 62,
            b'_' | b'/' => 63,
            _ => return None,
        } as u32)
    };
    let seg: Vec<u8> = seg.iter().copied().take_while(|c| *c != b'=').collect();
    let (mut acc, mut bits, mut out) = (0u32, 0u32, Vec::new());
    for c in seg {
        acc = (acc << 6) | val(c)?;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// The same bytes in another base64 spelling: padded, standard alphabet, or with the unused low bits
/// of the last character set (non-canonical; a strict decoder must refuse all of these).
pub fn respell(u: &mut Unstructured<'_>, seg: &[u8]) -> ArbResult<Vec<u8>> {
    let Some(raw) = lenient_decode(seg) else {
        return Ok(seg.to_vec());
    };
    Ok(match u.int_in_range(0..=4)? {
        0 => URL_SAFE.encode(&raw).into_bytes(),
        1 => STANDARD.encode(&raw).into_bytes(),
        2 => STANDARD_NO_PAD.encode(&raw).into_bytes(),
        _ => {
            let mut s = b64u(&raw);
            let unused = match raw.len() % 3 {
                1 => 4,
                2 => 2,
                _ => 0,
            };
            if let (Some(last), true) = (s.last_mut(), unused > 0) {
                let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
                let v = alphabet.iter().position(|c| c == last).unwrap_or(0);
                let extra = u.int_in_range(1..=(1u32 << unused) - 1)? as usize;
                *last = alphabet[(v & !((1 << unused) - 1)) | extra];
            }
            s
        }
    })
}

pub fn split_segments(token: &[u8]) -> Vec<Vec<u8>> {
    token.split(|b| *b == b'.').map(<[u8]>::to_vec).collect()
}

pub fn join_segments(segs: &[Vec<u8>]) -> Vec<u8> {
    segs.join(&b'.')
}

// ---------- big-endian arithmetic for signature malleability ----------

/// `a + b` in `a.len()` bytes, or `None` on overflow.
pub fn add_be(a: &[u8], b: &[u8]) -> Option<Vec<u8>> {
    let mut out = a.to_vec();
    let mut carry = 0u16;
    for i in 0..out.len() {
        let ai = out.len() - 1 - i;
        let bv = if i < b.len() { b[b.len() - 1 - i] } else { 0 } as u16;
        let s = out[ai] as u16 + bv + carry;
        out[ai] = s as u8;
        carry = s >> 8;
    }
    (carry == 0 && b.len() <= a.len()).then_some(out)
}

/// `a - b` (a ≥ b assumed; wraps otherwise) in `a.len()` bytes.
pub fn sub_be(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut out = a.to_vec();
    let mut borrow = 0i16;
    for i in 0..out.len() {
        let ai = out.len() - 1 - i;
        let bv = if i < b.len() { b[b.len() - 1 - i] } else { 0 } as i16;
        let mut d = out[ai] as i16 - bv - borrow;
        borrow = 0;
        if d < 0 {
            d += 256;
            borrow = 1;
        }
        out[ai] = d as u8;
    }
    out
}

/// Little-endian `a + b` in `a.len()` bytes (Ed25519 scalars), or `None` on overflow.
pub fn add_le(a: &[u8], b: &[u8]) -> Option<Vec<u8>> {
    let mut ra: Vec<u8> = a.iter().rev().copied().collect();
    let rb: Vec<u8> = b.iter().rev().copied().collect();
    ra = add_be(&ra, &rb)?;
    ra.reverse();
    Some(ra)
}
