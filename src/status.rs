//! `boxless status`: a table of servers from the HTTP API.

use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Fetches `GET {base}/api/v1/servers` and renders the table.
pub async fn status_table(base: &str) -> anyhow::Result<String> {
    let rest = base
        .strip_prefix("http://")
        .context("--http must start with http:// (TLS is not spoken here)")?;
    let (host, path_prefix) = rest.split_once('/').map_or((rest, ""), |(h, p)| (h, p));
    let path = format!(
        "/{}api/v1/servers",
        if path_prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", path_prefix.trim_end_matches('/'))
        }
    );
    let mut s = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(host))
        .await
        .context("connecting timed out")?
        .with_context(|| format!("connecting to {host}"))?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut resp = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut resp))
        .await
        .context("reading timed out")??;
    let text = String::from_utf8_lossy(&resp);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("malformed HTTP response")?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("{}", head.lines().next().unwrap_or(""));
    }
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    let servers: Vec<serde_json::Value> = serde_json::from_str(&body)
        .context("the API answered something that is not a server list")?;
    let mut out = format!(
        "{:<12} {:<9} {:>15} {:>12} {:>10}\n",
        "ID", "STATE", "ACTIVE/CAP", "FREE DISK", "LAST SEEN"
    );
    for v in servers {
        let free = v["free_disk_bytes"].as_u64().unwrap_or(0);
        let seen = v["last_seen_ms"]
            .as_u64()
            .map_or("never".to_string(), |ms| {
                format!("{:.1}s ago", ms as f64 / 1000.0)
            });
        out.push_str(&format!(
            "{:<12} {:<9} {:>15} {:>12} {:>10}\n",
            v["id"].as_str().unwrap_or("?"),
            v["state"].as_str().unwrap_or("?"),
            format!("{}/{}", v["active_calls"], v["capacity"]),
            format!("{:.1} GiB", free as f64 / (1u64 << 30) as f64),
            seen
        ));
    }
    // A router whose control plane is down says so (INTERFACE: degraded health).
    if let Some(line) = head.lines().find_map(|l| {
        l.split_once(':')
            .filter(|(name, _)| name.trim().eq_ignore_ascii_case("boxless-health"))
            .map(|(_, v)| v.trim())
    }) {
        out.push_str(&format!("health: {line}\n"));
    }
    Ok(out)
}

fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}
