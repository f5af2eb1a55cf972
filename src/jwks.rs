//! JWKS parsing (RFC 7517) into a `KeySet` of verification keys. Keys the filter cannot or must not use
//! are skipped with a reason instead of failing the whole set: `use` other than `sig`, `key_ops`
//! without `verify`, symmetric (`oct`) keys, unknown `kty`, unsupported curves, RSA keys outside
//! 2048..=4096 bits, `alg` values this filter does not verify with. A set with no usable key is an error.

use crate::b64;
use crate::crypto::{Alg, Curve, PublicKey};
use serde_json::{Map, Value};
use std::fmt;
use std::rc::Rc;

/// Upper bounds that keep a hostile or broken JWKS from costing unbounded memory or CPU.
pub const MAX_JWKS_BYTES: usize = 256 * 1024;
pub const MAX_KEYS: usize = 64;
/// The one bound on a key set as kept in shared data (current keys plus retired ones): `to_stored_within`
/// never writes more and `parse_stored` never reads more, so every published set is readable by every
/// worker. Room for a full-size JWKS and as much again of keys living out their rotation grace.
pub const MAX_STORED_BYTES: usize = 2 * MAX_JWKS_BYTES;
/// How many skipped entries a log line names, and how much of each `kid` it shows: the IdP controls
/// both, and one refresh must not become an unbounded log line.
pub const SKIPPED_LOGGED: usize = 5;
pub const KID_LOGGED_CHARS: usize = 40;

#[derive(Clone, Debug)]
pub struct Jwk {
    pub kid: Option<String>,
    /// When the JWK names an `alg`, the key is bound to that one algorithm.
    pub alg: Option<Alg>,
    pub key: PublicKey,
    /// The JWK as published, kept so a key that leaves the JWKS can be carried into the next
    /// generation for its rotation grace period.
    pub raw: Rc<Value>,
    /// For a key no longer in the IdP's JWKS: usable until this time (rotation grace).
    pub until_ms: Option<u64>,
}

impl Jwk {
    /// Whether this key may verify a token signed with `alg`.
    pub fn fits(&self, alg: Alg) -> bool {
        self.key.family() == alg.family() && self.alg.is_none_or(|bound| bound == alg)
    }

    fn live(&self, now_ms: u64) -> bool {
        self.until_ms.is_none_or(|until| now_ms < until)
    }
}

/// A JWKS entry that was not used, and why. The `kid` is the IdP's text as published: only ever log it
/// through `skipped_summary`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    pub kid: Option<String>,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Default)]
pub struct KeySet {
    pub keys: Vec<Jwk>,
    /// Every entry that was skipped; never holds key material.
    pub skipped: Vec<Skipped>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum JwksError {
    TooLarge {
        size: usize,
        limit: usize,
    },
    NotJson,
    /// An object in the document names a member twice (`"keys"` twice, `"n"` twice): parsers
    /// disagree about which one counts, so the document is not read either way.
    DuplicateMember,
    NoKeysArray,
    NoUsableKey {
        skipped: usize,
    },
}

impl fmt::Display for JwksError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JwksError::TooLarge { size, limit } => {
                write!(f, "JWKS is {size} bytes, limit is {limit}")
            }
            JwksError::NotJson => write!(f, "JWKS is not a JSON object"),
            JwksError::DuplicateMember => write!(f, "JWKS names a JSON member twice"),
            JwksError::NoKeysArray => write!(f, "JWKS has no \"keys\" array"),
            JwksError::NoUsableKey { skipped } => {
                write!(f, "JWKS has no usable signing key ({skipped} skipped)")
            }
        }
    }
}

pub enum KeyLookup<'a> {
    Found(Vec<&'a Jwk>),
    UnknownKid,
    KeyMismatch,
}

const TOO_MANY_KEYS: &str = "more than 64 keys";
const _: () = assert!(MAX_KEYS == 64, "TOO_MANY_KEYS names the limit");

impl KeySet {
    pub fn parse(body: &[u8]) -> Result<KeySet, JwksError> {
        KeySet::parse_within(body, MAX_JWKS_BYTES).map(|(set, _)| set)
    }

