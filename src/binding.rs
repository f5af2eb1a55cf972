//! Sender-constrained tokens: DPoP (RFC 9449) and mTLS-bound tokens (RFC 8705 §3), pure.
//!
//! A token carrying `cnf` is checked against its binding on every route that verifies it, whatever
//! the route says (RFC 9449 §7.1, RFC 8705 §3): a DPoP-bound token (`cnf.jkt`) needs the `DPoP`
//! scheme and a valid proof for that key, an mTLS-bound one (`cnf["x5t#S256"]`) the client
//! certificate it names. A route's `binding` adds a requirement on unbound tokens: `dpop`, `mtls`, or
//! `any` refuses a plain bearer token.
//!
//! The proof (RFC 9449 §4.3), in this order, cheap checks first and the replay record last (so forged
//! proofs cannot fill it): exactly one `DPoP` header; a compact JWS of at most 8 KiB whose header has
//! `typ: dpop+jwt`, an asymmetric `alg` this filter verifies, a public `jwk` (a private member is an
//! error) and no `crit`; `htm` is the request method, `htu` the request URI without query and
//! fragment (compared after RFC 3986 normalisation); `iat` within the window; `ath` the SHA-256 of
//! the access token; the signature verifies with `jwk`; `cnf.jkt` is the RFC 7638 thumbprint of
//! `jwk`; and the `jti` was not seen in the window (shared data, across the VMs of the Envoy).

use crate::b64;
use crate::config::{Binding, DpopSettings};
use crate::crypto::{Alg, PublicKey, Verifier};
use crate::error::Denial;
use crate::json;
use crate::keycache::SharedStore;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// The proof algorithms, for the `algs` of a DPoP challenge: every algorithm this filter verifies
/// (all asymmetric; `none` and HMAC never).
pub const PROOF_ALGS: &str = "RS256 RS384 RS512 PS256 PS384 PS512 ES256 ES384 ES512 EdDSA";

/// A proof larger than this is refused before it is parsed.
pub const MAX_PROOF_BYTES: usize = 8 * 1024;

/// How the token was presented, and what the request offers to prove a binding.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Presentation {
    /// `Authorization: DPoP …` (else Bearer or another source).
    pub dpop_scheme: bool,
    /// Every `DPoP` header value (each occurrence, split at commas as Envoy joins repeats).
    pub proofs: Vec<Vec<u8>>,
    pub method: Vec<u8>,
    /// The request's `:scheme`, `:authority` and path without its query: what `htu` is compared with
    /// (through `request_htu`, only when a proof is checked).
    pub scheme: Vec<u8>,
    pub authority: Vec<u8>,
    pub path: Vec<u8>,
}

/// Which binding a request proved, for the audit record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Proven {
    #[default]
    Bearer,
    Dpop,
    Mtls,
    DpopAndMtls,
}

impl Proven {
    pub fn name(self) -> &'static str {
        match self {
            Proven::Bearer => "bearer",
            Proven::Dpop => "dpop",
            Proven::Mtls => "mtls",
            Proven::DpopAndMtls => "dpop+mtls",
        }
    }
}

/// What the replay memory said about a proof.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Replay {
    /// Not seen in the window; now remembered.
    Fresh,
    Seen,
    /// The window's memory is full: refused rather than forgotten (fail closed).
    Full,
    /// The memory could not be read or written.
    Unavailable,
}

/// What the checks need: the settings, the provider's clock skew, now, and from the host the
/// signature verifier, the client certificate's SHA-256 (`None` without one) and the replay memory.
pub struct Env<'a> {
    pub settings: &'a DpopSettings,
    pub skew: u64,
    pub now: u64,
    pub verifier: Verifier<'a>,
    pub peer_certificate_sha256: &'a dyn Fn() -> Option<Vec<u8>>,
    pub record_proof: &'a dyn Fn(&ProofId, u64) -> Replay,
    /// The verification key of a proof's `jwk` (a VM may keep keys it parsed before).
    pub proof_key: &'a ProofKeyOf<'a>,
}

