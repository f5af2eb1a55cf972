//! Listeners delivered by file (LDS): the listener file re-rendered and swapped in atomically, and the
//! admin checks that tell an applied update from a rejected or still-warming one.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::{Envoy, EnvoyOptions};

/// How long [`Envoy::update_plugin_config`] waits for Envoy to apply a new listener.
pub const LDS_UPDATE_TIMEOUT: Duration = Duration::from_secs(10);

/// What `update_plugin_config` needs to re-render the listener file.
pub(super) struct LdsState {
    pub(super) opts: EnvoyOptions,
    pub(super) template_text: String,
    pub(super) template_path: PathBuf,
    pub(super) listen_port: u16,
    /// `version_info` of the file last written.
    pub(super) version: u64,
}

/// Write `text` to `path` atomically: a sibling temp file renamed over it (file-based xDS only
/// reacts to a file *moved* onto the watched path, never to an in-place write).
pub(super) fn write_atomically(path: &Path, text: &str) -> Result<(), String> {
    static N: AtomicUsize = AtomicUsize::new(0);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(
        ".{name}.tmp-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    fs::write(&tmp, text).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    fs::rename(&tmp, path).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        format!("cannot rename {} to {}: {e}", tmp.display(), path.display())
    })
}

impl Envoy {
    /// LDS mode: re-render the listener file with `plugin_config` (everything else as at start), replace it
    /// atomically (sibling temp file renamed over it) and wait (up to [`LDS_UPDATE_TIMEOUT`]) until Envoy has
    /// accepted it (`listener_manager.lds.version_text` is the new version) and no listener is still warming.
    /// Err (with the log tail) if Envoy rejects the update - it then keeps serving the previous listener - or
    /// on timeout, or if Envoy was not started with [`Envoy::start_lds`] / an LDS bootstrap.
    pub fn update_plugin_config(&self, plugin_config: &str) -> Result<(), String> {
        let lds = self
            .lds
            .as_ref()
            .ok_or("update_plugin_config needs an Envoy started in LDS mode (Envoy::start_lds)")?;
        let mut state = lds.lock().unwrap_or_else(|e| e.into_inner());
        let path = self.lds_path.as_deref().ok_or("no LDS path")?;
        let mut opts = state.opts.clone();
        opts.plugin_config = plugin_config.to_string();
        let version = state.version + 1;
        let text = opts.render_lds(
            &state.template_text,
            &state.template_path,
            state.listen_port,
            version,
        )?;
        let (_, bad_before) = self.lds_stats()?;
        write_atomically(path, &text)?;
        state.version = version;
        self.wait_lds_applied(version, bad_before, LDS_UPDATE_TIMEOUT)?;
        state.opts = opts;
        Ok(())
    }

