//! Workload tokens: minted once per algorithm into `target/bench/tokens/` and reused for 12 h; the
//! `dpop` workload's one bound token is minted on every run (its proofs: `proofs.rs`).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};

use super::{proofs, DPOP_ALG};
use crate::tokens::{self, AUDIENCE, ISSUER};

/// The workloads whose tokens are minted here and reused (`dpop` has one token, minted each run).
const TOKEN_WORKLOADS: &[&str] = &["hot", "cold", "mix"];

/// Claims valid for a day (a long run must not see its "valid" tokens expire).
fn claims(sub: &str, jti: &str, now: u64, expired: bool) -> Value {
    let (iat, exp) = if expired {
        (now - 7200, now - 3600)
    } else {
        (now, now + 86_400)
    };
    json!({ "iss": ISSUER, "aud": AUDIENCE, "sub": sub, "jti": jti, "iat": iat, "exp": exp })
}

/// Valid claims for a day (the `dpop` token's, before its `cnf`).
pub(super) fn day_claims(sub: &str, jti: &str, now: u64) -> Value {
    claims(sub, jti, now, false)
}

/// Flip one byte in the middle of the signature: still well-formed, no longer verifies.
pub(super) fn corrupt_signature(token: &str) -> String {
    let (signing_input, sig) = token.rsplit_once('.').unwrap_or((token, ""));
    let mut bytes = URL_SAFE_NO_PAD.decode(sig).unwrap_or_default();
    if bytes.is_empty() {
        return format!("{signing_input}.AAAA");
    }
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x5a;
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// Token `i` of a workload. `mix`: even = valid, i % 4 == 1 = expired but well signed, i % 4 == 3 = bad signature.
fn workload_token(alg: &str, workload: &str, i: usize, now: u64) -> String {
    let kid = tokens::default_kid(alg);
    let sub = format!("bench-{workload}-{i}");
    let jti = format!("{alg}-{workload}-{i}");
    match (workload, i % 4) {
        ("mix", 1) => tokens::mint(alg, kid, &claims(&sub, &jti, now, true)),
        ("mix", 3) => corrupt_signature(&tokens::mint(alg, kid, &claims(&sub, &jti, now, false))),
        _ => tokens::mint(alg, kid, &claims(&sub, &jti, now, false)),
    }
}

/// `make(range)` for `0..n` cut into one range per core, run on as many threads; the results in
/// order (a thread that panicked contributes nothing, so the caller's count check fails).
pub(super) fn in_parallel<T: Send>(
    n: usize,
    make: impl Fn(std::ops::Range<usize>) -> Vec<T> + Sync,
) -> Vec<T> {
    let threads = std::thread::available_parallelism()
        .map(|t| t.get())
        .unwrap_or(1);
    let chunk = n.div_ceil(threads).max(1);
    let make = &make;
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| s.spawn(move || make(t * chunk..((t + 1) * chunk).min(n))))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    })
}

/// How long minted token files are reused: valid tokens expire 24 h after minting, so a run that starts
/// within 12 h of minting still has 12 h of validity left.
const TOKEN_REUSE_S: u64 = 12 * 3600;

/// (alg, workload) -> token file.
pub(super) type TokenFiles = BTreeMap<(String, String), PathBuf>;

fn token_file(dir: &Path, alg: &str, workload: &str) -> PathBuf {
    dir.join(format!("tokens-{alg}-{workload}.txt"))
}

/// Mint every workload's tokens (in parallel) into one file per (alg, workload) under `dir`, or reuse an
/// algorithm's files from an earlier run if they hold the same number of tokens, signed by the same kid, and
/// are fresh (minting 2 x 5000 RS256 tokens costs ~10 s on 2 cores). With [`DPOP_ALG`] among `algs`, also
/// (every run) the `dpop` workload's bound token. Returns the files and the algorithms minted now.
pub(super) fn mint_all(
    dir: &Path,
    algs: &[&str],
    n: usize,
) -> Result<(TokenFiles, Vec<String>), String> {
    fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let now = tokens::now();
    let mut files = BTreeMap::new();
    let mut minted = Vec::new();
    for alg in algs {
        let kid = tokens::default_kid(alg).unwrap_or_default();
        let stamp = dir.join(format!("stamp-{alg}.json"));
        let alg_files: Vec<(String, PathBuf)> = TOKEN_WORKLOADS
            .iter()
            .map(|w| (w.to_string(), token_file(dir, alg, w)))
            .collect();
        let reusable = fs::read_to_string(&stamp)
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .is_some_and(|v| {
                v["tokens"].as_u64() == Some(n as u64)
                    && v["issuer"].as_str() == Some(ISSUER)
                    && v["audience"].as_str() == Some(AUDIENCE)
                    && v["kid"].as_str() == Some(kid)
                    && v["minted_at"]
                        .as_u64()
                        .is_some_and(|t| t <= now && now - t < TOKEN_REUSE_S)
            })
            && alg_files.iter().all(|(_, p)| p.is_file());
        for (w, p) in &alg_files {
            files.insert((alg.to_string(), w.clone()), p.clone());
        }
        if reusable {
            continue;
        }
        let _ = fs::remove_file(&stamp);
        for (workload, path) in &alg_files {
            let workload = workload.as_str();
            let count = if workload == "hot" { 1 } else { n };
            let toks: Vec<String> = in_parallel(count, |range| {
                range
                    .map(|i| workload_token(alg, workload, i, now))
                    .collect()
            });
            if toks.len() != count {
                return Err(format!(
                    "minted {} of {count} {alg} {workload} tokens",
                    toks.len()
                ));
            }
            fs::write(path, toks.join("\n") + "\n")
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        }
        let meta = json!({ "tokens": n, "minted_at": now, "issuer": ISSUER, "audience": AUDIENCE, "kid": kid });
        fs::write(&stamp, meta.to_string())
            .map_err(|e| format!("cannot write {}: {e}", stamp.display()))?;
        minted.push(alg.to_string());
    }
    if algs.contains(&DPOP_ALG) {
        let path = token_file(dir, DPOP_ALG, "dpop");
        fs::write(&path, proofs::bound_token(now) + "\n")
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        files.insert((DPOP_ALG.to_string(), "dpop".to_string()), path);
    }
    Ok((files, minted))
}

/// Line `i` of a token file ("" if missing).
pub(super) fn token_at(files: &TokenFiles, alg: &str, workload: &str, i: usize) -> String {
    files
        .get(&(alg.to_string(), workload.to_string()))
        .and_then(|p| fs::read_to_string(p).ok())
        .and_then(|t| t.lines().nth(i).map(str::to_string))
        .unwrap_or_default()
}
