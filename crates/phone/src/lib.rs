//! A test phone: places a real SIP/RTP call over UDP (PCMU offered first), follows a `302`,
//! plays audio, sends RFC 4733 digits, records what it hears and hangs up.
//! `boxless call` and the end-to-end tests use it.
#![warn(missing_docs)]

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use boxless_core::Rng;
use boxless_media::{FRAME, RtpReceiver, RtpSender, negotiate, write_sdp};
use boxless_sip::{
    Fired, Message, Method, NameAddr, Request, SipTimers, UacNonInvite, Uri, write_request,
    write_response,
};
use tokio::net::UdpSocket;
use tokio::time::{Instant, sleep_until};

/// What to do on the call.
#[derive(Debug, Clone)]
pub struct CallOptions {
    /// Router or server to send the INVITE to.
    pub via: SocketAddr,
    /// Caller number (From user).
    pub from: String,
    /// Dialled number (Request-URI and To user).
    pub to: String,
    /// A `Diversion` entry naming who forwarded the call, if any.
    pub diversion: Option<String>,
    /// Extra header lines for the INVITE (`Name: value`).
    pub headers: Vec<String>,
    /// 8 kHz mono audio to play once answered.
    pub play: Vec<i16>,
    /// Seconds after answer to start playing.
    pub play_at: f64,
    /// RFC 4733 digits to send; a `,` waits a second.
    pub dtmf: String,
    /// Seconds after answer to send them.
    pub dtmf_at: f64,
    /// Hang up this long after answer (None: when the audio and digits are done + 1 s).
    pub seconds: Option<f64>,
    /// Give up if nothing answers within this.
    pub answer_timeout: Duration,
}

/// How the call went.
#[derive(Debug, Clone, Default)]
pub struct CallOutcome {
    /// Every final response to an INVITE, in order (e.g. `[302, 200]`).
    pub invite_finals: Vec<(u16, String)>,
    /// True once a 200 answered.
    pub answered: bool,
    /// The response to our BYE, if we hung up.
    pub bye_response: Option<u16>,
    /// When we sent our BYE (ms since the UNIX epoch).
    pub hangup_at_ms: Option<u64>,
    /// From our BYE to its final response (a server that replicates answers once the
    /// message is durable: this is what the caller waits).
    pub bye_wait: Option<Duration>,
    /// True if the far end hung up.
    pub remote_hangup: bool,
    /// What we heard (8 kHz mono).
    pub heard: Vec<i16>,
    /// RTP packets received.
    pub rtp_packets: u64,
    /// Time from the 200 OK to the first audio packet.
    pub first_audio: Option<Duration>,
    /// Where our in-dialog requests went: the first Record-Route hop, else the Contact.
    pub dialog_peer: Option<SocketAddr>,
    /// Where the far end's BYE came from.
    pub bye_from: Option<SocketAddr>,
}

impl CallOutcome {
    /// Answered, and ended with a BYE that got 200 (or the far end's BYE).
    pub fn completed(&self) -> bool {
        self.answered && (self.bye_response == Some(200) || self.remote_hangup)
    }
}

/// Errors before a call could even start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PhoneError {
    /// Socket trouble.
    #[error("network: {0}")]
    Io(#[from] std::io::Error),
    /// The numbers given are unusable.
    #[error("{0}")]
    Usage(String),
}

struct Leg {
    target: SocketAddr,
    ruri: String,
    branch: String,
    cseq: u32,
    invite: Vec<u8>,
}

