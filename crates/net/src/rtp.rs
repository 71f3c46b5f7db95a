//! Taking what waits in a non-blocking RTP socket, many datagrams per system call.
//!
//! A call's task drains its socket every 200 ms or so: ten packets of 20 ms. One
//! `recvfrom` each, plus the one that finds the socket empty, is eleven system calls a
//! drain; `recvmmsg` takes them in two and tells by a short batch that the socket is
//! empty. The buffers are per worker thread, not per call: a drain runs to the end without
//! yielding, so one set serves every call the thread runs, and a call holds no receive
//! buffer.

use std::io;
use std::net::{SocketAddr, UdpSocket};

/// Datagrams taken by one system call, at most. A 200 ms drain of 20 ms packets takes two
/// calls; one batch of 16 measured only 2 % faster (`benches/drain.rs`), not worth twice
/// the buffers.
pub const BATCH: usize = 8;

/// Room for one datagram; a longer one is cut to this (RTP of 20 ms voice is under 200
/// bytes; nothing this server accepts is near it).
pub const DATAGRAM_MAX: usize = 2048;

/// A call's RTP socket: non-blocking, never registered with a reactor (its owner takes
/// what waits on its own clock), and knowing its address family, which picks the
/// per-thread receive headers (an IPv6 source must not land in IPv4-sized room).
#[derive(Debug)]
pub struct RtpSocket {
    sock: UdpSocket,
    v6: bool,
}

impl RtpSocket {
    /// Binds `addr`, non-blocking.
    pub fn bind(addr: SocketAddr) -> io::Result<Self> {
        let sock = UdpSocket::bind(addr)?;
        sock.set_nonblocking(true)?;
        Ok(Self {
            sock,
            v6: addr.is_ipv6(),
        })
    }

    /// Sends one datagram now; a full buffer is an error (`WouldBlock`), never a wait.
    pub fn send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<usize> {
        self.sock.send_to(buf, to)
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.sock.local_addr()
    }

    /// Takes up to `max` datagrams waiting in the socket, handing each with its source to
    /// `each`; returns how many. Stops at the first error (the socket is empty:
    /// `WouldBlock`; or an ICMP error queued by the kernel, reported once), so a flood
    /// costs at most `max` datagrams a drain: the kernel drops what overflows the
    /// socket's buffer.
    pub fn drain(&self, max: usize, each: impl FnMut(&[u8], SocketAddr)) -> usize {
        imp::drain(&self.sock, self.v6, max, each)
    }
}

#[cfg(target_os = "linux")]
mod imp {
    use std::cell::RefCell;
    use std::io::IoSliceMut;
    use std::net::{SocketAddr, UdpSocket};
    use std::os::fd::AsRawFd;

    use nix::sys::socket::{
        MsgFlags, MultiHeaders, SockaddrIn, SockaddrIn6, SockaddrLike, recvmmsg,
    };

    use super::{BATCH, DATAGRAM_MAX};

    struct Scratch<S> {
        headers: MultiHeaders<S>,
        bufs: Box<[[u8; DATAGRAM_MAX]; BATCH]>,
    }

    impl<S: SockaddrLike + Copy> Scratch<S> {
        fn new() -> RefCell<Self> {
            RefCell::new(Self {
                headers: MultiHeaders::preallocate(BATCH, None),
                bufs: Box::new([[0; DATAGRAM_MAX]; BATCH]),
            })
        }
    }

    thread_local! {
        // Allocated at a thread's first drain, then reused: the packet path allocates
        // nothing once warm. One per family: the kernel shrinks a header's address
        // length to what it wrote, and an IPv6 source must find IPv6-sized room.
        static V4: RefCell<Scratch<SockaddrIn>> = Scratch::new();
        static V6: RefCell<Scratch<SockaddrIn6>> = Scratch::new();
    }

    pub(super) fn drain(
        sock: &UdpSocket,
        v6: bool,
        max: usize,
        each: impl FnMut(&[u8], SocketAddr),
    ) -> usize {
        if v6 {
            V6.with_borrow_mut(|s| drain_into(s, sock, max, each))
        } else {
            V4.with_borrow_mut(|s| drain_into(s, sock, max, each))
        }
    }

