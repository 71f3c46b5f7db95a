//! The per-packet cost of media: a deposit's receive (parse, placement in the streaming
//! window, as sent or decoded to 16-bit, handing out a second at a time) and a playback's send (encode, header).
//! Run: `cargo bench -p boxless-media --bench rtp`
use boxless_media::{Codec, FRAME, Received, RtpReceiver, RtpSender};
use criterion::{Criterion, black_box, criterion_group, criterion_main};

fn voice(n: usize) -> Vec<i16> {
    (0..n).map(|i| ((i % 80) as i16 - 40) * 300).collect()
}

fn bench(c: &mut Criterion) {
    // 10 s of 20 ms PCMU packets, replayed with timestamps moving on so that the receiver
    // keeps recording.
    let mut tx = RtpSender::new(Codec::Pcmu, 0, 7, 1, 0);
    let packets: Vec<Vec<u8>> = voice(8000 * 10)
        .chunks(FRAME)
        .map(|f| {
            let mut b = Vec::new();
            tx.voice(f, &mut b);
            b
        })
        .collect();
    for (name, keep_g711) in [
        ("receive_pcmu_packet_kept_as_sent", true),
        ("receive_pcmu_packet_to_pcm16", false),
    ] {
        receive(c, name, &packets, keep_g711);
    }
    let frame = voice(FRAME);
    let mut out = Vec::with_capacity(12 + FRAME);
    let mut tx = RtpSender::new(Codec::Pcmu, 0, 9, 1, 0);
    c.bench_function("send_pcmu_packet", |b| {
        b.iter(|| {
            tx.voice(black_box(&frame), &mut out);
            out.len()
        })
    });
}

fn receive(c: &mut Criterion, name: &str, packets: &[Vec<u8>], keep_g711: bool) {
    // The level the server takes for voice (`CallSettings::voice_rms`).
    let mut rx = RtpReceiver::streaming(Codec::Pcmu, 0, Some(101), usize::MAX / 4, keep_g711)
        .voice_level(300.0);
    let mut i = 0usize;
    let mut taken = 0usize;
    c.bench_function(name, |b| {
        b.iter(|| {
            let p = &packets[i % packets.len()];
            // Later laps: the same packets, 10 s on.
            let lap = (i / packets.len()) as u32 * 80_000;
            let mut d = [0u8; 12 + FRAME];
            d[..p.len()].copy_from_slice(p);
            let ts = u32::from_be_bytes([d[4], d[5], d[6], d[7]]).wrapping_add(lap);
            d[4..8].copy_from_slice(&ts.to_be_bytes());
            i += 1;
            let r = rx.receive(black_box(&d[..p.len()]));
            let n = rx.ready(false).len();
            taken += n;
            rx.consume(n);
            matches!(r, Received::Audio { .. })
        })
    });
    black_box(taken);
}

criterion_group!(benches, bench);
criterion_main!(benches);
