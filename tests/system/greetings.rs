//! A recipient's own greeting, end to end on loopback (`serve` in-process, the test
//! phone): put through the API, heard by the next caller, the busy one by a call forwarded
//! on busy, the default back once removed; hostile uploads change nothing.

use crate::common;

use boxless_phone::place_call;
use boxless_store::wav::{Encoding, encode};
use boxless_testkit::{http, http_bytes, voice};
use common::{find_in, g711, opts, system};

const PATH: &str = "/api/v1/recipients/%2B15551230002/greeting";

/// `samples` (8 kHz) as a 16 kHz WAV: the server takes any rate.
fn wav_16k(samples: &[i16]) -> Vec<u8> {
    encode(
        &boxless_media::audio::convert(samples, 8000, 16_000),
        16_000,
        Encoding::Pcm16,
    )
}

/// What a caller forwarded from +15551230002 hears, with `extra` header lines.
async fn heard(sys: &common::System, busy: bool) -> Vec<i16> {
    let mut o = opts(sys.running.router, voice(1200, 9));
    o.play_at = 4.0;
    if busy {
        o.diversion = None;
        o.headers = vec!["Diversion: <sip:+15551230002@127.0.0.1>;reason=user-busy".into()];
    }
    let out = place_call(&o).await.unwrap();
    assert!(out.completed(), "{out:?}");
    out.heard
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_greeting_put_through_the_api_is_what_the_next_caller_hears() {
    let sys = system("greeting", "redirect", "").await;
    for s in &sys.running.servers {
        s.store().enable_events();
    }
    let mine = voice(2000, 3);
    let busy = voice(1800, 5);

    // Hostile uploads: each refused with what is wrong, and nothing kept.
    let too_long = wav_16k(&voice(31_000, 4));
    for (body, want, what) in [
        (b"not a wav".to_vec(), 400, "not a WAV"),
        (Vec::new(), 400, "empty"),
        (wav_16k(&mine)[..3000].to_vec(), 400, "cut short"),
        (encode(&[], 8000, Encoding::Pcm16), 400, "no audio"),
        (too_long, 413, "longer than greeting_max_seconds"),
    ] {
        let (code, answer) = http_bytes(sys.running.http, "PUT", PATH, "audio/wav", &body)
            .await
            .unwrap();
        assert_eq!(code, want, "{what}: {}", String::from_utf8_lossy(&answer));
    }
    let (code, _) = http_bytes(
        sys.running.http,
        "PUT",
        &format!("{PATH}?for=lunch"),
        "audio/wav",
        &wav_16k(&mine),
    )
    .await
    .unwrap();
    assert_eq!(code, 400, "an unknown kind");
    let (code, _) = http(sys.running.http, "GET", PATH).await.unwrap();
    assert_eq!(code, 404, "nothing kept");

    // The default greeting speaks the digits: not the recipient's voice.
    assert!(find_in(&heard(&sys, false).await, &g711(&mine)) < 0.5);

    let (code, answer) = http_bytes(sys.running.http, "PUT", PATH, "audio/wav", &wav_16k(&mine))
        .await
        .unwrap();
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&answer));
    let view: serde_json::Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(view["for"], "no-answer");
    assert!(
        (view["seconds"].as_f64().unwrap() - 2.0).abs() < 0.01,
        "{view}"
    );
    let (code, got) = http_bytes(sys.running.http, "GET", PATH, "audio/wav", &[])
        .await
        .unwrap();
    assert_eq!(code, 200);
    let (rate, kept) = boxless_store::wav::decode(&got).unwrap();
    assert_eq!(rate, 8000);
    let c = find_in(&kept, &g711(&mine)[800..15_200]);
    assert!(c >= 0.9, "kept as sent: correlation {c}");

    // The next caller hears it (then the tone), on whichever server takes the call.
    for _ in 0..2 {
        let c = find_in(&heard(&sys, false).await, &g711(&mine)[800..15_200]);
        assert!(c >= 0.8, "the caller heard the greeting: correlation {c}");
    }

    // A busy greeting: a call forwarded on busy hears it; others still hear the first.
    let (code, _) = http_bytes(
        sys.running.http,
        "PUT",
        &format!("{PATH}?for=busy"),
        "audio/wav",
        &wav_16k(&busy),
    )
    .await
    .unwrap();
    assert_eq!(code, 200);
    let on_busy = heard(&sys, true).await;
    assert!(find_in(&on_busy, &g711(&busy)[800..13_600]) >= 0.8);
    assert!(find_in(&on_busy, &g711(&mine)[800..15_200]) < 0.5);
    assert!(find_in(&heard(&sys, false).await, &g711(&mine)[800..15_200]) >= 0.8);

    // Removed: the busy call falls back to the no-answer greeting, then to the default.
    let (code, _) = http(sys.running.http, "DELETE", &format!("{PATH}?for=busy"))
        .await
        .unwrap();
    assert_eq!(code, 200);
    assert!(find_in(&heard(&sys, true).await, &g711(&mine)[800..15_200]) >= 0.8);
    let (code, _) = http(sys.running.http, "DELETE", PATH).await.unwrap();
    assert_eq!(code, 200);
    let (code, _) = http(sys.running.http, "DELETE", PATH).await.unwrap();
    assert_eq!(code, 404, "already gone");
    assert!(find_in(&heard(&sys, true).await, &g711(&mine)[800..15_200]) < 0.5);

    // Each change is an event, written once, by one server.
    let mut events = Vec::new();
    for s in &sys.running.servers {
        while let Some(e) = s.store().next_event().unwrap() {
            s.store().event_sent(e.id).unwrap();
            if e.kind.starts_with("greeting.") {
                events.push((e.kind.clone(), e.data["for"].as_str().unwrap().to_string()));
                assert_eq!(e.data["recipient"], "+15551230002");
            }
        }
    }
    let want: Vec<(String, String)> = [
        ("greeting.set", "no-answer"),
        ("greeting.set", "busy"),
        ("greeting.removed", "busy"),
        ("greeting.removed", "no-answer"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(events, want);
    let _ = std::fs::remove_dir_all(&sys.data);
}

/// Leaves a message for +15551230002; its link number and access code.
async fn link_and_code(sys: &common::System) -> (String, String) {
    let out = place_call(&opts(sys.running.router, voice(1500, 2)))
        .await
        .unwrap();
    assert!(out.completed(), "{out:?}");
    let list =
        common::messages_when(sys, "+15551230002", "a message listed", |l| !l.is_empty()).await;
    let link = list[0]["link_number"].as_str().unwrap().to_string();
    let sms = sys
        .smsc
        .wait_for(1, std::time::Duration::from_secs(10))
        .await;
    let text = &sms.last().unwrap().text;
    let code = text.rsplit("Code ").next().unwrap().trim_end_matches('.');
    (link, code.to_string())
}

/// A call to `link` from `from`: `dtmf` from 2 s, `play` from `play_at`, for `seconds`.
async fn menu_call(
    sys: &common::System,
    from: &str,
    link: &str,
    dtmf: &str,
    play: Vec<i16>,
    play_at: f64,
    seconds: f64,
) -> Vec<i16> {
    let mut o = opts(sys.running.router, play);
    o.from = from.into();
    o.to = link.into();
    o.diversion = None;
    o.dtmf = dtmf.into();
    o.dtmf_at = 2.0;
    o.play_at = play_at;
    o.seconds = Some(seconds);
    let out = place_call(&o).await.unwrap();
    assert!(out.completed(), "{out:?}");
    out.heard
}

/// "Your greeting can only be changed from your own phone", as the test phone hears it.
fn own_phone_only() -> Vec<i16> {
    let prompts = boxless_media::Prompts::load();
    g711(
        prompts
            .voice(boxless_core::recipient::Language::En)
            .get("own-phone-only"),
    )
}

/// `from` gives the access code, then presses 5: told why not, and nothing is kept.
async fn refused_with_code(sys: &common::System, from: &str, link: &str, code: &str) {
    let got = menu_call(
        sys,
        from,
        link,
        &format!("{code},,,5"),
        Vec::new(),
        0.0,
        14.0,
    )
    .await;
    let c = find_in(&got, &own_phone_only());
    assert!(c >= 0.8, "told: only from your own phone ({c})");
    let (status, _) = http(sys.running.http, "GET", PATH).await.unwrap();
    assert_eq!(status, 404, "no greeting");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recipient_records_a_greeting_by_phone_and_nobody_else_can() {
    let sys = system("greeting-phone", "redirect", "").await;
    let (link, code) = link_and_code(&sys).await;

    // Someone else, with the code from the SMS: 5 is refused, nothing is recorded.
    refused_with_code(&sys, "5559990000", &link, &code).await;

    // The recipient, from their own phone: 5, speaks after the tone, #, hangs up. The
    // prompt and its tone end about 5.1 s after the 5 (pressed at 2 s): the voice starts
    // 0.9 s after that, so a loaded machine's late prompt still records all of it.
    let said = voice(3000, 7);
    let got = menu_call(
        &sys,
        "5551230002",
        &link,
        "5,,,,,,,,,,#",
        said.clone(),
        8.0,
        14.0,
    )
    .await;
    assert!(find_in(&got, &own_phone_only()) < 0.5, "not refused");
    // Kept once the store's writer has it: on a machine busy with disk writes an fsync
    // can take seconds, so the wait is long and says what the caller heard.
    let mut kept = None;
    let end = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while tokio::time::Instant::now() < end {
        let (code, body) = http_bytes(sys.running.http, "GET", PATH, "audio/wav", &[])
            .await
            .unwrap();
        if code == 200 {
            kept = Some(boxless_store::wav::decode(&body).unwrap().1);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let kept = kept.unwrap_or_else(|| {
        let prompts = boxless_media::Prompts::load();
        let en = prompts.voice(boxless_core::recipient::Language::En);
        panic!(
            "the greeting recorded by phone is not kept after 20 s; the caller heard the \
             record prompt ({:.2}) and the review ({:.2})",
            find_in(&got, &g711(en.get("greeting-record"))),
            find_in(&got, &g711(en.get("greeting-is"))),
        )
    });
    let secs = kept.len() as f64 / 8000.0;
    assert!((2.5..=4.5).contains(&secs), "{secs} s kept");
    let c = find_in(&kept, &g711(&said)[4000..20_000]);
    assert!(c >= 0.8, "what was said is the greeting: {c}");
    // The next caller hears it.
    let c = find_in(&heard(&sys, false).await, &g711(&said)[4000..20_000]);
    assert!(c >= 0.8, "the next caller hears it: {c}");
    let _ = std::fs::remove_dir_all(&sys.data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_verified_caller_ids_an_unverified_recipient_may_not_record_one() {
    let sys = system(
        "greeting-verified",
        "redirect",
        "[retrieval]\ntrust_caller_id = \"verified\"\n",
    )
    .await;
    let (link, code) = link_and_code(&sys).await;
    // The recipient's number, but not verified: the code is asked, and 5 refused.
    refused_with_code(&sys, "5551230002", &link, &code).await;
    let _ = std::fs::remove_dir_all(&sys.data);
}
