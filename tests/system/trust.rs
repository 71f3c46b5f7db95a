//! The trust boundary end to end on loopback: strangers' SIP gets `403` and creates
//! nothing, strangers' RTP neither speaks into a message nor starves it, the API wants
//! tokens (over HTTPS), secrets stay out of the way.

use crate::common;

use std::net::SocketAddr;
use std::time::Duration;

use boxless_net::http::{Target, request_with};
use boxless_phone::place_call;
use boxless_testkit::voice;
use common::{g711, messages, opts, stored_audio, system, system_with};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn invite(to: SocketAddr, from_ip: &str, call_id: &str) -> String {
    format!(
        "INVITE sip:+15551230002@{to} SIP/2.0\r\nVia: SIP/2.0/UDP {from_ip}:5099;branch=z9hG4bK{call_id}\r\n\
         From: <sip:+15551230001@{from_ip}>;tag=a\r\nTo: <sip:+15551230002@{to}>\r\nCall-ID: {call_id}\r\n\
         CSeq: 1 INVITE\r\nMax-Forwards: 70\r\nDiversion: <sip:+23480000001@x>\r\nContact: <sip:a@{from_ip}:5099>\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

/// Sends `msg` from `from` (its Via's port 5099 replaced by the socket's) and waits for
/// an answer.
async fn udp_ask(from: &str, to: SocketAddr, msg: &str) -> Option<String> {
    let sock = tokio::net::UdpSocket::bind(format!("{from}:0"))
        .await
        .unwrap();
    let port = sock.local_addr().unwrap().port();
    let msg = msg.replace(":5099", &format!(":{port}"));
    sock.send_to(msg.as_bytes(), to).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let (n, _) = tokio::time::timeout(Duration::from_secs(2), sock.recv_from(&mut buf))
        .await
        .ok()?
        .ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_get_403_and_nothing_is_created() {
    let sys = system(
        "trust",
        "redirect",
        "[sip]\ntrusted_peers = [\"127.0.0.1/32\"]\n",
    )
    .await;
    let server = sys.running.servers[0].id().to_string();
    assert_eq!(server, "ms1");
    let ms1: SocketAddr = {
        let (code, body) = boxless_testkit::http_get(sys.running.http, "/api/v1/servers")
            .await
            .unwrap();
        assert_eq!(code, 200);
        let v: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
        v[0]["address"].as_str().unwrap().parse().unwrap()
    };
    // UDP from 127.0.0.3 to the router and straight to a server.
    for (i, to) in [sys.running.router, ms1].into_iter().enumerate() {
        let got = udp_ask("127.0.0.3", to, &invite(to, "127.0.0.3", &format!("s{i}")))
            .await
            .expect("an answer");
        assert!(got.starts_with("SIP/2.0 403 Forbidden\r\n"), "{got}");
    }
    // TCP: one 403, then the connection is closed (read_to_end returns).
    let to = sys.running.router;
    let (text, closed) = tcp_ask(
        "127.0.0.3",
        to,
        &invite(to, "127.0.0.3", "t1"),
        Duration::from_secs(3),
    )
    .await;
    assert!(text.starts_with("SIP/2.0 403 Forbidden\r\n"), "{text}");
    assert!(closed, "closed by the router after its one answer");
    // The same INVITE from the trusted address is routed.
    let got = udp_ask(
        "127.0.0.1",
        sys.running.router,
        &invite(sys.running.router, "127.0.0.1", "ok1"),
    )
    .await
    .unwrap();
    assert!(got.starts_with("SIP/2.0 302 "), "{got}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(sys.smsc.accepted().is_empty(), "no SMS for a stranger");
    assert!(messages(&sys, "+23480000001").await.is_empty());
    let _ = std::fs::remove_dir_all(&sys.data);
}

/// A stranger who finds a call's RTP port floods it with loud audio of its own, from
/// another address (127.0.0.2), before the call and all through it: 20 packets every
/// 5 ms to each server's first port (where its first call goes), 4,000 a second each,
/// more than twelve times what a call's drains take (64 a drain: 320 a second while it
/// listens, 128 while it records). The kernel drops them, as the socket hears only the
/// caller's IP from the SDP on, then only its latched source: the message is whole and is
/// the caller's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_flooding_the_rtp_port_neither_speaks_into_nor_starves_a_message() {
    let sys = system("rtp-flood", "redirect", "").await;
    let Ok(stranger) = std::net::UdpSocket::bind("127.0.0.2:0") else {
        eprintln!("no 127.0.0.2 on this loopback: skipped");
        return;
    };
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood = {
        let stop = stop.clone();
        let ports = sys.first_rtp;
        std::thread::spawn(move || {
            // PCMU, loud (µ-law 0x80 is the top of the scale), its own SSRC.
            let mut packet = [0x80u8; 172];
            packet[..2].copy_from_slice(&[0x80, 0x00]);
            packet[8..12].copy_from_slice(&0x5747_4e47u32.to_be_bytes());
            let mut sent = 0u64;
            for seq in 0u32.. {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                packet[2..4].copy_from_slice(&(seq as u16).to_be_bytes());
                packet[4..8].copy_from_slice(&(seq * 160).to_be_bytes());
                for port in ports {
                    for _ in 0..20 {
                        if stranger.send_to(&packet, ("127.0.0.1", port)).is_ok() {
                            sent += 1;
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            sent
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let played = voice(2500, 3);
    let out = place_call(&opts(sys.running.router, played.clone()))
        .await
        .unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = flood.join().unwrap();
    assert!(out.completed(), "{out:?}");
    assert!(sent > 10_000, "the flood sent only {sent} packets");

    let list = messages(&sys, "+15551230002").await;
    assert_eq!(list.len(), 1, "{list:?}");
    let d = list[0]["duration_ms"].as_u64().unwrap();
    assert!((2400..=2700).contains(&d), "duration {d} ms: starved");
    let stored = stored_audio(&sys, list[0]["id"].as_str().unwrap()).await;
    let (corr, _) = boxless_media::audio::best_correlation(&g711(&played), &stored, 800);
    assert!(
        corr >= 0.9,
        "stored audio correlation {corr}: not the caller's"
    );
    let _ = std::fs::remove_dir_all(&sys.data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_wants_a_token_and_speaks_https() {
    use sha2::Digest as _;
    let dir = common::temp_dir("tls");
    std::fs::create_dir_all(&dir).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".into()]).unwrap();
    params.is_ca = rcgen::IsCa::ExplicitNoCa;
    let cert = params.self_signed(&key).unwrap();
    let (crt, pem_key) = (dir.join("api.crt"), dir.join("api.key"));
    std::fs::write(&crt, cert.pem()).unwrap();
    std::fs::write(&pem_key, key.serialize_pem()).unwrap();
    let hex = |t: &str| {
        sha2::Sha256::digest(t.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    let (admin, read) = (
        "admin-token-0123456789abcdef",
        "read-token-0123456789abcdef",
    );
    let http = format!(
        "auth = \"token\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n\
         [[http.tokens]]\nname = \"ops\"\nsha256 = \"{}\"\nscope = \"admin\"\n\
         [[http.tokens]]\nname = \"dash\"\nsha256 = \"{}\"\nscope = \"read\"\n",
        crt.display(),
        pem_key.display(),
        hex(admin),
        hex(read)
    );
    let sys = system_with("tls", "redirect", &http, "", "").await;
    let t = Target {
        addr: sys.running.http,
        tls: Some(boxless_net::tls::client_config(&crt).unwrap()),
    };
    let ask = |method: &'static str, path: &'static str, token: Option<&'static str>| {
        let t = t.clone();
        async move {
            let auth = token.map(|k| format!("Bearer {k}"));
            request_with(&t, method, path, auth.as_deref(), Duration::from_secs(5))
                .await
                .unwrap()
        }
    };
    assert_eq!(
        ask("GET", "/healthz", None).await.status,
        200,
        "health stays open"
    );
    let a = ask("GET", "/api/v1/messages", None).await;
    assert_eq!(a.status, 401);
    assert!(a.header("www-authenticate").is_some());
    assert_eq!(
        ask("GET", "/api/v1/messages", Some("wrong")).await.status,
        401
    );
    assert_eq!(ask("GET", "/metrics", None).await.status, 401);
    assert_eq!(ask("GET", "/api/v1/messages", Some(read)).await.status, 200);
    assert_eq!(ask("GET", "/metrics", Some(read)).await.status, 200);
    assert_eq!(
        ask("DELETE", "/api/v1/messages/ms1-00", Some(read))
            .await
            .status,
        403
    );
    assert_eq!(
        ask("DELETE", "/api/v1/messages/ms1-00", Some(admin))
            .await
            .status,
        404
    );
    // Plain HTTP to the HTTPS port gets nothing useful.
    let plain = request_with(
        &Target::plain(sys.running.http),
        "GET",
        "/healthz",
        None,
        Duration::from_secs(3),
    )
    .await;
    assert!(plain.is_err() || plain.unwrap().status != 200);
    let _ = std::fs::remove_dir_all(&sys.data);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sms_to_numbers_outside_the_allowed_prefixes_are_blocked_and_the_message_kept() {
    let sys = system_with("prefix", "redirect", "", "allowed_prefixes = [\"+1\"]", "").await;
    for (i, div) in ["+23480000001", "+15551230002"].iter().enumerate() {
        let mut o = common::opts(
            sys.running.router,
            boxless_testkit::voice(1500, 40 + i as u32),
        );
        o.diversion = Some(div.to_string());
        let out = boxless_phone::place_call(&o).await.unwrap();
        assert!(out.completed(), "{out:?}");
    }
    let sms = sys.smsc.wait_for(1, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let sent: Vec<String> = sys
        .smsc
        .accepted()
        .iter()
        .map(|s| s.destination.clone())
        .collect();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert!(sms[0].destination.ends_with("15551230002"), "{sent:?}");
    let blocked = messages(&sys, "+23480000001").await;
    assert_eq!(blocked.len(), 1, "the message itself is stored");
    assert_eq!(blocked[0]["notifications"][0]["state"], "blocked");
    assert!(
        blocked[0]["notifications"][0]["last_error"]
            .as_str()
            .unwrap()
            .contains("allowed_prefixes")
    );
    let _ = std::fs::remove_dir_all(&sys.data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_hourly_limit_notices_wait_for_one_digest_and_bursts_are_one_sms() {
    let sms = "max_per_recipient_per_hour = 3";
    let sys = system_with("pump", "redirect", "", sms, "").await;
    // Four messages for one number (from four callers): three SMS, one merged.
    for i in 0..4u32 {
        let mut o = common::opts(sys.running.router, boxless_testkit::voice(1500, 60 + i));
        o.from = format!("555123001{i}");
        assert!(boxless_phone::place_call(&o).await.unwrap().completed());
    }
    // Two servers share the one hour: the first three SMS go at once, whichever server
    // took the calls, and the fourth waits for the digest (in shares of one per server,
    // at most two would have gone).
    sys.smsc.wait_for(3, Duration::from_secs(10)).await;
    let list = common::messages_when(&sys, "+15551230002", "one merged notice", |l| {
        l.iter()
            .filter(|m| m["notifications"][0]["state"] == "merged")
            .count()
            == 1
    })
    .await;
    assert_eq!(list.len(), 4, "every message stored");
    let servers: std::collections::BTreeSet<&str> = list
        .iter()
        .filter_map(|m| m["id"].as_str()?.split('-').next())
        .collect();
    eprintln!("the four messages landed on {servers:?}");
    assert_eq!(
        sys.smsc.accepted().len(),
        3,
        "the limit holds for the cluster"
    );
    // Three short calls from one caller to another number: one missed-call SMS.
    for _ in 0..3 {
        let mut o = common::opts(sys.running.router, Vec::new());
        o.diversion = Some("5551239999".into());
        o.seconds = Some(0.8);
        assert!(boxless_phone::place_call(&o).await.unwrap().completed());
    }
    let alerts = |sys: &common::System| -> Vec<_> {
        sys.smsc
            .accepted()
            .into_iter()
            .filter(|s| s.destination.ends_with("15551239999"))
            .collect()
    };
    sys.smsc.wait_for(4, Duration::from_secs(10)).await;
    // Whichever server took each call, the burst is one alert: give a second one time
    // to show up if it were coming.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(alerts(&sys).len(), 1, "{:?}", alerts(&sys));
    let _ = std::fs::remove_dir_all(&sys.data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verified_caller_id_alone_stands_in_for_the_code() {
    let extra = "[retrieval]\ntrust_caller_id = \"verified\"\n";
    let sys = system("verstat", "redirect", extra).await;
    let played = boxless_testkit::voice(1500, 77);
    let out = boxless_phone::place_call(&common::opts(sys.running.router, played))
        .await
        .unwrap();
    assert!(out.completed());
    let sms = sys.smsc.wait_for(1, Duration::from_secs(10)).await;
    let link = format!("+{}", sms[0].source);
    let m = messages(&sys, "+15551230002").await[0].clone();
    let stored = common::stored_audio(&sys, m["id"].as_str().unwrap()).await;
    let recipient = |pai: Option<&str>, seconds: f64| {
        let mut o = common::opts(sys.running.router, Vec::new());
        o.from = "5551230002".into();
        o.to = link.clone();
        o.diversion = None;
        o.seconds = Some(seconds);
        if let Some(p) = pai {
            o.headers.push(format!("P-Asserted-Identity: {p}"));
        }
        o
    };
    // The recipient's number, unverified: a forger's view; the code is asked for.
    let out = boxless_phone::place_call(&recipient(None, 6.0))
        .await
        .unwrap();
    assert!(
        common::find_in(&out.heard, &stored) < 0.5,
        "no audio unverified"
    );
    let failed = "<sip:+15551230002;verstat=TN-Validation-Failed@h;user=phone>";
    let out = boxless_phone::place_call(&recipient(Some(failed), 6.0))
        .await
        .unwrap();
    assert!(
        common::find_in(&out.heard, &stored) < 0.5,
        "no audio when verification failed"
    );
    let passed = "<sip:+15551230002;verstat=TN-Validation-Passed@h;user=phone>";
    let out = boxless_phone::place_call(&recipient(Some(passed), 22.0))
        .await
        .unwrap();
    assert!(
        common::find_in(&out.heard, &stored) >= 0.8,
        "verified: heard"
    );
    let _ = std::fs::remove_dir_all(&sys.data);
}

/// Sends `msg` over TCP from `from` and reads what comes back within `wait`; true when
/// the far end closed the connection in that time.
async fn tcp_ask(from: &str, to: SocketAddr, msg: &str, wait: Duration) -> (String, bool) {
    let s = tokio::net::TcpSocket::new_v4().unwrap();
    s.bind(format!("{from}:0").parse().unwrap()).unwrap();
    let mut c = s.connect(to).await.unwrap();
    c.write_all(msg.as_bytes()).await.unwrap();
    let mut all = Vec::new();
    let closed = tokio::time::timeout(wait, c.read_to_end(&mut all))
        .await
        .is_ok();
    (String::from_utf8_lossy(&all).into_owned(), closed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_mode_over_tcp_keeps_the_same_boundary() {
    let sys = system(
        "tcpproxy",
        "proxy",
        "[sip]\ntrusted_peers = [\"127.0.0.1/32\"]\n",
    )
    .await;
    let to = sys.running.router;
    let (got, closed) = tcp_ask(
        "127.0.0.3",
        to,
        &invite(to, "127.0.0.3", "tp1"),
        Duration::from_secs(3),
    )
    .await;
    assert!(
        got.starts_with("SIP/2.0 403 Forbidden\r\n") && closed,
        "{got}"
    );
    // Trusted: the proxy takes it (100 Trying, then the server's answer relayed).
    let inv = invite(to, "127.0.0.1", "tp2").replace("UDP", "TCP");
    let (got, closed) = tcp_ask("127.0.0.1", to, &inv, Duration::from_millis(1500)).await;
    assert!(
        got.starts_with("SIP/2.0 100 Trying\r\n") && !closed,
        "{got}"
    );
    let _ = std::fs::remove_dir_all(&sys.data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sip_over_tls_closes_on_strangers_before_the_handshake_and_serves_trusted_peers() {
    let dir = common::temp_dir("siptls");
    std::fs::create_dir_all(&dir).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".into()]).unwrap();
    params.is_ca = rcgen::IsCa::ExplicitNoCa;
    let cert = params.self_signed(&key).unwrap();
    let (crt, pem_key) = (dir.join("sip.crt"), dir.join("sip.key"));
    std::fs::write(&crt, cert.pem()).unwrap();
    std::fs::write(&pem_key, key.serialize_pem()).unwrap();
    let port = boxless_testkit::free_port();
    let tls: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let extra = format!(
        "[sip]\ntrusted_peers = [\"127.0.0.1/32\"]\ntls_listen = \"{tls}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
        crt.display(),
        pem_key.display()
    );
    let sys = system("siptls", "redirect", &extra).await;
    // A stranger: closed at once, not even a handshake (a ClientHello gets nothing back).
    let t0 = std::time::Instant::now();
    let (got, closed) = tcp_ask(
        "127.0.0.3",
        tls,
        "\u{16}\u{3}\u{1}\0\u{5}hello",
        Duration::from_secs(3),
    )
    .await;
    assert!(got.is_empty() && closed, "{got:?}");
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    // A trusted peer that speaks no TLS (plain SIP on the TLS port): the handshake fails
    // with a TLS alert (record type 21) and the connection closes; no SIP answer.
    let (got, closed) = tcp_ask(
        "127.0.0.1",
        tls,
        "OPTIONS sip:x@127.0.0.1 SIP/2.0\r\n\r\n",
        Duration::from_secs(6),
    )
    .await;
    assert!(
        closed && !got.contains("SIP/2.0") && got.bytes().next().is_none_or(|b| b == 21),
        "{got:?}"
    );
    // A trusted peer: a TLS session, an OPTIONS answered on it.
    let connector =
        tokio_rustls::TlsConnector::from(boxless_net::tls::client_config(&crt).unwrap());
    let tcp = tokio::net::TcpStream::connect(tls).await.unwrap();
    let name = tokio_rustls::rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut s = connector.connect(name, tcp).await.expect("TLS handshake");
    let options = format!(
        "OPTIONS sip:{tls} SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:5999;branch=z9hG4bKtls1\r\n\
From: <sip:ops@127.0.0.1>;tag=o\r\nTo: <sip:{tls}>\r\nCall-ID: tls-options\r\nCSeq: 1 OPTIONS\r\n\
Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    );
    s.write_all(options.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf))
        .await
        .expect("an answer")
        .unwrap();
    let got = String::from_utf8_lossy(&buf[..n]);
    assert!(got.starts_with("SIP/2.0 200 OK\r\n"), "{got}");
    let _ = std::fs::remove_dir_all(&sys.data);
}
