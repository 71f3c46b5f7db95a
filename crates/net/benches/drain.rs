//! One drain of a call's RTP socket as the server does it every 500 ms while it records:
//! 25 packets of 20 ms waiting, taken by `recvmmsg` ([`RtpSocket::drain`], batches of
//! [`boxless_net::rtp::BATCH`]; unconnected, each datagram's source asked for, or connected
//! to the caller, none) or by one `recvfrom` each plus the one that finds the socket
//! empty. Only the receive is timed. Run: `cargo bench -p boxless-net --bench drain`
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use boxless_net::rtp::{DATAGRAM_MAX, RtpSocket};
use criterion::{Criterion, black_box, criterion_group, criterion_main};

const WAITING: usize = 25;

/// `iters` times: sends [`WAITING`] packets to `to`, then times `drain` (which returns how
/// many it took).
fn timed(iters: u64, tx: &UdpSocket, to: SocketAddr, mut drain: impl FnMut() -> usize) -> Duration {
    let packet = [0x55u8; 172];
    let mut spent = Duration::ZERO;
    for _ in 0..iters {
        for _ in 0..WAITING {
            tx.send_to(&packet, to).unwrap();
        }
        let t = Instant::now();
        let n = drain();
        spent += t.elapsed();
        assert_eq!(n, WAITING);
    }
    spent
}

fn bench(c: &mut Criterion) {
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut rx = RtpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let to = rx.local_addr().unwrap();
    c.bench_function("drain_25_packets_recvmmsg", |b| {
        b.iter_custom(|iters| {
            timed(iters, &tx, to, || {
                rx.drain(64, |d, _| {
                    black_box(d);
                })
            })
        })
    });
    let mut rx = RtpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    rx.connect(tx.local_addr().unwrap()).unwrap();
    let to = rx.local_addr().unwrap();
    c.bench_function("drain_25_packets_recvmmsg_connected", |b| {
        b.iter_custom(|iters| {
            timed(iters, &tx, to, || {
                rx.drain(64, |d, _| {
                    black_box(d);
                })
            })
        })
    });
    let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
    rx.set_nonblocking(true).unwrap();
    let to = rx.local_addr().unwrap();
    let mut buf = [0u8; DATAGRAM_MAX];
    c.bench_function("drain_25_packets_recvfrom_each", |b| {
        b.iter_custom(|iters| {
            timed(iters, &tx, to, || {
                let mut n = 0;
                while let Ok((len, _)) = rx.recv_from(&mut buf) {
                    black_box(&buf[..len]);
                    n += 1;
                }
                n
            })
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
