//! The bench's Envoy processes: start on ephemeral ports (read back from Envoy), readiness, admin, probes,
//! and CPU time from /proc.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::client::try_http_request;
use crate::envoy::{envoy_bin, tail};

// ---------------------------------------------------------------------------------------------------------
// CPU time

/// Clock ticks per second of /proc/<pid>/stat (`getconf CLK_TCK`, 100 if that fails).
fn clk_tck() -> u64 {
    static TCK: OnceLock<u64> = OnceLock::new();
    *TCK.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .filter(|t| *t > 0)
            .unwrap_or(100)
    })
}

/// CPU time a process has used so far, by two measures.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuSample {
    /// Sum over its threads of /proc/<pid>/task/<tid>/schedstat's first field (ns on CPU). None if any
    /// thread's file could not be read (kernel without schedstat).
    pub sched_ns: Option<u64>,
    /// utime + stime of /proc/<pid>/stat (whole process, clock ticks).
    pub ticks: Option<u64>,
}

impl CpuSample {
    pub fn of(pid: u32) -> CpuSample {
        CpuSample {
            sched_ns: sched_ns(pid),
            ticks: stat_ticks(pid),
        }
    }

    /// Component-wise sum (the `ext_authz` pair).
    pub fn plus(self, o: CpuSample) -> CpuSample {
        CpuSample {
            sched_ns: self.sched_ns.zip(o.sched_ns).map(|(a, b)| a + b),
            ticks: self.ticks.zip(o.ticks).map(|(a, b)| a + b),
        }
    }

    /// ns of CPU between `before` and `self`: schedstat if both have it, else the tick counts
    /// (10 ms resolution at CLK_TCK 100). The second value names the source.
    pub fn since(self, before: CpuSample) -> (f64, &'static str) {
        if let (Some(a), Some(b)) = (self.sched_ns, before.sched_ns) {
            if a >= b {
                return ((a - b) as f64, "schedstat");
            }
        }
        match (self.ticks, before.ticks) {
            (Some(a), Some(b)) => (a.saturating_sub(b) as f64 * 1e9 / clk_tck() as f64, "stat"),
            _ => (f64::NAN, "none"),
        }
    }

    /// utime+stime delta in ns (the cross-check of `since`).
    pub fn ticks_ns_since(self, before: CpuSample) -> Option<f64> {
        Some(self.ticks?.saturating_sub(before.ticks?) as f64 * 1e9 / clk_tck() as f64)
    }
}

fn sched_ns(pid: u32) -> Option<u64> {
    let mut total = 0u64;
    let mut n = 0;
    for entry in fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let path = entry.ok()?.path().join("schedstat");
        let text = fs::read_to_string(path).ok()?;
        total += text.split_whitespace().next()?.parse::<u64>().ok()?;
        n += 1;
    }
    (n > 0).then_some(total)
}

fn stat_ticks(pid: u32) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after "(comm)": state is field 3, utime 14, stime 15.
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

// ---------------------------------------------------------------------------------------------------------
// One Envoy

/// One Envoy process (`--concurrency 1`); killed on drop.
pub struct BenchEnvoy {
    pub name: String,
    child: Child,
    /// Bound ports, read back from Envoy once ready (0 before).
    pub port: u16,
    pub admin_port: u16,
    admin_path: PathBuf,
    pub log: PathBuf,
}

