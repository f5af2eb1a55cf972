//! Test tooling: a proxy-wasm HTTP filter that runs one signature test vector per request through
//! jwt-guard's own JWK parser (`jwks::parse_jwk_value`) and signature backends (`crypto::Verifier`),
//! inside a real Envoy. Wycheproof messages are arbitrary bytes, so they cannot be made into JWTs;
//! this module takes them apart instead (`wasm-test-harness/tests/wycheproof_envoy.rs`).
//!
//! Plugin config: `{"backend": "host" | "wasm"}`. With `host`, configuration runs the filter's own
//! host detection (`crypto::detect`, known answers through Envoy's `verify_signature`) and is refused
//! when the host cannot do it, so a `host` run really verifies in the host.
//!
//! Request headers: `x-alg` (JWS alg name), `x-jwk` (base64url of the JWK JSON), `x-msg` and `x-sig`
//! (hex, may be empty). Every request is answered locally:
//! - 200 with `x-verdict: valid | invalid | key-refused` (the JWK parser refused the key; the reason
//!   is in `x-key-reason`), `x-backend: host | wasm`, and `x-host-calls` / `x-host-failures`: how many
//!   `verify_signature` calls this verification made and how many of them did not give a readable
//!   answer (the filter then decides in wasm instead).
//! - 400 with `x-reason` (also the body) for any input it cannot use. Never a trap: no unwrap, no
//!   indexing that can fail, and only the SDK's byte-level header reads (its `String` reads panic on
//!   non-UTF-8 values).

use std::cell::Cell;
use std::rc::Rc;

use jwt_guard::crypto::{self, Alg, Backend, HostError, SignatureHost, Verifier};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(ProbeRoot { backend: Rc::new(Cell::new(None)) })
    });
}}

/// The host the `host` backend asks: Envoy's `verify_signature` in wasm, nothing natively.
#[cfg(target_arch = "wasm32")]
fn real_host() -> &'static dyn SignatureHost {
    &jwt_guard::hostcall::ProxyWasmHost
}

#[cfg(not(target_arch = "wasm32"))]
fn real_host() -> &'static dyn SignatureHost {
    &crypto::NoHost
}

/// Counts the host calls of one verification, and those that gave no readable answer.
struct CountingHost {
    inner: &'static dyn SignatureHost,
    calls: Cell<u32>,
    failures: Cell<u32>,
}

impl SignatureHost for CountingHost {
    fn call_verify_signature(&self, args: &[u8]) -> Result<Vec<u8>, HostError> {
        self.calls.set(self.calls.get().saturating_add(1));
        let answer = self.inner.call_verify_signature(args);
        let readable =
            matches!(&answer, Ok(bytes) if crypto::decode_verify_result(bytes).is_some());
        if !readable {
            self.failures.set(self.failures.get().saturating_add(1));
        }
        answer
    }
}

fn log(level: LogLevel, message: &str) {
    // Logging is best effort; a failed log call must not trap the VM.
    let _ = proxy_wasm::hostcalls::log(level, message);
}

struct ProbeRoot {
    /// Set by a successful `on_configure`; `None` until then.
    backend: Rc<Cell<Option<Backend>>>,
}

impl Context for ProbeRoot {}

/// `{"backend": "host" | "wasm"}`, nothing else.
fn parse_config(bytes: &[u8]) -> Result<Backend, String> {
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| format!("plugin config is not JSON: {e}"))?;
    let object = value
        .as_object()
        .ok_or("plugin config must be a JSON object")?;
    if let Some(other) = object.keys().find(|k| k.as_str() != "backend") {
        return Err(format!("unknown plugin config member {other:?}"));
    }
    match object.get("backend").and_then(serde_json::Value::as_str) {
        Some("host") => Ok(Backend::Host),
        Some("wasm") => Ok(Backend::Wasm),
        Some(other) => Err(format!(
            "backend must be \"host\" or \"wasm\", not {other:?}"
        )),
        None => Err("plugin config needs a string member \"backend\"".to_owned()),
    }
}

impl RootContext for ProbeRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let config = self.get_plugin_configuration().unwrap_or_default();
        let backend = match parse_config(&config) {
            Ok(b) => b,
            Err(e) => {
                log(LogLevel::Error, &format!("vector-probe: {e}"));
                return false;
            }
        };
        if backend == Backend::Host {
            if let Err(e) = jwt_guard::detect::detect(real_host()) {
                log(
                    LogLevel::Error,
                    &format!("vector-probe: backend host refused: the host cannot verify: {e}"),
                );
                return false;
            }
        }
        self.backend.set(Some(backend));
        log(
            LogLevel::Info,
            &format!("vector-probe: configured, backend {}", backend.name()),
        );
        true
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Probe {
            backend: self.backend.clone(),
        }))
    }
}

struct Probe {
    backend: Rc<Cell<Option<Backend>>>,
}

