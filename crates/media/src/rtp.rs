//! RTP receive and send (RFC 3550, RFC 3551, RFC 4733), sans-IO.

use audio_codec::g722::{G722Decoder, G722Encoder};
use audio_codec::{Decoder as _, Encoder as _};

use crate::audio::convert_into;
use crate::g711::{Codec, Law};

/// A timestamp jump beyond this (samples) starts a new segment.
const JUMP_LIMIT: i64 = 8000 * 5;

/// What one received packet meant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Received {
    /// Voice samples were placed.
    Audio {
        /// The packet's level (RMS) reached the receiver's voice level
        /// ([`RtpReceiver::voice_level`]).
        voice: bool,
    },
    /// A key pressed: reported once per RFC 4733 event, on its first packet, so that lost
    /// end packets cannot lose the digit and repeated ones cannot double it.
    Dtmf(char),
    /// A telephone-event packet of an event already reported (repeat, end, duplicate end).
    DtmfProgress,
    /// Not ours: malformed, wrong payload type, or outside the recording window.
    Ignored,
}

/// Audio a receiver holds or hands out: 16-bit samples at the recording's rate, or G.711
/// octets (8 kHz) in the law the caller sent, kept as they came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pending<'a> {
    /// Linear samples.
    Pcm(&'a [i16]),
    /// Octets in this law.
    G711(Law, &'a [u8]),
}

impl Pending<'_> {
    /// Samples held (one octet is one G.711 sample).
    pub fn len(&self) -> usize {
        match self {
            Pending::Pcm(s) => s.len(),
            Pending::G711(_, b) => b.len(),
        }
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends the audio to `out` as linear samples.
    pub fn decode_into(&self, out: &mut Vec<i16>) {
        match *self {
            Pending::Pcm(s) => out.extend_from_slice(s),
            Pending::G711(law, b) => out.extend(b.iter().map(|&o| law.decode(o))),
        }
    }
}

/// A receiver's audio not taken yet, in the form it is kept.
enum Window {
    Pcm(Vec<i16>),
    /// A streaming G.711 call kept as sent: half the memory, no decode and re-encode.
    G711(Law, Vec<u8>),
}

impl Window {
    #[cfg(test)]
    fn len(&self) -> usize {
        self.pending().len()
    }

    fn capacity(&self) -> usize {
        match self {
            Window::Pcm(w) => w.capacity(),
            Window::G711(_, w) => w.capacity(),
        }
    }

    fn pending(&self) -> Pending<'_> {
        match self {
            Window::Pcm(w) => Pending::Pcm(w),
            Window::G711(law, w) => Pending::G711(*law, w),
        }
    }

    /// The first `n` samples were taken: the rest moves to the front.
    fn consume(&mut self, n: usize) {
        fn shift<T: Copy>(w: &mut Vec<T>, n: usize) {
            w.copy_within(n.., 0);
            w.truncate(w.len() - n);
        }
        match self {
            Window::Pcm(w) => shift(w, n),
            Window::G711(_, w) => shift(w, n),
        }
    }
}

/// Writes `src` to `w[from..to]` (growing `w` with `silence` up to `to`; `src` shorter than
/// the span leaves the rest as it was) and returns the slots written.
fn place<T: Copy>(
    w: &mut Vec<T>,
    (from, to): (usize, usize),
    silence: T,
    src: impl Iterator<Item = T>,
) -> &[T] {
    if w.len() < to {
        w.resize(to, silence);
    }
    let slots = &mut w[from..to];
    for (slot, v) in slots.iter_mut().zip(src) {
        *slot = v;
    }
    slots
}

/// Whether the sum of the samples' squares (the packet's energy) reaches `target`. It
/// stops counting once it does: a loud packet is told by its first few samples, and only
/// a quiet one is summed to the end.
fn reaches<T: Copy>(samples: &[T], target: u64, square: impl Fn(T) -> u32) -> bool {
    let mut sum = 0u64;
    for chunk in samples.chunks(16) {
        sum += chunk.iter().map(|&v| u64::from(square(v))).sum::<u64>();
        if sum >= target {
            return true;
        }
    }
    false
}

