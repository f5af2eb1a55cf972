//! What a running Envoy exposes: its name, ports and files, its log, and its admin endpoint.

use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use super::Envoy;
use crate::client::{try_http_request, Response};

pub(super) fn read_lossy(path: &Path) -> String {
    let mut buf = Vec::new();
    if let Ok(mut f) = File::open(path) {
        let _ = f.read_to_end(&mut buf);
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

impl Envoy {
    /// An error text: what went wrong, with the config, the log and the log's last lines.
    pub(super) fn fail(&self, what: &str) -> String {
        let who = match &self.name {
            Some(name) => format!("Envoy {name}"),
            None => "Envoy".to_string(),
        };
        format!(
            "{who} {what} (config {}, log {}). Log tail:\n{}",
            self.config_path.display(),
            self.log_path.display(),
            self.log_tail(60)
        )
    }

    /// A [`Launch`](super::Launch)'s name; "envoy" for the others.
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or("envoy")
    }

    pub fn listen_port(&self) -> u16 {
        self.listen_port
    }

    pub fn admin_port(&self) -> u16 {
        self.admin_port
    }

    /// The port Envoy bound for the listener named `name` (from the admin `/listeners`): for a
    /// bootstrap with more listeners than the one [`Envoy::listen_port`] reports.
    pub fn listener_port(&self, name: &str) -> Result<u16, String> {
        let r = self.admin_get("/listeners?format=json")?;
        let v: serde_json::Value = serde_json::from_str(&r.body)
            .map_err(|e| format!("/listeners: bad JSON ({e}): {}", r.body))?;
        v["listener_statuses"]
            .as_array()
            .and_then(|all| all.iter().find(|l| l["name"] == name))
            .and_then(|l| l["local_address"]["socket_address"]["port_value"].as_u64())
            .filter(|p| *p != 0)
            .and_then(|p| u16::try_from(p).ok())
            .ok_or_else(|| format!("/listeners: no bound listener {name:?}: {}", r.body))
    }

    /// Temp dir holding the rendered config and the log (removed on drop unless panicking/KEEP_ENVOY_TMP);
    /// for a [`Launch`](super::Launch), its directory (always kept).
    pub fn temp_dir(&self) -> &Path {
        &self.dir
    }

    /// Path of the rendered bootstrap.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Everything Envoy has written to stdout/stderr so far.
    pub fn logs(&self) -> String {
        read_lossy(&self.log_path)
    }

    /// The last `n` lines of the log.
    pub fn log_tail(&self, n: usize) -> String {
        tail(&self.logs(), n)
    }

    /// Wait until the log contains `needle`; false on timeout.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.logs().contains(needle) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// GET an admin endpoint, e.g. "/stats?filter=wasm".
    pub fn admin_get(&self, path: &str) -> Result<Response, String> {
        try_http_request(self.admin_port, "GET", path, &[], &[])
    }

    /// The body of an admin endpoint; an error unless it answers 200.
    pub fn admin_text(&self, path: &str) -> Result<String, String> {
        let r = self.admin_get(path)?;
        if r.status != 200 {
            return Err(format!("admin {path}: HTTP {}", r.status));
        }
        Ok(r.body)
    }

    /// A counter/gauge value from the admin /stats endpoint (exact name), if present.
    pub fn stat(&self, name: &str) -> Option<u64> {
        let r = self.admin_get("/stats").ok()?;
        r.body.lines().find_map(|l| {
            let (n, v) = l.split_once(": ")?;
            (n == name).then(|| v.trim().parse().ok()).flatten()
        })
    }
}