/// Parses (or finds) the key of a proof's `jwk`.
pub type ProofKeyOf<'a> = dyn Fn(&Map<String, Value>) -> Result<PublicKey, &'static str> + 'a;

/// The replay key of a proof: SHA-256 of its key thumbprint and `jti`, truncated.
pub type ProofId = [u8; 16];

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The RFC 7638 JWK thumbprint (SHA-256, base64url) of a public key: its required members in
/// lexicographic order, no whitespace.
pub fn thumbprint(jwk: &Map<String, Value>) -> Result<String, &'static str> {
    let member = |name: &str| -> Result<&str, &'static str> {
        jwk.get(name)
            .and_then(Value::as_str)
            .ok_or("jwk lacks a required member")
    };
    let required: &[&str] = match member("kty")? {
        "EC" => &["crv", "kty", "x", "y"],
        "RSA" => &["e", "kty", "n"],
        "OKP" => &["crv", "kty", "x"],
        _ => return Err("jwk kty is not EC, RSA or OKP"),
    };
    let mut canonical = Map::new();
    for name in required {
        canonical.insert((*name).to_owned(), Value::String(member(name)?.to_owned()));
    }
    // serde_json's Map is ordered by key (no `preserve_order`): lexicographic, as RFC 7638 needs.
    let text = Value::Object(canonical).to_string();
    Ok(b64url(&sha256(text.as_bytes())))
}

/// The base64url SHA-256 of the client certificate Envoy verified, from Envoy's
/// `connection.sha256_peer_certificate_digest` (lowercase hex); `None` if it is not hex of 32 bytes.
pub fn certificate_thumbprint_from_hex(hex: &[u8]) -> Option<Vec<u8>> {
    if hex.len() != 64 {
        return None;
    }
    hex.chunks(2)
        .map(|pair| {
            let text = std::str::from_utf8(pair).ok()?;
            u8::from_str_radix(text, 16).ok()
        })
        .collect()
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// `scheme://authority/path` without query and fragment, normalised as RFC 3986 §6.2.2–6.2.3 does:
/// scheme and host lowercase, the default port removed, percent-encodings of unreserved characters
/// decoded and the others in uppercase hex, dot segments removed (§5.2.4), an empty path `/`; and
/// runs of `/` merged into one, as Envoy's `merge_slashes` (set in every shipped bootstrap) does to
/// the path before the filter sees it. `None` for anything else.
pub fn normalize_uri(uri: &str) -> Option<String> {
    let (scheme, rest) = uri.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "https" => ":443",
        "http" => ":80",
        _ => return None,
    };
    let end = rest.find(['?', '#']).unwrap_or(rest.len());
    let rest = &rest[..end];
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let mut authority = authority.to_ascii_lowercase();
    if let Some(stripped) = authority.strip_suffix(default_port) {
        authority = stripped.to_owned();
    }
    let mut path_out = String::new();
    let bytes = path.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let v = u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
            if is_unreserved(v) {
                path_out.push(v as char);
            } else {
                path_out.push_str(&format!("%{v:02X}"));
            }
            i += 3;
        } else if b.is_ascii_graphic() {
            path_out.push(b as char);
            i += 1;
        } else {
            return None;
        }
    }
    Some(format!(
        "{scheme}://{authority}{}",
        remove_dot_segments(&path_out)
    ))
}

/// RFC 3986 §5.2.4 on an absolute path, with empty segments (`//`) merged.
fn remove_dot_segments(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    let parts: Vec<&str> = path.split('/').collect();
    let last = parts.len().saturating_sub(1);
    let mut trailing_slash = false;
    for (i, part) in parts.iter().enumerate() {
        match *part {
            "" | "." => trailing_slash = i == last && i > 0,
            ".." => {
                segments.pop();
                trailing_slash = i == last;
            }
            p => {
                segments.push(p);
                trailing_slash = false;
            }
        }
    }
    let mut out = format!("/{}", segments.join("/"));
    if trailing_slash && !segments.is_empty() {
        out.push('/');
    }
    out
}

