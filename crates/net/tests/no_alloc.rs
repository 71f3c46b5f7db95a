//! A drain of a call's RTP socket, connected or not, allocates nothing once its thread is
//! warm (the receive buffers are the thread's, made at its first drain), counted by
//! `allocation-counter` (a counting global allocator in this test binary only).

use std::net::UdpSocket;

use boxless_net::rtp::RtpSocket;

#[test]
fn drains_allocate_nothing_once_the_thread_is_warm() {
    let mut rx = RtpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    tx.connect(rx.local_addr().unwrap()).unwrap();
    let packet = [0x55u8; 172];
    let send = |n: usize| {
        for _ in 0..n {
            tx.send(&packet).unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    send(1);
    assert_eq!(rx.drain(64, |_, _| {}), 1); // warm: the thread's buffers
    let mut bytes = 0;
    let mut taken = 0;
    // Unconnected (each datagram's source asked for), then connected to the sender (none).
    for round in 0..100 {
        if round == 50 {
            rx.connect(tx.local_addr().unwrap()).unwrap();
        }
        send(10);
        let info = allocation_counter::measure(|| {
            taken += rx.drain(64, |d, _| bytes += d.len());
        });
        assert_eq!(info.count_total, 0, "a drain allocated: {info:?}");
    }
    assert_eq!(taken, 1000);
    assert_eq!(bytes, 1000 * 172);
}
