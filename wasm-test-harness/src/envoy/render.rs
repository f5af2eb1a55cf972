//! Envoy configs: `{{KEY}}` templates rendered with the run's ports, the filter's `.wasm` and plugin config,
//! and the edge-settings override.

use std::fs;
use std::path::{Path, PathBuf};

use super::{default_template, demo_config_path, wasm_path};

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
    pub(super) fn check(self, template: &Path, rendered: &[&str]) -> Result<(), String> {
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
    /// Files or directories the bootstrap names (certificates, say): in container mode they are
    /// mounted read-only at the same path.
    pub mounts: Vec<PathBuf>,
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
            mounts: Vec::new(),
        }
    }
}

impl EnvoyOptions {
    /// The rendered bootstrap with the given admin/listener ports (0 = ephemeral).
    /// A file-LDS bootstrap ({{LDS_PATH}}/{{LDS_DIR}}) is an error here: use [`Envoy::start_lds`](super::Envoy::start_lds),
    /// [`validate_lds_options`](super::validate_lds_options) or [`validate_options`](super::validate_options), which render the listener file too.
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

    pub(super) fn render_text(
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
    pub(super) fn render_lds(
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
pub(super) fn is_lds_bootstrap(template_text: &str) -> bool {
    template_text.contains("{{LDS_PATH}}") || template_text.contains("{{LDS_DIR}}")
}
