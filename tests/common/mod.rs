//! What the loopback end-to-end tests share: a whole `serve` system on its own ports with
//! a fake SMSC, and the test phone's options.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use boxless_core::Config;
use boxless_phone::CallOptions;
use boxless_testkit::{FakeSmsc, free_port, http_get};

pub struct System {
    pub running: boxless::app::Running,
    pub smsc: FakeSmsc,
    pub data: PathBuf,
    /// The first RTP port of each server (ms1, ms2): where each puts its first call.
    pub first_rtp: [u16; 2],
}

pub fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "boxless-e2e-{tag}-{}-{}",
        std::process::id(),
        free_port()
    ));
    let _ = std::fs::remove_dir_all(&d);
    d
}

pub async fn system(tag: &str, mode: &str, extra: &str) -> System {
    system_with(tag, mode, "", "", extra).await
}

/// A system whose `[http]` and `[sms]` tables get `http_extra` and `sms_extra` too.
pub async fn system_with(
    tag: &str,
    mode: &str,
    http_extra: &str,
    sms_extra: &str,
    extra: &str,
) -> System {
    system_full(tag, mode, "", http_extra, sms_extra, extra).await
}

/// A system whose `[router]` table gets `router_extra` too.
pub async fn system_full(
    tag: &str,
    mode: &str,
    router_extra: &str,
    http_extra: &str,
    sms_extra: &str,
    extra: &str,
) -> System {
    let smsc = FakeSmsc::start().await.unwrap();
    let data = temp_dir(tag);
    let rtp = 30_000 + (free_port() % 300) * 100;
    let cfg = format!(
        r#"
data_dir = "{data}"
[router]
listen = "127.0.0.1:{router}"
mode = "{mode}"
proxy_answer_ms = 500
{router_extra}
[http]
listen = "127.0.0.1:0"
{http_extra}
[sms]
transport = "smpp"
address = "{smsc}"
retry_initial_ms = 100
retry_max_ms = 400
{sms_extra}
[messages]
greeting = "tone"
silence_seconds = 3
{extra}
[[servers]]
id = "ms1"
listen = "127.0.0.1:{s1}"
http = "127.0.0.1:{h1}"
rtp_ports = "{r1a}-{r1b}"
link_numbers = ["+18005550100-+18005550149"]
[[servers]]
id = "ms2"
listen = "127.0.0.1:{s2}"
http = "127.0.0.1:{h2}"
rtp_ports = "{r2a}-{r2b}"
link_numbers = ["+18005550150-+18005550199"]
"#,
        data = data.display(),
        router = free_port(),
        smsc = smsc.addr,
        s1 = free_port(),
        s2 = free_port(),
        h1 = free_port(),
        h2 = free_port(),
        r1a = rtp,
        r1b = rtp + 49,
        r2a = rtp + 50,
        r2b = rtp + 99,
    );
    let checked = Config::load_str(&cfg, "e2e.toml").unwrap();
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .build_recorder()
        .handle();
    let running = boxless::app::serve(checked, metrics).await.unwrap();
    System {
        running,
        smsc,
        data,
        first_rtp: [rtp, rtp + 50],
    }
}

pub fn opts(via: SocketAddr, play: Vec<i16>) -> CallOptions {
    CallOptions {
        via,
        from: "5551230001".into(),
        to: "+18005559999".into(),
        diversion: Some("5551230002".into()),
        headers: Vec::new(),
        play,
        play_at: 0.6,
        dtmf: String::new(),
        dtmf_at: 0.0,
        seconds: None,
        answer_timeout: Duration::from_secs(10),
    }
}

pub fn g711(samples: &[i16]) -> Vec<i16> {
    let law = boxless_media::Law::Ulaw;
    samples.iter().map(|&s| law.decode(law.encode(s))).collect()
}

pub async fn messages(sys: &System, recipient: &str) -> Vec<serde_json::Value> {
    let (code, body) = http_get(
        sys.running.http,
        &format!(
            "/api/v1/messages?recipient={}",
            recipient.replace('+', "%2B")
        ),
    )
    .await
    .unwrap();
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// Waits until `cond` holds, asking every 20 ms; fails the test naming `what` after
/// `limit`. Tests wait for what they need, never for a fixed time.
pub async fn until<F, Fut>(what: &str, limit: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = tokio::time::Instant::now() + limit;
    while !cond().await {
        assert!(
            tokio::time::Instant::now() < end,
            "waited {limit:?} for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The messages for `recipient` once `cond` holds of them: the very list it held of,
/// asked every 20 ms; fails the test naming `what` after 10 s.
pub async fn messages_when(
    sys: &System,
    recipient: &str,
    what: &str,
    cond: impl Fn(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    let end = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let list = messages(sys, recipient).await;
        if cond(&list) {
            return list;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "waited 10 s for {what}: {list:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every notice of every message for `recipient` has an outcome: none is waiting for
/// a retry, so no further SMS can go.
pub fn settled(list: &[serde_json::Value]) -> bool {
    list.iter().all(|m| {
        m["notifications"]
            .as_array()
            .is_some_and(|n| n.iter().all(|n| n["state"] != "pending"))
    })
}

/// The audio of stored message `id`, from its server's store.
pub async fn stored_audio(sys: &System, id: &str) -> Vec<i16> {
    let store = sys
        .running
        .servers
        .iter()
        .map(|s| s.store())
        .find(|s| id.starts_with(s.server_id()))
        .unwrap();
    let (rate, samples) = store.audio(id).unwrap();
    assert_eq!(rate, 8000);
    samples
}

/// The best normalised correlation of `needle` anywhere in `hay`.
pub fn find_in(hay: &[i16], needle: &[i16]) -> f64 {
    let span = hay.len().saturating_sub(needle.len());
    let mut best = (0.0, 0usize);
    let mut lag = 0;
    while lag <= span {
        let c = boxless_media::audio::correlation_at(needle, hay, lag as isize);
        if c > best.0 {
            best = (c, lag);
        }
        lag += 8;
    }
    for l in best.1.saturating_sub(8)..=(best.1 + 8).min(span) {
        let c = boxless_media::audio::correlation_at(needle, hay, l as isize);
        if c > best.0 {
            best = (c, l);
        }
    }
    best.0
}