/// The `htu` a proof must carry for this request: `base` (the configured external base URL, or the
/// request's `:scheme://:authority`) and the path without its query.
pub fn request_htu(
    base: Option<&str>,
    scheme: &[u8],
    authority: &[u8],
    path: &[u8],
) -> Option<String> {
    let path = std::str::from_utf8(path).ok()?;
    let uri = match base {
        Some(b) => format!("{b}{path}"),
        None => format!(
            "{}://{}{path}",
            std::str::from_utf8(scheme).ok()?,
            std::str::from_utf8(authority).ok()?
        ),
    };
    normalize_uri(&uri)
}

/// What a token's `cnf` binds it to.
struct Cnf<'a> {
    jkt: Option<&'a str>,
    x5t: Option<&'a str>,
}

fn cnf_of(claims: &Map<String, Value>) -> Result<Option<Cnf<'_>>, Denial> {
    let Some(cnf) = claims.get("cnf") else {
        return Ok(None);
    };
    let cnf = cnf
        .as_object()
        .ok_or(Denial::Malformed("cnf is not an object"))?;
    let text = |name: &str| match cnf.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(_) => Err(Denial::Malformed("a cnf member is not a string")),
    };
    let bound = Cnf {
        jkt: text("jkt")?,
        x5t: text("x5t#S256")?,
    };
    if bound.jkt.is_none() && bound.x5t.is_none() {
        // A confirmation this filter cannot check (`jwk`, `jwe`, `kid` …): never treat it as bearer.
        return Err(Denial::DpopBinding(
            "cnf names a confirmation method this filter cannot check",
        ));
    }
    Ok(Some(bound))
}

/// Checks a verified token's binding. `claims` are the token's, `token` its bytes (for `ath`).
pub fn check(
    binding: Binding,
    claims: &Map<String, Value>,
    token: &[u8],
    p: &Presentation,
    env: &Env<'_>,
) -> Result<Proven, Denial> {
    let cnf = cnf_of(claims)?;
    let jkt = cnf.as_ref().and_then(|c| c.jkt);
    let x5t = cnf.as_ref().and_then(|c| c.x5t);
    if p.dpop_scheme && jkt.is_none() {
        return Err(Denial::DpopBinding(
            "DPoP scheme with a token that is not DPoP-bound",
        ));
    }
    match binding {
        Binding::Dpop if jkt.is_none() => {
            return Err(Denial::DpopBinding("this route needs a DPoP-bound token"))
        }
        Binding::Mtls if x5t.is_none() => {
            return Err(Denial::MtlsBinding("this route needs an mTLS-bound token"))
        }
        Binding::Any if jkt.is_none() && x5t.is_none() => return Err(Denial::BindingRequired),
        _ => {}
    }
    if let Some(expected) = x5t {
        let presented = (env.peer_certificate_sha256)().ok_or(Denial::MtlsBinding(
            "no client certificate on this connection",
        ))?;
        if b64url(&presented) != expected {
            return Err(Denial::MtlsBinding(
                "the client certificate is not the one the token is bound to",
            ));
        }
    }
    if let Some(expected) = jkt {
        if !p.dpop_scheme {
            return Err(Denial::DpopBinding(
                "a DPoP-bound token must be presented with the DPoP scheme",
            ));
        }
        check_proof(expected, token, p, env)?;
    }
    Ok(match (jkt.is_some(), x5t.is_some()) {
        (true, true) => Proven::DpopAndMtls,
        (true, false) => Proven::Dpop,
        (false, true) => Proven::Mtls,
        (false, false) => Proven::Bearer,
    })
}

