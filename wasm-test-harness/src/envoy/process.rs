//! The one Envoy runner: starts the process on prepared files (a rendered [`EnvoyOptions`] template, or a
//! caller's [`Launch`]), and kills it (and cleans up) on drop. Readiness is in `ready.rs`, what a running
//! Envoy exposes (ports, log, admin) in `inspect.rs`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::binary::remove_container;
use super::files::{prepare, prepare_launch, prepare_with, Prepared};
use super::inspect::read_lossy;
use super::lds::LdsState;
use super::{runner, EnvoyOptions, Runner};

/// How long `start` waits for readiness and `start_expect_exit` waits for an exit.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);

/// `-l` of the Envoys started from an [`EnvoyOptions`].
const LOG_LEVEL: &str = "info";

/// The listener whose bound port an [`EnvoyOptions`] Envoy reports (else the first).
const MAIN_LISTENER: &str = "main";

/// A running Envoy. Killed (and waited for) on drop; its temp dir (config + log) is removed then,
/// unless the thread is panicking or `KEEP_ENVOY_TMP` is set, in which case the path is printed.
/// A [`Launch`]ed Envoy's files are in the caller's directory and always kept.
pub struct Envoy {
    pub(super) child: Option<Child>,
    /// (CLI, name) in container mode.
    pub(super) container: Option<(String, String)>,
    /// A [`Launch`]'s name (in its file names and errors).
    pub(super) name: Option<String>,
    pub(super) dir: PathBuf,
    /// Whether `dir` is the run's own temp dir (removed on drop), not the caller's.
    pub(super) owns_dir: bool,
    pub(super) log_path: PathBuf,
    pub(super) config_path: PathBuf,
    pub(super) admin_path: PathBuf,
    pub(super) admin_port: u16,
    pub(super) listen_port: u16,
    /// The listener whose bound port is read back into `listen_port` (else the first).
    pub(super) listener: String,
    /// Set when the listener comes from a file (LDS mode).
    pub(super) lds: Option<Mutex<LdsState>>,
    pub(super) lds_path: Option<PathBuf>,
}

/// An Envoy on a bootstrap the caller rendered itself (not from an [`EnvoyOptions`] template), with its
/// files in a directory the caller keeps: the bench's Envoys. [`Envoy::spawn`] returns as soon as the
/// process runs and [`Envoy::wait_ready`] waits for it, so that several can start at once.
#[derive(Clone, Debug)]
pub struct Launch {
    /// Names the files in `dir` (`envoy-<name>.yaml`, `envoy-<name>.log`, `admin-<name>.txt`, kept after
    /// the run) and appears in errors.
    pub name: String,
    pub dir: PathBuf,
    /// The bootstrap as Envoy reads it (ports 0 are read back once ready).
    pub config: String,
    /// The listener whose bound port [`Envoy::listen_port`] reports (else the first).
    pub listener: String,
    /// The modules the config loads (mounted read-only in container mode).
    pub wasm: Vec<PathBuf>,
    /// Envoy worker threads (`--concurrency`).
    pub concurrency: usize,
    /// Envoy's log level (`-l`).
    pub log_level: String,
}