    fn parse_within(body: &[u8], limit: usize) -> Result<(KeySet, Value), JwksError> {
        if body.len() > limit {
            return Err(JwksError::TooLarge {
                size: body.len(),
                limit,
            });
        }
        let doc: Value = crate::json::parse(body).map_err(|e| match e {
            crate::json::StrictError::DuplicateMember => JwksError::DuplicateMember,
            crate::json::StrictError::Syntax => JwksError::NotJson,
        })?;
        let Some(entries) = doc
            .as_object()
            .and_then(|o| o.get("keys"))
            .and_then(Value::as_array)
        else {
            return Err(if doc.is_object() {
                JwksError::NoKeysArray
            } else {
                JwksError::NotJson
            });
        };
        let mut set = KeySet::default();
        for entry in entries {
            let kid = entry.get("kid").and_then(Value::as_str).map(str::to_owned);
            if set.keys.len() >= MAX_KEYS {
                set.skipped.push(Skipped {
                    kid,
                    reason: TOO_MANY_KEYS,
                });
                continue;
            }
            match entry.as_object().ok_or("not an object").and_then(parse_jwk) {
                Ok((alg, key)) => set.keys.push(Jwk {
                    kid,
                    alg,
                    key,
                    raw: Rc::new(entry.clone()),
                    until_ms: None,
                }),
                Err(reason) => set.skipped.push(Skipped { kid, reason }),
            }
        }
        if set.keys.is_empty() {
            return Err(JwksError::NoUsableKey {
                skipped: set.skipped.len(),
            });
        }
        Ok((set, doc))
    }

    /// Carries keys of `previous` that are missing from this (new) set, so tokens signed just before a
    /// rotation keep verifying: each stays usable until `now + grace` (or its earlier deadline if it
    /// was already retired). Keys whose grace has run out are dropped.
    pub fn retire_from(&mut self, previous: &KeySet, now_ms: u64, grace_ms: u64) {
        for old in &previous.keys {
            if !old.live(now_ms)
                || self
                    .keys
                    .iter()
                    .any(|k| k.raw == old.raw && k.until_ms.is_none())
            {
                continue;
            }
            if self.keys.len() >= 2 * MAX_KEYS {
                break;
            }
            let mut retired = old.clone();
            retired.until_ms = Some(old.until_ms.unwrap_or(now_ms.saturating_add(grace_ms)));
            self.keys.push(retired);
        }
    }

    /// How a key set is kept in shared data: the current JWKS keys and the retired ones with their
    /// deadline. Only the published JWK JSON is stored, never anything derived.
    fn to_stored(&self) -> Vec<u8> {
        let current: Vec<&Value> = self
            .keys
            .iter()
            .filter(|k| k.until_ms.is_none())
            .map(|k| &*k.raw)
            .collect();
        let retired: Vec<Value> = self.keys.iter().filter_map(retired_entry).collect();
        serde_json::to_vec(&serde_json::json!({"keys": current, "retired": retired}))
            .unwrap_or_default()
    }

    /// `to_stored`, within `limit` bytes: retired keys whose grace ends soonest are dropped from this
    /// set (and so from what is stored) until it fits. Current keys are never dropped: if they alone
    /// do not fit, nothing is to be stored. Returns the bytes and how many retired keys were dropped.
    pub fn to_stored_within(&mut self, limit: usize) -> Result<(Vec<u8>, usize), JwksError> {
        let mut stored = self.to_stored();
        let mut dropped = 0;
        while stored.len() > limit {
            let mut retired: Vec<(u64, usize, usize)> = self
                .keys
                .iter()
                .enumerate()
                .filter_map(|(i, k)| {
                    let size = serde_json::to_vec(&retired_entry(k)?).map_or(0, |v| v.len());
                    Some((k.until_ms.unwrap_or(0), i, size + 1))
                })
                .collect();
            if retired.is_empty() {
                return Err(JwksError::TooLarge {
                    size: stored.len(),
                    limit,
                });
            }
            retired.sort_unstable();
            // Drop as many as the measured sizes say are needed (at least one), then measure again:
            // the loop, not the estimate, guarantees the bound.
            let mut excess = stored.len() - limit;
            let mut gone = Vec::new();
            for (_, i, size) in retired {
                gone.push(i);
                if size >= excess {
                    break;
                }
                excess -= size;
            }
            dropped += gone.len();
            let mut index = 0;
            self.keys.retain(|_| {
                index += 1;
                !gone.contains(&(index - 1))
            });
            stored = self.to_stored();
        }
        Ok((stored, dropped))
    }

