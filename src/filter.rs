//! The proxy-wasm adapter: the entry points Envoy calls, each forwarded to the VM's
//! `engine::Engine` over `hostcall::ProxyWasmHost`. Nothing is decided here.
//!
//! The engine sits in a `RefCell` shared by the root and the stream contexts. A callback that finds
//! it borrowed (a host call inside the engine re-entered the module, such as a stream ending while
//! the root answers parked requests) never panics: the stream is forgotten later or, for a request,
//! answered `500` directly.

use crate::engine::{Engine, Flow};
use crate::hostcall::{self, ProxyWasmHost};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use std::cell::RefCell;
use std::rc::Rc;

type Vm = Rc<RefCell<Engine<ProxyWasmHost>>>;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|context_id| -> Box<dyn RootContext> {
        Box::new(Root { vm: Rc::new(RefCell::new(Engine::new(ProxyWasmHost, context_id))) })
    });
}}

fn action(flow: Flow) -> Action {
    match flow {
        Flow::Continue => Action::Continue,
        Flow::Pause => Action::Pause,
    }
}

/// The engine was busy: fail the request closed without it.
fn busy() -> Action {
    let _ = hostcall::log(LogLevel::Error, "filter re-entered; denying the request");
    let r = crate::response::deny_response(&crate::error::Denial::Internal, "envoy");
    let _ = hostcall::send_local_response(r.status, &r.header_pairs(), r.body.as_bytes());
    Action::Pause
}

struct Root {
    vm: Vm,
}

impl Context for Root {
    fn on_http_call_response(&mut self, token: u32, _headers: usize, body_size: usize, _: usize) {
        if let Ok(mut vm) = self.vm.try_borrow_mut() {
            vm.on_http_call_response(token, body_size);
        }
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        self.vm.try_borrow_mut().is_ok_and(|mut vm| vm.configure())
    }

    fn on_tick(&mut self) {
        if let Ok(mut vm) = self.vm.try_borrow_mut() {
            vm.on_tick();
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Http {
            context_id,
            vm: self.vm.clone(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Http {
    context_id: u32,
    vm: Vm,
}

impl Http {
    fn held(&self) -> Action {
        match self.vm.try_borrow() {
            Ok(vm) => action(vm.on_request_body(self.context_id)),
            Err(_) => Action::Pause,
        }
    }
}

impl Context for Http {
    fn on_done(&mut self) -> bool {
        if let Ok(mut vm) = self.vm.try_borrow_mut() {
            vm.on_done(self.context_id);
        }
        true
    }
}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        match self.vm.try_borrow_mut() {
            Ok(mut vm) => action(vm.on_request_headers(self.context_id)),
            Err(_) => busy(),
        }
    }

    fn on_http_request_body(&mut self, _size: usize, _end_of_stream: bool) -> Action {
        self.held()
    }

    fn on_http_request_trailers(&mut self, _trailers: usize) -> Action {
        self.held()
    }
}
