//! The files of one Envoy run: a fresh temp dir with the rendered bootstrap (and, for a file-LDS
//! bootstrap, the listener file), or a [`Launch`]'s config in the caller's directory; plus the paths
//! of the log and the admin address file.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::lds::{write_atomically, LdsState};
use super::render::is_lds_bootstrap;
use super::{default_lds_template, EnvoyOptions, Launch};

/// Files of one Envoy run (temp dir with the rendered config and log).
pub(super) struct Prepared {
    pub(super) dir: PathBuf,
    pub(super) config_path: PathBuf,
    pub(super) log_path: PathBuf,
    pub(super) admin_path: PathBuf,
    /// LDS mode: the listener file and what rendered it.
    pub(super) lds: Option<(PathBuf, LdsState)>,
    /// A [`Launch`]'s name.
    pub(super) name: Option<String>,
    /// Whether `dir` is the run's own temp dir (false: the caller's).
    pub(super) owns_dir: bool,
}

/// A fresh directory under the system temp dir, named `<prefix>-<pid>-<n>-<nanos>`.
pub(crate) fn make_temp_dir(prefix: &str) -> Result<PathBuf, String> {
    static N: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!(
        "{prefix}-{}-{}-{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    fs::create_dir_all(&dir)
        .map_err(|e| format!("cannot create temp dir {}: {e}", dir.display()))?;
    Ok(dir)
}

pub(super) fn prepare(
    opts: &EnvoyOptions,
    listen_port: u16,
    admin_port: u16,
) -> Result<Prepared, String> {
    prepare_with(opts, listen_port, admin_port, None)
}

/// Render the bootstrap (and, for a file-LDS bootstrap, the listener file `lds.yaml` from `lds_template`,
/// default envoy/lds.yaml) into a new temp dir. In LDS mode a listen port of 0 is replaced by a concrete
/// free port, so that listener updates keep the address.
pub(super) fn prepare_with(
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
        let dir = make_temp_dir("jwt-guard-envoy")?;
        let config_path = dir.join("envoy.yaml");
        fs::write(&config_path, rendered)
            .map_err(|e| format!("cannot write {}: {e}", config_path.display()))?;
        return Ok(Prepared {
            log_path: dir.join("envoy.log"),
            admin_path: dir.join("admin-address"),
            config_path,
            dir,
            lds: None,
            name: None,
            owns_dir: true,
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
    let dir = make_temp_dir("jwt-guard-envoy")?;
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
        name: None,
        owns_dir: true,
    })
}

/// A [`Launch`]'s files: its config written to `<dir>/envoy-<name>.yaml`; the log `envoy-<name>.log` and the
/// admin address file `admin-<name>.txt` of an earlier run removed.
pub(super) fn prepare_launch(launch: &Launch) -> Result<Prepared, String> {
    let dir = &launch.dir;
    fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let config_path = dir.join(format!("envoy-{}.yaml", launch.name));
    fs::write(&config_path, &launch.config)
        .map_err(|e| format!("cannot write {}: {e}", config_path.display()))?;
    let log_path = dir.join(format!("envoy-{}.log", launch.name));
    let admin_path = dir.join(format!("admin-{}.txt", launch.name));
    let _ = fs::remove_file(&log_path);
    let _ = fs::remove_file(&admin_path);
    Ok(Prepared {
        dir: dir.clone(),
        config_path,
        log_path,
        admin_path,
        lds: None,
        name: Some(launch.name.clone()),
        owns_dir: false,
    })
}