fn check_proof(jkt: &str, token: &[u8], p: &Presentation, env: &Env<'_>) -> Result<(), Denial> {
    let now = env.now;
    let bad = Denial::InvalidDpopProof;
    let proof = match p.proofs.as_slice() {
        [] => return Err(bad("no DPoP proof")),
        [one] => one.as_slice(),
        _ => return Err(bad("more than one DPoP proof")),
    };
    if proof.len() > MAX_PROOF_BYTES {
        return Err(bad("DPoP proof too large"));
    }
    let parts: Vec<&[u8]> = proof.split(|b| *b == b'.').collect();
    let [header_b64, payload_b64, signature_b64] = parts.as_slice() else {
        return Err(bad("DPoP proof is not a compact JWS"));
    };
    let object = |part: &[u8]| {
        b64::decode(part)
            .and_then(|raw| json::parse_object(&raw).ok())
            .ok_or(bad("DPoP proof is not a compact JWS"))
    };
    let header = object(header_b64)?;
    let claims = object(payload_b64)?;
    let signature = b64::decode(signature_b64).ok_or(bad("DPoP proof is not a compact JWS"))?;
    if !header
        .get("typ")
        .and_then(Value::as_str)
        .is_some_and(|t| t.eq_ignore_ascii_case("dpop+jwt"))
    {
        return Err(bad("DPoP proof typ is not dpop+jwt"));
    }
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .and_then(Alg::from_name)
        .ok_or(bad(
            "DPoP proof alg is not an asymmetric algorithm this server verifies",
        ))?;
    if header.contains_key("crit") {
        return Err(bad("DPoP proof names a crit extension"));
    }
    let jwk = header
        .get("jwk")
        .and_then(Value::as_object)
        .ok_or(bad("DPoP proof has no jwk"))?;
    if ["d", "p", "q", "dp", "dq", "qi", "oth", "k"]
        .iter()
        .any(|m| jwk.contains_key(*m))
    {
        return Err(bad("DPoP proof jwk holds a private key"));
    }
    let text = |name: &str| claims.get(name).and_then(Value::as_str);
    if text("htm").map(str::as_bytes) != Some(p.method.as_slice()) {
        return Err(bad("DPoP proof htm is not the request method"));
    }
    let htu = text("htu").and_then(normalize_uri);
    let expected = request_htu(
        env.settings.external_base.as_deref(),
        &p.scheme,
        &p.authority,
        &p.path,
    );
    if htu.is_none() || htu != expected {
        return Err(bad("DPoP proof htu is not the request URI"));
    }
    let iat = claims
        .get("iat")
        .and_then(Value::as_f64)
        .ok_or(bad("DPoP proof has no numeric iat"))?;
    let window = (env.settings.iat_window_secs + env.skew) as f64;
    if (iat - now as f64).abs() > window {
        return Err(bad("DPoP proof iat is outside the accepted window"));
    }
    if text("ath") != Some(b64url(&sha256(token)).as_str()) {
        return Err(bad("DPoP proof ath is not the hash of the access token"));
    }
    let jti = text("jti")
        .filter(|j| !j.is_empty() && j.len() <= 256)
        .ok_or(bad(
            "DPoP proof jti is missing, empty or longer than 256 characters",
        ))?;
    let key = (env.proof_key)(jwk).map_err(|_| bad("DPoP proof jwk is not a usable public key"))?;
    let signing_input = &proof[..header_b64.len() + 1 + payload_b64.len()];
    if !env.verifier.verify(alg, &key, signing_input, &signature) {
        return Err(bad("DPoP proof signature does not verify with its jwk"));
    }
    let thumb = thumbprint(jwk).map_err(bad)?;
    if thumb != jkt {
        return Err(Denial::DpopBinding(
            "the DPoP proof key is not the one the token is bound to",
        ));
    }
    let id = proof_id(&thumb, jti);
    match (env.record_proof)(&id, now) {
        Replay::Fresh => Ok(()),
        Replay::Seen => Err(Denial::DpopReplay),
        Replay::Full => Err(bad("too many DPoP proofs in this window; retry shortly")),
        Replay::Unavailable => Err(Denial::Internal),
    }
}

pub fn proof_id(thumbprint: &str, jti: &str) -> ProofId {
    let digest = sha256(format!("{thumbprint}\n{jti}").as_bytes());
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest[..16]);
    id
}