impl BenchEnvoy {
    /// Write `yaml` to `dir/envoy-<name>.yaml` and start Envoy on it. Its ports are known after `wait_ready`.
    pub fn spawn(name: &str, yaml: &str, dir: &Path) -> Result<BenchEnvoy, String> {
        let cfg = dir.join(format!("envoy-{name}.yaml"));
        fs::write(&cfg, yaml).map_err(|e| format!("cannot write {}: {e}", cfg.display()))?;
        let log = dir.join(format!("envoy-{name}.log"));
        let admin_path = dir.join(format!("admin-{name}.txt"));
        let _ = fs::remove_file(&admin_path);
        let log_file =
            File::create(&log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        let log_file2 = log_file.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new(envoy_bin()?)
            .arg("-c")
            .arg(&cfg)
            .arg("--admin-address-path")
            .arg(&admin_path)
            .args([
                "--concurrency",
                "1",
                "--disable-hot-restart",
                "-l",
                "warning",
            ])
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(log_file2)
            .spawn()
            .map_err(|e| format!("cannot start envoy: {e}"))?;
        Ok(BenchEnvoy {
            name: name.to_string(),
            child,
            port: 0,
            admin_port: 0,
            admin_path,
            log,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn log_tail(&self) -> String {
        tail(&self.log_text(), 30)
    }

    /// Some(status) if the process has exited.
    pub fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            _ => None,
        }
    }

    /// Wait until the admin address file is written, /ready answers LIVE and /listeners shows the bench
    /// listener bound; then `admin_port` and `port` are the ports Envoy really bound.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let mut last = String::from("admin address not yet written");
        loop {
            if let Some(status) = self.exited() {
                return Err(format!(
                    "envoy {} exited ({status}) during startup; log tail:\n{}",
                    self.name,
                    self.log_tail()
                ));
            }
            if self.admin_port == 0 {
                let addr = fs::read_to_string(&self.admin_path).unwrap_or_default();
                let addr = addr.trim();
                if let Some((host, port)) = addr.rsplit_once(':') {
                    if host != "127.0.0.1" {
                        return Err(format!("envoy {}: admin bound on {addr}", self.name));
                    }
                    self.admin_port = port.parse().unwrap_or(0);
                }
            }
            if self.admin_port != 0 {
                match try_http_request(self.admin_port, "GET", "/ready", &[], &[]) {
                    Ok(r) if r.status == 200 => match self.bound_listener_port() {
                        Ok(p) => {
                            self.port = p;
                            return Ok(());
                        }
                        Err(e) => last = e,
                    },
                    Ok(r) => last = format!("/ready: HTTP {}", r.status),
                    Err(e) => last = format!("/ready: {e}"),
                }
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "envoy {} not ready after {timeout:?} ({last}); log tail:\n{}",
                    self.name,
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The port of the `bench` listener as Envoy reports it bound (/listeners?format=json).
    fn bound_listener_port(&self) -> Result<u16, String> {
        let body = self.admin("/listeners?format=json")?;
        let v: serde_json::Value =
            serde_json::from_str(&body).map_err(|e| format!("/listeners: {e}: {body}"))?;
        let l = v["listener_statuses"]
            .as_array()
            .and_then(|a| a.iter().find(|l| l["name"] == "bench"))
            .ok_or_else(|| format!("/listeners: no bench listener: {body}"))?;
        let sa = &l["local_address"]["socket_address"];
        if sa["address"] != "127.0.0.1" {
            return Err(format!("/listeners: bench listener on {sa}"));
        }
        sa["port_value"]
            .as_u64()
            .filter(|p| *p != 0 && *p <= u16::MAX as u64)
            .map(|p| p as u16)
            .ok_or_else(|| format!("/listeners: bench listener not bound yet: {body}"))
    }

    pub fn admin(&self, path: &str) -> Result<String, String> {
        let r = try_http_request(self.admin_port, "GET", path, &[], &[])?;
        if r.status != 200 {
            return Err(format!("admin {path}: HTTP {}", r.status));
        }
        Ok(r.body)
    }
}

impl Drop for BenchEnvoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------------------
// One configuration

/// What wrk drives for one configuration: one Envoy, or for `ext_authz` the front (first) and the central
/// Envoy it asks. CPU is the sum over all of them.
pub struct Unit {
    pub config: String,
    pub envoys: Vec<BenchEnvoy>,
}

impl Unit {
    pub fn port(&self) -> u16 {
        self.envoys[0].port
    }

    pub fn cpu(&self) -> CpuSample {
        self.envoys
            .iter()
            .map(|e| CpuSample::of(e.pid()))
            .reduce(CpuSample::plus)
            .unwrap_or_default()
    }

    /// Status of one request with `Authorization: Bearer <token>` (None: no header).
    pub fn probe(&self, token: Option<&str>) -> Result<u16, String> {
        let headers: Vec<(&str, Vec<u8>)> = token
            .map(|t| vec![("authorization", format!("Bearer {t}").into_bytes())])
            .unwrap_or_default();
        try_http_request(self.port(), "GET", "/bench", &headers, &[]).map(|r| r.status)
    }

    /// An error if any of its Envoys has exited.
    pub fn check_alive(&mut self) -> Result<(), String> {
        for e in &mut self.envoys {
            if let Some(status) = e.exited() {
                return Err(format!(
                    "envoy {} exited ({status}) during the run; log tail:\n{}",
                    e.name,
                    e.log_tail()
                ));
            }
        }
        Ok(())
    }
}
