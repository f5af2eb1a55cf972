//! Readiness: the admin address Envoy writes, `/ready` saying LIVE, and the listener port it bound.

use std::fs;
use std::time::{Duration, Instant};

use super::process::exit_code;
use super::Envoy;

impl Envoy {
    /// Wait (up to `timeout`) until an Envoy from [`Envoy::spawn`] is ready: its admin address written,
    /// /ready LIVE and its listener bound; then [`Envoy::admin_port`] and [`Envoy::listen_port`] are the
    /// ports Envoy really bound. An error (with the log tail) if it exits or times out first.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        self.wait_ready_on(0, true, timeout)
    }

    /// Wait for the admin address and /ready LIVE; then the listener port is `fixed_listen_port`, or, if
    /// `discover`, the port Envoy reports bound in /listeners.
    pub(super) fn wait_ready_on(
        &mut self,
        fixed_listen_port: u16,
        discover: bool,
        timeout: Duration,
    ) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let mut last = String::from("admin address not yet written");
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(self.fail(&format!(
                        "exited during startup with code {}",
                        exit_code(status)
                    )));
                }
            }
            if Instant::now() > deadline {
                return Err(self.fail(&format!("not ready after {timeout:?} ({last})")));
            }
            if self.admin_port == 0 {
                let addr = fs::read_to_string(&self.admin_path).unwrap_or_default();
                if let Some(port) = addr
                    .trim()
                    .rsplit(':')
                    .next()
                    .and_then(|p| p.parse::<u16>().ok())
                {
                    self.admin_port = port;
                }
            }
            if self.admin_port != 0 {
                match self.admin_get("/ready") {
                    Ok(r) if r.status == 200 && r.body.contains("LIVE") => {
                        let port = if discover {
                            self.discover_listener_port()
                        } else {
                            Ok(fixed_listen_port)
                        };
                        match port {
                            Ok(port) => {
                                self.listen_port = port;
                                return Ok(());
                            }
                            Err(e) => last = e,
                        }
                    }
                    Ok(r) => last = format!("/ready: {} {}", r.status, r.body.trim()),
                    Err(e) => last = format!("/ready: {e}"),
                }
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    pub(super) fn discover_listener_port(&self) -> Result<u16, String> {
        let r = self.admin_get("/listeners?format=json")?;
        let v: serde_json::Value = serde_json::from_str(&r.body)
            .map_err(|e| format!("/listeners: bad JSON ({e}): {}", r.body))?;
        let statuses = v["listener_statuses"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let pick = statuses
            .iter()
            .find(|l| l["name"] == self.listener.as_str())
            .or_else(|| statuses.first())
            .ok_or_else(|| format!("/listeners: no listeners yet: {}", r.body))?;
        pick["local_address"]["socket_address"]["port_value"]
            .as_u64()
            .filter(|p| *p != 0)
            .map(|p| p as u16)
            .ok_or_else(|| format!("/listeners: no bound port yet: {}", r.body))
    }
}
