//! Wycheproof signature vectors through a real Envoy, once per signature backend.
//!
//! Wycheproof messages are arbitrary bytes, so they cannot be made into JWTs. The vector probe
//! (`wasm-test-harness/vector-probe`, a proxy-wasm module linking jwt-guard's core without its filter
//! entry points) takes one vector per request instead: it parses the group's JWK with the filter's own
//! `jwks::parse_jwk_value` and verifies with `crypto::Verifier` on the configured backend, `host`
//! (Envoy's BoringSSL through `verify_signature`; the probe refuses that configuration unless the
//! filter's host detection passes) or `wasm`. Every vector of the ECDSA P1363 (P-256/384/521) and RSA
//! PKCS#1 v1.5 files runs on both; expected results are Wycheproof's own, never written here.
//!
//! The probe is built by `make build` (`cargo build --release --target wasm32-wasip1 -p vector-probe`);
//! this test builds nothing. It fails (never skips) when the probe or Envoy is missing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};
use wasm_test_harness::client::{parse_response, Response};
use wasm_test_harness::envoy::{self, Envoy, EnvoyOptions};
use wasm_test_harness::repo_root;

/// The files run here (repo-relative under tests/vectors/wycheproof/). The algorithm of each group
/// comes from the group itself (`type`, `sha`, curve), not from this list.
const FILES: &[&str] = &[
    "ecdsa_secp256r1_sha256_p1363_test.json",
    "ecdsa_secp384r1_sha384_p1363_test.json",
    "ecdsa_secp521r1_sha512_p1363_test.json",
    "rsa_signature_2048_sha256_test.json",
    "rsa_signature_2048_sha384_test.json",
    "rsa_signature_2048_sha512_test.json",
    "rsa_signature_4096_sha256_test.json",
];

const BACKENDS: [&str; 2] = ["host", "wasm"];

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Expected {
    Valid,
    Invalid,
    Acceptable,
}

struct Vector {
    file: &'static str,
    group: usize,
    tc_id: u64,
    comment: String,
    alg: &'static str,
    /// base64url of the JWK JSON (the `x-jwk` header).
    jwk_b64: String,
    msg_hex: String,
    sig_hex: String,
    expected: Expected,
}

/// What the probe said about one vector.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Answer {
    verdict: String,
    host_calls: u32,
    host_failures: u32,
    key_reason: Option<String>,
}

fn load(file: &str) -> Value {
    let path = repo_root().join("tests/vectors/wycheproof").join(file);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: not JSON: {e}", path.display()))
}

fn hex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex {s:?}");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap_or_else(|e| panic!("hex {s:?}: {e}")))
        .collect()
}

/// The group's JWK (`publicKeyJwk` or `keyJwk`). EC groups with special-case public keys carry no
/// JWK; for those one is built from the `uncompressed` point (as root tests/wycheproof.rs does), so it
/// still goes through the filter's JWK parser.
fn group_jwk(g: &Value) -> Value {
    if let Some(jwk) = g.get("publicKeyJwk").or_else(|| g.get("keyJwk")) {
        return jwk.clone();
    }
    let pk = &g["publicKey"];
    let point = hex(pk["uncompressed"]
        .as_str()
        .expect("group has neither a JWK nor an uncompressed point"));
    assert_eq!(point[0], 4, "uncompressed point must start with 04");
    let half = (point.len() - 1) / 2;
    json!({
        "kty": "EC",
        "crv": jwk_curve(pk["curve"].as_str()),
        "x": URL_SAFE_NO_PAD.encode(&point[1..1 + half]),
        "y": URL_SAFE_NO_PAD.encode(&point[1 + half..]),
        "kid": "built-from-uncompressed",
    })
}

fn jwk_curve(wycheproof: Option<&str>) -> &'static str {
    match wycheproof {
        Some("secp256r1") => "P-256",
        Some("secp384r1") => "P-384",
        Some("secp521r1") => "P-521",
        other => panic!("curve {other:?}"),
    }
}