impl Context for Probe {}

/// What one vector gave.
struct Outcome {
    verdict: &'static str,
    key_reason: &'static str,
    host_calls: u32,
    host_failures: u32,
}

fn hex(name: &str, text: &[u8]) -> Result<Vec<u8>, String> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    if !text.len().is_multiple_of(2) {
        return Err(format!("{name}: odd number of hex digits"));
    }
    text.chunks(2)
        .map(|pair| match pair {
            [hi, lo] => match (nibble(*hi), nibble(*lo)) {
                (Some(h), Some(l)) => Ok(h << 4 | l),
                _ => Err(format!("{name}: not hex")),
            },
            _ => Err(format!("{name}: odd number of hex digits")),
        })
        .collect()
}

impl Probe {
    fn header(&self, name: &str) -> Result<Vec<u8>, String> {
        self.get_http_request_header_bytes(name)
            .ok_or_else(|| format!("missing header {name}"))
    }

    fn run(&self, backend: Backend) -> Result<Outcome, String> {
        let alg_name = self.header("x-alg")?;
        let alg = std::str::from_utf8(&alg_name)
            .ok()
            .and_then(Alg::from_name)
            .ok_or_else(|| {
                format!(
                    "x-alg: unknown algorithm {:?}",
                    String::from_utf8_lossy(&alg_name)
                )
            })?;
        let jwk_text =
            jwt_guard::b64::decode(&self.header("x-jwk")?).ok_or("x-jwk: not base64url")?;
        let jwk: serde_json::Value =
            serde_json::from_slice(&jwk_text).map_err(|e| format!("x-jwk: not JSON: {e}"))?;
        let msg = hex("x-msg", &self.header("x-msg")?)?;
        let sig = hex("x-sig", &self.header("x-sig")?)?;
        let (bound, key) = match jwt_guard::jwks::parse_jwk_value(&jwk) {
            Ok(parsed) => parsed,
            Err(reason) => {
                return Ok(Outcome {
                    verdict: "key-refused",
                    key_reason: reason,
                    host_calls: 0,
                    host_failures: 0,
                })
            }
        };
        if let Some(bound) = bound {
            if bound != alg {
                return Err(format!(
                    "the JWK is bound to {} but x-alg is {}",
                    bound.name(),
                    alg.name()
                ));
            }
        }
        let host = CountingHost {
            inner: real_host(),
            calls: Cell::new(0),
            failures: Cell::new(0),
        };
        let valid = Verifier::new(backend, &host).verify(alg, &key, &msg, &sig);
        Ok(Outcome {
            verdict: if valid { "valid" } else { "invalid" },
            key_reason: "",
            host_calls: host.calls.get(),
            host_failures: host.failures.get(),
        })
    }
}

impl HttpContext for Probe {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(backend) = self.backend.get() else {
            let reason = "not configured";
            self.send_http_response(400, vec![("x-reason", reason)], Some(reason.as_bytes()));
            return Action::Pause;
        };
        match self.run(backend) {
            Ok(o) => {
                let (calls, failures) = (o.host_calls.to_string(), o.host_failures.to_string());
                let mut headers = vec![
                    ("x-verdict", o.verdict),
                    ("x-backend", backend.name()),
                    ("x-host-calls", calls.as_str()),
                    ("x-host-failures", failures.as_str()),
                ];
                if !o.key_reason.is_empty() {
                    headers.push(("x-key-reason", o.key_reason));
                }
                self.send_http_response(200, headers, Some(o.verdict.as_bytes()));
            }
            Err(reason) => {
                // Header values must be one line of visible text.
                let line: String = reason
                    .chars()
                    .map(|c| {
                        if c.is_ascii_graphic() || c == ' ' {
                            c
                        } else {
                            '?'
                        }
                    })
                    .collect();
                self.send_http_response(
                    400,
                    vec![("x-reason", line.as_str()), ("x-backend", backend.name())],
                    Some(line.as_bytes()),
                );
            }
        }
        Action::Pause
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_names_one_backend() {
        assert_eq!(parse_config(br#"{"backend":"host"}"#), Ok(Backend::Host));
        assert_eq!(parse_config(br#"{"backend":"wasm"}"#), Ok(Backend::Wasm));
        for bad in [
            &br#"{"backend":"Host"}"#[..],
            br#"{"backend":1}"#,
            br#"{}"#,
            br#"{"backend":"wasm","x":1}"#,
            b"[]",
            b"",
        ] {
            assert!(
                parse_config(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn hex_is_strict() {
        assert_eq!(hex("h", b""), Ok(vec![]));
        assert_eq!(hex("h", b"00fFa1"), Ok(vec![0, 0xff, 0xa1]));
        assert!(hex("h", b"abc").is_err());
        assert!(hex("h", b"zz").is_err());
    }
}
