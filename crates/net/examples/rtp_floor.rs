//! The floor under a recording server's CPU on this host: what receiving the RTP alone
//! costs, with no call behind it. N sockets, each connected to one sender (as SIPp's RTP
//! engine sends every call's audio from one port), get a 172-byte packet every 20 ms; one
//! thread drains each of them every 500 ms as a recording call's task does
//! ([`RtpSocket::drain`], at most 64) and does nothing with what it takes. Prints the
//! draining thread's CPU and the sending thread's (the kernel's delivery into the sockets
//! runs in the sender's time on loopback), from `/proc/thread-self/stat`.
//!
//! Run: `cargo run --release -p boxless-net --example rtp_floor -- [CALLS] [SECONDS]`
//! (default 1000 20); `UNCONNECTED=1` leaves the sockets unconnected, each source asked;
//! `EVERY_MS=200` drains every 200 ms instead.
use std::hint::black_box;
use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use boxless_net::rtp::RtpSocket;

/// CPU seconds this thread has used so far (user + system).
fn thread_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").expect("/proc/thread-self/stat");
    // The fields after the command's closing parenthesis: utime and stime are the 12th
    // and 13th of them, in clock ticks (100 a second on Linux).
    let rest = &stat[stat.rfind(')').expect("a stat line") + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

fn main() {
    let mut args = std::env::args().skip(1);
    let calls: usize = args.next().map_or(1000, |a| a.parse().expect("CALLS"));
    let seconds: u64 = args.next().map_or(20, |a| a.parse().expect("SECONDS"));
    let connected = std::env::var("UNCONNECTED").map_or(true, |v| v.is_empty());

    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let from = tx.local_addr().unwrap();
    let mut socks: Vec<RtpSocket> = (0..calls)
        .map(|_| {
            let mut s = RtpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
            if connected {
                s.connect(from).unwrap();
            }
            s
        })
        .collect();
    let ports: Vec<_> = socks.iter().map(|s| s.local_addr().unwrap()).collect();
    let stop = Arc::new(AtomicBool::new(false));

    let sender = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let packet = [0x55u8; 172];
            let start_cpu = thread_cpu();
            let mut next = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                for to in &ports {
                    let _ = tx.send_to(&packet, to);
                }
                next += Duration::from_millis(20);
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
            thread_cpu() - start_cpu
        })
    };

    // A second to settle (every socket connected and found empty once), then the count.
    let mut taken = 0u64;
    let mut drain_all = |taken: &mut u64| {
        for s in &mut socks {
            *taken += s.drain(64, |d, _| {
                black_box(d);
            }) as u64;
        }
    };
    let every = Duration::from_millis(
        std::env::var("EVERY_MS").map_or(500, |v| v.parse().expect("EVERY_MS: milliseconds")),
    );
    let mut next = Instant::now();
    let settle = next + Duration::from_secs(1);
    while Instant::now() < settle {
        drain_all(&mut taken);
        next += every;
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    taken = 0;
    let (t0, cpu0) = (Instant::now(), thread_cpu());
    while t0.elapsed() < Duration::from_secs(seconds) {
        drain_all(&mut taken);
        next += every;
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    let (wall, cpu) = (t0.elapsed().as_secs_f64(), thread_cpu() - cpu0);
    stop.store(true, Ordering::Relaxed);
    let send_cpu = sender.join().unwrap();
    println!(
        "{calls} calls, {} sockets, {seconds} s: {:.0} packets/s taken",
        if connected {
            "connected"
        } else {
            "unconnected"
        },
        taken as f64 / wall
    );
    println!(
        "draining thread {:.3} cores, sending thread {:.3} cores (over the whole run), drain/send {:.3}",
        cpu / wall,
        send_cpu / (wall + 1.0),
        (cpu / wall) / (send_cpu / (wall + 1.0)).max(1e-9)
    );
}
