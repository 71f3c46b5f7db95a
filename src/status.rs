//! `boxless status`: a table of servers from the HTTP API.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context as _, bail};
use boxless_net::http::{Target, request_with};

/// How `boxless status` reaches an API that wants a token or speaks HTTPS.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// The bearer token (from `BOXLESS_TOKEN` or `--token-file`, never from the command
    /// line, where other users could read it).
    pub token: Option<String>,
    /// CA (or the server's own certificate) for an `https://` URL.
    pub ca: Option<std::path::PathBuf>,
}

/// Fetches `GET {base}/api/v1/servers` and renders the table.
pub async fn status_table(base: &str, access: &Access) -> anyhow::Result<String> {
    let (https, rest) = if let Some(r) = base.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = base.strip_prefix("http://") {
        (false, r)
    } else {
        bail!("--http must start with http:// or https://");
    };
    let (host, path_prefix) = rest.split_once('/').map_or((rest, ""), |(h, p)| (h, p));
    let addr: SocketAddr = host
        .parse()
        .with_context(|| format!("--http: `{host}` is not IP:PORT"))?;
    let tls = match (https, &access.ca) {
        (false, _) => None,
        (true, Some(ca)) => {
            Some(boxless_net::tls::client_config(ca).map_err(|e| anyhow::anyhow!("--ca: {e}"))?)
        }
        (true, None) => bail!("an https:// URL needs --ca FILE (the CA or the API's certificate)"),
    };
    let path = format!(
        "/{}api/v1/servers",
        if path_prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", path_prefix.trim_end_matches('/'))
        }
    );
    let auth = access.token.as_ref().map(|t| format!("Bearer {t}"));
    let a = request_with(
        &Target { addr, tls },
        "GET",
        &path,
        auth.as_deref(),
        Duration::from_secs(5),
    )
    .await
    .with_context(|| format!("asking {base}"))?;
    match a.status {
        200 => {}
        401 => bail!("401: the API wants a token; set BOXLESS_TOKEN or --token-file"),
        code => bail!("the API answered {code}"),
    }
    let servers: Vec<serde_json::Value> = serde_json::from_slice(&a.body)
        .context("the API answered something that is not a server list")?;
    let mut out = format!(
        "{:<12} {:<9} {:>15} {:>12} {:>10} {:>12}  SERVES\n",
        "ID", "STATE", "ACTIVE/CAP", "FREE DISK", "LAST SEEN", "UNREPLICATED"
    );
    for v in servers {
        let free = v["free_disk_bytes"].as_u64().unwrap_or(0);
        let seen = v["last_seen_ms"]
            .as_u64()
            .map_or("never".to_string(), |ms| {
                format!("{:.1}s ago", ms as f64 / 1000.0)
            });
        // "-": the server keeps its messages on its own disk only.
        let unreplicated = v["unreplicated"]
            .as_u64()
            .map_or("-".to_string(), |n| n.to_string());
        // Whose link numbers it answers; "-": nobody's (catching up after a takeover).
        let serves = v["serves"].as_array().map_or(String::new(), |ids| {
            let ids: Vec<&str> = ids.iter().filter_map(|i| i.as_str()).collect();
            if ids.is_empty() {
                "-".into()
            } else {
                ids.join(",")
            }
        });
        out.push_str(&format!(
            "{:<12} {:<9} {:>15} {:>12} {:>10} {:>12}  {}\n",
            v["id"].as_str().unwrap_or("?"),
            v["state"].as_str().unwrap_or("?"),
            format!("{}/{}", v["active_calls"], v["capacity"]),
            format!("{:.1} GiB", free as f64 / (1u64 << 30) as f64),
            seen,
            unreplicated,
            serves
        ));
    }
    // A router whose control plane is down says so (docs/http.md: degraded health).
    if let Some(line) = a.header("boxless-health") {
        out.push_str(&format!("health: {line}\n"));
    }
    Ok(out)
}
