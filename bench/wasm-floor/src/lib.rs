//! The benchmark's floor: a proxy-wasm HTTP filter that does the least a JWT filter must do per request -
//! cross into the VM, read the `authorization` header and set one request header (`x-floor: 1`).
//! `make bench` compares jwt-guard against this to separate the cost of the wasm ABI from the cost of
//! verifying tokens. Built with the workspace release profile (LTO, opt-level 3, panic=abort, strip).

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(FloorRoot) });
}}

struct FloorRoot;

impl Context for FloorRoot {}

impl RootContext for FloorRoot {
    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Floor))
    }
}

struct Floor;

impl Context for Floor {}

impl HttpContext for Floor {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        // Fetch the header value across the ABI (as a JWT filter must), then set one header.
        let _authorization = self.get_http_request_header("authorization");
        self.set_http_request_header("x-floor", Some("1"));
        Action::Continue
    }
}