/// A streaming receiver hands its audio out once this much is pending (ms)...
const TAKE_MS: usize = 1000;
/// ...keeping back this much (ms) for packets that arrive out of order.
const REORDER_MS: usize = 100;
/// Room a streaming window has beyond the two above: one packet of up to 200 ms.
const HEADROOM_MS: usize = 200;

/// Rebuilds a caller's audio by RTP timestamp.
///
/// Each packet's samples go to the position its timestamp names, so reordered packets
/// land in order and lost ones leave silence. A new SSRC (or a timestamp jump of more than
/// five seconds) starts a new segment right after what was already recorded.
///
/// The recording's rate is the codec's at the first voice packet (8 kHz for G.711, 16 kHz
/// for G.722); a later codec change is converted to it, so one message has one rate.
///
/// A [`RtpReceiver::streaming`] receiver keeps only a window of the recording (G.711 as
/// sent, when asked to keep it): its owner takes [`RtpReceiver::ready`] audio (about a
/// second at a time, the last 100 ms kept back for late packets) and calls
/// [`RtpReceiver::consume`]. The window is allocated once, so memory per call does not
/// grow with the message and no packet allocates; a packet older than the window is
/// dropped, and a gap of loss too wide for it closes up (the audio after
/// it follows on) instead of growing the window.
pub struct RtpReceiver {
    codec: Codec,
    pt: u8,
    dtmf_pt: Option<u8>,
    /// Limit in 8 kHz samples; scaled to the recording's rate.
    max_samples: usize,
    /// Recording rate, fixed by the first voice packet.
    rate: Option<u32>,
    g722: Option<Box<G722Decoder>>,
    /// Decoded payload, then converted: reused, no allocation per packet once warm.
    pcm: Vec<i16>,
    conv: Vec<i16>,
    /// Audio not yet taken: `window[i]` is position `base + i`.
    window: Window,
    /// Streaming: the window's size, fixed at the first voice packet.
    streaming: bool,
    /// Streaming: a G.711 call's window keeps its octets.
    keep_g711: bool,
    base: usize,
    /// (ssrc, timestamp at segment start, position of segment start)
    segment: Option<(u32, u32, usize)>,
    last_dtmf: Option<(u32, u32)>,
    /// A packet at this RMS or above is voice.
    voice_rms: f64,
    /// Highest position written + 1.
    end: usize,
    /// Packets taken as audio.
    pub packets: u64,
}

impl std::fmt::Debug for RtpReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RtpReceiver")
            .field("codec", &self.codec)
            .field("rate", &self.rate)
            .field("recorded", &self.end)
            .field("taken", &self.base)
            .field("packets", &self.packets)
            .finish()
    }
}

impl RtpReceiver {
    /// A receiver for the negotiated payload types keeping at most `max_samples` (counted
    /// at 8 kHz: that many 125 µs of audio, whatever the codec), all of it in memory.
    pub fn new(codec: Codec, pt: u8, dtmf_pt: Option<u8>, max_samples: usize) -> RtpReceiver {
        RtpReceiver {
            codec,
            pt,
            dtmf_pt,
            max_samples,
            rate: None,
            g722: (codec == Codec::G722).then(|| Box::new(G722Decoder::new())),
            pcm: Vec::with_capacity(640),
            conv: Vec::with_capacity(640),
            window: Window::Pcm(Vec::new()),
            streaming: false,
            keep_g711: false,
            base: 0,
            segment: None,
            last_dtmf: None,
            voice_rms: 0.0,
            end: 0,
            packets: 0,
        }
    }

    /// A receiver whose owner takes the audio as it comes ([`RtpReceiver::ready`]): memory
    /// bounded by a window of about 1.3 s, whatever the message's length. `keep_g711`: a
    /// call whose first voice is G.711 is kept (and handed out) in that law; a later
    /// packet of the other law or G.722 is transcoded to it.
    pub fn streaming(
        codec: Codec,
        pt: u8,
        dtmf_pt: Option<u8>,
        max_samples: usize,
        keep_g711: bool,
    ) -> Self {
        RtpReceiver {
            streaming: true,
            keep_g711,
            ..RtpReceiver::new(codec, pt, dtmf_pt, max_samples)
        }
    }