    /// Reads what `to_stored_within` wrote, under the same bound.
    pub fn parse_stored(body: &[u8]) -> Result<KeySet, JwksError> {
        let (mut set, doc) = KeySet::parse_within(body, MAX_STORED_BYTES)?;
        for entry in doc
            .get("retired")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let (Some(until), Some(jwk)) = (
                entry.get("until_ms").and_then(Value::as_u64),
                entry.get("jwk"),
            ) else {
                continue;
            };
            if let Some(Ok((alg, key))) = jwk.as_object().map(parse_jwk) {
                set.keys.push(Jwk {
                    kid: jwk.get("kid").and_then(Value::as_str).map(str::to_owned),
                    alg,
                    key,
                    raw: Rc::new(jwk.clone()),
                    until_ms: Some(until),
                });
            }
        }
        Ok(set)
    }

    /// Keys currently in the IdP's JWKS (not counting retired ones).
    pub fn current_len(&self) -> usize {
        self.keys.iter().filter(|k| k.until_ms.is_none()).count()
    }

    /// Candidate keys for a token. With a `kid`, only keys carrying that `kid`; without one, every key
    /// that fits the algorithm (RFC 7515 leaves selection to the application; we never guess across
    /// key types).
    pub fn lookup(&self, kid: Option<&str>, alg: Alg, now_ms: u64) -> KeyLookup<'_> {
        match kid {
            Some(kid) => {
                let named: Vec<&Jwk> = self
                    .keys
                    .iter()
                    .filter(|k| k.kid.as_deref() == Some(kid) && k.live(now_ms))
                    .collect();
                if named.is_empty() {
                    return KeyLookup::UnknownKid;
                }
                let fitting: Vec<&Jwk> = named.into_iter().filter(|k| k.fits(alg)).collect();
                if fitting.is_empty() {
                    KeyLookup::KeyMismatch
                } else {
                    KeyLookup::Found(fitting)
                }
            }
            None => {
                let fitting: Vec<&Jwk> = self
                    .keys
                    .iter()
                    .filter(|k| k.fits(alg) && k.live(now_ms))
                    .collect();
                if fitting.is_empty() {
                    KeyLookup::UnknownKid
                } else {
                    KeyLookup::Found(fitting)
                }
            }
        }
    }
}

fn retired_entry(k: &Jwk) -> Option<Value> {
    k.until_ms
        .map(|u| serde_json::json!({"until_ms": u, "jwk": &*k.raw}))
}

/// The skipped entries for a log line: how many, then the first `SKIPPED_LOGGED` as `"kid" (reason)`,
/// each `kid` escaped and cut by `log_text`. `None` when nothing was skipped.
pub fn skipped_summary(skipped: &[Skipped]) -> Option<String> {
    if skipped.is_empty() {
        return None;
    }
    let mut shown: Vec<String> = skipped
        .iter()
        .take(SKIPPED_LOGGED)
        .map(|s| match &s.kid {
            Some(kid) => format!("\"{}\" ({})", log_text(kid, KID_LOGGED_CHARS), s.reason),
            None => format!("<no kid> ({})", s.reason),
        })
        .collect();
    if skipped.len() > SKIPPED_LOGGED {
        shown.push(format!("and {} more", skipped.len() - SKIPPED_LOGGED));
    }
    Some(format!("skipped {}: {}", skipped.len(), shown.join(", ")))
}

/// Text from outside (the IdP) made safe for a log line: printable ASCII stays, `"` and `\` are
/// escaped, everything else (control characters, ANSI escapes, any non-ASCII that could reorder or
/// hide text) becomes `\u{..}`; at most `max_chars` characters are shown, then `...`.
pub fn log_text(text: &str, max_chars: usize) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if i == max_chars {
            out.push_str("...");
            break;
        }
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            ' '..='~' => out.push(c),
            _ => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
        }
    }
    out
}

fn str_field<'a>(o: &'a Map<String, Value>, name: &str) -> Result<Option<&'a str>, &'static str> {
    match o.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err("a member is not a string"),
    }
}

