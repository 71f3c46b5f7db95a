//! Parses one forwarded INVITE N times (for `perf stat` instruction counts):
//! `cargo run --release -p boxless-sip --example parse_loop -- 1000000`
fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let msg = b"INVITE sip:+15551230002@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:25090;branch=z9hG4bK-1-1-0\r\nFrom: sipp <sip:+15551230001@127.0.0.1:25090>;tag=1\r\nTo: <sip:+15551230002@127.0.0.1:5060>\r\nCall-ID: 1-12345@127.0.0.1\r\nCSeq: 1 INVITE\r\nContact: <sip:sipp@127.0.0.1:25090>\r\nDiversion: <sip:+15551230002@example.com>;reason=no-answer\r\nMax-Forwards: 70\r\nSubject: Performance Test\r\nContent-Type: application/sdp\r\nContent-Length: 129\r\n\r\nv=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";
    let t = std::time::Instant::now();
    let mut k = 0;
    for _ in 0..n {
        k += boxless_sip::Message::parse(std::hint::black_box(msg), false).map_or(0, |m| m.len);
    }
    println!(
        "{:.3} us/parse ({k})",
        t.elapsed().as_secs_f64() * 1e6 / n as f64
    );
}
