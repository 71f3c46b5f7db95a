//! Transcripts through the whole system on loopback (docs/transcription.md): `serve`
//! in-process, the fake SMSC, the test phone, and a recogniser on a local socket that
//! answers the OpenAI-compatible route as told. The real recogniser (faster-whisper) is
//! the interop suite's.

use crate::common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use boxless_phone::place_call;
use boxless_testkit::{free_port, voice};
use common::{messages_when, opts, system_with};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the recogniser received, one request each.
type Seen = Arc<Mutex<Vec<Vec<u8>>>>;

/// A recogniser on 127.0.0.1 answering every request `200` with `answer`, after `delay`.
async fn recogniser(answer: &'static str, delay: Duration) -> (u16, Seen) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let seen: Seen = Arc::default();
    let kept = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let kept = kept.clone();
            tokio::spawn(async move {
                let mut req = Vec::new();
                let mut buf = [0u8; 65536];
                // The head, then as many bytes as Content-Length says.
                loop {
                    let Ok(n) = s.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    req.extend_from_slice(&buf[..n]);
                    let Some(end) = req.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let head = String::from_utf8_lossy(&req[..end]).to_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    if req.len() >= end + 4 + len {
                        break;
                    }
                }
                kept.lock().unwrap().push(req);
                tokio::time::sleep(delay).await;
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                    answer.len()
                );
                let _ = s.write_all(reply.as_bytes()).await;
            });
        }
    });
    (port, seen)
}

/// A whole system whose servers ask the recogniser on `port`, the SMS waiting at most
/// `sms_wait_seconds` for it.
async fn asking(tag: &str, port: u16, sms_wait_seconds: u64) -> common::System {
    let extra = format!(
        "[transcription]\nurl = \"http://127.0.0.1:{port}/v1/audio/transcriptions\"\nsms_wait_seconds = {sms_wait_seconds}\n"
    );
    system_with(tag, "redirect", "", "", &extra).await
}

/// A 2.5 s message left through the router (voice `seed`), then the SMS so far once
/// there are `n`, and how long after the hang-up the last came.
async fn leave_message(
    sys: &common::System,
    seed: u32,
    n: usize,
) -> (Vec<boxless_testkit::Sms>, Duration) {
    let out = place_call(&opts(sys.running.router, voice(2500, seed)))
        .await
        .unwrap();
    assert!(out.completed(), "{out:?}");
    let hung_up = Instant::now();
    let sms = sys.smsc.wait_for(n, Duration::from_secs(10)).await;
    (sms, hung_up.elapsed())
}

const SAID: &str = r#"{"text":" Hi, it’s Anna. Call me back. Thank you.","segments":[
 {"text":" Hi, it’s Anna.","no_speech_prob":0.02,"avg_logprob":-0.21},
 {"text":" Call me back.","no_speech_prob":0.05,"avg_logprob":-0.3},
 {"text":" Thank you.","no_speech_prob":0.93,"avg_logprob":-0.9}]}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sms_quotes_what_was_said_and_the_api_has_it_whole() {
    let (port, seen) = recogniser(SAID, Duration::from_millis(300)).await;
    let sys = asking("transcript", port, 8).await;
    let (sms, waited) = leave_message(&sys, 3, 1).await;
    assert_eq!(sms.len(), 1, "{sms:?}");
    // The doubted "Thank you." (the recogniser calls it silence) is left out; the curly
    // apostrophe goes as a plain one, so the SMS stays GSM-7.
    assert!(
        sms[0]
            .text
            .ends_with(r#"Automatic transcript: "Hi, it's Anna. Call me back.""#),
        "{}",
        sms[0].text
    );
    assert!(
        waited < Duration::from_secs(4),
        "the SMS went once the transcript came, not at the end of the wait: {waited:?}"
    );
    let list = messages_when(&sys, "+15551230002", "the transcript", |l| {
        l[0]["transcript_state"] == "done"
    })
    .await;
    assert_eq!(list[0]["transcript"], "Hi, it’s Anna. Call me back.");
    // One request: the WAV as 16-bit PCM, the recipient's language, segments asked for.
    let reqs = seen.lock().unwrap().clone();
    assert_eq!(reqs.len(), 1);
    let req = String::from_utf8_lossy(&reqs[0]).to_string();
    assert!(
        req.starts_with("POST /v1/audio/transcriptions HTTP/1.1"),
        "{req:.200}"
    );
    for field in [
        "name=\"model\"\r\n\r\nwhisper-1",
        "name=\"language\"\r\n\r\nen",
        "name=\"response_format\"\r\n\r\nverbose_json",
        "name=\"file\"",
        "RIFF",
    ] {
        assert!(req.contains(field), "{field} missing");
    }
    let riff = reqs[0].windows(4).position(|w| w == b"RIFF").unwrap();
    let wav = boxless_store::wav::parse(&reqs[0][riff..]).expect("a WAV");
    assert_eq!(
        wav.encoding,
        boxless_store::Encoding::Pcm16,
        "16-bit PCM, not the stored µ-law"
    );
    let _ = std::fs::remove_dir_all(&sys.data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recogniser_that_refuses_or_hangs_holds_no_sms_up() {
    // Nothing listens on this port: the connection is refused.
    let closed = free_port();
    let sys = asking("transcript-refused", closed, 8).await;
    for i in 0..2 {
        let (sms, waited) = leave_message(&sys, i, i as usize + 1).await;
        assert_eq!(sms.len(), i as usize + 1);
        assert!(
            waited < Duration::from_secs(3),
            "call {i}: SMS {waited:?} after the hang-up"
        );
        assert!(
            !sms[i as usize].text.contains("transcript"),
            "{}",
            sms[i as usize].text
        );
    }
    // Each server's first stays pending, to be asked again for the e-mail and the API;
    // a second call on the same server finds the breaker open and fails at once.
    let list = common::messages(&sys, "+15551230002").await;
    for m in &list {
        let state = m["transcript_state"].as_str().unwrap();
        assert!(["pending", "failed"].contains(&state), "{m}");
    }
    let _ = std::fs::remove_dir_all(&sys.data);

    // A recogniser that takes longer than the SMS may wait.
    let (port, _seen) = recogniser(SAID, Duration::from_secs(30)).await;
    let sys = asking("transcript-slow", port, 2).await;
    let (sms, waited) = leave_message(&sys, 5, 1).await;
    assert_eq!(sms.len(), 1);
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_secs(5),
        "the SMS waited its 2 s, then went: {waited:?}"
    );
    assert!(!sms[0].text.contains("transcript"), "{}", sms[0].text);
    let _ = std::fs::remove_dir_all(&sys.data);
}
