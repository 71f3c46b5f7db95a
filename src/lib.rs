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

#[cfg(test)]
mod tests {
    use super::*;
    use boxless_core::config::ControlBackend;

    #[test]
    fn the_deployment_examples_are_valid_configurations() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        for (file, servers) in [("deploy/one-box.toml", 2), ("deploy/hosts.toml", 2)] {
            let cfg = load_config(Some(&root.join(file))).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(cfg.config.control.backend, ControlBackend::Nats, "{file}");
            assert_eq!(cfg.servers.len(), servers, "{file}");
        }
    }
}
