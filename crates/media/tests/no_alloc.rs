//! The packet path allocates nothing once warm: a deposit's receive (into the streaming
//! window, a second handed out at a time) and a playback's send, counted by
//! `allocation-counter` (a counting global allocator in this test binary only).

use boxless_media::{Codec, FRAME, Pending, Received, RtpReceiver, RtpSender};

#[test]
fn sixty_seconds_of_packets_in_and_out_allocate_nothing_once_warm() {
    let voice: Vec<i16> = (0..8000 * 60)
        .map(|i| ((i % 80) as i16 - 40) * 300)
        .collect();
    let mut tx = RtpSender::new(Codec::Pcmu, 0, 7, 1, 0);
    let mut packets = Vec::new();
    for f in voice.chunks(FRAME) {
        let mut b = Vec::with_capacity(12 + FRAME);
        tx.voice(f, &mut b);
        packets.push(b);
    }
    // A packet 60 ms late now and then: the reorder path too.
    for i in (50..packets.len() - 3).step_by(50) {
        packets.swap(i, i + 3);
    }
    for keep_g711 in [true, false] {
        receive_and_send(&voice, &packets, keep_g711);
    }
}

fn receive_and_send(voice: &[i16], packets: &[Vec<u8>], keep_g711: bool) {
    let mut rx = RtpReceiver::streaming(Codec::Pcmu, 0, Some(101), 8000 * 600, keep_g711);
    // Warm: the first packet fixes the rate and allocates the window.
    assert!(matches!(rx.receive(&packets[0]), Received::Audio { .. }));
    let mut out = Vec::with_capacity(12 + FRAME);
    let mut player = RtpSender::new(Codec::Pcmu, 0, 9, 1, 0);
    let mut sink = 0i64;
    let info = allocation_counter::measure(|| {
        for (p, f) in packets[1..].iter().zip(voice.chunks(FRAME)) {
            assert!(matches!(rx.receive(p), Received::Audio { .. }));
            let n = match rx.ready(false) {
                Pending::Pcm(a) => {
                    sink += a.iter().map(|&s| i64::from(s)).sum::<i64>();
                    a.len()
                }
                Pending::G711(_, a) => {
                    sink += a.iter().map(|&o| i64::from(o)).sum::<i64>();
                    a.len()
                }
            };
            rx.consume(n);
            player.voice(f, &mut out);
        }
    });
    assert_eq!(
        info.count_total, 0,
        "{} allocations for 3,000 packets in and out (keep_g711: {keep_g711})",
        info.count_total
    );
    assert_eq!(rx.len(), 8000 * 60);
    assert!(sink != 0);
}