    /// The most it keeps, counted at 8 kHz.
    pub fn max_samples(&self) -> usize {
        self.max_samples
    }

    /// Packets at `rms` or above are reported as voice (default 0: every audio packet).
    pub fn voice_level(self, rms: f64) -> Self {
        RtpReceiver {
            voice_rms: rms,
            ..self
        }
    }

    /// The payload types after a new offer/answer (a codec change keeps the recording).
    pub fn set_payload(&mut self, codec: Codec, pt: u8, dtmf_pt: Option<u8>) {
        if codec == Codec::G722 && self.codec != Codec::G722 {
            self.g722 = Some(Box::new(G722Decoder::new()));
        }
        (self.codec, self.pt, self.dtmf_pt) = (codec, pt, dtmf_pt);
    }

    /// The recording's sample rate (Hz): the codec's until the first voice packet fixed it.
    pub fn rate(&self) -> u32 {
        self.rate.unwrap_or(self.codec.rate())
    }

    fn ms(&self, ms: usize) -> usize {
        self.rate() as usize * ms / 1000
    }

    /// Takes one datagram.
    pub fn receive(&mut self, datagram: &[u8]) -> Received {
        let Ok(p) = rtp_types::RtpPacket::parse(datagram) else {
            return Received::Ignored;
        };
        if Some(p.payload_type()) == self.dtmf_pt {
            return self.dtmf(p.ssrc(), p.timestamp(), p.payload());
        }
        if p.payload_type() != self.pt || p.payload().is_empty() {
            return Received::Ignored;
        }
        if self.rate.is_none() {
            self.rate = Some(self.codec.rate());
            if self.streaming {
                // Allocated once, exactly: the window never grows past it.
                let cap = self.ms(TAKE_MS + REORDER_MS + HEADROOM_MS);
                self.window = match self.codec.law() {
                    Some(law) if self.keep_g711 => Window::G711(law, Vec::with_capacity(cap)),
                    _ => Window::Pcm(Vec::with_capacity(cap)),
                };
            }
        }
        // In the window's own law the payload is the audio: copied, never decoded.
        let as_sent = matches!(self.window, Window::G711(law, _) if Some(law) == self.codec.law());
        let n = if as_sent {
            p.payload().len()
        } else {
            self.decode(p.payload());
            self.conv.len()
        };
        let rate = self.rate();
        // RTP clocks G.711 and G.722 alike at 8 kHz: one tick is `per_tick` samples here.
        let per_tick = (rate / 8000).max(1) as i64;
        let ssrc = p.ssrc();
        let ts = p.timestamp();
        let mut pos = match self.segment {
            Some((s, base_ts, base_pos)) if s == ssrc => {
                let delta = ts.wrapping_sub(base_ts) as i32 as i64;
                let pos = base_pos as i64 + delta * per_tick;
                if pos < 0 || (pos - self.end as i64).abs() > JUMP_LIMIT * per_tick {
                    self.segment = Some((ssrc, ts, self.end));
                    self.end
                } else {
                    pos as usize
                }
            }
            _ => {
                self.segment = Some((ssrc, ts, self.end));
                self.end
            }
        };
        if self.streaming && pos + n > self.base + self.window.capacity() {
            // Loss wider than the window: what follows joins the recording's end.
            self.segment = Some((ssrc, ts, self.end));
            pos = self.end;
        }
        let max = self.max_samples * per_tick as usize;
        let mut stop = (pos + n).min(max);
        if self.streaming {
            stop = stop.min(self.base + self.window.capacity());
        }
        // Samples before `base` were taken already: too late for them.
        let skip = self.base.saturating_sub(pos);
        let pos = pos.max(self.base);
        if pos >= stop {
            return Received::Ignored;
        }
        let span = (pos - self.base, stop - self.base);
        // RMS >= voice_rms, squared and times the samples: no division, no root.
        let target = (self.voice_rms * self.voice_rms * (stop - pos) as f64).ceil() as u64;
        let voice = match &mut self.window {
            Window::Pcm(w) => {
                let placed = place(w, span, 0, self.conv[skip..].iter().copied());
                reaches(placed, target, |v| {
                    let v = i32::from(v);
                    (v * v) as u32
                })
            }
            &mut Window::G711(law, ref mut w) => {
                let silence = law.encode(0);
                let placed = if as_sent {
                    place(w, span, silence, p.payload()[skip..].iter().copied())
                } else {
                    let src = self.conv[skip..].iter().map(|&v| law.encode(v));
                    place(w, span, silence, src)
                };
                let squares = law.squares();
                reaches(placed, target, |o| squares[usize::from(o)])
            }
        };
        self.end = self.end.max(stop);
        self.packets += 1;
        Received::Audio { voice }
    }