/// Proofs seen recently, in shared data, bounded. Time is cut in slots of `iat_window + skew`
/// seconds; a proof is accepted only within one slot of its `iat`, so a replay can only come within
/// two slots of the first use: each proof is checked against the current and the two previous
/// slots and recorded in the current one. Four slots rotate (the oldest is reused), each split into
/// `SHARDS` entries by the id's first byte so a write copies one small entry. An entry is the slot
/// number (8 bytes, little-endian) and then 16-byte ids.
pub mod replay {
    use super::{ProofId, Replay};
    use crate::keycache::{SharedStore, StoreError};

    pub const SHARDS: usize = 64;
    const RING: u64 = 4;

    fn key(ring: u64, shard: usize) -> String {
        format!("jwt_guard.dpop.{ring}.{shard}")
    }

    /// The ids of `slot` in this shard (empty when the entry holds another slot).
    fn ids(store: &dyn SharedStore, slot: u64, shard: usize) -> (Vec<u8>, Option<u32>) {
        match store.get(&key(slot % RING, shard)) {
            Some((v, cas)) if v.len() >= 8 && v[..8] == slot.to_le_bytes() => (v, Some(cas)),
            Some((_, cas)) => (slot.to_le_bytes().to_vec(), Some(cas)),
            None => (slot.to_le_bytes().to_vec(), None),
        }
    }

    fn contains(entry: &[u8], id: &ProofId) -> bool {
        entry[8..].chunks_exact(16).any(|c| c == id)
    }

    /// Checks `id` against the recent slots and records it; `capacity` bounds the ids per slot
    /// (across all shards).
    pub fn record(
        store: &dyn SharedStore,
        id: &ProofId,
        now: u64,
        slot_secs: u64,
        capacity: usize,
    ) -> Replay {
        let slot = now / slot_secs.max(1);
        let shard = usize::from(id[0]) % SHARDS;
        for back in 1..=2 {
            if let Some(old) = slot.checked_sub(back) {
                if contains(&ids(store, old, shard).0, id) {
                    return Replay::Seen;
                }
            }
        }
        let per_shard = (capacity / SHARDS).max(1);
        for _ in 0..8 {
            let (mut entry, cas) = ids(store, slot, shard);
            if contains(&entry, id) {
                return Replay::Seen;
            }
            if (entry.len() - 8) / 16 >= per_shard {
                return Replay::Full;
            }
            entry.extend_from_slice(id);
            match store.set(&key(slot % RING, shard), &entry, cas) {
                Ok(()) => return Replay::Fresh,
                Err(StoreError::CasMismatch) => continue,
                Err(StoreError::Other) => return Replay::Unavailable,
            }
        }
        Replay::Unavailable
    }
}

