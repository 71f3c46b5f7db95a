//! RTP receive and send (RFC 3550, RFC 3551, RFC 4733), sans-IO.

use crate::g711::Codec;

/// A timestamp jump beyond this (samples) starts a new segment.
const JUMP_LIMIT: i64 = 8000 * 5;

/// What one received packet meant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Received {
    /// Voice samples were placed; `rms` is their level.
    Audio {
        /// RMS of the packet's samples.
        rms: f64,
    },
    /// A key pressed: reported once per RFC 4733 event, on its first packet, so that lost
    /// end packets cannot lose the digit and repeated ones cannot double it.
    Dtmf(char),
    /// A telephone-event packet of an event already reported (repeat, end, duplicate end).
    DtmfProgress,
    /// Not ours: malformed, wrong payload type, or outside the recording window.
    Ignored,
}

/// Rebuilds a caller's audio by RTP timestamp.
///
/// Each packet's samples go to the position its timestamp names, so reordered packets
/// land in order and lost ones leave silence. A new SSRC (or a timestamp jump of more than
/// five seconds) starts a new segment right after what was already recorded.
#[derive(Debug)]
pub struct RtpReceiver {
    codec: Codec,
    pt: u8,
    dtmf_pt: Option<u8>,
    max_samples: usize,
    samples: Vec<i16>,
    /// (ssrc, timestamp at segment start, position of segment start)
    segment: Option<(u32, u32, usize)>,
    last_dtmf: Option<(u32, u32)>,
    /// Highest position written + 1.
    end: usize,
    /// Packets taken as audio.
    pub packets: u64,
}

impl RtpReceiver {
    /// A receiver for the negotiated payload types keeping at most `max_samples`.
    pub fn new(codec: Codec, pt: u8, dtmf_pt: Option<u8>, max_samples: usize) -> RtpReceiver {
        RtpReceiver {
            codec,
            pt,
            dtmf_pt,
            max_samples,
            samples: Vec::new(),
            segment: None,
            last_dtmf: None,
            end: 0,
            packets: 0,
        }
    }

    /// The payload types after a new offer/answer (a codec change keeps the recording).
    pub fn set_payload(&mut self, codec: Codec, pt: u8, dtmf_pt: Option<u8>) {
        (self.codec, self.pt, self.dtmf_pt) = (codec, pt, dtmf_pt);
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
        let ssrc = p.ssrc();
        let ts = p.timestamp();
        let pos = match self.segment {
            Some((s, base_ts, base_pos)) if s == ssrc => {
                let delta = ts.wrapping_sub(base_ts) as i32 as i64;
                let pos = base_pos as i64 + delta;
                if pos < 0 || (pos - self.end as i64).abs() > JUMP_LIMIT {
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
        let payload = p.payload();
        let stop = (pos + payload.len()).min(self.max_samples);
        if pos >= stop {
            return Received::Ignored;
        }
        if self.samples.len() < stop {
            self.samples.resize(stop, 0);
        }
        let mut sum = 0f64;
        for (slot, &b) in self.samples[pos..stop].iter_mut().zip(payload) {
            *slot = self.codec.decode(b);
            sum += (*slot as f64) * (*slot as f64);
        }
        self.end = self.end.max(stop);
        self.packets += 1;
        Received::Audio {
            rms: (sum / (stop - pos) as f64).sqrt(),
        }
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

    /// Samples recorded so far (8 kHz).
    pub fn len(&self) -> usize {
        self.end
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.end == 0
    }

    /// The recording.
    pub fn into_samples(mut self) -> Vec<i16> {
        self.samples.truncate(self.end);
        self.samples
    }

    /// The recording so far.
    pub fn samples(&self) -> &[i16] {
        &self.samples[..self.end]
    }
}

/// Decodes the voice payload of an RTP packet of payload type `pt` into `out`; false for
/// anything else (other payload types, malformed packets).
pub fn decode_voice(datagram: &[u8], codec: Codec, pt: u8, out: &mut Vec<i16>) -> bool {
    let Ok(p) = rtp_types::RtpPacket::parse(datagram) else {
        return false;
    };
    if p.payload_type() != pt {
        return false;
    }
    out.extend(p.payload().iter().map(|&b| codec.decode(b)));
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

/// Packetises 8 kHz audio into 20 ms RTP packets.
#[derive(Debug, Clone)]
pub struct RtpSender {
    ssrc: u32,
    seq: u16,
    ts: u32,
    codec: Codec,
    pt: u8,
    marker: bool,
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
        }
    }

    /// The voice codec after a new offer/answer; the stream (SSRC, sequence) goes on.
    pub fn set_payload(&mut self, codec: Codec, pt: u8) {
        if (codec, pt) != (self.codec, self.pt) {
            (self.codec, self.pt, self.marker) = (codec, pt, true);
        }
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

    /// Writes one voice packet of up to [`FRAME`] samples (padded with silence) into `out`.
    pub fn voice(&mut self, frame: &[i16], out: &mut Vec<u8>) {
        let m = std::mem::take(&mut self.marker);
        self.header(out, self.pt, m);
        for i in 0..FRAME {
            out.push(self.codec.encode(frame.get(i).copied().unwrap_or(0)));
        }
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
            .map(|&s| Codec::Pcmu.decode(Codec::Pcmu.encode(s)))
            .collect();
        assert_eq!(got, want);
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
        assert!(rx.samples()[320..480].iter().all(|&s| s == 0));
        for d in packets(&audio, 2) {
            rx.receive(&d);
        }
        assert_eq!(rx.len(), 1600);
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
