//! End to end on loopback: `serve` in-process, a fake SMSC, calls placed with the test
//! phone. Each test runs its own system on its own ports.

use crate::common;

use std::time::Duration;

use boxless_phone::{CallOutcome, place_call};
use boxless_testkit::{Mode, http, http_get, voice};
use common::{
    find_in, g711, messages, messages_when, opts, settled, stored_audio, system, system_full, until,
};

/// The access code an SMS carries (" Code 123456.").
fn code_in(text: &str) -> String {
    let code = text.rsplit("Code ").next().unwrap().trim_end_matches('.');
    assert_eq!(code.len(), 6, "{text}");
    code.to_string()
}

fn assert_completed(out: &CallOutcome) {
    assert!(out.completed(), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_deposit_stores_the_audio_and_sends_the_sms() {
    let sys = system("redirect", "redirect", "").await;
    let played = voice(2500, 1);
    let out = place_call(&opts(sys.running.router, played.clone()))
        .await
        .unwrap();
    assert_completed(&out);
    let codes: Vec<u16> = out.invite_finals.iter().map(|(c, _)| *c).collect();
    assert_eq!(codes, [302, 200]);

    let sms = sys.smsc.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(sms.len(), 1, "{sms:?}");
    let sms = &sms[0];
    assert_eq!(sms.destination, "15551230002");
    assert_eq!(sms.source_ton, 1);
    assert!(sms.source.starts_with("1800555"), "{sms:?}");
    assert!(sms.text.contains("+15551230001"), "{}", sms.text);
    assert!(
        sms.text.contains(&format!("+{}", sms.source)),
        "{}",
        sms.text
    );

    let list = messages(&sys, "+15551230002").await;
    assert_eq!(list.len(), 1);
    let m = &list[0];
    assert_eq!(m["caller"], "+15551230001");
    assert_eq!(m["link_number"], format!("+{}", sms.source));
    let d = m["duration_ms"].as_u64().unwrap();
    assert!((2400..=2700).contains(&d), "duration {d}");
    // The SMSC accepted it: notified.
    let list = messages_when(&sys, "+15551230002", "the message notified", |l| {
        l[0]["state"] == "notified"
    })
    .await;
    let m = &list[0];
    assert_eq!(m["notifications"][0]["state"], "accepted");

    let stored = stored_audio(&sys, m["id"].as_str().unwrap()).await;
    let (corr, _) = boxless_media::audio::best_correlation(&g711(&played), &stored, 800);
    assert!(corr >= 0.9, "stored audio correlation {corr}");

    let (code, wav) = http_get(
        sys.running.http,
        &format!("/api/v1/messages/{}/audio", m["id"].as_str().unwrap()),
    )
    .await
    .unwrap();
    assert_eq!(code, 200);
    assert!(wav.starts_with("RIFF"));
    // Served as 16-bit PCM; kept as the caller's µ-law, half the size.
    let id = m["id"].as_str().unwrap();
    let (_, kept) = http_get(
        sys.running.http,
        &format!("/api/v1/messages/{id}/audio?format=original"),
    )
    .await
    .unwrap();
    assert!(kept.starts_with("RIFF"));
    let in_store = |s: &str| boxless_store::audio::path_in(&sys.data.join(s), id);
    let file = std::fs::read(in_store("ms1"))
        .or_else(|_| std::fs::read(in_store("ms2")))
        .unwrap();
    // One byte a sample (8 a ms; the duration is whole ms) after the header and the chunk
    // that says whose message it is.
    let p = boxless_store::wav::parse(&file).unwrap();
    let body = (p.data.1 - p.data.0) as u64;
    assert!(p.data.0 < 200, "header {} bytes", p.data.0);
    assert!(
        (d * 8..d * 8 + 9).contains(&body),
        "µ-law on disk: {body} bytes for {d} ms"
    );
    let (code, _) = http_get(
        sys.running.http,
        &format!("/api/v1/messages/{id}/audio?format=mp3"),
    )
    .await
    .unwrap();
    assert_eq!(code, 400);
    let (code, _) = http(
        sys.running.http,
        "DELETE",
        &format!("/api/v1/messages/{}", m["id"].as_str().unwrap()),
    )
    .await
    .unwrap();
    assert_eq!(code, 200);
    assert_eq!(messages(&sys, "+15551230002").await[0]["state"], "deleted");
    let _ = std::fs::remove_dir_all(&sys.data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_mode_history_info_and_national_numbers() {
    let sys = system("proxy", "proxy", "").await;
    let mut o = opts(sys.running.router, voice(1500, 2));
    o.diversion = None;
    o.to = "vm".into();
    o.headers = vec![
        "History-Info: <sip:5551230003@h?Reason=SIP%3Bcause%3D486>;index=1, <sip:vm@h>;index=1.1"
            .into(),
    ];
    let out = place_call(&o).await.unwrap();
    assert_completed(&out);
    assert_eq!(
        out.invite_finals
            .iter()
            .map(|(c, _)| *c)
            .collect::<Vec<_>>(),
        [200]
    );
    let mut o = opts(sys.running.router, voice(1500, 3));
    o.diversion = None;
    o.to = "5551230004".into();
    assert_completed(&place_call(&o).await.unwrap());
    let sms = sys.smsc.wait_for(2, Duration::from_secs(10)).await;
    let mut dest: Vec<&str> = sms.iter().map(|s| s.destination.as_str()).collect();
    dest.sort();
    assert_eq!(dest, ["15551230003", "15551230004"]);
    assert_eq!(messages(&sys, "+15551230003").await.len(), 1);
    let _ = std::fs::remove_dir_all(&sys.data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smsc_refusing_then_throttling_only_delays_sms_and_never_duplicates() {
    let sys = system("smsc", "redirect", "").await;
    sys.smsc.set_mode(Mode::Refuse);
    // 2 s of voice: well above messages.min_seconds even when a loaded machine delays
    // the phone's packets (1.2 s sometimes came out as a missed call).
    for i in 0..3 {
        let out = place_call(&opts(sys.running.router, voice(2000, 10 + i)))
            .await
            .unwrap();
        assert_completed(&out);
    }
    let list = messages_when(&sys, "+15551230002", "three refused notices", |l| {
        l.len() == 3
            && l.iter().all(|m| {
                m["notifications"][0]["last_error"]
                    .as_str()
                    .is_some_and(|e| e.contains("refused"))
            })
    })
    .await;
    assert!(sys.smsc.accepted().is_empty());
    assert!(sys.smsc.submits() >= 3);
    assert_eq!(list.len(), 3, "{list:?} {:?}", sys.smsc.submits());
    assert!(
        list.iter().all(
            |m| m["state"] == "new" && m["notifications"][0]["attempts"].as_u64().unwrap() >= 1
        )
    );
    // Throttled until the SMSC has throttled a retry, then accepting.
    let before = sys.smsc.submits();
    sys.smsc.set_mode(Mode::Throttle);
    until("a throttled retry", Duration::from_secs(10), || async {
        sys.smsc.submits() > before
    })
    .await;
    sys.smsc.set_mode(Mode::Accept);
    let sms = sys.smsc.wait_for(3, Duration::from_secs(10)).await;
    assert_eq!(sms.len(), 3);
    // Every notice taken: nothing is left to send, so none can go twice.
    messages_when(&sys, "+15551230002", "every notice accepted", settled).await;
    assert_eq!(sys.smsc.accepted().len(), 3, "no SMS twice");
    let mut links: Vec<String> = sms.iter().map(|s| s.source.clone()).collect();
    links.sort();
    links.dedup();
    assert_eq!(
        links.len(),
        3,
        "each unheard message of one recipient has its own link number"
    );
    assert!(
        messages(&sys, "+15551230002")
            .await
            .iter()
            .all(|m| m["state"] == "notified")
    );
    let _ = std::fs::remove_dir_all(&sys.data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_too_short_leaves_a_missed_call_alert() {
    let sys = system("short", "redirect", "").await;
    let mut o = opts(sys.running.router, Vec::new());
    o.seconds = Some(0.8);
    assert_completed(&place_call(&o).await.unwrap());
    let sms = sys.smsc.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(sms.len(), 1);
    assert!(
        sms[0].text.starts_with("Missed call from +15551230001"),
        "{}",
        sms[0].text
    );
    assert_eq!(sms[0].source, "15551230001");
    assert!(messages(&sys, "+15551230002").await.is_empty());
    let _ = std::fs::remove_dir_all(&sys.data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pound_ends_the_recording_and_the_server_hangs_up() {
    let sys = system("pound", "redirect", "").await;
    let mut o = opts(sys.running.router, voice(1500, 4));
    o.dtmf = "#".into();
    o.dtmf_at = 2.3;
    o.seconds = Some(8.0);
    let out = place_call(&o).await.unwrap();
    assert!(out.remote_hangup, "{out:?}");
    let sms = sys.smsc.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(sms.len(), 1);
    let _ = std::fs::remove_dir_all(&sys.data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_reports_servers_and_errors_as_json() {
    let sys = system("api", "redirect", "").await;
    let (code, body) = http_get(sys.running.http, "/api/v1/servers").await.unwrap();
    assert_eq!(code, 200);
    let v: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    assert_eq!(v.len(), 2);
    assert_eq!(v[0]["state"], "up");
    assert_eq!(v[0]["link_numbers"][0], "+18005550100-+18005550149");
    let (code, body) = http_get(sys.running.http, "/api/v1/messages?recipient=555")
        .await
        .unwrap();
    assert_eq!(code, 400);
    assert!(body.contains("\"error\""));
    let (code, _) = http_get(sys.running.http, "/api/v1/messages/ms1-nope/audio")
        .await
        .unwrap();
    assert_eq!(code, 404);
    let (code, body) = http_get(sys.running.http, "/healthz").await.unwrap();
    assert_eq!((code, body.as_str()), (200, "ok"));
    let (code, body) = http_get(sys.running.http, "/metrics").await.unwrap();
    assert_eq!(code, 200);
    let _ = body;
    let _ = std::fs::remove_dir_all(&sys.data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_number_call_goes_to_its_owner_and_is_not_a_deposit() {
    let sys = system("link", "redirect", "").await;
    let mut o = opts(sys.running.router, voice(800, 5));
    o.diversion = None;
    o.to = "+18005550160".into();
    o.seconds = Some(10.0);
    let out = place_call(&o).await.unwrap();
    let codes: Vec<u16> = out.invite_finals.iter().map(|(c, _)| *c).collect();
    assert_eq!(codes, [302, 200], "{out:?}");
    // "No messages for you on this number. Goodbye." and the server hangs up.
    assert!(out.remote_hangup, "{out:?}");
    assert!(messages(&sys, "+18005550160").await.is_empty());
    let _ = std::fs::remove_dir_all(&sys.data);
}

/// Best normalised correlation of `needle` anywhere inside `hay` (coarse, then refined).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recipient_calling_the_link_number_hears_the_message_in_both_modes() {
    for mode in ["redirect", "proxy"] {
        // Proxy mode with Record-Route: the whole dialog passes the router.
        let rr = if mode == "proxy" {
            "record_route = true"
        } else {
            ""
        };
        let sys = system_full(&format!("retrieve-{mode}"), mode, rr, "", "", "").await;
        let played = voice(1500, 6);
        assert_completed(
            &place_call(&opts(sys.running.router, played.clone()))
                .await
                .unwrap(),
        );
        let sms = sys.smsc.wait_for(1, Duration::from_secs(10)).await;
        let link = format!("+{}", sms[0].source);
        let m = messages(&sys, "+15551230002").await[0].clone();
        let stored = stored_audio(&sys, m["id"].as_str().unwrap()).await;

        // The recipient's own phone calls the link number and listens past the audio.
        let mut o = opts(sys.running.router, Vec::new());
        o.from = "5551230002".into();
        o.to = link.clone();
        o.diversion = None;
        o.seconds = Some(14.0);
        let out = place_call(&o).await.unwrap();
        assert_completed(&out);
        assert_eq!(
            out.dialog_peer == Some(sys.running.router),
            mode == "proxy",
            "{mode}: in-dialog requests via {:?}",
            out.dialog_peer
        );
        let corr = find_in(&out.heard, &stored);
        eprintln!(
            "{mode}: correlation {corr:.3}, first audio {:?} after the 200",
            out.first_audio
        );
        assert!(corr >= 0.8, "{mode}: heard the message: correlation {corr}");
        assert!(
            out.first_audio
                .is_some_and(|t| t < Duration::from_millis(500)),
            "{:?}",
            out.first_audio
        );
        messages_when(&sys, "+15551230002", "the message heard", |l| {
            l[0]["state"] == "heard"
        })
        .await;

        // A second message; the heard one freed the link number. 7 deletes it.
        assert_completed(
            &place_call(&opts(sys.running.router, voice(2500, 8)))
                .await
                .unwrap(),
        );
        let sms = sys.smsc.wait_for(2, Duration::from_secs(10)).await;
        // Whichever server took it, the first message no longer holds a number there: the
        // lowest of that server's pool is free again.
        let link2 = format!("+{}", sms[1].source);
        assert!(
            ["+18005550100", "+18005550150"].contains(&link2.as_str()),
            "{mode}: {link2}"
        );
        o.to = link2;
        o.dtmf = "7".into();
        o.dtmf_at = 13.0;
        o.seconds = Some(16.0);
        assert_completed(&place_call(&o).await.unwrap());
        messages_when(
            &sys,
            "+15551230002",
            "one message deleted, one heard",
            |l| {
                let states: Vec<&str> = l.iter().filter_map(|m| m["state"].as_str()).collect();
                states.contains(&"deleted") && states.contains(&"heard")
            },
        )
        .await;
        let _ = std::fs::remove_dir_all(&sys.data);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_caller_needs_the_code_and_wrong_codes_lock_the_link_for_everyone() {
    let sys = system(
        "code",
        "redirect",
        "[retrieval]\nmax_wrong_codes_per_link = 3\n",
    )
    .await;
    let played = voice(1500, 7);
    assert_completed(
        &place_call(&opts(sys.running.router, played.clone()))
            .await
            .unwrap(),
    );
    let sms = sys.smsc.wait_for(1, Duration::from_secs(10)).await;
    let link = format!("+{}", sms[0].source);
    let code = code_in(&sms[0].text);
    let m = messages(&sys, "+15551230002").await[0].clone();
    let stored = stored_audio(&sys, m["id"].as_str().unwrap()).await;
    let stranger = |dtmf: String, seconds: f64| {
        let mut o = opts(sys.running.router, Vec::new());
        o.from = "5559990000".into();
        o.to = link.clone();
        o.diversion = None;
        o.dtmf = dtmf;
        o.dtmf_at = 4.0;
        o.seconds = Some(seconds);
        o
    };
    // Without the code: nothing of the message.
    let out = place_call(&stranger(String::new(), 6.0)).await.unwrap();
    assert!(
        find_in(&out.heard, &stored) < 0.5,
        "no audio without the code"
    );
    // With it: the message.
    let out = place_call(&stranger(code.clone(), 22.0)).await.unwrap();
    let corr = find_in(&out.heard, &stored);
    assert!(corr >= 0.8, "heard with the code: {corr}");
    // A second message on the server holding the link: the first was heard, so it
    // takes the same link number.
    let (_, servers) = http_get(sys.running.http, "/api/v1/servers").await.unwrap();
    let servers: Vec<serde_json::Value> = serde_json::from_str(&servers).unwrap();
    let owner: std::net::SocketAddr =
        servers.iter().find(|v| v["id"] == m["server"]).unwrap()["address"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
    let second = voice(1500, 8);
    assert_completed(&place_call(&opts(owner, second)).await.unwrap());
    let sms = sys.smsc.wait_for(2, Duration::from_secs(10)).await;
    assert_eq!(format!("+{}", sms[1].source), link);
    let code = code_in(&sms[1].text);
    let list = messages(&sys, "+15551230002").await;
    let m2 = list.iter().find(|m| m["state"] != "heard").unwrap();
    let stored = stored_audio(&sys, m2["id"].as_str().unwrap()).await;
    // Three wrong codes on the link: locked for every caller, even with the right code
    // and another caller-ID afterwards.
    let wrong = if code == "000000" { "111111" } else { "000000" };
    let out = place_call(&stranger(format!("{wrong}{wrong}{wrong}"), 14.0))
        .await
        .unwrap();
    assert!(find_in(&out.heard, &stored) < 0.5);
    let mut other = stranger(code, 20.0);
    other.from = "5558880000".into();
    let out = place_call(&other).await.unwrap();
    assert!(find_in(&out.heard, &stored) < 0.5, "locked out");
    // The recipient's own caller-ID (from a trusted peer) still opens it.
    let mut own = stranger(String::new(), 22.0);
    own.from = "5551230002".into();
    let out = place_call(&own).await.unwrap();
    assert!(
        find_in(&out.heard, &stored) >= 0.8,
        "the recipient still hears it"
    );
    let _ = std::fs::remove_dir_all(&sys.data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn notify_numbers_get_the_sms_and_an_opted_out_number_gets_none() {
    let sys = system("prefs", "redirect", "").await;
    let put = |body: &'static str| {
        boxless_testkit::http_with_body(
            sys.running.http,
            "PUT",
            "/api/v1/recipients/%2B15551230002",
            body,
        )
    };
    let (code, body) = put(r#"{"notify_numbers": ["+15551230009", "nope"]}"#)
        .await
        .unwrap();
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("notify_numbers"), "{body}");
    let (code, body) = put(r#"{"notify_numbers": ["+15551230009"]}"#)
        .await
        .unwrap();
    assert_eq!(code, 200, "{body}");

    let out = place_call(&opts(sys.running.router, voice(1500, 3)))
        .await
        .unwrap();
    assert_completed(&out);
    let sms = sys.smsc.wait_for(2, Duration::from_secs(10)).await;
    let mut to: Vec<&str> = sms.iter().map(|s| s.destination.as_str()).collect();
    to.sort();
    assert_eq!(to, ["15551230002", "15551230009"]);
    assert_eq!(sms[0].source, sms[1].source, "one link number");
    assert_eq!(sms[0].text, sms[1].text);

    // The other number opts out: the next message is kept, its SMS to that number is not sent.
    let (code, _) = boxless_testkit::http_with_body(
        sys.running.http,
        "PUT",
        "/api/v1/recipients/%2B15551230009",
        r#"{"opted_out": true}"#,
    )
    .await
    .unwrap();
    assert_eq!(code, 200);
    let out = place_call(&opts(sys.running.router, voice(1500, 4)))
        .await
        .unwrap();
    assert_completed(&out);
    let sms = sys.smsc.wait_for(3, Duration::from_secs(10)).await;
    // Every notice settled (the opted-out one too): no SMS can follow.
    let list = messages_when(
        &sys,
        "+15551230002",
        "both messages' notices settled",
        |l| l.len() == 2 && settled(l),
    )
    .await;
    assert_eq!(sys.smsc.accepted().len(), 3, "{sms:?}");
    assert_eq!(sms[2].destination, "15551230002");
    assert_eq!(list.len(), 2, "both messages listed");
    let newest = &list[0]["notifications"];
    let to_other = newest
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["to"] == "+15551230009")
        .unwrap();
    assert_eq!(to_other["state"], "opted_out", "{newest}");
}