/// Places the call and returns what happened.
pub async fn place_call(opts: &CallOptions) -> Result<CallOutcome, PhoneError> {
    let local_ip: IpAddr = if opts.via.ip().is_loopback() {
        opts.via.ip()
    } else {
        IpAddr::from([0, 0, 0, 0])
    };
    let sip = UdpSocket::bind(SocketAddr::new(local_ip, 0)).await?;
    let rtp = UdpSocket::bind(SocketAddr::new(local_ip, 0)).await?;
    let sip_addr = sip.local_addr()?;
    let rtp_addr = rtp.local_addr()?;
    let mut rng = Rng::from_entropy();
    let call_id = format!("{:016x}@boxless-phone", rng.next_u64());
    let tag = format!("{:08x}", rng.next_u64() as u32);
    let sess = rng.next_u64() >> 33;
    let sdp = write_sdp(rtp_addr, sess, sess, None);
    let mut out = CallOutcome::default();
    let mut leg = Leg {
        target: opts.via,
        ruri: format!("sip:{}@{}", opts.to, opts.via),
        branch: String::new(),
        cseq: 1,
        invite: Vec::new(),
    };
    let build_invite = |leg: &mut Leg, rng: &mut Rng| {
        leg.branch = format!("z9hG4bK{:x}", rng.next_u64());
        let mut div = opts
            .diversion
            .as_ref()
            .map(|d| {
                format!(
                    "Diversion: <sip:{d}@{}>;reason=no-answer\r\n",
                    opts.via.ip()
                )
            })
            .unwrap_or_default();
        for h in &opts.headers {
            div.push_str(h.trim_end());
            div.push_str("\r\n");
        }
        let from = format!("<sip:{}@{}>;tag={tag}", opts.from, sip_addr.ip());
        let to = format!("<sip:{}@{}>", opts.to, sip_addr.ip());
        let contact = format!("sip:{}@{sip_addr}", opts.from);
        write_request(
            &mut leg.invite,
            &Request {
                method: "INVITE",
                uri: &leg.ruri,
                transport: "UDP",
                sent_by: &sip_addr.to_string(),
                branch: &leg.branch,
                route: &[],
                from: &from,
                to: &to,
                call_id: &call_id,
                cseq: leg.cseq,
                contact: Some(&contact),
                extra: div.as_bytes(),
                body: Some(("application/sdp", sdp.as_bytes())),
            },
        );
    };
    build_invite(&mut leg, &mut rng);
    let mut buf = vec![0u8; 65_536];
    let mut mbuf = vec![0u8; 2048];
    let give_up = Instant::now() + opts.answer_timeout;
    let mut redirects = 0;
    // INVITE transaction(s) until a 2xx.
    let (answer, to_hdr, peer) = 'invite: loop {
        sip.send_to(&leg.invite, leg.target).await?;
        let mut retx = Duration::from_millis(500);
        let mut next = Instant::now() + retx;
        let mut provisional = false;
        loop {
            let r = tokio::select! {
                r = sip.recv_from(&mut buf) => Some(r?),
                _ = sleep_until(next.min(give_up)) => None,
            };
            let Some((n, src)) = r else {
                if Instant::now() >= give_up {
                    return Ok(out);
                }
                if !provisional {
                    sip.send_to(&leg.invite, leg.target).await?;
                }
                retx = (retx * 2).min(Duration::from_secs(4));
                next = Instant::now() + retx;
                continue;
            };
            let Ok(m) = Message::parse(&buf[..n], false) else {
                continue;
            };
            if m.call_id != call_id {
                continue;
            }
            let Some(code) = m.status() else {
                continue;
            };
            if m.cseq.map(|c| c.seq) != Some(leg.cseq) {
                continue;
            }
            if code < 200 {
                provisional = true;
                continue;
            }
            let reason = match m.start {
                boxless_sip::StartLine::Response { reason, .. } => reason.to_string(),
                _ => String::new(),
            };
            out.invite_finals.push((code, reason));
            if code >= 300 {
                let ack = ack_for(&leg, &m, sip_addr);
                sip.send_to(&ack, src).await?;
            }
            match code {
                200..=299 => {
                    // The UAC's route set: Record-Route reversed (RFC 3261 §12.1.2); the first
                    // hop is the first route, else the remote target.
                    let mut route: Vec<String> = m
                        .header_values("record-route")
                        .map(str::to_string)
                        .collect();
                    route.reverse();
                    let first_hop = route
                        .first()
                        .and_then(|r| NameAddr::parse(r))
                        .and_then(|n| uri_addr(n.uri));
                    let peer = first_hop.or(contact_of(&m)).unwrap_or(src);
                    break 'invite (
                        m.body.to_vec(),
                        m.to.to_string(),
                        (peer, contact_uri(&m), route),
                    );
                }
                300..=399 if redirects < 3 => {
                    let Some(c) = m.header_values("contact").next().and_then(NameAddr::parse)
                    else {
                        return Ok(out);
                    };
                    let Some(target) = uri_addr(c.uri) else {
                        return Ok(out);
                    };
                    redirects += 1;
                    leg.target = target;
                    leg.ruri = c.uri.to_string();
                    leg.cseq += 1;
                    build_invite(&mut leg, &mut rng);
                    continue 'invite;
                }
                _ => return Ok(out),
            }
        }
    };
    out.answered = true;
    let (peer_addr, peer_uri, route) = peer;
    out.dialog_peer = Some(peer_addr);
    let target_uri = peer_uri.clone().unwrap_or_else(|| leg.ruri.clone());
    let from = format!("<sip:{}@{}>;tag={tag}", opts.from, sip_addr.ip());
    let sent_by = sip_addr.to_string();
    let in_dialog = |method: &str, cseq: u32, to_hdr: &str| {
        let mut b = Vec::with_capacity(512);
        let branch = format!("z9hG4bK{:x}", Rng::from_entropy().next_u64());
        write_request(
            &mut b,
            &Request {
                method,
                uri: &target_uri,
                transport: "UDP",
                sent_by: &sent_by,
                branch: &branch,
                route: &route,
                from: &from,
                to: to_hdr,
                call_id: &call_id,
                cseq,
                contact: None,
                extra: b"",
                body: None,
            },
        );
        (b, branch)
    };
    let send_ack = |to_hdr: &str| in_dialog("ACK", leg.cseq, to_hdr).0;
    sip.send_to(&send_ack(&to_hdr), peer_addr).await?;
    let neg = negotiate(&answer).map_err(|e| PhoneError::Usage(format!("bad SDP answer: {e}")))?;
    let mut tx = RtpSender::new(
        neg.codec,
        neg.pt,
        rng.next_u64() as u32,
        rng.next_u64() as u16,
        rng.next_u64() as u32,
    );
    let mut rx = RtpReceiver::new(neg.codec, neg.pt, neg.dtmf_pt, 8000 * 600);
    let answered = Instant::now();
    let play_start = answered + secs(opts.play_at);
    let play_end = play_start + Duration::from_millis(opts.play.len() as u64 / 8);
    let dtmf_start = answered + secs(opts.dtmf_at);
    let dtmf_end = dtmf_start
        + Duration::from_millis(
            opts.dtmf
                .chars()
                .map(|c| if c == ',' { 1000 } else { 300 })
                .sum::<u64>(),
        );
    let hangup = match opts.seconds {
        Some(s) => answered + secs(s),
        None => {
            play_end.max(if opts.dtmf.is_empty() {
                answered
            } else {
                dtmf_end
            }) + Duration::from_secs(1)
        }
    };
    let mut frame_at = play_start;
    let mut pos = 0usize;
    let mut pkt = Vec::with_capacity(200);
    let digits: Vec<char> = opts.dtmf.chars().collect();
    let mut dtmf_step = 0usize; // packets sent for the current digit
    let mut dtmf_idx = 0usize;
    let mut dtmf_next = dtmf_start;
    loop {
        let now = Instant::now();
        if now >= hangup {
            break;
        }
        // Voice, 20 ms at a time.
        if now >= frame_at && pos < opts.play.len() {
            let end = (pos + FRAME).min(opts.play.len());
            tx.voice(&opts.play[pos..end], &mut pkt);
            rtp.send_to(&pkt, neg.remote).await?;
            pos = end;
            frame_at += Duration::from_millis(20);
        }
        // Digits: 3 progress packets 50 ms apart, then 3 end packets (RFC 4733 §2.5.1.4).
        if digits.get(dtmf_idx) == Some(&',') && now >= dtmf_next {
            // A comma waits a second, as a dialler's does.
            dtmf_idx += 1;
            dtmf_next = now + Duration::from_secs(1);
        }
        if let (Some(pt), Some(&d)) = (neg.dtmf_pt, digits.get(dtmf_idx))
            && now >= dtmf_next
            && d != ','
        {
            let duration = ((dtmf_step.min(3) + 1) * 400) as u16;
            let end = dtmf_step >= 3;
            tx.dtmf(pt, d, duration, end, dtmf_step == 0, &mut pkt);
            rtp.send_to(&pkt, neg.remote).await?;
            dtmf_step += 1;
            dtmf_next = now + Duration::from_millis(if dtmf_step >= 6 { 150 } else { 50 });
            if dtmf_step >= 6 {
                tx.end_event(duration);
                dtmf_step = 0;
                dtmf_idx += 1;
            }
        }
        let wake = [frame_at, dtmf_next, hangup]
            .into_iter()
            .filter(|&t| t > now)
            .min()
            .unwrap_or(hangup);
        tokio::select! {
            r = rtp.recv_from(&mut mbuf) => {
                let (n, _) = r?;
                let got = rx.receive(&mbuf[..n]);
                if out.first_audio.is_none() && matches!(got, boxless_media::Received::Audio { .. }) {
                    out.first_audio = Some(answered.elapsed());
                }
            }
            r = sip.recv_from(&mut buf) => {
                let (n, src) = r?;
                if let Ok(m) = Message::parse(&buf[..n], false) {
                    if m.method() == Some(Method::Bye) && m.call_id == call_id {
                        let mut ok = Vec::new();
                        write_response(&mut ok, &m, 200, "OK", None, None, b"", None);
                        let target = m.top_via().map(|v| boxless_sip::response_target(&v, src)).unwrap_or(src);
                        sip.send_to(&ok, target).await?;
                        out.remote_hangup = true;
                        out.bye_from = Some(src);
                        break;
                    }
                    if m.status().is_some_and(|c| (200..300).contains(&c)) && m.cseq.is_some_and(|c| c.method == "INVITE") {
                        sip.send_to(&send_ack(m.to), peer_addr).await?;
                    }
                }
            }
            _ = sleep_until(wake) => {}
        }
    }
    // Drain late audio briefly and hang up.
    if !out.remote_hangup {
        let (bye, branch) = in_dialog("BYE", leg.cseq + 1, &to_hdr);
        out.hangup_at_ms = Some(boxless_core::now_ms());
        sip.send_to(&bye, peer_addr).await?;
        // The BYE's non-INVITE client transaction (Timer E, Timer F) from boxless-sip.
        let now = || Instant::now().into_std();
        let sent = now();
        let mut tsx = UacNonInvite::new(now(), bye, branch, false, SipTimers::default());
        while !tsx.done() {
            tokio::select! {
                r = sip.recv_from(&mut buf) => {
                    let (n, _) = r?;
                    if let Ok(m) = Message::parse(&buf[..n], false)
                        && m.top_via().and_then(|v| v.branch) == Some(tsx.branch())
                        && let Some(code) = m.status()
                        && tsx.response(code)
                    {
                        out.bye_response = Some(code);
                        out.bye_wait = Some(now().saturating_duration_since(sent));
                    }
                }
                r = rtp.recv_from(&mut mbuf) => {
                    if let Ok((n, _)) = r {
                        rx.receive(&mbuf[..n]);
                    }
                }
                _ = sleep_until(tsx.poll_timeout().map_or_else(Instant::now, Instant::from_std)) => {
                    if tsx.handle_timeout(now()) == Some(Fired::Retransmit) {
                        sip.send_to(tsx.message(), peer_addr).await?;
                    }
                }
            }
        }
    }
    out.rtp_packets = rx.packets;
    out.heard = rx.into_samples();
    Ok(out)
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.clamp(0.0, 86_400.0))
}