/// The JWS algorithm a group's vectors are for: from its `type`, `sha` and (ECDSA) curve.
fn group_alg(file: &str, g: &Value) -> &'static str {
    let sha = g["sha"]
        .as_str()
        .unwrap_or_else(|| panic!("{file}: group without sha"));
    match (g["type"].as_str(), sha) {
        (Some("EcdsaP1363Verify"), sha) => {
            let (alg, crv) = match sha {
                "SHA-256" => ("ES256", "P-256"),
                "SHA-384" => ("ES384", "P-384"),
                "SHA-512" => ("ES512", "P-521"),
                other => panic!("{file}: ECDSA with {other}"),
            };
            // JWS binds the hash to the curve (RFC 7518 §3.4): a group that pairs them otherwise
            // would have no JWS algorithm.
            assert_eq!(
                jwk_curve(g["publicKey"]["curve"].as_str()),
                crv,
                "{file}: {alg} group on another curve"
            );
            alg
        }
        (Some("RsassaPkcs1Verify"), "SHA-256") => "RS256",
        (Some("RsassaPkcs1Verify"), "SHA-384") => "RS384",
        (Some("RsassaPkcs1Verify"), "SHA-512") => "RS512",
        (t, s) => panic!("{file}: no JWS algorithm for group type {t:?} with {s}"),
    }
}

