//! The raw proxy-wasm imports the filter calls (wasm32 only).
//!
//! The SDK's `hostcalls::*` panic on any status they do not expect (and `get_map_bytes` on a
//! header name that is not UTF-8), which traps the VM and takes every request of the worker with
//! it. These wrappers declare the imports themselves with a plain `u32` status, so every status is
//! a value ([`HostStatus`]) the filter turns into a logged, fail-closed outcome. Buffers the host
//! hands back were allocated through the SDK's exported `proxy_on_memory_allocate` and are taken
//! back as `Vec<u8>`, so they are freed.
//!
//! One SDK call stays: `dispatch_http_call`, because the SDK's dispatcher must register the
//! returned token to route the answer to this context; it handles every status Envoy's
//! `proxy_http_call` returns (`Ok`, `BadArgument`, `InternalFailure`).

use crate::crypto::{HostError, SignatureHost, HOST_VERIFY_FUNCTION};
use crate::wire;
use proxy_wasm::types::{BufferType, LogLevel, MapType, MetricType, StreamType};
use std::ptr::{null, null_mut};

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_log(level: u32, message_data: *const u8, message_size: usize) -> u32;
    fn proxy_get_current_time_nanoseconds(return_time: *mut u64) -> u32;
    fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
    fn proxy_get_buffer_bytes(
        buffer_type: u32,
        start: usize,
        max_size: usize,
        return_data: *mut *mut u8,
        return_size: *mut usize,
    ) -> u32;
    fn proxy_get_header_map_pairs(
        map_type: u32,
        return_data: *mut *mut u8,
        return_size: *mut usize,
    ) -> u32;
    fn proxy_get_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        return_data: *mut *mut u8,
        return_size: *mut usize,
    ) -> u32;
    fn proxy_add_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_replace_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_remove_header_map_value(map_type: u32, key_data: *const u8, key_size: usize) -> u32;
    fn proxy_get_property(
        path_data: *const u8,
        path_size: usize,
        return_data: *mut *mut u8,
        return_size: *mut usize,
    ) -> u32;
    fn proxy_set_property(
        path_data: *const u8,
        path_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_get_shared_data(
        key_data: *const u8,
        key_size: usize,
        return_data: *mut *mut u8,
        return_size: *mut usize,
        return_cas: *mut u32,
    ) -> u32;
    fn proxy_set_shared_data(
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
        cas: u32,
    ) -> u32;
    fn proxy_continue_stream(stream_type: u32) -> u32;
    #[allow(clippy::too_many_arguments)]
    fn proxy_send_local_response(
        status_code: u32,
        details_data: *const u8,
        details_size: usize,
        body_data: *const u8,
        body_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> u32;
    fn proxy_set_effective_context(context_id: u32) -> u32;
    fn proxy_define_metric(
        metric_type: u32,
        name_data: *const u8,
        name_size: usize,
        return_id: *mut u32,
    ) -> u32;
    fn proxy_increment_metric(metric_id: u32, offset: i64) -> u32;
    fn proxy_record_metric(metric_id: u32, value: u64) -> u32;
    fn proxy_call_foreign_function(
        function_name_data: *const u8,
        function_name_size: usize,
        arguments_data: *const u8,
        arguments_size: usize,
        results_data: *mut *mut u8,
        results_size: *mut usize,
    ) -> u32;
}

pub use crate::host::HostStatus;

pub type HostResult<T> = Result<T, HostStatus>;

/// proxy-wasm `Status::Ok`.
const STATUS_OK: u32 = 0;

fn check(status: u32) -> HostResult<()> {
    if status == STATUS_OK {
        Ok(())
    } else {
        Err(HostStatus(status))
    }
}

/// Takes back a buffer the host allocated through `proxy_on_memory_allocate`.
///
/// # Safety
/// `data`/`size` must be what the host returned from a successful call: null, or a buffer of
/// `size` bytes from this module's allocator that nothing else owns.
unsafe fn take(data: *mut u8, size: usize) -> Vec<u8> {
    if data.is_null() {
        Vec::new()
    } else {
        // SAFETY: per the contract above, `proxy_on_memory_allocate` handed out the buffer of a
        // `Vec<u8>` with capacity `size`; this takes it back exactly once.
        unsafe { Vec::from_raw_parts(data, size, size) }
    }
}

/// Runs a host call that returns a buffer: `Ok(Some)` with it, `Ok(None)` on `NotFound`.
fn buffer(call: impl FnOnce(*mut *mut u8, *mut usize) -> u32) -> HostResult<Option<Vec<u8>>> {
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    let status = call(&mut data, &mut size);
    if status == HostStatus::NOT_FOUND.0 {
        return Ok(None);
    }
    check(status)?;
    // SAFETY: the call succeeded, so `data`/`size` are the host's answer.
    Ok(Some(unsafe { take(data, size) }))
}

pub fn log(level: LogLevel, message: &str) -> HostResult<()> {
    // SAFETY (every call below): pointers and lengths describe live slices for the call's duration,
    // and out-pointers point at locals.
    check(unsafe { proxy_log(level as u32, message.as_ptr(), message.len()) })
}

/// The host's clock in nanoseconds since the Unix epoch.
pub fn current_time_ns() -> HostResult<u64> {
    let mut t: u64 = 0;
    check(unsafe { proxy_get_current_time_nanoseconds(&mut t) })?;
    Ok(t)
}

pub fn set_tick_period_ms(period_ms: u64) -> HostResult<()> {
    let ms = u32::try_from(period_ms).unwrap_or(u32::MAX);
    check(unsafe { proxy_set_tick_period_milliseconds(ms) })
}

/// Up to `max` bytes of a buffer from `start`; `None` when the host has no such buffer.
pub fn get_buffer(kind: BufferType, start: usize, max: usize) -> HostResult<Option<Vec<u8>>> {
    buffer(|d, s| unsafe { proxy_get_buffer_bytes(kind as u32, start, max, d, s) })
}

/// A header map as the host serializes it (parse with [`wire::parse_pairs`]).
pub fn header_pairs(map: MapType) -> HostResult<Vec<u8>> {
    Ok(buffer(|d, s| unsafe { proxy_get_header_map_pairs(map as u32, d, s) })?.unwrap_or_default())
}

/// One header's value (repeats joined by the host); `None` when absent.
pub fn header_value(map: MapType, name: &str) -> HostResult<Option<Vec<u8>>> {
    buffer(|d, s| unsafe {
        proxy_get_header_map_value(map as u32, name.as_ptr(), name.len(), d, s)
    })
}

/// Appends a header value (for a header known to be absent: cheaper than a replace).
pub fn add_header(map: MapType, name: &str, value: &[u8]) -> HostResult<()> {
    check(unsafe {
        proxy_add_header_map_value(
            map as u32,
            name.as_ptr(),
            name.len(),
            value.as_ptr(),
            value.len(),
        )
    })
}

/// Sets a header to exactly this value, replacing every earlier one.
pub fn replace_header(map: MapType, name: &str, value: &[u8]) -> HostResult<()> {
    check(unsafe {
        proxy_replace_header_map_value(
            map as u32,
            name.as_ptr(),
            name.len(),
            value.as_ptr(),
            value.len(),
        )
    })
}

/// Removes every value of a header.
pub fn remove_header(map: MapType, name: &str) -> HostResult<()> {
    check(unsafe { proxy_remove_header_map_value(map as u32, name.as_ptr(), name.len()) })
}

/// A property's value; `None` when the host does not have it.
pub fn get_property(path: &[&str]) -> HostResult<Option<Vec<u8>>> {
    let p = wire::property_path(path);
    buffer(|d, s| unsafe { proxy_get_property(p.as_ptr(), p.len(), d, s) })
}

pub fn set_property(path: &[&str], value: &[u8]) -> HostResult<()> {
    let p = wire::property_path(path);
    check(unsafe { proxy_set_property(p.as_ptr(), p.len(), value.as_ptr(), value.len()) })
}

/// A shared-data entry and its CAS token; `None` when the key is not set.
pub fn get_shared_data(key: &str) -> HostResult<Option<(Vec<u8>, u32)>> {
    let mut cas: u32 = 0;
    let value =
        buffer(|d, s| unsafe { proxy_get_shared_data(key.as_ptr(), key.len(), d, s, &mut cas) })?;
    Ok(value.map(|v| (v, cas)))
}

/// Writes a shared-data entry; with `cas`, only if the entry is still at that version
/// ([`HostStatus::CAS_MISMATCH`] otherwise).
pub fn set_shared_data(key: &str, value: &[u8], cas: Option<u32>) -> HostResult<()> {
    check(unsafe {
        proxy_set_shared_data(
            key.as_ptr(),
            key.len(),
            value.as_ptr(),
            value.len(),
            cas.unwrap_or(0),
        )
    })
}

pub fn resume_http_request() -> HostResult<()> {
    check(unsafe { proxy_continue_stream(StreamType::HttpRequest as u32) })
}

/// Answers the current request locally.
pub fn send_local_response(status: u32, headers: &[(&str, &str)], body: &[u8]) -> HostResult<()> {
    let h = wire::serialize_pairs(headers);
    check(unsafe {
        proxy_send_local_response(
            status,
            null(),
            0,
            body.as_ptr(),
            body.len(),
            h.as_ptr(),
            h.len(),
            -1,
        )
    })
}

pub fn set_effective_context(context_id: u32) -> HostResult<()> {
    check(unsafe { proxy_set_effective_context(context_id) })
}

pub fn define_metric(kind: MetricType, name: &str) -> HostResult<u32> {
    let mut id: u32 = 0;
    check(unsafe { proxy_define_metric(kind as u32, name.as_ptr(), name.len(), &mut id) })?;
    Ok(id)
}

pub fn increment_metric(id: u32, by: i64) -> HostResult<()> {
    check(unsafe { proxy_increment_metric(id, by) })
}

pub fn record_metric(id: u32, value: u64) -> HostResult<()> {
    check(unsafe { proxy_record_metric(id, value) })
}

/// Calls a foreign function of the host: its answer, or the status it returned.
pub fn call_foreign_function(name: &str, args: &[u8]) -> Result<Vec<u8>, HostError> {
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
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
    // SAFETY: the call succeeded, so `data`/`size` are the host's answer.
    Ok(unsafe { take(data, size) })
}

/// Envoy's `verify_signature` as the `host` backend's host.
#[derive(Default, Clone, Copy)]
pub struct ProxyWasmHost;

impl crate::host::Host for ProxyWasmHost {
    fn now_ns(&self) -> Option<u128> {
        current_time_ns().ok().map(u128::from).filter(|ns| *ns > 0)
    }

    fn log(&self, level: crate::host::Level, message: &str) {
        use crate::host::Level;
        let level = match level {
            Level::Debug => LogLevel::Debug,
            Level::Info => LogLevel::Info,
            Level::Warn => LogLevel::Warn,
            Level::Error => LogLevel::Error,
        };
        let _ = log(level, message);
    }

    fn define_metric(&self, kind: crate::metrics::Kind, name: &str) -> Result<u32, HostStatus> {
        use crate::metrics::Kind;
        let kind = match kind {
            Kind::Counter => MetricType::Counter,
            Kind::Gauge => MetricType::Gauge,
            Kind::Histogram => MetricType::Histogram,
        };
        define_metric(kind, name)
    }

    fn increment_metric(&self, id: u32, delta: i64) -> Result<(), HostStatus> {
        increment_metric(id, delta)
    }

    fn record_metric(&self, id: u32, value: u64) -> Result<(), HostStatus> {
        record_metric(id, value)
    }

    fn get_property(&self, path: &[&str]) -> HostResult<Option<Vec<u8>>> {
        get_property(path)
    }

    fn set_property(&self, path: &[&str], value: &[u8]) -> HostResult<()> {
        set_property(path, value)
    }

    fn plugin_config(&self) -> HostResult<Option<Vec<u8>>> {
        get_buffer(BufferType::PluginConfiguration, 0, usize::MAX)
    }

    fn request_headers(&self) -> HostResult<Vec<u8>> {
        header_pairs(MapType::HttpRequestHeaders)
    }

    fn add_request_header(&self, name: &str, value: &[u8]) -> HostResult<()> {
        add_header(MapType::HttpRequestHeaders, name, value)
    }

    fn replace_request_header(&self, name: &str, value: &[u8]) -> HostResult<()> {
        replace_header(MapType::HttpRequestHeaders, name, value)
    }

    fn remove_request_header(&self, name: &str) -> HostResult<()> {
        remove_header(MapType::HttpRequestHeaders, name)
    }

    fn send_response(&self, status: u32, headers: &[(&str, &str)], body: &[u8]) -> HostResult<()> {
        send_local_response(status, headers, body)
    }

    fn resume_request(&self) -> HostResult<()> {
        resume_http_request()
    }

    fn clear_route_cache(&self) -> HostResult<()> {
        // Envoy's foreign function (source/extensions/common/wasm/foreign.cc), no arguments.
        match call_foreign_function("clear_route_cache", &[]) {
            Ok(_) => Ok(()),
            Err(HostError::Status(s)) => Err(HostStatus(s)),
            Err(_) => Err(HostStatus::INTERNAL_FAILURE),
        }
    }

    fn set_effective_context(&self, context_id: u32) -> HostResult<()> {
        set_effective_context(context_id)
    }

    fn shared_get(&self, key: &str) -> HostResult<Option<(Vec<u8>, u32)>> {
        get_shared_data(key)
    }

    fn shared_set(&self, key: &str, value: &[u8], cas: Option<u32>) -> HostResult<()> {
        set_shared_data(key, value, cas)
    }

    fn http_call(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        timeout_ms: u64,
    ) -> HostResult<u32> {
        // Through the SDK, whose dispatcher routes the answer by this token (see the module doc).
        proxy_wasm::hostcalls::dispatch_http_call(
            cluster,
            headers.to_vec(),
            None,
            vec![],
            std::time::Duration::from_millis(timeout_ms),
        )
        .map_err(|status| HostStatus(status as u32))
    }

    fn http_call_status(&self) -> HostResult<Option<Vec<u8>>> {
        header_value(MapType::HttpCallResponseHeaders, ":status")
    }

    fn http_call_body(&self, max: usize) -> HostResult<Option<Vec<u8>>> {
        get_buffer(BufferType::HttpCallResponseBody, 0, max)
    }

    fn set_tick_ms(&self, period_ms: u64) -> HostResult<()> {
        set_tick_period_ms(period_ms)
    }

    fn memory_bytes(&self) -> u64 {
        (core::arch::wasm32::memory_size(0) as u64).saturating_mul(65_536)
    }
}

impl SignatureHost for ProxyWasmHost {
    fn call_verify_signature(&self, args: &[u8]) -> Result<Vec<u8>, HostError> {
        call_foreign_function(HOST_VERIFY_FUNCTION, args)
    }
}
