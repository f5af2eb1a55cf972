//! One test stack: mock IdP + echo upstream + a real Envoy running the filter, torn down on drop (with
//! the tail of Envoy's log and what the IdP saw printed when a test panics). Shared by the end-to-end
//! test files so each scenario reads as requests and assertions only.

use crate::client::{try_http_request, Response};
use crate::envoy::{EdgeSettings, Envoy, EnvoyOptions};
use crate::{EchoUpstream, MockIdp, RecordedRequest};
use std::path::PathBuf;
use std::time::Duration;

pub struct Stack {
    pub idp: MockIdp,
    pub echo: EchoUpstream,
    pub envoy: Envoy,
}

impl Stack {
    /// A fresh mock IdP, an echo upstream and Envoy (`envoy/envoy.yaml`) with `plugin_config`.
    pub fn start(plugin_config: String, concurrency: usize) -> Stack {
        Stack::new(MockIdp::start(), plugin_config, concurrency)
    }

    /// Like `start`, with an IdP the test prepared (behaviour, key set) before Envoy starts.
    pub fn new(idp: MockIdp, plugin_config: String, concurrency: usize) -> Stack {
        Stack::with_edge_settings(idp, plugin_config, concurrency, EdgeSettings::Shipped)
    }

    /// Like `new`, with the HCM edge settings as shipped or at Envoy's defaults ([`EdgeSettings`]).
    pub fn with_edge_settings(
        idp: MockIdp,
        plugin_config: String,
        concurrency: usize,
        edge_settings: EdgeSettings,
    ) -> Stack {
        Stack::with_options(
            idp,
            EnvoyOptions {
                plugin_config,
                concurrency,
                edge_settings,
                ..EnvoyOptions::default()
            },
        )
    }

    /// Like `new`, with Envoy rendered from another bootstrap template (the placeholders of
    /// [`EnvoyOptions::template`]), e.g. one whose listener terminates TLS. The files the template
    /// names live in its directory, which a containerised Envoy gets mounted read-only.
    pub fn with_template(
        idp: MockIdp,
        plugin_config: String,
        concurrency: usize,
        template: PathBuf,
    ) -> Stack {
        Stack::with_options(
            idp,
            EnvoyOptions {
                plugin_config,
                concurrency,
                mounts: template.parent().map(PathBuf::from).into_iter().collect(),
                template,
                ..EnvoyOptions::default()
            },
        )
    }

    /// A fresh echo upstream and Envoy from `opts`, its IdP and upstream ports set to `idp`'s and
    /// the echo's.
    pub fn with_options(idp: MockIdp, opts: EnvoyOptions) -> Stack {
        let echo = EchoUpstream::start();
        let opts = EnvoyOptions {
            idp_port: idp.port(),
            upstream_port: echo.port(),
            ..opts
        };
        let envoy = Envoy::start(opts).unwrap_or_else(|e| panic!("envoy did not start: {e}"));
        Stack { idp, echo, envoy }
    }

    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, Vec<u8>)],
        body: &[u8],
    ) -> Response {
        try_http_request(self.envoy.listen_port(), method, path, headers, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}\n{}", self.envoy.log_tail(40)))
    }

    pub fn get_with_token(&self, path: &str, token: &str) -> Response {
        self.request(
            "GET",
            path,
            &[("authorization", format!("Bearer {token}").into_bytes())],
            b"",
        )
    }

    /// `token` goes into `Authorization: Bearer`; `extra` are more headers.
    pub fn send(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        extra: &[(&str, &str)],
    ) -> Response {
        let mut headers: Vec<(&str, Vec<u8>)> = extra
            .iter()
            .map(|(k, v)| (*k, v.as_bytes().to_vec()))
            .collect();
        if let Some(t) = token {
            headers.push(("authorization", format!("Bearer {t}").into_bytes()));
        }
        self.request(method, path, &headers, b"")
    }

    /// Sends and returns what the upstream saw (`None` when the request did not reach it).
    pub fn through(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        extra: &[(&str, &str)],
    ) -> (Response, Option<RecordedRequest>) {
        let before = self.echo.count();
        let r = self.send(method, path, token, extra);
        let seen = if self.echo.count() > before {
            self.echo.last()
        } else {
            None
        };
        (r, seen)
    }

    /// `name{labels}` → value for every `jwt_guard_` series in Envoy's `/stats/prometheus`.
    pub fn prometheus(&self) -> std::collections::BTreeMap<String, f64> {
        let text = self
            .envoy
            .admin_get("/stats/prometheus")
            .unwrap_or_else(|e| panic!("/stats/prometheus: {e}"))
            .body;
        text.lines()
            .filter(|l| l.starts_with("jwt_guard_"))
            .filter_map(|l| {
                let (k, v) = l.rsplit_once(' ')?;
                Some((k.to_owned(), v.parse().ok()?))
            })
            .collect()
    }

    /// Waits up to 3 s for `needle` in Envoy's output.
    pub fn logs_contain(&self, needle: &str) -> bool {
        self.envoy.wait_for_log(needle, Duration::from_secs(3))
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- envoy log tail ----\n{}", self.envoy.log_tail(60));
            eprintln!("---- idp saw ----\n{:?}", self.idp.requests());
        }
    }
}