/// Start the Envoy process on `p` (its stdout and stderr appended to `p.log_path`).
fn spawn_process(
    runner: &Runner,
    p: &Prepared,
    concurrency: usize,
    log_level: &str,
    wasm: &[&Path],
) -> Result<(Child, Option<(String, String)>), String> {
    // A typo in a file-delivered listener would otherwise be ignored silently (Envoy only counts
    // unknown fields of dynamic resources in server.dynamic_unknown_fields).
    let strict: &[&str] = if p.lds.is_some() {
        &["--reject-unknown-dynamic-fields"]
    } else {
        &[]
    };
    // Append mode: Envoy's stdout access logger reopens /dev/stdout, which gets its own file offset;
    // only O_APPEND keeps its lines from overwriting (or being overwritten by) the stderr log.
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&p.log_path)
        .map_err(|e| format!("cannot create {}: {e}", p.log_path.display()))?;
    let log2 = log.try_clone().map_err(|e| e.to_string())?;
    let mut mounts: Vec<(&Path, bool)> = vec![(&p.dir, false), (&p.config_path, true)];
    mounts.extend(wasm.iter().filter(|w| w.exists()).map(|w| (*w, true)));
    let (mut cmd, container) = runner.command(&mounts);
    cmd.arg("-c")
        .arg(&p.config_path)
        .arg("--admin-address-path")
        .arg(&p.admin_path)
        .args([
            "--disable-hot-restart",
            "--concurrency",
            &concurrency.max(1).to_string(),
            "-l",
            log_level,
            // Access logs (the audit records) are buffered and flushed on this interval (default 10 s).
            "--file-flush-interval-msec",
            "100",
        ])
        .args(strict)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .spawn()
        .map(|child| (child, container))
        .map_err(|e| format!("cannot run {}: {e}", runner.describe()))
}

/// Start the process on `p` and wrap it (not yet ready). On failure an owned temp dir is removed.
fn run_prepared(
    runner: &Runner,
    mut p: Prepared,
    concurrency: usize,
    log_level: &str,
    wasm: &[&Path],
    listener: &str,
) -> Result<Envoy, String> {
    let (child, container) = match spawn_process(runner, &p, concurrency, log_level, wasm) {
        Ok(c) => c,
        Err(e) => {
            if p.owns_dir {
                let _ = fs::remove_dir_all(&p.dir);
            }
            return Err(e);
        }
    };
    let lds = p.lds.take();
    Ok(Envoy {
        child: Some(child),
        container,
        name: p.name,
        dir: p.dir,
        owns_dir: p.owns_dir,
        log_path: p.log_path,
        config_path: p.config_path,
        admin_path: p.admin_path,
        admin_port: 0,
        listen_port: 0,
        listener: listener.to_string(),
        lds_path: lds.as_ref().map(|(path, _)| path.clone()),
        lds: lds.map(|(_, s)| Mutex::new(s)),
    })
}