    /// Decodes a voice payload at the codec's rate into `conv`, at the recording's rate.
    fn decode(&mut self, payload: &[u8]) {
        self.pcm.clear();
        match (self.codec.law(), self.g722.as_mut()) {
            (Some(law), _) => self.pcm.extend(payload.iter().map(|&b| law.decode(b))),
            (None, Some(d)) => {
                self.pcm.resize(payload.len() * 2, 0);
                let n = d.decode_into(payload, &mut self.pcm).unwrap_or(0);
                self.pcm.truncate(n);
            }
            // G.722 always has its decoder (made with the codec): nothing to decode else.
            (None, None) => {}
        }
        self.conv.clear();
        convert_into(&self.pcm, self.codec.rate(), self.rate(), &mut self.conv);
    }

    fn dtmf(&mut self, ssrc: u32, ts: u32, payload: &[u8]) -> Received {
        if payload.len() < 4 {
            return Received::Ignored;
        }
        // An event is named by its timestamp (RFC 4733 §2.5.1): every packet of one key
        // press carries the same one.
        if self.last_dtmf == Some((ssrc, ts)) {
            return Received::DtmfProgress;
        }
        self.last_dtmf = Some((ssrc, ts));
        match event_char(payload[0]) {
            Some(c) => Received::Dtmf(c),
            None => Received::DtmfProgress,
        }
    }

    /// Samples recorded so far (at [`RtpReceiver::rate`]), taken or not.
    pub fn len(&self) -> usize {
        self.end
    }

    /// Audio recorded so far, in 8 kHz samples (125 µs units, whatever the rate).
    pub fn len_8k(&self) -> usize {
        self.end * 8000 / self.rate() as usize
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.end == 0
    }

    /// The recording (of a receiver nothing was taken from: all of it), as linear samples.
    pub fn into_samples(self) -> Vec<i16> {
        match self.window {
            Window::Pcm(mut w) => {
                w.truncate(self.end - self.base);
                w
            }
            Window::G711(..) => {
                let mut out = Vec::new();
                self.window.pending().decode_into(&mut out);
                out
            }
        }
    }

    /// Audio due to be taken: a second or more, less the last 100 ms (late packets may
    /// still land there); empty while less is pending. `all`: everything (the end).
    pub fn ready(&self, all: bool) -> Pending<'_> {
        let pending = self.end - self.base;
        let due = if all {
            pending
        } else if pending >= self.ms(TAKE_MS + REORDER_MS) {
            pending - self.ms(REORDER_MS)
        } else {
            0
        };
        match &self.window {
            Window::Pcm(w) => Pending::Pcm(&w[..due]),
            Window::G711(law, w) => Pending::G711(*law, &w[..due]),
        }
    }

    /// The first `n` pending samples were taken (stored): the window moves on.
    pub fn consume(&mut self, n: usize) {
        let n = n.min(self.end - self.base);
        self.window.consume(n);
        self.base += n;
    }
}

/// Decodes the G.711 voice payload of an RTP packet of payload type `pt` into `out`; false
/// for anything else (other payload types, malformed packets, G.722, whose decoder has
/// state: its callers send RFC 4733 events).
pub fn decode_voice(datagram: &[u8], codec: Codec, pt: u8, out: &mut Vec<i16>) -> bool {
    let Ok(p) = rtp_types::RtpPacket::parse(datagram) else {
        return false;
    };
    let Some(law) = codec.law().filter(|_| p.payload_type() == pt) else {
        return false;
    };
    out.extend(p.payload().iter().map(|&b| law.decode(b)));
    true
}

