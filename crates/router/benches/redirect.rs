//! CPU cost of the redirect decision and the 302 (no sockets).
//! Run: `cargo bench -p boxless-router --bench redirect`
use std::sync::Arc;

use boxless_core::{LinkPool, Numbering, Rng, RouterMode, ServerSlot, StatusBoard, StatusView};
use boxless_router::RouterCore;
use criterion::{Criterion, black_box, criterion_group, criterion_main};

const INVITE: &[u8] = b"INVITE sip:+15551230002@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:25090;branch=z9hG4bK-1-1-0\r\nFrom: sipp <sip:+15551230001@127.0.0.1:25090>;tag=1\r\nTo: <sip:+15551230002@127.0.0.1:5060>\r\nCall-ID: 1-12345@127.0.0.1\r\nCSeq: 1 INVITE\r\nContact: <sip:sipp@127.0.0.1:25090>\r\nMax-Forwards: 70\r\nSubject: Performance Test\r\nContent-Type: application/sdp\r\nContent-Length: 0\r\n\r\n";

fn bench(c: &mut Criterion) {
    let slots = (0..2)
        .map(|i| {
            let s = ServerSlot::new(
                &format!("ms{i}"),
                ([127, 0, 0, 1], 5070 + 2 * i).into(),
                LinkPool::parse(&[format!("+1800555{:04}", 100 + i)]).unwrap(),
                100,
            );
            s.publish(StatusView::up(100, u64::MAX / 2));
            s
        })
        .collect();
    let core = RouterCore {
        board: Arc::new(StatusBoard::new(slots)),
        numbering: Numbering::new("1").unwrap(),
        mode: RouterMode::Redirect,
        ttl_ms: u64::MAX / 2,
        retry_after: 30,
        redirect_contacts: 2,
        gate: boxless_router::decide::Gate::new(
            boxless_core::PeerFilter::parse(&["10.0.0.0/8", "127.0.0.0/8", "::1/128"]).unwrap(),
            u32::MAX,
            1,
        ),
    };
    let src: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    let mut rng = Rng::seeded(1);
    let mut out = Vec::with_capacity(2048);
    let mut scratch = String::with_capacity(256);
    c.bench_function("redirect_invite", |b| {
        b.iter(|| {
            let m = boxless_sip::Message::parse(black_box(INVITE), false).unwrap();
            let now = u64::MAX / 2 + 1;
            let v = match core.admit(&m, src, now) {
                boxless_router::decide::Admission::Pass => core.decide(&m, now, &mut rng),
                a => RouterCore::refuse(a),
            };
            core.write(&m, v, &mut scratch, &mut out);
            out.len()
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
