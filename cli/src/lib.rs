//! `jwt-guard`, the native command: `explain` decides one request offline with the filter's own
//! engine and says why; `lint` gives the config errors Envoy would and the warnings a reviewer
//! would. Built from the same crate as the `.wasm` (without its proxy-wasm entry points), so it
//! cannot drift from what Envoy runs.

pub mod explain;
pub mod keys;
pub mod lint;
