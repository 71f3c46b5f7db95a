//! Interop suite against programs no one here wrote: SIPp (Debian `sip-tester`), the npm
//! `smpp` package as SMSC simulator, and the RFC 4475 torture messages from
//! `../shared/conformance/rfc4475/`. `.ci/run` installs the peers and runs these with
//! `cargo test --release --test interop -- --ignored --test-threads 1`.
//!
//! Every peer listens on 127.0.0.1 only; every run is bounded in calls and time.

use std::collections::HashSet;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use boxless_testkit::nats::{NatsCluster, NatsNode};
use boxless_testkit::{free_port, http_get};

mod common;

const IGNORE: &str = "interop: needs sipp, node and ../shared; run by .ci/run";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A child process killed (SIGKILL) when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn temp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("boxless-interop-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

struct Ports {
    router: u16,
    http: u16,
    smsc: u16,
    s1: u16,
    s2: u16,
}

fn ports() -> Ports {
    Ports {
        router: free_port(),
        http: free_port(),
        smsc: free_port(),
        s1: free_port(),
        s2: free_port(),
    }
}

fn write_config(dir: &Path, p: &Ports, mode: &str, sms: &str) -> PathBuf {
    write_config_with(dir, p, mode, sms, "", free_port(), free_port())
}

fn write_config_with(
    dir: &Path,
    p: &Ports,
    mode: &str,
    sms: &str,
    extra: &str,
    h1: u16,
    h2: u16,
) -> PathBuf {
    let cfg = format!(
        r#"data_dir = "{data}"
[router]
listen = "127.0.0.1:{router}"
mode = "{mode}"
{extra}
[http]
listen = "127.0.0.1:{http}"
[sms]
transport = "{sms}"
address = "127.0.0.1:{smsc}"
retry_initial_ms = 200
retry_max_ms = 2000
# Every call here is for one number; the hourly SMS limit is the abuse suite's business.
max_per_recipient_per_hour = 100000
[messages]
greeting = "tone"
silence_seconds = 5
[[servers]]
id = "ms1"
listen = "127.0.0.1:{s1}"
http = "127.0.0.1:{h1}"
rtp_ports = "32000-32499"
link_numbers = ["+18005550100-+18005550149"]
[[servers]]
id = "ms2"
listen = "127.0.0.1:{s2}"
http = "127.0.0.1:{h2}"
rtp_ports = "32500-32999"
link_numbers = ["+18005550150-+18005550199"]
"#,
        data = dir.join("data").display(),
        router = p.router,
        http = p.http,
        smsc = p.smsc,
        s1 = p.s1,
        s2 = p.s2,
    );
    let path = dir.join("boxless.toml");
    std::fs::write(&path, cfg).unwrap();
    path
}

fn serve(cfg: &Path, http: u16, log: &Path) -> Proc {
    boxless(&["serve"], cfg, http, log)
}

/// Runs `boxless ARGS --config CFG` and waits for its HTTP API on `http`.
fn boxless(args: &[&str], cfg: &Path, http: u16, log: &Path) -> Proc {
    let log = std::fs::File::create(log).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_boxless"))
        .args(args)
        .arg("--config")
        .arg(cfg)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("boxless binary runs");
    let p = Proc(child);
    wait_tcp(
        SocketAddr::from(([127, 0, 0, 1], http)),
        Duration::from_secs(15),
    );
    p
}

fn smsc(port: u16, out: &Path, mode: &str) -> Proc {
    let child = Command::new("node")
        .arg(root().join("interop/smsc/smsc.js"))
        .arg(port.to_string())
        .arg(out)
        .env("SMSC_MODE", mode)
        .stdout(Stdio::null())
        .spawn()
        .expect("node runs (apt-get install nodejs; npm install in interop/smsc)");
    let p = Proc(child);
    wait_tcp(
        SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(15),
    );
    p
}

fn wait_tcp(addr: SocketAddr, limit: Duration) {
    let end = Instant::now() + limit;
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(
            Instant::now() < end,
            "{addr} did not come up within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn read_wav(p: &Path) -> Vec<i16> {
    hound::WavReader::open(p)
        .unwrap()
        .into_samples::<i16>()
        .map(|s| s.unwrap())
        .collect()
}

/// The caller's voice: two committed espeak-ng prompts, and its PCMU pcap for SIPp.
fn caller_audio(dir: &Path) -> (Vec<i16>, PathBuf) {
    let prompts = root().join("crates/media/prompts");
    let mut voice = read_wav(&prompts.join("you-have-reached.wav"));
    voice.extend(read_wav(&prompts.join("leave-message.wav")));
    let wav = dir.join("caller.wav");
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 8000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(&wav, spec).unwrap();
    for &s in &voice {
        w.write_sample(s).unwrap();
    }
    w.finalize().unwrap();
    let pcap = dir.join("caller.pcap");
    let st = Command::new("python3")
        .arg(root().join("interop/make_pcap.py"))
        .arg(&wav)
        .arg(&pcap)
        .status()
        .unwrap();
    assert!(st.success());
    (voice, pcap)
}

fn sipp(dir: &Path, router: u16, pcap: &Path, calls: u32, rate: u32) -> bool {
    sipp_scenario(dir, "deposit.xml", router, pcap, calls, rate)
}

/// Runs a deposit-like SIPp scenario of `interop/sipp/` against the router.
fn sipp_scenario(
    dir: &Path,
    scenario: &str,
    router: u16,
    pcap: &Path,
    calls: u32,
    rate: u32,
) -> bool {
    let callers = dir.join("callers.csv");
    std::fs::write(&callers, "SEQUENTIAL\n+15551230001;\n").unwrap();
    let mut child = Command::new("sipp")
        .current_dir(dir)
        .arg("-sf")
        .arg(root().join("interop/sipp").join(scenario))
        .arg("-inf")
        .arg(&callers)
        .args(["-s", "15551230002", "-i", "127.0.0.1", "-mi", "127.0.0.1"])
        .args([
            "-p",
            &free_port().to_string(),
            "-mp",
            &(34000 + (free_port() % 500) * 2).to_string(),
        ])
        .arg("-key")
        .arg("pcap")
        .arg(pcap)
        .args(["-key", "recipient", "5551230002"])
        .arg(format!("127.0.0.1:{router}"))
        .args([
            "-m",
            &calls.to_string(),
            "-r",
            &rate.to_string(),
            "-l",
            "30",
        ])
        .args([
            "-timeout",
            "120s",
            "-nostdin",
            "-trace_err",
            "-trace_stat",
            "-stf",
            "stat.csv",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sipp runs (apt-get install sip-tester)");
    let ok = child.wait().unwrap().success();
    if !ok {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            if e.file_name().to_string_lossy().ends_with("errors.log") {
                eprintln!("{}", std::fs::read_to_string(e.path()).unwrap_or_default());
            }
        }
    }
    ok
}

fn sipp_retrieval(dir: &Path, router: u16, link: &str) -> bool {
    let st = Command::new("sipp")
        .current_dir(dir)
        .arg("-sf")
        .arg(root().join("interop/sipp/retrieval.xml"))
        .args(["-s", link, "-i", "127.0.0.1", "-mi", "127.0.0.1"])
        .args([
            "-p",
            &free_port().to_string(),
            "-mp",
            &(35000 + (free_port() % 500) * 2).to_string(),
        ])
        .args(["-key", "me", "15551230002"])
        .arg(format!("127.0.0.1:{router}"))
        .args(["-m", "1", "-timeout", "60s", "-nostdin", "-trace_err"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("sipp runs");
    st.success()
}

fn sms_lines(out: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(out)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn wait_sms(out: &Path, n: usize, limit: Duration) -> Vec<serde_json::Value> {
    let end = Instant::now() + limit;
    loop {
        let v = sms_lines(out);
        if v.len() >= n || Instant::now() >= end {
            return v;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn api_messages(http: u16) -> Vec<serde_json::Value> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (code, body) = rt
        .block_on(http_get(
            SocketAddr::from(([127, 0, 0, 1], http)),
            "/api/v1/messages?recipient=%2B15551230002",
        ))
        .unwrap();
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn g711(samples: &[i16]) -> Vec<i16> {
    let law = boxless_media::Law::Ulaw;
    samples.iter().map(|&s| law.decode(law.encode(s))).collect()
}

fn check_sms(sms: &serde_json::Value) {
    assert_eq!(sms["destination"], "15551230002", "{sms}");
    assert_eq!(sms["source_ton"], 1, "{sms}");
    let link = sms["source"].as_str().unwrap();
    let n: u64 = link.parse().unwrap();
    assert!(
        (18005550100..=18005550199).contains(&n),
        "link number {link} from a pool"
    );
    let text = sms["text"].as_str().unwrap();
    assert!(text.contains("+15551230001"), "{text}");
    assert!(text.contains(&format!("+{link}")), "{text}");
}

#[test]
#[ignore = "interop: needs sipp, node and ../shared; run by .ci/run"]
fn sipp_leaves_messages_through_the_router_in_both_modes() {
    let _ = IGNORE;
    for mode in ["redirect", "proxy"] {
        let dir = temp(&format!("sipp-{mode}"));
        let (voice, pcap) = caller_audio(&dir);
        let p = ports();
        let out = dir.join("sms.jsonl");
        let _smsc = smsc(p.smsc, &out, "accept");
        let cfg = write_config(&dir, &p, mode, "smpp");
        let _serve = serve(&cfg, p.http, &dir.join("serve.log"));
        assert!(
            sipp(&dir, p.router, &pcap, 3, 2),
            "{mode}: SIPp calls failed"
        );
        let sms = wait_sms(&out, 3, Duration::from_secs(20));
        assert_eq!(sms.len(), 3, "{mode}: {sms:?}");
        sms.iter().for_each(check_sms);
        std::thread::sleep(Duration::from_millis(300));
        for m in check_full_messages(&dir, p.http, 3, &voice, mode) {
            assert_eq!(m["state"], "notified", "{m}");
            assert_eq!(m["caller"], "+15551230001");
        }
    }
}

#[test]
#[ignore = "interop: needs sipp, node and ../shared; run by .ci/run"]
fn sipp_calls_the_link_number_hears_it_through_and_saves_it_with_rfc4733() {
    for mode in ["redirect", "proxy"] {
        let dir = temp(&format!("retrieve-{mode}"));
        let (_, pcap) = caller_audio(&dir);
        let p = ports();
        let out = dir.join("sms.jsonl");
        let _smsc = smsc(p.smsc, &out, "accept");
        let cfg = write_config(&dir, &p, mode, "smpp");
        let _serve = serve(&cfg, p.http, &dir.join("serve.log"));
        assert!(sipp(&dir, p.router, &pcap, 1, 1), "{mode}: deposit");
        let sms = wait_sms(&out, 1, Duration::from_secs(20));
        let link = format!("+{}", sms[0]["source"].as_str().unwrap());
        assert!(
            sipp_retrieval(&dir, p.router, &link),
            "{mode}: SIPp retrieval call failed"
        );
        std::thread::sleep(Duration::from_millis(500));
        let msgs = api_messages(p.http);
        assert_eq!(msgs.len(), 1);
        assert_eq!(
            msgs[0]["state"], "saved",
            "{mode}: heard through, then 9: {}",
            msgs[0]
        );
        let log = std::fs::read_to_string(dir.join("serve.log")).unwrap();
        assert!(
            log.contains("state=heard") && log.contains("state=saved"),
            "{mode}: heard, then saved"
        );
    }
}

/// Checks that `n` messages were stored with the whole of `voice` (its length within
/// 200 ms, its audio correlating); returns them.
fn check_full_messages(
    dir: &Path,
    http: u16,
    n: usize,
    voice: &[i16],
    what: &str,
) -> Vec<serde_json::Value> {
    let msgs = api_messages(http);
    assert_eq!(msgs.len(), n, "{what}: {msgs:?}");
    for m in &msgs {
        let d = m["duration_ms"].as_u64().unwrap() as i64;
        let want = (voice.len() / 8) as i64;
        let id = m["id"].as_str().unwrap();
        let server = m["server"].as_str().unwrap();
        let file = std::fs::read(boxless_store::audio::path_in(
            &dir.join("data").join(server),
            id,
        ))
        .unwrap();
        let (_, stored) = boxless_store::wav::decode(&file).expect("a WAV file the store wrote");
        let (corr, _) = boxless_media::audio::best_correlation(&g711(voice), &stored, 1600);
        eprintln!("{what}: {id} duration {d} ms (played {want}), correlation {corr:.3}");
        assert!(
            (d - want).abs() <= 200,
            "{what}: duration {d} ms, played {want} ms"
        );
        assert!(corr >= 0.8, "{what}: stored audio correlation {corr}");
    }
    msgs
}

#[test]
#[ignore = "interop: needs sipp, node and ../shared; run by .ci/run"]
fn sipp_late_offer_reinvite_hold_and_update_in_redirect_and_record_routed_proxy_mode() {
    for (mode, extra) in [("redirect", ""), ("proxy", "record_route = true")] {
        let dir = temp(&format!("dialog-{mode}"));
        let (voice, pcap) = caller_audio(&dir);
        let p = ports();
        let out = dir.join("sms.jsonl");
        let _smsc = smsc(p.smsc, &out, "accept");
        let cfg = write_config_with(&dir, &p, mode, "smpp", extra, free_port(), free_port());
        let _serve = serve(&cfg, p.http, &dir.join("serve.log"));
        assert!(
            sipp_scenario(&dir, "late-offer.xml", p.router, &pcap, 2, 2),
            "{mode}: late-offer calls failed"
        );
        assert_eq!(wait_sms(&out, 2, Duration::from_secs(20)).len(), 2);
        check_full_messages(&dir, p.http, 2, &voice, &format!("{mode} late offer"));
        assert!(
            sipp_scenario(&dir, "reinvite.xml", p.router, &pcap, 2, 2),
            "{mode}: re-INVITE/UPDATE calls failed"
        );
        assert_eq!(wait_sms(&out, 4, Duration::from_secs(20)).len(), 4);
        check_full_messages(&dir, p.http, 4, &voice, &format!("{mode} re-INVITE"));
    }
}

#[test]
#[ignore = "interop: needs sipp, node and ../shared; run by .ci/run"]
fn smsc_outage_and_kill_9_lose_no_message_and_send_no_sms_twice() {
    let dir = temp("outage");
    let (_, pcap) = caller_audio(&dir);
    let p = ports();
    let out = dir.join("sms.jsonl");
    let cfg = write_config(&dir, &p, "redirect", "smpp");
    let mut smsc_proc = Some(smsc(p.smsc, &out, "accept"));
    let mut serve_proc = serve(&cfg, p.http, &dir.join("serve.log"));
    // The SMSC goes away as the 20 calls start.
    let calls = {
        let dir = dir.clone();
        let pcap = pcap.clone();
        std::thread::spawn(move || sipp(&dir, p.router, &pcap, 20, 4))
    };
    std::thread::sleep(Duration::from_millis(1500));
    drop(smsc_proc.take());
    assert!(calls.join().unwrap(), "SIPp calls failed");
    let before = sms_lines(&out).len();
    eprintln!("SMS delivered before the SMSC stopped: {before}");
    // Every caller got its 200 to BYE; now the process dies without warning.
    let _ = serve_proc.0.kill();
    let _ = serve_proc.0.wait();
    serve_proc = serve(&cfg, p.http, &dir.join("serve2.log"));
    let msgs = api_messages(p.http);
    assert_eq!(msgs.len(), 20, "all 20 messages survived kill -9");
    let restarted = Instant::now();
    let _smsc2 = smsc(p.smsc, &out, "accept");
    let sms = wait_sms(&out, 20, Duration::from_secs(60));
    eprintln!(
        "all SMS delivered {:?} after the SMSC came back",
        restarted.elapsed()
    );
    std::thread::sleep(Duration::from_secs(2));
    let sms_after = sms_lines(&out);
    assert_eq!(sms.len(), 20, "{sms:?}");
    assert_eq!(sms_after.len(), 20, "no SMS twice");
    sms.iter().for_each(check_sms);
    let distinct: HashSet<String> = sms.iter().map(|s| s["text"].to_string()).collect();
    assert_eq!(distinct.len(), 20, "20 different notifications");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        api_messages(p.http)
            .iter()
            .all(|m| m["state"] == "notified")
    );
    drop(serve_proc);
}

/// The caller's voice (as [`caller_audio`]), also as raw µ-law in `dir/caller.ulaw` for
/// SIPp's RTP engine.
fn caller_ulaw(dir: &Path) -> Vec<i16> {
    let (voice, _) = caller_audio(dir);
    let ulaw: Vec<u8> = voice
        .iter()
        .map(|&s| boxless_media::Law::Ulaw.encode(s))
        .collect();
    std::fs::write(dir.join("caller.ulaw"), &ulaw).unwrap();
    voice
}

/// SIPp leaving a 40 s message straight at the server on `port` (record.xml, its RTP
/// engine looping `dir/caller.ulaw`); returns once the recording's file exists in
/// `recording` (with the caller's first voice packet).
fn long_message(dir: &Path, port: u16, recording: &Path) -> Proc {
    let caller = Proc(
        Command::new("sipp")
            .current_dir(dir)
            .arg("-sf")
            .arg(root().join("interop/sipp/record.xml"))
            .args(["-s", "15551230002", "-i", "127.0.0.1", "-mi", "127.0.0.1"])
            .args(["-p", &free_port().to_string()])
            .args(["-key", "recipient", "5551230002"])
            .args(["-d", "40000", "-m", "1", "-timeout", "60s", "-nostdin"])
            .arg(format!("127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sipp runs (apt-get install sip-tester)"),
    );
    let end = Instant::now() + Duration::from_secs(15);
    while std::fs::read_dir(recording).map_or(true, |mut d| d.next().is_none()) {
        assert!(Instant::now() < end, "no recording started");
        std::thread::sleep(Duration::from_millis(20));
    }
    caller
}

/// A 40 s message from SIPp (its RTP engine looping the caller's voice) straight at server
/// ms1; the server dies by SIGKILL 20 s into it. After a restart the 20 s said so far are a
/// message like any other, notified once, and a second kill and restart change nothing.
#[test]
#[ignore = "interop: needs sipp, node and ../shared; run by .ci/run"]
fn sipp_message_cut_by_kill_9_keeps_what_was_said_and_is_notified_once() {
    let dir = temp("cut");
    let voice = caller_ulaw(&dir);
    let p = ports();
    let out = dir.join("sms.jsonl");
    let _smsc = smsc(p.smsc, &out, "accept");
    let cfg = write_config(&dir, &p, "redirect", "smpp");
    let mut serve_proc = serve(&cfg, p.http, &dir.join("serve.log"));
    let mut caller = long_message(&dir, p.s1, &dir.join("data/ms1/recording"));
    std::thread::sleep(Duration::from_secs(20));
    let _ = serve_proc.0.kill();
    let _ = serve_proc.0.wait();
    let _ = caller.0.kill();
    assert!(
        sms_lines(&out).is_empty(),
        "nothing notified before the kill"
    );
    serve_proc = serve(&cfg, p.http, &dir.join("serve2.log"));
    let msgs = api_messages(p.http);
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    let m = &msgs[0];
    let d = m["duration_ms"].as_u64().unwrap();
    let id = m["id"].as_str().unwrap();
    let file = std::fs::read(boxless_store::audio::path_in(&dir.join("data/ms1"), id)).unwrap();
    let (rate, stored) = boxless_store::wav::decode(&file).unwrap();
    // What was sent: the voice, looped.
    let sent: Vec<i16> = g711(&voice)
        .into_iter()
        .cycle()
        .take(stored.len())
        .collect();
    let (corr, lag) = boxless_media::audio::best_correlation(&sent, &stored, 1600);
    eprintln!(
        "cut at 20 s: {id} {d} ms at {rate} Hz, correlation {corr:.3} at lag {lag}, caller {}",
        m["caller"]
    );
    assert!(
        (18_000..=21_000).contains(&d),
        "{d} ms kept of the 20 s said"
    );
    assert_eq!(
        stored.len() as u64 / 8,
        d,
        "the file holds what the row says"
    );
    assert!(
        corr >= 0.9,
        "stored audio is what was sent: correlation {corr}"
    );
    assert_eq!(
        m["caller"], "+15551",
        "who called: from the recording's first write"
    );
    let sms = wait_sms(&out, 1, Duration::from_secs(20));
    assert_eq!(sms.len(), 1, "{sms:?}");
    assert!(
        sms[0]["text"].as_str().unwrap().contains("+15551"),
        "{sms:?}"
    );
    // Another kill and start: nothing new, nothing twice.
    let _ = serve_proc.0.kill();
    let _ = serve_proc.0.wait();
    let _serve = serve(&cfg, p.http, &dir.join("serve3.log"));
    assert_eq!(api_messages(p.http).len(), 1);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(sms_lines(&out).len(), 1, "notified once");
}

fn api_servers(http: u16) -> Vec<serde_json::Value> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    match rt.block_on(http_get(
        SocketAddr::from(([127, 0, 0, 1], http)),
        "/api/v1/servers",
    )) {
        Ok((200, body)) => serde_json::from_str(&body).unwrap_or_default(),
        _ => Vec::new(),
    }
}

fn state_of(http: u16, id: &str) -> String {
    api_servers(http)
        .iter()
        .find(|s| s["id"] == id)
        .and_then(|s| s["state"].as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Waits until `id` reads `state` on the router's API; returns how long it took.
fn wait_state(http: u16, id: &str, state: &str, limit: Duration) -> Duration {
    let t0 = Instant::now();
    while state_of(http, id) != state {
        assert!(
            t0.elapsed() < limit,
            "{id} not {state} within {limit:?}: {:?}",
            api_servers(http)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    t0.elapsed()
}

/// The router's gathered `/api/v1/messages` and the servers it says are missing.
/// nats-server with JetStream on a free loopback port: the process, its port, and the
/// `[control]` lines that reach it.
/// One NATS node with JetStream and the `[control]` lines that use it.
fn nats_server(dir: &Path) -> (NatsNode, u16, String) {
    let nats = NatsNode::start(dir);
    let control = format!(
        "[control]\nbackend = \"nats\"\nurl = \"{}\"\nttl_seconds = 2",
        nats.url()
    );
    let port = nats.port;
    (nats, port, control)
}

/// Whether a notice in `state` (the API's) was taken by the SMSC: accepted, or delivered
/// since.
fn sms_taken(state: &str) -> bool {
    matches!(state, "accepted" | "delivered")
}

fn router_messages(http: u16) -> (String, Vec<serde_json::Value>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let a = rt
        .block_on(boxless_net::http::request(
            SocketAddr::from(([127, 0, 0, 1], http)),
            "GET",
            "/api/v1/messages?recipient=%2B15551230002",
            Duration::from_secs(5),
        ))
        .unwrap();
    assert_eq!(a.status, 200);
    let missing = a
        .header(boxless_api::MISSING_HEADER)
        .unwrap_or("")
        .to_string();
    (missing, serde_json::from_slice(&a.body).unwrap())
}

fn phone_call(router: u16, from: &str, seconds: f64) -> boxless_phone::CallOutcome {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(boxless_phone::place_call(&boxless_phone::CallOptions {
        via: SocketAddr::from(([127, 0, 0, 1], router)),
        from: from.into(),
        to: "5551230002".into(),
        diversion: Some("5551230002".into()),
        headers: Vec::new(),
        play: boxless_testkit::voice(1200, 3),
        play_at: 0.6,
        dtmf: String::new(),
        dtmf_at: 0.0,
        seconds: Some(seconds),
        answer_timeout: Duration::from_secs(10),
    }))
    .unwrap()
}

#[test]
#[ignore = "interop: needs sipp, node and ../shared; run by .ci/run"]
fn router_and_servers_as_processes_over_nats() {
    let dir = temp("nats");
    let p = ports();
    let (_nats, _, control) = nats_server(&dir);
    let (h1, h2) = (free_port(), free_port());
    let cfg = write_config_with(&dir, &p, "proxy", "log", &control, h1, h2);
    let mut ms1 = boxless(&["server", "--id", "ms1"], &cfg, h1, &dir.join("ms1.log"));
    let _ms2 = boxless(&["server", "--id", "ms2"], &cfg, h2, &dir.join("ms2.log"));
    let _router = boxless(&["router"], &cfg, p.http, &dir.join("router.log"));
    let t = wait_state(p.http, "ms1", "up", Duration::from_secs(5));
    wait_state(p.http, "ms2", "up", Duration::from_secs(5));
    eprintln!("router saw both servers up {t:?} after its API answered");
    for i in 0..4 {
        let out = phone_call(p.router, &format!("555123000{i}"), 2.5);
        assert!(out.completed(), "call {i} through the router: {out:?}");
    }
    // The router's API gathers messages from both servers' APIs, and forwards by id.
    std::thread::sleep(Duration::from_millis(300));
    let (missing, msgs) = router_messages(p.http);
    assert_eq!((missing.as_str(), msgs.len()), ("", 4), "{msgs:?}");
    let id = msgs[0]["id"].as_str().unwrap().to_string();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let audio = rt
        .block_on(boxless_net::http::request(
            SocketAddr::from(([127, 0, 0, 1], p.http)),
            "GET",
            &format!("/api/v1/messages/{id}/audio"),
            Duration::from_secs(5),
        ))
        .unwrap();
    assert_eq!(
        (audio.status, audio.content_type.as_deref()),
        (200, Some("audio/wav"))
    );
    assert!(audio.body.starts_with(b"RIFF"));
    // kill -9 of one server: the router stops choosing it within two TTLs.
    let _ = ms1.0.kill();
    let _ = ms1.0.wait();
    let killed = Instant::now();
    let detect = wait_state(p.http, "ms1", "down", Duration::from_secs(4));
    eprintln!(
        "ms1 killed: router marked it down after {:?}",
        killed.elapsed().max(detect)
    );
    for i in 0..3 {
        let out = phone_call(p.router, &format!("555124000{i}"), 2.5);
        assert!(out.completed(), "call {i} with ms1 dead: {out:?}");
    }
    let (missing, msgs) = router_messages(p.http);
    assert_eq!(missing, "ms1", "the answer says whose messages are missing");
    assert!(msgs.len() >= 3, "{msgs:?}");
    // The restarted server rejoins by itself.
    let restarted = Instant::now();
    let _ms1 = boxless(&["server", "--id", "ms1"], &cfg, h1, &dir.join("ms1b.log"));
    wait_state(p.http, "ms1", "up", Duration::from_secs(10));
    eprintln!("ms1 rejoined {:?} after its restart", restarted.elapsed());
    let (missing, msgs) = router_messages(p.http);
    assert_eq!(
        (missing.as_str(), msgs.len()),
        ("", 7),
        "every message, none lost to the kill"
    );
}

#[test]
#[ignore = "interop: needs sipp, node and ../shared; run by .ci/run"]
fn the_hourly_limit_and_missed_call_bursts_hold_across_server_processes() {
    let dir = temp("limits");
    let p = ports();
    let (_nats, _, control) = nats_server(&dir);
    let (h1, h2) = (free_port(), free_port());
    let cfg = write_config_with(&dir, &p, "redirect", "log", &control, h1, h2);
    let text = std::fs::read_to_string(&cfg).unwrap();
    let limited = text.replace(
        "max_per_recipient_per_hour = 100000",
        "max_per_recipient_per_hour = 3",
    );
    assert_ne!(text, limited);
    std::fs::write(&cfg, limited).unwrap();
    let _ms1 = boxless(&["server", "--id", "ms1"], &cfg, h1, &dir.join("ms1.log"));
    let _ms2 = boxless(&["server", "--id", "ms2"], &cfg, h2, &dir.join("ms2.log"));
    let _router = boxless(&["router"], &cfg, p.http, &dir.join("router.log"));
    wait_state(p.http, "ms1", "up", Duration::from_secs(5));
    wait_state(p.http, "ms2", "up", Duration::from_secs(5));
    // Four messages for one number, two on each server (called directly, as a
    // redirected caller does): the first three SMS go at once, the fourth waits for the
    // digest. Split in shares, each server would have sent one.
    let started = Instant::now();
    for (i, port) in [p.s1, p.s2, p.s1, p.s2].into_iter().enumerate() {
        let out = phone_call(port, &format!("555123100{i}"), 2.0);
        assert!(out.completed(), "call {i}: {out:?}");
    }
    let states = |msgs: &[serde_json::Value]| -> Vec<String> {
        msgs.iter()
            .map(|m| {
                m["notifications"][0]["state"]
                    .as_str()
                    .unwrap_or("")
                    .to_string()
            })
            .collect()
    };
    let until = Instant::now() + Duration::from_secs(10);
    let msgs = loop {
        let (_, msgs) = router_messages(p.http);
        let st = states(&msgs);
        let done = st.iter().filter(|s| sms_taken(s)).count();
        if msgs.len() == 4 && done == 3 && st.iter().any(|s| s == "merged") {
            break msgs;
        }
        assert!(Instant::now() < until, "three SMS and one merged: {st:?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    eprintln!(
        "4 messages on two servers, 3 SMS sent and 1 merged {:?} after the first call",
        started.elapsed()
    );
    let servers: std::collections::BTreeSet<&str> = msgs
        .iter()
        .filter_map(|m| m["id"].as_str()?.split('-').next())
        .collect();
    assert_eq!(servers.len(), 2, "both servers took calls: {servers:?}");
    // Two short calls from one caller to another number, one on each server: one alert.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for port in [p.s1, p.s2] {
        let out = rt
            .block_on(boxless_phone::place_call(&boxless_phone::CallOptions {
                via: SocketAddr::from(([127, 0, 0, 1], port)),
                from: "5551231009".into(),
                to: "5551239999".into(),
                diversion: Some("5551239999".into()),
                headers: Vec::new(),
                play: Vec::new(),
                play_at: 0.0,
                dtmf: String::new(),
                dtmf_at: 0.0,
                seconds: Some(0.8),
                answer_timeout: Duration::from_secs(10),
            }))
            .unwrap();
        assert!(out.completed(), "short call: {out:?}");
    }
    let merged = |log: &str| {
        std::fs::read_to_string(dir.join(log))
            .unwrap_or_default()
            .matches("missed-call alert merged")
            .count()
    };
    let until = Instant::now() + Duration::from_secs(5);
    while merged("ms1.log") + merged("ms2.log") == 0 {
        assert!(
            Instant::now() < until,
            "the second short call was not merged"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        (merged("ms1.log"), merged("ms2.log")),
        (0, 1),
        "ms2 merged the call ms1 alerted of"
    );
}

#[test]
#[ignore = "interop: needs sipp, node and ../shared; run by .ci/run"]
fn with_replication_a_message_is_in_jetstream_when_the_caller_has_its_200() {
    use boxless_control::replica::Replica;
    let dir = temp("replica");
    let p = ports();
    let (_nats, nats_port, control) = nats_server(&dir);
    let control = format!("{control}\n[store]\nreplication = \"jetstream\"\nreplicas = 1");
    let (h1, h2) = (free_port(), free_port());
    let cfg = write_config_with(&dir, &p, "proxy", "log", &control, h1, h2);
    let _ms1 = boxless(&["server", "--id", "ms1"], &cfg, h1, &dir.join("ms1.log"));
    let _ms2 = boxless(&["server", "--id", "ms2"], &cfg, h2, &dir.join("ms2.log"));
    let _router = boxless(&["router"], &cfg, p.http, &dir.join("router.log"));
    wait_state(p.http, "ms1", "up", Duration::from_secs(5));
    wait_state(p.http, "ms2", "up", Duration::from_secs(5));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let replica = rt.block_on(async {
        let c = async_nats::connect(format!("nats://127.0.0.1:{nats_port}"))
            .await
            .unwrap();
        Replica::open(&c, 1, Duration::from_secs(5)).await.unwrap()
    });
    for i in 0..3 {
        let out = phone_call(p.router, &format!("555125000{i}"), 2.5);
        assert!(out.completed(), "call {i}: {out:?}");
        // The caller's BYE had its 200: JetStream has the message already.
        let (_, msgs) = router_messages(p.http);
        let m = msgs
            .iter()
            .find(|m| m["caller"] == format!("+1555125000{i}"))
            .unwrap_or_else(|| panic!("call {i} listed: {msgs:?}"));
        let (id, server) = (m["id"].as_str().unwrap(), m["server"].as_str().unwrap());
        let r = rt.block_on(replica.record(server, id)).unwrap();
        let r = r.unwrap_or_else(|| panic!("call {i}: {id} not in JetStream at its 200"));
        assert_eq!(
            (r.recipient, r.caller),
            (15551230002, Some(15551250000 + i))
        );
        let wav = std::fs::read(boxless_store::audio::path_in(
            &dir.join("data").join(server),
            id,
        ))
        .unwrap();
        assert_eq!(
            rt.block_on(replica.audio(server, id)).unwrap(),
            wav,
            "call {i}: the audio whole"
        );
    }
    // The status says none is behind (`unreplicated` 0, not null: they replicate).
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let a = rt
            .block_on(boxless_net::http::request(
                SocketAddr::from(([127, 0, 0, 1], p.http)),
                "GET",
                "/api/v1/servers",
                Duration::from_secs(5),
            ))
            .unwrap();
        let servers: Vec<serde_json::Value> = serde_json::from_slice(&a.body).unwrap();
        let behind: Vec<_> = servers.iter().map(|v| v["unreplicated"].clone()).collect();
        if behind.iter().all(|b| b == 0) {
            break;
        }
        assert!(Instant::now() < until, "servers' unreplicated: {behind:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // A state change follows (the API's delete: within the loop's 5 s).
    let (_, msgs) = router_messages(p.http);
    let (id, server) = (
        msgs[0]["id"].as_str().unwrap(),
        msgs[0]["server"].as_str().unwrap(),
    );
    let d = rt
        .block_on(boxless_net::http::request(
            SocketAddr::from(([127, 0, 0, 1], p.http)),
            "DELETE",
            &format!("/api/v1/messages/{id}"),
            Duration::from_secs(5),
        ))
        .unwrap();
    assert!(d.status < 300, "delete: {}", d.status);
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let r = rt.block_on(replica.record(server, id)).unwrap().unwrap();
        if r.state == "deleted" {
            break;
        }
        assert!(
            Instant::now() < until,
            "the deletion did not reach JetStream: {r:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Calls `link` as the recipient and listens for `seconds`. The message follows a prompt
/// that reads the caller's number and when it came in (about 10 s, more or less by the
/// date and time read out), so a window much shorter than 20 s may end before it.
fn listen_to(router: u16, link: &str, seconds: f64) -> boxless_phone::CallOutcome {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(boxless_phone::place_call(&boxless_phone::CallOptions {
        via: SocketAddr::from(([127, 0, 0, 1], router)),
        from: "5551230002".into(),
        to: link.into(),
        diversion: None,
        headers: Vec::new(),
        play: Vec::new(),
        play_at: 0.0,
        dtmf: String::new(),
        dtmf_at: 0.0,
        seconds: Some(seconds),
        answer_timeout: Duration::from_secs(10),
    }))
    .unwrap()
}

/// One HTTP request to the router's API.
fn router_http(http: u16, method: &str, path: &str) -> boxless_net::http::Answer {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(boxless_net::http::request(
        SocketAddr::from(([127, 0, 0, 1], http)),
        method,
        path,
        Duration::from_secs(5),
    ))
    .unwrap()
}

/// Whose link numbers each server answers, by the router's `/api/v1/servers`.
fn serves(http: u16) -> Vec<(String, Vec<String>)> {
    api_servers(http)
        .iter()
        .map(|v| {
            let ids = v["serves"].as_array().cloned().unwrap_or_default();
            (
                v["id"].as_str().unwrap().to_string(),
                ids.iter()
                    .map(|i| i.as_str().unwrap().to_string())
                    .collect(),
            )
        })
        .collect()
}

/// Three NATS nodes, a router and two servers over them, replicating (R3), taken over
/// after 6 s of silence; `extra` adds config lines.
struct Replicated {
    nats: NatsCluster,
    cfg: PathBuf,
    h1: u16,
    ms1: Option<Proc>,
    _ms2: Proc,
    _router: Proc,
}

impl Replicated {
    fn start(dir: &Path, p: &Ports, extra: &str) -> Replicated {
        let nats = NatsCluster::start(dir);
        let urls = nats.urls.clone();
        let extra = format!(
            "[control]\nbackend = \"nats\"\nurl = \"{urls}\"\nttl_seconds = 2\n\
             [store]\nreplication = \"jetstream\"\nreplicas = 3\ntakeover_after_seconds = 6\n{extra}"
        );
        let (h1, h2) = (free_port(), free_port());
        let cfg = write_config_with(dir, p, "proxy", "smpp", &extra, h1, h2);
        let ms1 = boxless(&["server", "--id", "ms1"], &cfg, h1, &dir.join("ms1.log"));
        let ms2 = boxless(&["server", "--id", "ms2"], &cfg, h2, &dir.join("ms2.log"));
        let router = boxless(&["router"], &cfg, p.http, &dir.join("router.log"));
        wait_state(p.http, "ms1", "up", Duration::from_secs(20));
        wait_state(p.http, "ms2", "up", Duration::from_secs(20));
        Replicated {
            nats,
            cfg,
            h1,
            ms1: Some(ms1),
            _ms2: ms2,
            _router: router,
        }
    }

    /// ms1's host is lost: ms1 and the first NATS node killed (SIGKILL), both disks wiped.
    fn lose_ms1_host(&mut self, dir: &Path) -> Instant {
        let lost = Instant::now();
        drop(self.ms1.take());
        self.nats.lose(0);
        std::fs::remove_dir_all(dir.join("data").join("ms1")).unwrap();
        lost
    }

    /// ms1 started again (on whatever its disk holds).
    fn restart_ms1(&self, dir: &Path) -> Proc {
        boxless(
            &["server", "--id", "ms1"],
            &self.cfg,
            self.h1,
            &dir.join("ms1b.log"),
        )
    }
}

/// The host of ms1 is lost (the server and one NATS node killed, both disks wiped) with
/// two of its notices pending: ms2 takes it over, sends those two once, plays its
/// messages by their link numbers and opens their web links; ms1 comes back on an empty
/// disk, catches up (a message deleted meanwhile stays deleted) and notifies nothing.
#[test]
#[ignore = "interop: needs nats-server, node and ../shared; run by .ci/run"]
fn a_lost_host_loses_nothing_and_the_other_server_answers_for_it() {
    let dir = temp("takeover");
    let p = ports();
    let out = dir.join("sms.jsonl");
    let web = format!("[web]\nbase_url = \"http://127.0.0.1:{}\"", p.http);
    let mut smsc_proc = Some(smsc(p.smsc, &out, "accept"));
    let mut sys = Replicated::start(&dir, &p, &web);
    // Messages straight to each server: one on ms2, one on ms1 notified at once, then
    // two on ms1 while the SMSC is down.
    let call = |port: u16, from: &str| {
        let out = phone_call(port, from, 2.5);
        assert!(out.completed(), "call from {from}: {out:?}");
    };
    call(p.s2, "5551240001");
    call(p.s1, "5551240002");
    assert_eq!(wait_sms(&out, 2, Duration::from_secs(10)).len(), 2);
    // The simulator writes an SMS down before it answers the submit_sm: killed in between,
    // the SMS is one in flight, which its server rightly sends again. Both answers first.
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, msgs) = router_messages(p.http);
        let accepted = msgs
            .iter()
            .filter(|m| sms_taken(m["notifications"][0]["state"].as_str().unwrap_or("")))
            .count();
        if accepted == 2 {
            break;
        }
        assert!(Instant::now() < until, "both SMS accepted: {msgs:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(smsc_proc.take());
    std::thread::sleep(Duration::from_millis(500));
    call(p.s1, "5551240003");
    call(p.s1, "5551240004");
    // JetStream has all of ms1's (its status says none is behind), then its host is lost.
    let until = Instant::now() + Duration::from_secs(15);
    while api_servers(p.http).iter().any(|v| v["unreplicated"] != 0) {
        assert!(Instant::now() < until, "{:?}", api_servers(p.http));
        std::thread::sleep(Duration::from_millis(200));
    }
    let lost = sys.lose_ms1_host(&dir);
    let _smsc2 = smsc(p.smsc, &out, "accept");
    // Within the takeover delay and 20 s: ms2 answers for ms1, every message is listed,
    // and the two pending notices went, once.
    let until = lost + Duration::from_secs(6 + 20);
    loop {
        let s = serves(p.http);
        let (missing, msgs) = router_messages(p.http);
        let sms = sms_lines(&out).len();
        if s.iter()
            .any(|(id, ids)| id == "ms2" && ids.contains(&"ms1".to_string()))
            && missing.is_empty()
            && msgs.len() == 4
            && sms >= 4
        {
            eprintln!(
                "ms1 taken over, its messages listed and notified {:?} after the loss",
                lost.elapsed()
            );
            break;
        }
        assert!(
            Instant::now() < until,
            "not taken over in time: serves {s:?}, missing {missing:?}, {} messages, {sms} SMS",
            msgs.len()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    std::thread::sleep(Duration::from_secs(3));
    let sms = sms_lines(&out);
    assert_eq!(sms.len(), 4, "each notice once: {sms:?}");
    assert!(
        sms.iter().all(|m| m["destination"] == "15551230002"),
        "{sms:?}"
    );
    let callers: HashSet<String> = sms
        .iter()
        .map(|m| {
            let t = m["text"].as_str().unwrap();
            let at = t.find("+1555124000").unwrap();
            t[at..at + 12].to_string()
        })
        .collect();
    assert_eq!(callers.len(), 4, "one SMS per message: {sms:?}");
    // A pending one, sent by ms2: its link number plays it (from ms1's pool) and its web
    // link opens it.
    let late = sms
        .iter()
        .find(|m| m["text"].as_str().unwrap().contains("+15551240004"))
        .unwrap();
    let link = format!("+{}", late["source"].as_str().unwrap());
    let n: u64 = link[1..].parse().unwrap();
    assert!(
        (18005550100..=18005550149).contains(&n),
        "ms1's pool: {link}"
    );
    let (_, msgs) = router_messages(p.http);
    let m = msgs.iter().find(|m| m["caller"] == "+15551240004").unwrap();
    let id = m["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("ms1-"), "{id}");
    let wav = router_http(p.http, "GET", &format!("/api/v1/messages/{id}/audio"));
    assert_eq!(wav.status, 200);
    let stored: Vec<i16> = hound::WavReader::new(&wav.body[..])
        .unwrap()
        .samples::<i16>()
        .map(|s| s.unwrap())
        .collect();
    let heard = listen_to(p.router, &link, 20.0);
    assert!(heard.completed(), "{heard:?}");
    let corr = common::find_in(&heard.heard, &stored);
    eprintln!("ms1's message played by ms2 through its link number: correlation {corr:.3}");
    assert!(corr >= 0.8, "heard the message: correlation {corr}");
    let text = late["text"].as_str().unwrap();
    let web = text
        .split_whitespace()
        .find(|w| w.contains("/m/ms1."))
        .unwrap_or_else(|| panic!("a web link naming ms1: {text}"));
    let path = &web[web.find("/m/").unwrap()..];
    let page = router_http(p.http, "GET", path);
    assert_eq!(page.status, 200, "the web link opens on ms2");
    // One of ms1's messages is deleted meanwhile (through the router, on ms2).
    let gone = msgs.iter().find(|m| m["caller"] == "+15551240003").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let d = router_http(p.http, "DELETE", &format!("/api/v1/messages/{gone}"));
    assert!(d.status < 300, "delete: {}", d.status);
    // ms1 comes back on an empty disk: it takes its numbers back once caught up.
    let back = Instant::now();
    let _ms1 = sys.restart_ms1(&dir);
    let until = back + Duration::from_secs(30);
    loop {
        let s = serves(p.http);
        if s.contains(&("ms1".to_string(), vec!["ms1".to_string()]))
            && s.contains(&("ms2".to_string(), vec!["ms2".to_string()]))
        {
            break;
        }
        assert!(Instant::now() < until, "not handed back: {s:?}");
        std::thread::sleep(Duration::from_millis(250));
    }
    eprintln!(
        "ms1 back and serving its numbers {:?} after its restart",
        back.elapsed()
    );
    std::thread::sleep(Duration::from_secs(3));
    let (missing, msgs) = router_messages(p.http);
    assert_eq!(missing, "");
    let deleted = msgs.iter().find(|m| m["id"] == gone.as_str());
    assert!(
        deleted.is_none_or(|m| m["state"] == "deleted"),
        "deleted meanwhile stays deleted: {deleted:?}"
    );
    let ids: HashSet<&str> = msgs.iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), msgs.len(), "each message once: {msgs:?}");
    let live = msgs.iter().filter(|m| m["state"] != "deleted").count();
    assert_eq!(live, 3, "{msgs:?}");
    assert!(
        msgs.iter()
            .filter(|m| m["id"].as_str().unwrap().starts_with("ms1-"))
            .all(|m| m["server"] == "ms1"),
        "ms1 holds its own again: {msgs:?}"
    );
    assert_eq!(sms_lines(&out).len(), 4, "nothing notified again");
    // And it plays them itself: the one it notified before the loss.
    let early = sms
        .iter()
        .find(|m| m["text"].as_str().unwrap().contains("+15551240002"))
        .unwrap();
    let early_link = format!("+{}", early["source"].as_str().unwrap());
    let early_id = msgs.iter().find(|m| m["caller"] == "+15551240002").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let wav = router_http(p.http, "GET", &format!("/api/v1/messages/{early_id}/audio"));
    let stored: Vec<i16> = hound::WavReader::new(&wav.body[..])
        .unwrap()
        .samples::<i16>()
        .map(|s| s.unwrap())
        .collect();
    let heard = listen_to(p.router, &early_link, 20.0);
    let corr = common::find_in(&heard.heard, &stored);
    eprintln!("ms1 plays its own message again: correlation {corr:.3}");
    assert!(
        corr >= 0.8,
        "ms1 plays its message again: correlation {corr}"
    );
}

/// ms1's host is lost (the server and one NATS node killed, both disks wiped) 20 s into a
/// 40 s message: ms2 takes ms1 over and keeps what JetStream received of the recording as
/// a message of its own, notified once; ms1 back on an empty disk changes nothing.
#[test]
#[ignore = "interop: needs nats-server, sipp, node and ../shared; run by .ci/run"]
fn a_host_lost_mid_message_leaves_what_was_said_to_the_server_that_takes_over() {
    let dir = temp("takeover-cut");
    let voice = caller_ulaw(&dir);
    let p = ports();
    let out = dir.join("sms.jsonl");
    let _smsc = smsc(p.smsc, &out, "accept");
    let mut sys = Replicated::start(&dir, &p, "");
    let mut caller = long_message(&dir, p.s1, &dir.join("data/ms1/recording"));
    std::thread::sleep(Duration::from_secs(20));
    let lost = sys.lose_ms1_host(&dir);
    let _ = caller.0.kill();
    assert!(
        sms_lines(&out).is_empty(),
        "nothing notified before the loss"
    );
    // Within the takeover delay and 20 s: the message is listed, on ms2, and notified.
    let until = lost + Duration::from_secs(6 + 20);
    let m = loop {
        let (_, msgs) = router_messages(p.http);
        if let Some(m) = msgs.first()
            && !sms_lines(&out).is_empty()
        {
            break m.clone();
        }
        assert!(Instant::now() < until, "not kept in time: {msgs:?}");
        std::thread::sleep(Duration::from_millis(250));
    };
    eprintln!("kept {:?} after the loss: {m}", lost.elapsed());
    let d = m["duration_ms"].as_u64().unwrap();
    assert!(d >= 15_000, "{d} ms kept of the 20 s said");
    assert_eq!(m["server"], "ms2");
    assert_eq!(
        m["caller"], "+15551",
        "who called: from the recording's first write"
    );
    let id = m["id"].as_str().unwrap();
    let wav = router_http(p.http, "GET", &format!("/api/v1/messages/{id}/audio"));
    let (_, stored) = boxless_store::wav::decode(&wav.body).unwrap();
    let sent: Vec<i16> = g711(&voice)
        .into_iter()
        .cycle()
        .take(stored.len())
        .collect();
    let (corr, _) = boxless_media::audio::best_correlation(&sent, &stored, 1600);
    eprintln!("{d} ms kept of the 20 s said, correlation {corr:.3}");
    assert!(corr >= 0.9, "what was said: correlation {corr}");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(sms_lines(&out).len(), 1, "notified once");
    // ms1 back on an empty disk: nothing new, nothing twice.
    let _ms1 = sys.restart_ms1(&dir);
    let until = Instant::now() + Duration::from_secs(30);
    while !serves(p.http).contains(&("ms1".to_string(), vec!["ms1".to_string()])) {
        assert!(Instant::now() < until, "ms1 not back: {:?}", serves(p.http));
        std::thread::sleep(Duration::from_millis(250));
    }
    std::thread::sleep(Duration::from_secs(3));
    let (_, msgs) = router_messages(p.http);
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    assert_eq!(sms_lines(&out).len(), 1, "notified once");
}

/// What RFC 4475 expects of the router for each message (by file name).
fn expected(name: &str, verdict: &str) -> Expect {
    match name {
        // Responses sent to the router are never answered.
        "unreason" | "noreason" | "bcast" | "scalarlg" | "bigcode" => Expect::NoResponse,
        "badvers" => Expect::Code(&[505]),
        "mismatch02" => Expect::Code(&[501, 400]),
        "unkscm" | "novelsc" => Expect::Code(&[416]),
        "bext01" => Expect::Code(&[420]),
        "intmeth" => Expect::Code(&[501, 405]),
        "regaut01" | "cparam01" | "cparam02" | "regescrt" => Expect::Code(&[405]),
        // An OPTIONS with Max-Forwards 0: the router answers it itself, as an endpoint.
        "zeromf" => Expect::Code(&[200]),
        // "may reject" / "400 acceptable" / "400 from elements that parse Date": we do.
        "lwsstart" | "trws" | "escruri" | "baddate" => Expect::Code(&[400]),
        _ => match verdict {
            "valid" => Expect::NotBadRequest,
            _ => Expect::Code(&[400]),
        },
    }
}

#[derive(Debug)]
enum Expect {
    NoResponse,
    Code(&'static [u16]),
    NotBadRequest,
}

fn sent_by_port(msg: &[u8]) -> u16 {
    let text = String::from_utf8_lossy(msg);
    let via = text
        .lines()
        .find(|l| {
            let l = l.to_ascii_lowercase();
            l.starts_with("via") || l.starts_with("v:") || l.starts_with("v ")
        })
        .unwrap_or("");
    // sent-by is the token after the protocol; a port follows its last ':'.
    via.split(';')
        .next()
        .and_then(|h| h.rsplit_once(':'))
        .and_then(|(_, p)| p.trim().parse().ok())
        .unwrap_or(5060)
}

#[test]
#[ignore = "interop: needs sipp, node and ../shared; run by .ci/run"]
fn rfc4475_torture_messages_are_handled_as_the_rfc_expects() {
    let corpus = std::env::var("BOXLESS_RFC4475")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root().join("../shared/conformance/rfc4475"));
    let index =
        std::fs::read_to_string(corpus.join("index.tsv")).expect("RFC 4475 corpus in ../shared");
    let dir = temp("rfc4475");
    let p = ports();
    let cfg = write_config(&dir, &p, "redirect", "log");
    let mut serve_proc = serve(&cfg, p.http, &dir.join("serve.log"));
    let router = SocketAddr::from(([127, 0, 0, 1], p.router));
    let mut failures = Vec::new();
    let mut count = 0;
    for line in index
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let cols: Vec<&str> = line.split('\t').collect();
        let (name, verdict) = (cols[0], cols[3]);
        let msg = std::fs::read(corpus.join(format!("{name}.dat"))).unwrap();
        let port = sent_by_port(&msg);
        let sock = UdpSocket::bind(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("{name}: bind 127.0.0.1:{port}: {e}"));
        sock.set_read_timeout(Some(Duration::from_millis(400)))
            .unwrap();
        sock.send_to(&msg, router).unwrap();
        let mut buf = [0u8; 65_536];
        let mut codes = Vec::new();
        while let Ok((n, _)) = sock.recv_from(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]);
            let code: u16 = text
                .split(' ')
                .nth(1)
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            codes.push(code);
        }
        let exp = expected(name, verdict);
        let ok = match (&exp, codes.as_slice()) {
            (Expect::NoResponse, []) => true,
            (Expect::Code(want), [got]) => want.contains(got),
            (Expect::NotBadRequest, [got]) => *got != 400 && *got != 500,
            _ => false,
        };
        eprintln!(
            "{name:<11} {verdict:<15} expected {exp:?}, got {codes:?} {}",
            if ok { "ok" } else { "FAIL" }
        );
        if !ok {
            failures.push(name.to_string());
        }
        count += 1;
    }
    assert_eq!(count, 49, "all 49 messages of the corpus");
    assert!(
        serve_proc.0.try_wait().unwrap().is_none(),
        "the process survived the corpus"
    );
    // Still serving calls afterwards.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let out = rt
        .block_on(boxless_phone::place_call(&boxless_phone::CallOptions {
            via: router,
            from: "5551230001".into(),
            to: "5551230002".into(),
            diversion: None,
            headers: Vec::new(),
            play: boxless_testkit::voice(1500, 9),
            play_at: 0.6,
            dtmf: String::new(),
            dtmf_at: 0.0,
            seconds: None,
            answer_timeout: Duration::from_secs(10),
        }))
        .unwrap();
    assert!(out.completed(), "a call after the corpus: {out:?}");
    assert!(
        failures.is_empty(),
        "not handled as RFC 4475 expects: {failures:?}"
    );
    let _ = serve_proc.0.kill();
}
