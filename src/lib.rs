//! jwt-guard: an identity enforcement filter for Envoy (proxy-wasm, Rust).
//!
//! Everything except `filter` is a pure core that builds and tests natively: token parsing, key sets,
//! signature verification, claim checks, rule matching, the deny responses and the shared-data cache
//! protocol. `filter` is the only module that talks to proxy-wasm, and it is compiled only for wasm32.

pub mod audit;
pub mod authenticator;
pub mod b64;
pub mod binding;
pub mod codes;
pub mod config;
pub mod crypto;
pub mod detect;
pub mod engine;
pub mod error;
pub mod extractor;
pub mod fetcher;
pub mod headers;
pub mod host;
#[cfg(target_arch = "wasm32")]
pub mod hostcall;
pub mod json;
pub mod jwks;
pub mod keycache;
pub mod metrics;
pub mod p256_fast;
pub mod policy;
pub mod request;
pub mod response;
pub mod rsa_fast;
pub mod rules;
pub mod spelling;
pub mod token;
pub mod tokencache;
pub mod units;
pub mod wire;

/// The proxy-wasm entry points. Behind the default `filter` feature so that another wasm module (the
/// harness's vector probe) can link the core without exporting a second root context.
#[cfg(all(target_arch = "wasm32", feature = "filter"))]
mod filter;
