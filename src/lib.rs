//! The `boxless` binary's library half: configuration loading and the wiring that
//! `boxless serve` runs, usable in-process by tests.

pub mod app;
pub mod status;

use boxless_core::{Checked, Config, ConfigError};

/// Loads `path`, or the embedded default when None.
pub fn load_config(path: Option<&std::path::Path>) -> Result<Checked, ConfigError> {
    match path {
        None => Ok(Config::embedded()),
        Some(p) => {
            let name = p.display().to_string();
            let text = std::fs::read_to_string(p).map_err(|e| ConfigError {
                file: name.clone(),
                key: "(file)".into(),
                problem: format!("cannot read it: {e}"),
            })?;
            Config::load_str(&text, &name)
        }
    }
}