/// The RFC 4733 event code of a DTMF character.
pub fn event_code(c: char) -> Option<u8> {
    match c {
        '0'..='9' => Some(c as u8 - b'0'),
        '*' => Some(10),
        '#' => Some(11),
        'A'..='D' => Some(c as u8 - b'A' + 12),
        _ => None,
    }
}

/// The DTMF character of an RFC 4733 event code.
pub fn event_char(e: u8) -> Option<char> {
    match e {
        0..=9 => Some((b'0' + e) as char),
        10 => Some('*'),
        11 => Some('#'),
        12..=15 => Some((b'A' + e - 12) as char),
        _ => None,
    }
}

/// Packetises audio at the codec's rate into 20 ms RTP packets.
pub struct RtpSender {
    ssrc: u32,
    seq: u16,
    ts: u32,
    codec: Codec,
    pt: u8,
    marker: bool,
    g722: Option<Box<G722Encoder>>,
}

impl std::fmt::Debug for RtpSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RtpSender")
            .field("ssrc", &self.ssrc)
            .field("seq", &self.seq)
            .field("codec", &self.codec)
            .finish()
    }
}

/// Samples per 20 ms packet.
pub const FRAME: usize = 160;

impl RtpSender {
    /// A sender with the given SSRC and random-start sequence/timestamp.
    pub fn new(codec: Codec, pt: u8, ssrc: u32, seq: u16, ts: u32) -> RtpSender {
        RtpSender {
            ssrc,
            seq,
            ts,
            codec,
            pt,
            marker: true,
            g722: (codec == Codec::G722).then(|| Box::new(G722Encoder::new())),
        }
    }

    /// The voice codec after a new offer/answer; the stream (SSRC, sequence) goes on.
    pub fn set_payload(&mut self, codec: Codec, pt: u8) {
        if (codec, pt) != (self.codec, self.pt) {
            (self.codec, self.pt, self.marker) = (codec, pt, true);
            if codec == Codec::G722 && self.g722.is_none() {
                self.g722 = Some(Box::new(G722Encoder::new()));
            }
        }
    }

    /// The codec it sends.
    pub fn codec(&self) -> Codec {
        self.codec
    }

