//! Runs a real Envoy: renders a bootstrap template, starts the binary, discovers the admin and listener
//! ports, waits for readiness, exposes the log, and kills the process on drop.
//!
//! By job: `paths` (the repository, the `.wasm`, the shipped templates), `binary` (which Envoy: local
//! binary or container image), `render` (templates and [`EnvoyOptions`]), `files` (the run's temp dir),
//! `process` (the one runner: an [`Envoy`] from options, or from a caller's rendered [`Launch`] as the
//! bench does; stop on drop), `ready` (admin address, /ready, bound listener), `inspect` (ports, log,
//! admin), `lds` (live listener updates) and `validate` (`--mode validate`).

mod binary;
mod files;
mod inspect;
mod lds;
mod paths;
mod process;
mod ready;
mod render;
mod validate;

pub use binary::{envoy_bin, runner, Runner, DEFAULT_ENVOY_IMAGE};
pub(crate) use files::make_temp_dir;
pub use inspect::tail;
pub use lds::LDS_UPDATE_TIMEOUT;
pub use paths::{
    default_lds_bootstrap_template, default_lds_template, default_template, demo_config_path,
    demo_plugin_config, demo_plugin_config_with, repo_root, vector_probe_path, wasm_path,
};
pub use process::{pick_free_port, Envoy, Launch, STARTUP_TIMEOUT};
pub use render::{render, EdgeSettings, EnvoyOptions, EDGE_SETTING_OVERRIDES};
pub use validate::{lds_as_static_bootstrap, validate, validate_lds_options, validate_options};
