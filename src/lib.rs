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
        use std::os::unix::fs::PermissionsExt as _;
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        // The secrets the examples name under /etc/boxless, made here (mode 600).
        let etc = std::env::temp_dir().join(format!("boxless-deploy-{}", std::process::id()));
        std::fs::create_dir_all(&etc).unwrap();
        for f in ["smpp.password", "nats.password"] {
            std::fs::write(etc.join(f), "s3cret\n").unwrap();
            std::fs::set_permissions(etc.join(f), std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        // The certificates only need to be there for the config check.
        std::fs::create_dir_all(etc.join("tls")).unwrap();
        for f in [
            "tls/api.crt",
            "tls/api.key",
            "tls/ca.crt",
            "api.crt",
            "api.key",
        ] {
            std::fs::write(etc.join(f), "").unwrap();
        }
        for (file, servers) in [("deploy/one-box.toml", 2), ("deploy/hosts.toml", 2)] {
            let text = std::fs::read_to_string(root.join(file))
                .unwrap()
                .replace("/etc/boxless/", &format!("{}/", etc.display()))
                // one-box.toml's certificate, which the README has the user make first
                .replace("\"deploy/api.", &format!("\"{}/api.", etc.display()));
            let cfg = Config::load_str(&text, file).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(cfg.config.control.backend, ControlBackend::Nats, "{file}");
            assert_eq!(cfg.servers.len(), servers, "{file}");
            assert_eq!(
                cfg.config.http.auth,
                boxless_core::config::HttpAuth::Token,
                "{file}: the examples use tokens"
            );
        }
        let hosts = std::fs::read_to_string(root.join("deploy/hosts.toml")).unwrap();
        let cfg = Config::load_str(
            &hosts.replace("/etc/boxless/", &format!("{}/", etc.display())),
            "h",
        )
        .unwrap();
        assert!(
            !cfg.config.http.tls_cert.is_empty(),
            "hosts.toml serves HTTPS"
        );
        assert!(!cfg.peers.allows("192.0.2.1".parse().unwrap()));
        assert_eq!(cfg.secrets.sms_password.expose(), "s3cret");
        assert_eq!(
            (cfg.config.store.replication, cfg.config.store.replicas),
            (boxless_core::config::Replication::Jetstream, 3),
            "hosts.toml keeps every message on three NATS nodes"
        );
        std::fs::remove_dir_all(&etc).unwrap();
    }
}