    fn header(&mut self, out: &mut Vec<u8>, pt: u8, marker: bool) {
        out.clear();
        out.push(0x80);
        out.push(pt | if marker { 0x80 } else { 0 });
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.ts.to_be_bytes());
        out.extend_from_slice(&self.ssrc.to_be_bytes());
        self.seq = self.seq.wrapping_add(1);
    }

    /// Writes one 20 ms voice packet of up to `codec.frame()` samples at the codec's rate
    /// (padded with silence) into `out`.
    pub fn voice(&mut self, frame: &[i16], out: &mut Vec<u8>) {
        let m = std::mem::take(&mut self.marker);
        self.header(out, self.pt, m);
        let n = self.codec.frame();
        match (self.codec.law(), self.g722.as_mut()) {
            (Some(law), _) => {
                for i in 0..n {
                    out.push(law.encode(frame.get(i).copied().unwrap_or(0)));
                }
            }
            (None, Some(e)) => {
                let mut pcm = [0i16; 320];
                let take = frame.len().min(n);
                pcm[..take].copy_from_slice(&frame[..take]);
                let head = out.len();
                // The encoder wants room for one code more than a frame makes.
                out.resize(head + n / 2 + 1, 0);
                let written = e.encode_into(&pcm[..n], &mut out[head..]).unwrap_or(0);
                out.truncate(head + written);
            }
            // G.722 always has its encoder (made with the codec): an empty payload else.
            (None, None) => {}
        }
        // RTP clocks G.711 and G.722 alike at 8 kHz (RFC 3551).
        self.ts = self.ts.wrapping_add(FRAME as u32);
    }

    /// Writes one RFC 4733 packet for `digit` that has lasted `duration` samples so far.
    /// The event keeps the timestamp of its start; call [`RtpSender::end_event`] afterwards.
    pub fn dtmf(
        &mut self,
        dtmf_pt: u8,
        digit: char,
        duration: u16,
        end: bool,
        first: bool,
        out: &mut Vec<u8>,
    ) {
        self.header(out, dtmf_pt, first);
        out.push(event_code(digit).unwrap_or(0));
        out.push(if end { 0x80 } else { 0 } | 10);
        out.extend_from_slice(&duration.to_be_bytes());
    }

    /// Advances the timestamp past an event of `duration` samples.
    pub fn end_event(&mut self, duration: u16) {
        self.ts = self.ts.wrapping_add(duration as u32);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packets(samples: &[i16], ssrc: u32) -> Vec<Vec<u8>> {
        let mut tx = RtpSender::new(Codec::Pcmu, 0, ssrc, 1000, 77);
        samples
            .chunks(FRAME)
            .map(|f| {
                let mut b = Vec::new();
                tx.voice(f, &mut b);
                b
            })
            .collect()
    }

    fn ramp(n: usize) -> Vec<i16> {
        (0..n).map(|i| ((i % 400) as i16 - 200) * 40).collect()
    }

    #[test]
    fn a_packet_is_voice_when_its_rms_reaches_the_level_quiet_or_loud_or_half_each() {
        let d = f64::from(Law::Ulaw.decode(Law::Ulaw.encode(1000)));
        // Loud first half, silent second: RMS d / sqrt(2), found only by summing to the end.
        let mut half = vec![1000i16; FRAME / 2];
        half.resize(FRAME, 0);
        for (frame, rms) in [(vec![1000i16; FRAME], d), (half, d / 2f64.sqrt())] {
            for keep_g711 in [false, true] {
                for (level, voice) in [(rms - 0.01, true), (rms + 0.01, false), (0.0, true)] {
                    let mut rx = RtpReceiver::streaming(Codec::Pcmu, 0, None, 8000, keep_g711)
                        .voice_level(level);
                    let p = &packets(&frame, 1)[0];
                    assert_eq!(
                        rx.receive(p),
                        Received::Audio { voice },
                        "rms {rms:.2} at level {level:.2}, keep_g711 {keep_g711}"
                    );
                }
            }
        }
    }

    #[test]
    fn reordered_packets_land_in_order() {
        let audio = ramp(1600);
        let mut p = packets(&audio, 1);
        p.swap(2, 5);
        p.swap(7, 8);
        let mut rx = RtpReceiver::new(Codec::Pcmu, 0, None, 8000);
        for d in &p {
            assert!(matches!(rx.receive(d), Received::Audio { .. }));
        }
        let got = rx.into_samples();
        let want: Vec<i16> = audio
            .iter()
            .map(|&s| Law::Ulaw.decode(Law::Ulaw.encode(s)))
            .collect();
        assert_eq!(got, want);
    }

    /// Feeds `p` to a streaming receiver, taking audio as the deposit does.
    fn stream(rx: &mut RtpReceiver, p: &[Vec<u8>], taken: &mut Vec<i16>) {
        for d in p {
            rx.receive(d);
            let due = rx.ready(false);
            let n = due.len();
            due.decode_into(taken);
            rx.consume(n);
        }
    }

    #[test]
    fn streaming_hands_out_every_sample_once_from_a_window_allocated_once() {
        for keep_g711 in [false, true] {
            let audio = ramp(8000 * 10);
            let mut p = packets(&audio, 1);
            // Late by up to 80 ms: inside what the window keeps back.
            for i in (10..p.len() - 5).step_by(37) {
                p.swap(i, i + 4);
            }
            let mut rx = RtpReceiver::streaming(Codec::Pcmu, 0, None, 8000 * 60, keep_g711);
            let mut taken = Vec::new();
            stream(&mut rx, &p[..1], &mut taken);
            let cap = rx.window.capacity();
            assert_eq!(cap, 8000 * 13 / 10, "1.3 s at 8 kHz");
            stream(&mut rx, &p[1..], &mut taken);
            assert_eq!(rx.window.capacity(), cap, "never grown");
            assert!(taken.len() >= 9 * 8000, "taken as it came: {}", taken.len());
            rx.ready(true).decode_into(&mut taken);
            let want: Vec<i16> = audio
                .iter()
                .map(|&s| Law::Ulaw.decode(Law::Ulaw.encode(s)))
                .collect();
            assert_eq!(taken, want, "keep_g711: {keep_g711}");
        }
    }

    #[test]
    fn a_g711_call_is_kept_as_sent_and_another_law_is_transcoded_into_it() {
        let audio = ramp(8000 * 2);
        let p = packets(&audio, 1);
        let mut rx = RtpReceiver::streaming(Codec::Pcmu, 0, None, 8000 * 60, true);
        for d in &p[..3] {
            rx.receive(d);
        }
        // A lost packet, then one more: the hole is µ-law silence, not octet 0 (a loud click).
        rx.receive(&p[4]);
        let Pending::G711(Law::Ulaw, kept) = rx.ready(true) else {
            panic!("kept in µ-law: {:?}", rx.ready(true))
        };
        let sent = |d: &[u8]| rtp_types::RtpPacket::parse(d).unwrap().payload().to_vec();
        assert_eq!(&kept[..FRAME], &sent(&p[0])[..], "the octets as sent");
        assert!(
            kept[3 * FRAME..4 * FRAME]
                .iter()
                .all(|&o| o == Law::Ulaw.encode(0))
        );
        assert_eq!(&kept[4 * FRAME..], &sent(&p[4])[..]);
        assert_eq!(rx.window.capacity(), 8000 * 13 / 10, "1.3 s of octets");
        // The caller moves to A-law (re-INVITE): the recording stays µ-law.
        rx.set_payload(Codec::Pcma, 8, None);
        let mut tx = RtpSender::new(Codec::Pcma, 8, 1, 1005, 77 + 5 * FRAME as u32);
        let mut d = Vec::new();
        tx.voice(&audio[5 * FRAME..6 * FRAME], &mut d);
        assert!(matches!(rx.receive(&d), Received::Audio { .. }));
        let Pending::G711(Law::Ulaw, kept) = rx.ready(true) else {
            panic!("still µ-law")
        };
        for (&o, &s) in kept[5 * FRAME..].iter().zip(&audio[5 * FRAME..]) {
            let (got, want) = (Law::Ulaw.decode(o) as i32, s as i32);
            assert!((got - want).abs() <= want.abs() / 8 + 16, "{got} vs {want}");
        }
    }

    #[test]
    fn streaming_drops_what_comes_too_late_and_closes_wide_gaps() {
        let audio = ramp(8000 * 4);
        let p = packets(&audio, 1);
        let mut rx = RtpReceiver::streaming(Codec::Pcmu, 0, None, 8000 * 60, true);
        let mut taken = Vec::new();
        stream(&mut rx, &p[..100], &mut taken);
        assert!(!taken.is_empty());
        assert_eq!(
            rx.receive(&p[0]),
            Received::Ignored,
            "2 s late: taken already"
        );
        // 3 s lost (150 packets), then audio again: it follows on at once.
        let later = packets(&ramp(8000 * 8), 1);
        let before = rx.len();
        stream(&mut rx, &later[250..260], &mut taken);
        assert_eq!(rx.len(), before + 1600, "the gap closed up");
        assert!(rx.window.len() <= rx.window.capacity());
    }

    #[test]
    fn loss_leaves_silence_and_ssrc_change_appends() {
        let audio = ramp(800);
        let p = packets(&audio, 1);
        let mut rx = RtpReceiver::new(Codec::Pcmu, 0, None, 8000);
        for (i, d) in p.iter().enumerate() {
            if i != 2 {
                rx.receive(d);
            }
        }
        assert_eq!(rx.len(), 800);
        let mut heard = Vec::new();
        rx.ready(true).decode_into(&mut heard);
        assert!(heard[320..480].iter().all(|&s| s == 0));
        for d in packets(&audio, 2) {
            rx.receive(&d);
        }
        assert_eq!(rx.len(), 1600);
    }

    #[test]
    fn g722_is_recorded_wideband_and_converted_when_the_codec_changes() {
        // 1 s of a 5 kHz tone at 16 kHz: above G.711's band, inside G.722's.
        let tone: Vec<i16> = (0..16_000)
            .map(|i| {
                ((i as f64 * 5000.0 * 2.0 * std::f64::consts::PI / 16_000.0).sin() * 8000.0) as i16
            })
            .collect();
        let mut tx = RtpSender::new(Codec::G722, 9, 7, 100, 1000);
        let mut rx = RtpReceiver::new(Codec::G722, 9, None, 8000 * 10);
        let mut b = Vec::new();
        for f in tone.chunks(320) {
            tx.voice(f, &mut b);
            assert_eq!(b.len(), 12 + 160, "64 kbit/s: 160 octets per 20 ms");
            assert!(matches!(rx.receive(&b), Received::Audio { .. }));
        }
        assert_eq!(rx.rate(), 16_000);
        assert_eq!((rx.len(), rx.len_8k()), (16_000, 8000), "one second");
        let mut got = Vec::new();
        rx.ready(true).decode_into(&mut got);
        // ADPCM delays a little; the tone comes through (and would not through G.711).
        let (corr, lag) = crate::audio::best_correlation(&tone[1000..15_000], &got, 100);
        assert!(
            corr > 0.9,
            "G.722 round trip: correlation {corr} at lag {lag}"
        );
        // A re-INVITE to PCMU mid-message: its 8 kHz audio joins the 16 kHz recording.
        rx.set_payload(Codec::Pcmu, 0, None);
        tx.set_payload(Codec::Pcmu, 0);
        for f in ramp(1600).chunks(FRAME) {
            tx.voice(f, &mut b);
            rx.receive(&b);
        }
        assert_eq!(rx.len(), 16_000 + 3200, "200 ms more, at 16 kHz");
    }

    #[test]
    fn hostile_g722_payloads_neither_panic_nor_exceed_the_limit() {
        let mut rx = RtpReceiver::new(Codec::G722, 9, Some(101), 800);
        let mut seed = 7u32;
        for (i, len) in [0usize, 1, 3, 160, 161, 1400]
            .into_iter()
            .cycle()
            .take(60)
            .enumerate()
        {
            let mut d = vec![0x80, 9, 0, i as u8, 0, 0, (i * 3) as u8, 0, 0, 0, 0, 1];
            d.extend((0..len).map(|_| {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                (seed >> 16) as u8
            }));
            rx.receive(&d);
        }
        assert!(rx.len() <= 1600, "100 ms at 16 kHz at most: {}", rx.len());
    }

    #[test]
    fn hostile_packets_are_ignored_and_bounded() {
        let mut rx = RtpReceiver::new(Codec::Pcmu, 0, Some(101), 480);
        assert_eq!(rx.receive(b"\x00"), Received::Ignored);
        let mut p = packets(&ramp(1600), 9);
        for d in &mut p {
            rx.receive(d);
        }
        assert_eq!(rx.len(), 480);
        p[0][1] = 96;
        assert_eq!(rx.receive(&p[0]), Received::Ignored);
    }

    #[test]
    fn dtmf_once_per_event_with_repeats_duplicates_and_lost_ends() {
        let mut tx = RtpSender::new(Codec::Pcmu, 0, 5, 1, 1);
        let mut rx = RtpReceiver::new(Codec::Pcmu, 0, Some(101), 8000);
        let mut b = Vec::new();
        tx.dtmf(101, '#', 160, false, true, &mut b);
        assert_eq!(rx.receive(&b), Received::Dtmf('#'));
        tx.dtmf(101, '#', 480, false, false, &mut b);
        assert_eq!(rx.receive(&b), Received::DtmfProgress, "a repeat");
        for _ in 0..3 {
            tx.dtmf(101, '#', 800, true, false, &mut b);
            assert_eq!(
                rx.receive(&b),
                Received::DtmfProgress,
                "the three end packets"
            );
        }
        tx.end_event(800);
        // The next press: its end packets are all lost, yet it counts once.
        tx.dtmf(101, '#', 160, false, true, &mut b);
        assert_eq!(rx.receive(&b), Received::Dtmf('#'));
        tx.end_event(800);
        // A press whose first packets were lost: its first end packet reports it.
        tx.dtmf(101, '5', 800, true, false, &mut b);
        assert_eq!(rx.receive(&b), Received::Dtmf('5'));
        assert_eq!(rx.receive(&b), Received::DtmfProgress);
        assert_eq!(rx.receive(&b[..3]), Received::Ignored);
    }
}
