//! Integration test harness for jwt-guard (a proxy-wasm JWT filter running inside a real Envoy).
//!
//! - [`keys`]: pre-generated fixture keys and the published JWKS.
//! - [`tokens`]: token minting (valid, arbitrary-header and malformed).
//! - [`dpop`]: DPoP proofs, RFC 7638 thumbprints, DPoP- and certificate-bound tokens.
//! - [`tls`]: a test PKI (openssl), TLS listener templates, HTTPS requests (curl).
//! - [`idp`]: mock identity provider serving /jwks.json (with failure modes) and /mint.
//! - [`echo`]: upstream that echoes and records requests.
//! - [`envoy`]: renders a bootstrap template and runs a real Envoy.
//! - [`client`]: raw HTTP/1.1 client that can send any header bytes.

pub mod args;
pub mod bench;
pub mod check;
pub mod client;
pub mod dpop;
pub mod echo;
pub mod envoy;
pub mod idp;
pub mod keys;
pub mod server;
pub mod stack;
pub mod tls;
pub mod tokens;

pub use client::{http_get, http_request, Response};
pub use echo::{EchoUpstream, RecordedRequest};
pub use envoy::{render, repo_root, validate, wasm_path, EdgeSettings, Envoy, EnvoyOptions};
pub use idp::{Behavior, MockIdp};
pub use keys::{jwks, KeyName};
pub use tokens::{encode_parts, mint, sign_raw, std_claims};