fn b64_field(o: &Map<String, Value>, name: &str) -> Result<Vec<u8>, &'static str> {
    let s = str_field(o, name)?.ok_or("missing key parameter")?;
    b64::decode(s.as_bytes()).ok_or("key parameter is not base64url")
}

/// One JWK (a JSON object) as this filter reads it from a JWKS: the algorithm it is bound to, if any,
/// and the key; or why it is not used.
pub fn parse_jwk_value(jwk: &Value) -> Result<(Option<Alg>, PublicKey), &'static str> {
    jwk.as_object().ok_or("not an object").and_then(parse_jwk)
}

fn parse_jwk(o: &Map<String, Value>) -> Result<(Option<Alg>, PublicKey), &'static str> {
    match str_field(o, "use")? {
        None | Some("sig") => {}
        Some(_) => return Err("use is not sig"),
    }
    if let Some(ops) = o.get("key_ops") {
        let ops = ops.as_array().ok_or("key_ops is not an array")?;
        if !ops.iter().any(|op| op.as_str() == Some("verify")) {
            return Err("key_ops lacks verify");
        }
    }
    let alg = match str_field(o, "alg")? {
        None => None,
        Some(name) => Some(Alg::from_name(name).ok_or("alg not supported")?),
    };
    let key = match str_field(o, "kty")? {
        Some("RSA") => PublicKey::rsa(&b64_field(o, "n")?, &b64_field(o, "e")?)?,
        Some("EC") => match str_field(o, "crv")?.and_then(Curve::from_jwk_name) {
            Some(curve) => PublicKey::ec(curve, &b64_field(o, "x")?, &b64_field(o, "y")?)?,
            None => return Err("unsupported curve"),
        },
        Some("OKP") => match str_field(o, "crv")? {
            Some("Ed25519") => PublicKey::ed25519(&b64_field(o, "x")?)?,
            _ => return Err("unsupported curve"),
        },
        Some("oct") => return Err("symmetric keys are never used"),
        Some(_) => return Err("unsupported kty"),
        None => return Err("missing kty"),
    };
    if let Some(alg) = alg {
        if alg.family() != key.family() {
            return Err("alg does not fit kty");
        }
    }
    Ok((alg, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn skipped(kid: &str) -> Skipped {
        Skipped {
            kid: Some(kid.to_owned()),
            reason: "use is not sig",
        }
    }

    #[test]
    fn hostile_kids_are_escaped_in_the_log_line() {
        let line = skipped_summary(&[
            skipped("a\r\nprovider demo: key set fresh"),
            skipped("\u{1b}[31mred\u{1b}[0m \"quoted\" back\\slash \u{202e}rtl"),
            Skipped {
                kid: None,
                reason: "missing kty",
            },
        ])
        .unwrap();
        assert_eq!(
            line,
            "skipped 3: \"a\\u{d}\\u{a}provider demo: key set fresh\" (use is not sig), \
             \"\\u{1b}[31mred\\u{1b}[0m \\\"quoted\\\" back\\\\slash \\u{202e}rtl\" (use is not sig), \
             <no kid> (missing kty)"
        );
        assert!(line.chars().all(|c| (' '..='~').contains(&c)), "{line:?}");
        assert_eq!(skipped_summary(&[]), None);
    }

    #[test]
    fn a_hundred_skipped_entries_make_one_bounded_line() {
        let many: Vec<Skipped> = (0..100)
            .map(|i| skipped(&format!("{i}-{}", "k".repeat(5_000))))
            .collect();
        let line = skipped_summary(&many).unwrap();
        assert!(line.starts_with("skipped 100: \"0-kkk"), "{line}");
        assert!(line.ends_with(", and 95 more"), "{line}");
        assert_eq!(line.matches("(use is not sig)").count(), SKIPPED_LOGGED);
        assert_eq!(
            line.matches("...\"").count(),
            SKIPPED_LOGGED,
            "each kid cut"
        );
        assert!(line.len() < 400, "{} bytes", line.len());
    }

    #[test]
    fn a_kid_is_cut_by_characters_not_bytes() {
        assert_eq!(log_text("\u{e9}\u{e9}\u{e9}", 2), "\\u{e9}\\u{e9}...");
        assert_eq!(log_text("abc", 3), "abc");
    }
}