/// `replay::record` with the settings' slot length and capacity.
pub fn record_proof(
    store: &dyn SharedStore,
    settings: &DpopSettings,
    skew: u64,
    id: &ProofId,
    now: u64,
) -> Replay {
    replay::record(
        store,
        id,
        now,
        settings.iat_window_secs + skew,
        settings.replay_capacity,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keycache::tests::MemStore;

    #[test]
    fn uris_compare_in_their_rfc_3986_normal_form() {
        let n = |u: &str| normalize_uri(u);
        assert_eq!(
            n("HTTPS://API.Example.com:443/a/b?q=1#f").as_deref(),
            Some("https://api.example.com/a/b")
        );
        assert_eq!(n("http://h:80").as_deref(), Some("http://h/"));
        assert_eq!(n("http://h:8080/x").as_deref(), Some("http://h:8080/x"));
        assert_eq!(
            n("https://h/%7euser/%2f%41").as_deref(),
            Some("https://h/~user/%2FA")
        );
        // Dot segments (RFC 3986 §5.2.4) and repeated slashes, as Envoy's normalize_path and
        // merge_slashes leave the path the filter sees.
        for (given, want) in [
            ("https://h/a/x/../b", "https://h/a/b"),
            ("https://h/a/./b", "https://h/a/b"),
            ("https://h/a//b", "https://h/a/b"),
            ("https://h/a/b/..", "https://h/a/"),
            ("https://h/../../a", "https://h/a"),
            ("https://h/a/%2E%2E/b", "https://h/b"),
            ("https://h/a/", "https://h/a/"),
            ("https://h/", "https://h/"),
        ] {
            assert_eq!(n(given).as_deref(), Some(want), "{given}");
        }
        for bad in [
            "ftp://h/",
            "https://",
            "https:///x",
            "https://u@h/",
            "https://h/%zz",
            "https://h/a b",
            "h/x",
        ] {
            assert_eq!(n(bad), None, "{bad}");
        }
        assert_eq!(
            request_htu(None, b"https", b"API.test:443", b"/orders").as_deref(),
            Some("https://api.test/orders")
        );
        assert_eq!(
            request_htu(
                Some("https://api.example.com"),
                b"http",
                b"10.0.0.1:8080",
                b"/orders"
            )
            .as_deref(),
            Some("https://api.example.com/orders")
        );
    }

    #[test]
    fn certificate_digests_are_hex_of_32_bytes() {
        let hex = "00ff".repeat(16);
        assert_eq!(
            certificate_thumbprint_from_hex(hex.as_bytes()).map(|d| d.len()),
            Some(32)
        );
        assert_eq!(certificate_thumbprint_from_hex(b"00ff"), None);
        assert_eq!(
            certificate_thumbprint_from_hex("zz".repeat(32).as_bytes()),
            None
        );
    }

    #[test]
    fn the_replay_memory_remembers_two_slots_back_and_is_bounded() {
        let store = MemStore::default();
        let id = |n: u8| {
            let mut i = [0u8; 16];
            i[0] = n;
            i[15] = n;
            i
        };
        let slot = 120;
        assert_eq!(
            replay::record(&store, &id(1), 1_000, slot, 64 * 2),
            Replay::Fresh
        );
        assert_eq!(
            replay::record(&store, &id(1), 1_000, slot, 64 * 2),
            Replay::Seen
        );
        // One and two slots later it is still known; three slots later it is forgotten (a proof
        // that old fails its iat check anyway).
        assert_eq!(
            replay::record(&store, &id(1), 1_000 + slot, slot, 128),
            Replay::Seen
        );
        assert_eq!(
            replay::record(&store, &id(1), 1_000 + 2 * slot, slot, 128),
            Replay::Seen
        );
        assert_eq!(
            replay::record(&store, &id(1), 1_000 + 4 * slot, slot, 128),
            Replay::Fresh
        );
        // Capacity 128 over 64 shards: two ids per shard per slot, then full (fail closed).
        let now = 50_000;
        let same_shard = |k: u8| {
            let mut i = id(5);
            i[1] = k;
            i
        };
        assert_eq!(
            replay::record(&store, &same_shard(1), now, slot, 128),
            Replay::Fresh
        );
        assert_eq!(
            replay::record(&store, &same_shard(2), now, slot, 128),
            Replay::Fresh
        );
        assert_eq!(
            replay::record(&store, &same_shard(3), now, slot, 128),
            Replay::Full
        );
        // The next slot has room again; the ring reuses the entry of four slots ago.
        assert_eq!(
            replay::record(&store, &same_shard(3), now + 4 * slot, slot, 128),
            Replay::Fresh
        );
    }

    #[test]
    fn the_challenge_names_every_algorithm_the_filter_verifies() {
        let names: Vec<&str> = Alg::ALL.iter().map(|a| a.name()).collect();
        assert_eq!(PROOF_ALGS, names.join(" "));
    }

    #[test]
    fn a_proof_id_depends_on_key_and_jti() {
        assert_ne!(proof_id("k1", "j"), proof_id("k2", "j"));
        assert_ne!(proof_id("k1", "j1"), proof_id("k1", "j2"));
        assert_eq!(proof_id("k1", "j"), proof_id("k1", "j"));
    }
}
