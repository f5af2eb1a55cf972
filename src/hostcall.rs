//! The raw proxy-wasm import behind the `host` signature backend (wasm32 only).
//!
//! The SDK's `hostcalls::call_foreign_function` panics on a status it does not know, which would
//! trap the VM; this wrapper declares the import itself with a plain `u32` status, so every status is
//! a value (`crypto::HostError::Status`), and takes ownership of the buffer the host allocated for the
//! answer (through the SDK's exported `proxy_on_memory_allocate`) so it is freed.

use crate::crypto::{HostError, SignatureHost, HOST_VERIFY_FUNCTION};

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_call_foreign_function(
        function_name_data: *const u8,
        function_name_size: usize,
        arguments_data: *const u8,
        arguments_size: usize,
        results_data: *mut *mut u8,
        results_size: *mut usize,
    ) -> u32;
}

/// proxy-wasm `Status::Ok`.
const STATUS_OK: u32 = 0;

/// Calls a foreign function of the host: its answer, or the status it returned.
pub fn call_foreign_function(name: &str, args: &[u8]) -> Result<Vec<u8>, HostError> {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: the pointers and lengths describe live slices for the duration of the call; the host
    // writes `data`/`size` only on success, with a buffer it obtained from this module's allocator.
    let status = unsafe {
        proxy_call_foreign_function(
            name.as_ptr(),
            name.len(),
            args.as_ptr(),
            args.len(),
            &mut data,
            &mut size,
        )
    };
    if status != STATUS_OK {
        return Err(HostError::Status(status));
    }
    if data.is_null() || size == 0 {
        return Ok(Vec::new());
    }
    // SAFETY: the host allocated `size` bytes at `data` through `proxy_on_memory_allocate`, which
    // hands out the buffer of a `Vec<u8>` with that capacity; this takes it back exactly once.
    Ok(unsafe { Vec::from_raw_parts(data, size, size) })
}

/// Envoy's `verify_signature` as the `host` backend's host.
pub struct ProxyWasmHost;

impl SignatureHost for ProxyWasmHost {
    fn call_verify_signature(&self, args: &[u8]) -> Result<Vec<u8>, HostError> {
        call_foreign_function(HOST_VERIFY_FUNCTION, args)
    }
}