    fn drain_into<S>(
        s: &mut Scratch<S>,
        sock: &UdpSocket,
        max: usize,
        mut each: impl FnMut(&[u8], SocketAddr),
    ) -> usize
    where
        S: SockaddrLike + Copy + Into<SocketAddr>,
    {
        let mut taken = 0;
        while taken < max {
            let want = (max - taken).min(BATCH);
            let Scratch { headers, bufs } = s;
            let mut iovs: [[IoSliceMut<'_>; 1]; BATCH] =
                bufs.each_mut().map(|b| [IoSliceMut::new(b)]);
            let Ok(got) = recvmmsg(
                sock.as_raw_fd(),
                headers,
                iovs[..want].iter_mut(),
                MsgFlags::MSG_DONTWAIT,
                None,
            ) else {
                break;
            };
            let mut n = 0;
            for msg in got {
                n += 1;
                if let (Some(from), Some(data)) = (msg.address, msg.iovs().next()) {
                    each(&data[..msg.bytes.min(data.len())], from.into());
                }
            }
            taken += n;
            if n < want {
                break; // a short batch: the socket is empty
            }
        }
        taken
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use std::net::{SocketAddr, UdpSocket};

    use super::DATAGRAM_MAX;

    pub(super) fn drain(
        sock: &UdpSocket,
        _v6: bool,
        max: usize,
        mut each: impl FnMut(&[u8], SocketAddr),
    ) -> usize {
        let mut buf = [0u8; DATAGRAM_MAX];
        let mut taken = 0;
        while taken < max {
            let Ok((n, from)) = sock.recv_from(&mut buf) else {
                break;
            };
            each(&buf[..n], from);
            taken += 1;
        }
        taken
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (RtpSocket, UdpSocket) {
        let rx = RtpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.connect(rx.local_addr().unwrap()).unwrap();
        (rx, tx)
    }

    fn sent(tx: &UdpSocket, n: u8) {
        for i in 0..n {
            tx.send(&[i; 172]).unwrap();
        }
        // Loopback delivers at send; give a loaded machine a moment all the same.
        std::thread::sleep(std::time::Duration::from_millis(20));
    }

    #[test]
    fn every_waiting_datagram_is_taken_in_order_with_its_source() {
        let (rx, tx) = pair();
        assert_eq!(rx.drain(64, |_, _| panic!("nothing waits")), 0);
        sent(&tx, 20); // more than one batch
        let mut seen = Vec::new();
        let n = rx.drain(64, |d, from| {
            assert_eq!(d.len(), 172);
            assert_eq!(from, tx.local_addr().unwrap());
            seen.push(d[0]);
        });
        assert_eq!(n, 20);
        assert_eq!(seen, (0..20).collect::<Vec<u8>>());
        assert_eq!(rx.drain(64, |_, _| panic!("all taken")), 0);
    }

    #[test]
    fn a_drain_takes_no_more_than_asked_and_leaves_the_rest_waiting() {
        let (rx, tx) = pair();
        sent(&tx, 30);
        let mut seen = Vec::new();
        assert_eq!(rx.drain(11, |d, _| seen.push(d[0])), 11);
        assert_eq!(rx.drain(64, |d, _| seen.push(d[0])), 19);
        assert_eq!(seen, (0..30).collect::<Vec<u8>>());
    }

    #[test]
    fn a_datagram_longer_than_the_room_is_cut_to_it() {
        let (rx, tx) = pair();
        tx.send(&vec![7u8; DATAGRAM_MAX + 100]).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let mut len = 0;
        assert_eq!(rx.drain(64, |d, _| len = d.len()), 1);
        assert_eq!(len, DATAGRAM_MAX);
    }

    #[test]
    fn an_ipv6_source_is_whole_after_ipv4_sources_on_the_same_thread() {
        let (rx4, tx4) = pair();
        sent(&tx4, 3);
        assert_eq!(
            rx4.drain(64, |_, from| assert_eq!(from, tx4.local_addr().unwrap())),
            3
        );
        let Ok(rx6) = RtpSocket::bind("[::1]:0".parse().unwrap()) else {
            return; // no IPv6 loopback on this machine
        };
        let tx6 = UdpSocket::bind("[::1]:0").unwrap();
        tx6.connect(rx6.local_addr().unwrap()).unwrap();
        sent(&tx6, 3);
        let want = tx6.local_addr().unwrap();
        assert_eq!(rx6.drain(64, |_, from| assert_eq!(from, want)), 3);
    }
}