    /// LDS mode, right after start: the listener of version 1 is bound. If it was rendered with port 0, read
    /// the port Envoy bound and rewrite version 1 with it, so that later versions carry the same address:
    /// Envoy updates a listener in place (same socket, no drain) only when its address is unchanged, and an
    /// address 0 -> P change is a full replacement that can reset connections. Done before any traffic.
    pub(super) fn pin_lds_port(&mut self, timeout: Duration) -> Result<(), String> {
        let port = self.discover_listener_port()?;
        let Some(lds) = self.lds.as_ref() else {
            return Ok(());
        };
        let mut state = lds.lock().unwrap_or_else(|e| e.into_inner());
        if state.listen_port != 0 {
            drop(state);
            if port != self.listen_port {
                return Err(self.fail(&format!(
                    "bound listener port {port}, not the configured {}",
                    self.listen_port
                )));
            }
            return Ok(());
        }
        let path = self.lds_path.as_deref().ok_or("no LDS path")?;
        let text = state.opts.render_lds(
            &state.template_text,
            &state.template_path,
            port,
            state.version,
        )?;
        let success = "listener_manager.lds.update_success";
        let before = self.stat(success).unwrap_or(0);
        let (_, bad_before) = self.lds_stats()?;
        write_atomically(path, &text)?;
        let deadline = Instant::now() + timeout;
        loop {
            let (_, bad) = self.lds_stats()?;
            if bad > bad_before {
                return Err(self.fail(&format!(
                    "rejected the listener file re-rendered with its bound port {port}"
                )));
            }
            if self.stat(success).unwrap_or(0) > before
                && self.lds_pending()?.is_none()
                && self.discover_listener_port()? == port
            {
                break;
            }
            if Instant::now() > deadline {
                return Err(self.fail(&format!(
                    "did not apply the listener file re-rendered with its bound port {port} within {timeout:?}"
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        state.listen_port = port;
        drop(state);
        self.listen_port = port;
        Ok(())
    }

    /// LDS mode: the listener file Envoy watches (in the temp dir).
    pub fn lds_path(&self) -> Option<&Path> {
        self.lds_path.as_deref()
    }

    /// LDS mode: `version_info` of the listener file last written (1 at start, +1 per update).
    pub fn lds_version(&self) -> Option<u64> {
        self.lds
            .as_ref()
            .map(|m| m.lock().unwrap_or_else(|e| e.into_inner()).version)
    }

    /// (`listener_manager.lds.version_text`, rejected + failed LDS updates so far).
    fn lds_stats(&self) -> Result<(Option<String>, u64), String> {
        let r = self.admin_get("/stats?filter=listener_manager.lds.")?;
        if r.status != 200 {
            return Err(format!("/stats: {} {}", r.status, r.body.trim()));
        }
        let mut version = None;
        let mut bad = 0;
        for line in r.body.lines() {
            let Some((name, value)) = line.split_once(": ") else {
                continue;
            };
            match name {
                "listener_manager.lds.version_text" => {
                    version = Some(value.trim().trim_matches('"').to_string())
                }
                "listener_manager.lds.update_rejected" | "listener_manager.lds.update_failure" => {
                    bad += value.trim().parse::<u64>().unwrap_or(0)
                }
                _ => {}
            }
        }
        Ok((version, bad))
    }

    /// None once every dynamic listener is active and none is warming; otherwise what is still pending.
    fn lds_pending(&self) -> Result<Option<String>, String> {
        let r = self.admin_get("/config_dump?resource=dynamic_listeners")?;
        let v: serde_json::Value = serde_json::from_str(&r.body)
            .map_err(|e| format!("/config_dump: bad JSON ({e}): {}", r.body))?;
        let configs = v["configs"].as_array().cloned().unwrap_or_default();
        if configs.is_empty() {
            return Ok(Some("no dynamic listeners yet".into()));
        }
        for l in &configs {
            if !l["warming_state"].is_null() {
                return Ok(Some(format!("listener {} is warming", l["name"])));
            }
            if l["active_state"].is_null() {
                return Ok(Some(format!("listener {} is not active: {l}", l["name"])));
            }
        }
        Ok(None)
    }

    pub(super) fn wait_lds_applied(
        &self,
        version: u64,
        bad_before: u64,
        timeout: Duration,
    ) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let want = version.to_string();
        loop {
            let last = match self.lds_stats() {
                Ok((_, bad)) if bad > bad_before => {
                    // Give the log a moment to carry the reason.
                    std::thread::sleep(Duration::from_millis(50));
                    return Err(self.fail(&format!(
                        "rejected listener file version {want} ({})",
                        self.lds_path.as_deref().unwrap_or(Path::new("?")).display()
                    )));
                }
                Ok((Some(v), _)) if v == want => match self.lds_pending() {
                    Ok(None) => return Ok(()),
                    Ok(Some(p)) => p,
                    Err(e) => e,
                },
                Ok((v, _)) => format!("lds.version_text is {v:?}, waiting for {want:?}"),
                Err(e) => e,
            };
            if Instant::now() > deadline {
                return Err(self.fail(&format!(
                    "did not apply listener file version {want} within {timeout:?} ({last})"
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