/// The ACK for a non-2xx final response: same branch, same Request-URI (§17.1.1.3).
fn ack_for(leg: &Leg, resp: &Message<'_>, sip_addr: SocketAddr) -> Vec<u8> {
    let inv = Message::parse(&leg.invite, false).ok();
    let from = inv.as_ref().map(|i| i.from).unwrap_or("");
    let mut b = Vec::with_capacity(512);
    write_request(
        &mut b,
        &Request {
            method: "ACK",
            uri: &leg.ruri,
            transport: "UDP",
            sent_by: &sip_addr.to_string(),
            branch: &leg.branch,
            route: &[],
            from,
            to: resp.to,
            call_id: resp.call_id,
            cseq: leg.cseq,
            contact: None,
            extra: b"",
            body: None,
        },
    );
    b
}

fn contact_uri(m: &Message<'_>) -> Option<String> {
    m.header_values("contact")
        .next()
        .and_then(NameAddr::parse)
        .map(|n| n.uri.to_string())
}

fn contact_of(m: &Message<'_>) -> Option<SocketAddr> {
    m.header_values("contact")
        .next()
        .and_then(NameAddr::parse)
        .and_then(|n| uri_addr(n.uri))
}

/// The address of a URI whose host is an IP literal.
fn uri_addr(uri: &str) -> Option<SocketAddr> {
    Uri::parse(uri)?.ip_addr()
}

