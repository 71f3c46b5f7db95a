//! Any SDP offer and any RTP packets: negotiation and the receiver never panic, and the
//! receiver never keeps more than its bound.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = boxless_media::negotiate(data);
    let mut rx = boxless_media::RtpReceiver::new(boxless_media::Codec::Pcmu, 0, Some(101), 8000);
    for chunk in data.chunks(172) {
        rx.receive(chunk);
    }
    assert!(rx.len() <= 8000);
    let mut d = boxless_media::DtmfDetector::default();
    let samples: Vec<i16> = data.chunks(2).map(|c| i16::from_le_bytes([c[0], *c.get(1).unwrap_or(&0)])).collect();
    d.push(&samples, |_| {});
});
