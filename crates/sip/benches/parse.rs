//! Parsing cost of a typical forwarded INVITE (the router's per-call work).
//! Run: `cargo bench -p boxless-sip --bench parse`
use criterion::{Criterion, black_box, criterion_group, criterion_main};

const INVITE: &[u8] = b"INVITE sip:+15551230002@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:25090;branch=z9hG4bK-1-1-0\r\nFrom: sipp <sip:+15551230001@127.0.0.1:25090>;tag=1\r\nTo: <sip:+15551230002@127.0.0.1:5060>\r\nCall-ID: 1-12345@127.0.0.1\r\nCSeq: 1 INVITE\r\nContact: <sip:sipp@127.0.0.1:25090>\r\nDiversion: <sip:+15551230002@example.com>;reason=no-answer\r\nMax-Forwards: 70\r\nSubject: Performance Test\r\nContent-Type: application/sdp\r\nContent-Length: 129\r\n\r\nv=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";

fn bench(c: &mut Criterion) {
    c.bench_function("parse_invite", |b| {
        b.iter(|| {
            boxless_sip::Message::parse(black_box(INVITE), false)
                .unwrap()
                .len
        })
    });
    // One buffer: two uses of a `const` need not be one address.
    let buf: Vec<u8> = INVITE.to_vec();
    let m = boxless_sip::Message::parse(&buf, false).unwrap();
    // What the server does with a message for a call: parse once, hand over a copy.
    c.bench_function("copy_invite_for_a_call", |b| {
        b.iter(|| {
            boxless_sip::OwnedMessage::copy_of(black_box(&m), &buf)
                .unwrap()
                .get()
                .len
        })
    });
    c.bench_function("parse_invite_owned", |b| {
        b.iter(|| {
            boxless_sip::OwnedMessage::parse(black_box(INVITE).into(), false)
                .unwrap()
                .get()
                .len
        })
    });
    let mut out = Vec::with_capacity(2048);
    c.bench_function("write_302", |b| {
        b.iter(|| {
            boxless_sip::write_response(
                &mut out,
                black_box(&m),
                302,
                "Moved Temporarily",
                Some(&"abc"),
                None,
                b"Contact: <sip:+15551230002@127.0.0.1:5070>\r\n",
                None,
            );
            out.len()
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