fn vectors(file: &'static str) -> Vec<Vector> {
    let doc = load(file);
    let groups = doc["testGroups"]
        .as_array()
        .unwrap_or_else(|| panic!("{file}: no testGroups"));
    let mut out = Vec::new();
    for (gi, g) in groups.iter().enumerate() {
        let alg = group_alg(file, g);
        let jwk_b64 = URL_SAFE_NO_PAD.encode(group_jwk(g).to_string());
        for t in g["tests"]
            .as_array()
            .unwrap_or_else(|| panic!("{file}: group {gi} has no tests"))
        {
            let expected = match t["result"].as_str() {
                Some("valid") => Expected::Valid,
                Some("invalid") => Expected::Invalid,
                Some("acceptable") => Expected::Acceptable,
                other => panic!("{file} tcId {}: result {other:?}", t["tcId"]),
            };
            out.push(Vector {
                file,
                group: gi,
                tc_id: t["tcId"].as_u64().unwrap_or_else(|| panic!("{file}: tcId")),
                comment: t["comment"].as_str().unwrap_or_default().to_owned(),
                alg,
                jwk_b64: jwk_b64.clone(),
                msg_hex: t["msg"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{file}: msg"))
                    .to_owned(),
                sig_hex: t["sig"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{file}: sig"))
                    .to_owned(),
                expected,
            });
        }
    }
    let declared = doc["numberOfTests"]
        .as_u64()
        .unwrap_or_else(|| panic!("{file}: numberOfTests"));
    assert_eq!(
        out.len() as u64,
        declared,
        "{file}: every declared test is loaded"
    );
    out
}

/// One keep-alive HTTP/1.1 connection to the probe's listener.
struct Conn {
    port: u16,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
}

impl Conn {
    fn new(port: u16) -> Conn {
        Conn {
            port,
            stream: None,
            buf: Vec::new(),
        }
    }

    fn connect(&mut self) -> Result<&mut TcpStream, String> {
        if self.stream.is_none() {
            let s = TcpStream::connect(("127.0.0.1", self.port))
                .map_err(|e| format!("connect: {e}"))?;
            s.set_read_timeout(Some(Duration::from_secs(15)))
                .map_err(|e| e.to_string())?;
            s.set_nodelay(true).map_err(|e| e.to_string())?;
            self.stream = Some(s);
            self.buf.clear();
        }
        self.stream.as_mut().ok_or_else(|| "no stream".to_owned())
    }

    /// GET /vector with these headers; one retry on a fresh connection if the server closed this one.
    fn get(&mut self, headers: &[(&str, &[u8])]) -> Result<Response, String> {
        match self.try_get(headers) {
            Ok(r) => Ok(r),
            Err(first) => {
                self.stream = None;
                self.try_get(headers)
                    .map_err(|e| format!("{e} (after {first})"))
            }
        }
    }

    fn try_get(&mut self, headers: &[(&str, &[u8])]) -> Result<Response, String> {
        let mut req = b"GET /vector HTTP/1.1\r\nHost: probe\r\n".to_vec();
        for (n, v) in headers {
            req.extend_from_slice(n.as_bytes());
            req.extend_from_slice(b": ");
            req.extend_from_slice(v);
            req.extend_from_slice(b"\r\n");
        }
        req.extend_from_slice(b"\r\n");
        self.connect()?
            .write_all(&req)
            .map_err(|e| format!("write: {e}"))?;
        loop {
            if let Some(len) = complete_len(&self.buf)? {
                let raw: Vec<u8> = self.buf.drain(..len).collect();
                let r = parse_response(&raw)?;
                if r.header("connection")
                    .is_some_and(|v| v.eq_ignore_ascii_case("close"))
                {
                    self.stream = None;
                }
                return Ok(r);
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = self
                .connect()?
                .read(&mut chunk)
                .map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err("connection closed before a whole response".into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// Length of the first whole response in `buf` (it must carry Content-Length, as Envoy's local
/// replies do), or None while incomplete.
fn complete_len(buf: &[u8]) -> Result<Option<usize>, String> {
    let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]);
    let len = head
        .split("\r\n")
        .filter_map(|l| l.split_once(':'))
        .find(|(n, _)| n.trim().eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| {
            v.trim()
                .parse::<usize>()
                .map_err(|e| format!("content-length {v:?}: {e}"))
        })
        .transpose()?
        .ok_or_else(|| format!("response without content-length: {head}"))?;
    let total = head_end + 4 + len;
    Ok((buf.len() >= total).then_some(total))
}

fn probe_path() -> std::path::PathBuf {
    let path = envoy::vector_probe_path();
    assert!(
        path.is_file(),
        "the vector probe is not built: {} is missing. Run `make build` (or `cargo build --release \
         --target wasm32-wasip1 -p vector-probe`) first.",
        path.display()
    );
    path
}

fn options(plugin_config: String) -> EnvoyOptions {
    EnvoyOptions {
        wasm: probe_path(),
        plugin_config,
        concurrency: 2,
        ..EnvoyOptions::default()
    }
}

fn start_probe(backend: &str) -> Envoy {
    let envoy =
        Envoy::start(options(json!({ "backend": backend }).to_string())).unwrap_or_else(|e| {
            panic!("Envoy with the vector probe (backend {backend}) did not start: {e}")
        });
    assert!(
        envoy.wait_for_log(
            &format!("vector-probe: configured, backend {backend}"),
            Duration::from_secs(10)
        ),
        "the probe did not report backend {backend}:\n{}",
        envoy.log_tail(40)
    );
    envoy
}

fn answer(backend: &str, v: &Vector, r: &Response) -> Result<Answer, String> {
    let at = || format!("{} tcId {} ({}) on {backend}", v.file, v.tc_id, v.comment);
    if r.status != 200 {
        return Err(format!(
            "{}: status {} ({})",
            at(),
            r.status,
            r.header("x-reason").unwrap_or(&r.body)
        ));
    }
    if r.header("x-backend") != Some(backend) {
        return Err(format!("{}: x-backend {:?}", at(), r.header("x-backend")));
    }
    let num = |name: &str| -> Result<u32, String> {
        r.header(name)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("{}: {name} {:?}", at(), r.header(name)))
    };
    let verdict = r.header("x-verdict").unwrap_or_default().to_owned();
    if !["valid", "invalid", "key-refused"].contains(&verdict.as_str()) {
        return Err(format!("{}: x-verdict {verdict:?}", at()));
    }
    Ok(Answer {
        verdict,
        host_calls: num("x-host-calls")?,
        host_failures: num("x-host-failures")?,
        key_reason: r.header("x-key-reason").map(str::to_owned),
    })
}

/// Every vector through one Envoy running the probe with `backend`; answers in `vs` order.
fn run_backend(backend: &str, vs: &[Vector]) -> Vec<Answer> {
    let envoy = start_probe(backend);
    let started = Instant::now();
    let mut conn = Conn::new(envoy.listen_port());
    let mut answers = Vec::with_capacity(vs.len());
    let mut failures = Vec::new();
    for v in vs {
        let headers: [(&str, &[u8]); 4] = [
            ("x-alg", v.alg.as_bytes()),
            ("x-jwk", v.jwk_b64.as_bytes()),
            ("x-msg", v.msg_hex.as_bytes()),
            ("x-sig", v.sig_hex.as_bytes()),
        ];
        let r = conn.get(&headers).unwrap_or_else(|e| {
            panic!(
                "{} tcId {} on {backend}: {e}\n{}",
                v.file,
                v.tc_id,
                envoy.log_tail(30)
            )
        });
        match answer(backend, v, &r) {
            Ok(a) => answers.push(a),
            Err(e) => {
                failures.push(e);
                answers.push(Answer {
                    verdict: "error".into(),
                    host_calls: 0,
                    host_failures: 0,
                    key_reason: None,
                });
            }
        }
    }
    eprintln!(
        "backend {backend}: {} vectors in {:.1} s",
        vs.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "{} of {} requests on backend {backend} gave no verdict:\n{}\n{}",
        failures.len(),
        vs.len(),
        failures
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n"),
        envoy.log_tail(30)
    );
    answers
}

#[derive(Default)]
struct Counts {
    verdicts: BTreeMap<String, usize>,
    host_decided: usize,
}

#[test]
fn wycheproof_vectors_verify_alike_on_the_host_and_the_wasm_backend_in_envoy() {
    probe_path();
    let vs: Vec<Vector> = FILES.iter().flat_map(|f| vectors(f)).collect();
    let runs: Vec<(&str, Vec<Answer>)> =
        BACKENDS.iter().map(|b| (*b, run_backend(b, &vs))).collect();

    let mut failures: Vec<String> = Vec::new();
    // (file, backend) -> counts; (file, expected) -> vectors.
    let mut counts: BTreeMap<(&str, &str), Counts> = BTreeMap::new();
    let mut expected: BTreeMap<(&str, Expected), usize> = BTreeMap::new();
    // key-refused groups: (file, group) -> reason.
    let mut refused: BTreeMap<(&str, usize), String> = BTreeMap::new();
    for (i, v) in vs.iter().enumerate() {
        *expected.entry((v.file, v.expected)).or_default() += 1;
        let at = format!(
            "{} tcId {} ({}, {:?})",
            v.file, v.tc_id, v.comment, v.expected
        );
        for (backend, answers) in &runs {
            let a = &answers[i];
            let c = counts.entry((v.file, backend)).or_default();
            *c.verdicts.entry(a.verdict.clone()).or_default() += 1;
            match (*backend, a.host_calls, a.host_failures) {
                ("wasm", 0, _) => {}
                ("wasm", n, _) => {
                    failures.push(format!("{at}: the wasm backend asked the host {n} times"))
                }
                (_, _, f) if f > 0 => failures.push(format!(
                    "{at}: {f} host calls gave no answer (decided in wasm instead)"
                )),
                (_, 0, _) => {
                    // Only the filter's own pre-checks (signature length, r/s range) decide without
                    // the host, and they only ever refuse.
                    if a.verdict == "valid" {
                        failures.push(format!(
                            "{at}: valid on the host backend without asking the host"
                        ));
                    }
                }
                (_, _, _) => c.host_decided += 1,
            }
            match (v.expected, a.verdict.as_str()) {
                (Expected::Valid, "valid")
                | (Expected::Invalid, "invalid")
                | (Expected::Acceptable, _) => {}
                (Expected::Invalid, "key-refused") => {}
                (e, got) => failures.push(format!("{at} on {backend}: expected {e:?}, got {got}")),
            }
            if a.verdict == "key-refused" {
                let reason = a.key_reason.clone().unwrap_or_default();
                refused.insert((v.file, v.group), reason);
            }
        }
        let (h, w) = (&runs[0].1[i], &runs[1].1[i]);
        if h.verdict != w.verdict {
            failures.push(format!(
                "{at}: host says {}, wasm says {}",
                h.verdict, w.verdict
            ));
        }
    }
    // A refused key refuses every vector of its group, on both backends.
    for (i, v) in vs.iter().enumerate() {
        if refused.contains_key(&(v.file, v.group)) {
            for (backend, answers) in &runs {
                if answers[i].verdict != "key-refused" {
                    failures.push(format!(
                        "{} tcId {}: group {}'s key was refused for another vector but {backend} says {}",
                        v.file, v.tc_id, v.group, answers[i].verdict
                    ));
                }
            }
        }
    }

    for file in FILES {
        let exp = |e| expected.get(&(*file, e)).copied().unwrap_or(0);
        let total = exp(Expected::Valid) + exp(Expected::Invalid) + exp(Expected::Acceptable);
        let mut line = format!(
            "{file}: {total} vectors (valid {}, invalid {}, acceptable {})",
            exp(Expected::Valid),
            exp(Expected::Invalid),
            exp(Expected::Acceptable)
        );
        for backend in BACKENDS {
            let c = counts
                .get(&(*file, backend))
                .unwrap_or_else(|| panic!("{file}: no counts for {backend}"));
            let v = |k: &str| c.verdicts.get(k).copied().unwrap_or(0);
            line.push_str(&format!(
                "; {backend}: valid {} invalid {} key-refused {}",
                v("valid"),
                v("invalid"),
                v("key-refused")
            ));
            if backend == "host" {
                line.push_str(&format!(" (host decided {})", c.host_decided));
                if c.host_decided == 0 {
                    failures.push(format!("{file}: the host backend never asked the host"));
                }
            }
        }
        let groups: Vec<String> = refused
            .iter()
            .filter(|((f, _), _)| f == file)
            .map(|((_, g), why)| format!("group {g}: {why}"))
            .collect();
        if !groups.is_empty() {
            line.push_str(&format!("; keys refused: {}", groups.join(", ")));
        }
        eprintln!("{line}");
        if exp(Expected::Valid) == 0 {
            failures.push(format!("{file}: no valid vectors loaded"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures
            .iter()
            .take(40)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Headers to replace (`Some`) or leave out (`None`) in a request.
type Changes<'a> = Vec<(&'a str, Option<&'a [u8]>)>;

#[test]
fn bad_input_is_a_400_with_a_reason_and_the_vm_keeps_answering() {
    let envoy = start_probe("wasm");
    let mut conn = Conn::new(envoy.listen_port());
    let v = vectors("ecdsa_secp256r1_sha256_p1363_test.json")
        .into_iter()
        .find(|v| v.expected == Expected::Valid)
        .expect("a valid P-256 vector");
    let good: Vec<(&str, Vec<u8>)> = vec![
        ("x-alg", v.alg.into()),
        ("x-jwk", v.jwk_b64.clone().into()),
        ("x-msg", v.msg_hex.clone().into()),
        ("x-sig", v.sig_hex.clone().into()),
    ];
    let send = |conn: &mut Conn, changed: &[(&str, Option<&[u8]>)]| -> Response {
        let mut hs: Vec<(&str, Vec<u8>)> = good.clone();
        for (name, value) in changed {
            hs.retain(|(n, _)| n != name);
            if let Some(value) = value {
                hs.push((name, value.to_vec()));
            }
        }
        let refs: Vec<(&str, &[u8])> = hs.iter().map(|(n, v)| (*n, v.as_slice())).collect();
        conn.get(&refs)
            .unwrap_or_else(|e| panic!("{e}\n{}", envoy.log_tail(30)))
    };
    let r = send(&mut conn, &[]);
    assert_eq!(
        (r.status, r.header("x-verdict")),
        (200, Some("valid")),
        "{r:?}"
    );
    let not_json = URL_SAFE_NO_PAD.encode(b"{not json");
    let with_alg = |jwk_b64: &str, alg: &str| {
        let mut jwk: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(jwk_b64).unwrap()).unwrap();
        jwk["alg"] = json!(alg);
        URL_SAFE_NO_PAD.encode(jwk.to_string())
    };
    // An RSA key bound to RS512, asked for RS256: the filter would not use it for this token.
    let rsa = vectors("rsa_signature_2048_sha256_test.json")
        .into_iter()
        .next()
        .expect("an RSA vector");
    let bound_other = with_alg(&rsa.jwk_b64, "RS512");
    let cases: Vec<(&str, Changes, &str)> = vec![
        ("no x-alg", vec![("x-alg", None)], "missing header x-alg"),
        (
            "unknown alg",
            vec![("x-alg", Some(b"es256"))],
            "unknown algorithm",
        ),
        (
            "non-UTF-8 alg",
            vec![("x-alg", Some(b"ES\xff256"))],
            "unknown algorithm",
        ),
        (
            "odd hex",
            vec![("x-sig", Some(b"abc"))],
            "odd number of hex digits",
        ),
        ("not hex", vec![("x-msg", Some(b"zz"))], "not hex"),
        (
            "jwk not base64url",
            vec![("x-jwk", Some(b"!!"))],
            "not base64url",
        ),
        (
            "jwk not JSON",
            vec![("x-jwk", Some(not_json.as_bytes()))],
            "not JSON",
        ),
        (
            "jwk bound to another alg",
            vec![
                ("x-alg", Some(b"RS256")),
                ("x-jwk", Some(bound_other.as_bytes())),
            ],
            "bound to RS512 but x-alg is RS256",
        ),
    ];
    for (what, changed, reason) in cases {
        let r = send(&mut conn, &changed);
        assert_eq!(r.status, 400, "{what}: {r:?}");
        let got = r.header("x-reason").unwrap_or_default();
        assert!(
            got.contains(reason),
            "{what}: reason {got:?} should name {reason:?}"
        );
        assert_eq!(r.body, got, "{what}: the body is the reason");
    }
    // A key the parser refuses is a verdict, not an error: a symmetric key, a P-256 key bound to ES384.
    let oct = URL_SAFE_NO_PAD.encode(br#"{"kty":"oct","k":"c2VjcmV0"}"#);
    let p256_as_es384 = with_alg(&v.jwk_b64, "ES384");
    for (jwk, why) in [
        (oct, "symmetric keys are never used"),
        (p256_as_es384, "alg does not fit kty"),
    ] {
        let r = send(&mut conn, &[("x-jwk", Some(jwk.as_bytes()))]);
        assert_eq!(
            (r.status, r.header("x-verdict"), r.header("x-key-reason")),
            (200, Some("key-refused"), Some(why)),
            "{r:?}"
        );
    }
    // One changed bit of the signature is invalid; the VM still answers after all of the above.
    let mut sig = hex(&v.sig_hex);
    let last = sig.len() - 1;
    sig[last] ^= 1;
    let flipped: String = sig.iter().map(|b| format!("{b:02x}")).collect();
    let r = send(&mut conn, &[("x-sig", Some(flipped.as_bytes()))]);
    assert_eq!(
        (r.status, r.header("x-verdict")),
        (200, Some("invalid")),
        "{r:?}"
    );
    let r = send(&mut conn, &[]);
    assert_eq!(
        (r.status, r.header("x-verdict")),
        (200, Some("valid")),
        "{r:?}"
    );
    assert!(!envoy.logs().contains("panicked"), "{}", envoy.log_tail(30));
}

#[test]
fn a_probe_config_without_a_known_backend_is_refused_by_envoy() {
    for config in [
        json!({"backend": "gpu"}),
        json!({}),
        json!({"backend": "wasm", "extra": 1}),
    ] {
        let (code, logs) = Envoy::start_expect_exit(options(config.to_string()));
        assert_ne!(
            code, 0,
            "{config}: Envoy started with a refused probe config:\n{logs}"
        );
        assert!(
            logs.contains("vector-probe: "),
            "{config}: the probe says why:\n{logs}"
        );
    }
}
