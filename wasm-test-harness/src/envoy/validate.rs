//! `envoy --mode validate` on a config file or on rendered options (a file-LDS bootstrap with its listener
//! file moved into `static_resources`, since validate mode never reads LDS files).

use std::fs;
use std::path::Path;
use std::process::Stdio;

use super::binary::remove_container;
use super::files::{prepare, prepare_with, Prepared};
use super::process::exit_code;
use super::{runner, wasm_path, EnvoyOptions};

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