pub(super) fn exit_code(status: ExitStatus) -> i32 {
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
        Envoy::start_prepared(&opts, listen_port, admin_port, None)
    }

    /// Start Envoy with its listener delivered by file-based LDS, so that the plugin config can be changed
    /// live with [`Envoy::update_plugin_config`]. `opts.template` is a bootstrap with
    /// `dynamic_resources.lds_config.path_config_source` on {{LDS_PATH}} (and optionally
    /// `watched_directory` on {{LDS_DIR}}), e.g. [`default_lds_bootstrap_template`]; `lds_template` is the
    /// listener file (e.g. [`default_lds_template`]) with `version_info: "{{VERSION}}"`, {{LISTEN_PORT}} and
    /// the usual placeholders. Version 1 is rendered with port 0 (Envoy binds an ephemeral port, read back from
    /// `/listeners`); every later version carries that bound port, so updates keep the address. Returns once the listener's first
    /// version is active (up to ~20 s); a rejected listener file is an error with the log tail.
    ///
    /// [`default_lds_bootstrap_template`]: super::default_lds_bootstrap_template
    /// [`default_lds_template`]: super::default_lds_template
    pub fn start_lds(opts: EnvoyOptions, lds_template: &Path) -> Result<Envoy, String> {
        Envoy::start_prepared(&opts, 0, 0, Some(lds_template))
    }

    fn start_prepared(
        opts: &EnvoyOptions,
        listen_port: u16,
        admin_port: u16,
        lds_template: Option<&Path>,
    ) -> Result<Envoy, String> {
        let runner = runner()?;
        let p = prepare_with(opts, listen_port, admin_port, lds_template)?;
        let fixed_port = p
            .lds
            .as_ref()
            .map(|(_, s)| s.listen_port)
            .unwrap_or(listen_port);
        let mounted: Vec<&Path> = std::iter::once(opts.wasm.as_path())
            .chain(opts.mounts.iter().map(PathBuf::as_path))
            .collect();
        let mut envoy = run_prepared(
            &runner,
            p,
            opts.concurrency,
            LOG_LEVEL,
            &mounted,
            MAIN_LISTENER,
        )?;
        // LDS mode: the listener may be rejected, which wait_lds_applied reports; do not wait for it here.
        let discover = envoy.lds.is_none() && listen_port == 0;
        // On error `envoy` is dropped here, which kills the process.
        let started = Instant::now();
        envoy.wait_ready_on(fixed_port, discover, STARTUP_TIMEOUT)?;
        if envoy.lds.is_some() {
            let left = STARTUP_TIMEOUT.saturating_sub(started.elapsed());
            envoy.wait_lds_applied(1, 0, left.max(Duration::from_secs(1)))?;
            let left = STARTUP_TIMEOUT.saturating_sub(started.elapsed());
            envoy.pin_lds_port(left.max(Duration::from_secs(1)))?;
        }
        Ok(envoy)
    }

    /// Start Envoy on `launch` with `runner` (e.g. `runner()?`, or `Runner::Local(envoy_bin()?)` where the
    /// pid must be Envoy's own) and return once the process runs; its ports are known after
    /// [`Envoy::wait_ready`].
    pub fn spawn(runner: &Runner, launch: &Launch) -> Result<Envoy, String> {
        let p = prepare_launch(launch)?;
        let wasm: Vec<&Path> = launch.wasm.iter().map(PathBuf::as_path).collect();
        run_prepared(
            runner,
            p,
            launch.concurrency,
            &launch.log_level,
            &wasm,
            &launch.listener,
        )
    }

    /// Start Envoy with a config it is expected to reject; wait (up to ~20 s) for it to exit on its own.
    /// Returns (exit code, log). If it does not exit in time it is killed, the exit code is -1 and the log
    /// ends with a "[harness] ... did not exit" line. Panics if Envoy cannot be found or started.
    pub fn start_expect_exit(opts: EnvoyOptions) -> (i32, String) {
        let runner = runner().unwrap_or_else(|e| panic!("{e}"));
        let p = prepare(&opts, 0, 0).unwrap_or_else(|e| panic!("{e}"));
        let (mut child, container) =
            spawn_process(&runner, &p, opts.concurrency, LOG_LEVEL, &[&opts.wasm])
                .unwrap_or_else(|e| panic!("{e}"));
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let code = loop {
            match child.try_wait() {
                Ok(Some(status)) => break exit_code(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(25))
                }
                _ => {
                    remove_container(&container);
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

    /// True while the Envoy process is running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// The exit code once the process has exited on its own (None while it runs, and after `kill`).
    pub fn exited(&mut self) -> Option<i32> {
        match self.child.as_mut()?.try_wait() {
            Ok(Some(status)) => Some(exit_code(status)),
            _ => None,
        }
    }

    /// OS process id (in container mode: the CLI client's, not Envoy's).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Kill and wait now (also done on drop). Returns the exit code.
    pub fn kill(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        remove_container(&self.container);
        let _ = child.kill();
        child.wait().ok().map(exit_code)
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        self.kill();
        if !self.owns_dir {
            return;
        }
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

/// A port on 127.0.0.1 that was free a moment ago (bound to :0 and released). Racy by nature: another
/// process may take it before the caller binds it, and Envoy listeners with `reuse_port` (the default) would
/// then *share* it silently. The harness itself no longer hands such ports to Envoy (listeners and admin
/// are bound on port 0 and read back); kept for callers that need a number to put in a config.
pub fn pick_free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind(("127.0.0.1", 0))
        .map_err(|e| format!("cannot bind 127.0.0.1:0: {e}"))?;
    l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}