/// Reads a WAV of any rate and channel count as 8 kHz mono.
pub fn read_wav(path: &std::path::Path) -> Result<Vec<i16>, PhoneError> {
    let r = hound::WavReader::open(path)
        .map_err(|e| PhoneError::Usage(format!("{}: {e}", path.display())))?;
    let spec = r.spec();
    let samples: Vec<i16> = match spec.sample_format {
        hound::SampleFormat::Int if spec.bits_per_sample <= 16 => {
            r.into_samples::<i16>().map(|s| s.unwrap_or(0)).collect()
        }
        hound::SampleFormat::Int => {
            let shift = spec.bits_per_sample.saturating_sub(16);
            r.into_samples::<i32>()
                .map(|s| (s.unwrap_or(0) >> shift) as i16)
                .collect()
        }
        hound::SampleFormat::Float => r
            .into_samples::<f32>()
            .map(|s| (s.unwrap_or(0.0).clamp(-1.0, 1.0) * 32767.0) as i16)
            .collect(),
    };
    Ok(boxless_media::audio::to_8k_mono(
        &samples,
        spec.sample_rate,
        spec.channels,
    ))
}

/// Writes 8 kHz mono 16-bit PCM.
pub fn write_wav(path: &std::path::Path, samples: &[i16]) -> Result<(), PhoneError> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 8000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec)
        .map_err(|e| PhoneError::Usage(format!("{}: {e}", path.display())))?;
    for &s in samples {
        w.write_sample(s)
            .map_err(|e| PhoneError::Usage(e.to_string()))?;
    }
    w.finalize().map_err(|e| PhoneError::Usage(e.to_string()))
}
