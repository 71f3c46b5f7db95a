//! A slow store holds up the calls that read it, and nothing else: with every store access
//! taking 200 ms, twenty retrievals of one link starting at once leave the same server
//! answering OPTIONS and new deposits within 5 ms (ARCHITECTURE.md, "SIP layers").
//!
//! Debug builds only: `Store::slow_down` does not exist in an optimized build.
#![cfg(debug_assertions)]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use boxless_phone::place_call;
use boxless_testkit::{http_get, voice};
use common::{messages, opts, system};
use tokio::net::UdpSocket;

/// How long the store takes for each access in this test.
const SLOW: Duration = Duration::from_millis(200);
/// How soon the server must still answer what needs no store: a tenth of one store
/// access, so an answer that waited behind the store cannot pass, with room for a debug
/// build on a shared machine (5 ms was once missed by 0.13 ms there).
const PROMPT: Duration = Duration::from_millis(20);

fn request(
    method: &str,
    to: SocketAddr,
    user: &str,
    from: SocketAddr,
    call_id: &str,
    extra: &str,
) -> String {
    let sdp = format!(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {} RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n",
        from.port() + 2
    );
    let body = if method == "INVITE" { sdp.as_str() } else { "" };
    let ctype = if body.is_empty() {
        ""
    } else {
        "Content-Type: application/sdp\r\n"
    };
    format!(
        "{method} sip:{user}@{to} SIP/2.0\r\nVia: SIP/2.0/UDP {from};branch=z9hG4bK{call_id}\r\n\
         From: <sip:+15559990000@127.0.0.1>;tag=t{call_id}\r\nTo: <sip:{user}@{to}>\r\nCall-ID: {call_id}\r\n\
         CSeq: 1 {method}\r\nMax-Forwards: 70\r\nContact: <sip:+15559990000@{from}>\r\n{extra}{ctype}\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Sends `msg` and waits for the first response carrying `call_id`: its status line and
/// how long it took.
async fn ask(sock: &UdpSocket, to: SocketAddr, msg: &str, call_id: &str) -> (String, Duration) {
    let t0 = Instant::now();
    sock.send_to(msg.as_bytes(), to).await.unwrap();
    let mut buf = vec![0u8; 8192];
    loop {
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), sock.recv_from(&mut buf))
            .await
            .expect("an answer within 5 s")
            .unwrap();
        let text = String::from_utf8_lossy(&buf[..n]);
        if text.contains(&format!("Call-ID: {call_id}\r\n")) {
            let status = text.lines().next().unwrap_or("").to_string();
            return (status, t0.elapsed());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_store_holds_up_its_retrievals_and_not_the_server_s_sip() {
    let sys = system("hol", "redirect", "").await;
    // One message, on whichever server the router picks.
    let out = place_call(&opts(sys.running.router, voice(2500, 3)))
        .await
        .unwrap();
    assert!(out.answered, "{out:?}");
    sys.smsc.wait_for(1, Duration::from_secs(10)).await;
    let m = messages(&sys, "+15551230002").await.remove(0);
    let link = m["link_number"].as_str().unwrap().to_string();
    let owner = sys
        .running
        .servers
        .iter()
        .find(|s| s.id() == m["server"].as_str().unwrap())
        .unwrap();
    let (_, servers) = http_get(sys.running.http, "/api/v1/servers").await.unwrap();
    let servers: Vec<serde_json::Value> = serde_json::from_str(&servers).unwrap();
    let addr: SocketAddr = servers.iter().find(|v| v["id"] == m["server"]).unwrap()["address"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();

    owner.store().slow_down(SLOW);
    // Twenty callers dial the link number at once: each call's set-up reads the store.
    let callers = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let from = callers.local_addr().unwrap();
    for i in 0..20 {
        let inv = request("INVITE", addr, &link, from, &format!("r{i}"), "");
        callers.send_to(inv.as_bytes(), addr).await.unwrap();
    }
    // Their set-ups are loading once the first `100 Trying` comes (a set-up still
    // loading after 100 ms sends it): the server took in all twenty INVITEs, and each
    // waits on the store. Not `200`: the retrievals do wait for the store.
    let mut buf = vec![0u8; 8192];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), callers.recv_from(&mut buf))
        .await
        .expect("the retrievals are answered")
        .unwrap();
    let first = String::from_utf8_lossy(&buf[..n]);
    assert!(first.starts_with("SIP/2.0 100 Trying\r\n"), "{first}");
    let loading = Instant::now();
    // Meanwhile the server answers what needs no store at once, again and again.
    let probe = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let me = probe.local_addr().unwrap();
    let mut worst = Duration::ZERO;
    for i in 0..10 {
        let id = format!("o{i}");
        let (status, took) = ask(
            &probe,
            addr,
            &request("OPTIONS", addr, "ping", me, &id, ""),
            &id,
        )
        .await;
        assert_eq!(status, "SIP/2.0 200 OK");
        worst = worst.max(took);
        tokio::time::sleep(Duration::from_millis(50)).await;
        if i % 2 == 1 {
            continue; // five deposits: with the twenty retrievals, all the RTP ports it has
        }
        let id = format!("d{i}");
        let inv = request(
            "INVITE",
            addr,
            &format!("+1555123{:04}", 100 + i),
            me,
            &id,
            "Diversion: <sip:+15551230003@127.0.0.1>;reason=no-answer\r\n",
        );
        let (status, took) = ask(&probe, addr, &inv, &id).await;
        // A deposit's set-up (the tone greeting here) needs nothing from the store.
        assert_eq!(status, "SIP/2.0 200 OK");
        worst = worst.max(took);
    }
    eprintln!("slowest answer while twenty retrievals load: {worst:?}");
    assert!(
        worst <= PROMPT,
        "the server's SIP waited {worst:?} behind the store"
    );
    // A caller who gives up while its call still loads: 200 to its CANCEL, 487 to its
    // INVITE, at once (RFC 3261 §9.2), not a 200 OK seconds later.
    let cancel = request("CANCEL", addr, &link, from, "r19", "");
    let t0 = Instant::now();
    callers.send_to(cancel.as_bytes(), addr).await.unwrap();
    let mut answers = Vec::new();
    while !answers
        .iter()
        .any(|a: &String| a.starts_with("SIP/2.0 487"))
    {
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), callers.recv_from(&mut buf))
            .await
            .expect("the cancelled call is answered")
            .unwrap();
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        if text.contains("Call-ID: r19\r\n") && !text.contains("100 Trying") {
            answers.push(text.lines().next().unwrap_or("").to_string());
        }
    }
    assert_eq!(
        answers,
        ["SIP/2.0 200 OK", "SIP/2.0 487 Request Terminated"],
        "CANCEL answered, then the INVITE"
    );
    assert!(t0.elapsed() < SLOW, "cancelled in {:?}", t0.elapsed());

    // The whole time, the retrievals were still loading (each reads the store at least
    // three times, one after the other: 600 ms and more, twenty in a row).
    assert!(
        loading.elapsed() < SLOW * 3 * 20 / 2,
        "{:?}",
        loading.elapsed()
    );
}
