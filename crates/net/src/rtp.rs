//! Taking what waits in a non-blocking RTP socket, many datagrams per system call.
//!
//! A recording call's task drains its socket every 500 ms: 25 packets of 20 ms. One
//! `recvfrom` each, plus the one that finds the socket empty, is 26 system calls a
//! drain; `recvmmsg` takes them in one and tells by a short batch that the socket is
//! empty. The buffers are per worker thread, not per call: a drain runs to the end without
//! yielding, so one set serves every call the thread runs, and a call holds no receive
//! buffer.

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};

/// Datagrams taken by one system call, at most: a 500 ms drain of 20 ms packets takes one
/// call. Measured at 1,000 recordings: 32 a call cost 4 to 10 % less CPU than 8
/// (`bench/RESULTS.md`); the buffers are per worker thread (64 KiB), not per call.
pub const BATCH: usize = 32;

/// Room for one datagram; a longer one is cut to this (RTP of 20 ms voice is under 200
/// bytes; nothing this server accepts is near it).
pub const DATAGRAM_MAX: usize = 2048;

/// A call's RTP socket: non-blocking, never registered with a reactor (its owner takes
/// what waits on its own clock), and knowing its address family, which picks the
/// per-thread receive headers (an IPv6 source must not land in IPv4-sized room).
///
/// Its owner narrows what the kernel lets in as it learns the caller: the IP from the SDP
/// ([`RtpSocket::hear_only`]), then the source the first packet came from
/// ([`RtpSocket::connect`]). Anyone else's datagrams are dropped before they are queued, so
/// a stranger who finds the port cannot fill the socket's buffer and starve the call of
/// its caller's audio; once connected, the drain no longer asks for each datagram's source.
#[derive(Debug)]
pub struct RtpSocket {
    sock: UdpSocket,
    v6: bool,
    heard: Heard,
}

/// Whom the kernel lets through to the socket.
#[derive(Debug, Clone, Copy)]
enum Heard {
    Everyone,
    /// Any port of one IP (connected to port 0: Linux then matches the address alone).
    Ip,
    /// One source. `settled` once the kernel has reported the socket empty since the
    /// connect: until then, what waits may predate it, so each source is still asked for.
    Peer {
        peer: SocketAddr,
        settled: bool,
    },
}

/// A free port of `addr`'s address, found by the kernel, then bound by number. Another
/// socket may take it in between: then another is found, a few times at most.
fn bind_free(addr: SocketAddr) -> io::Result<UdpSocket> {
    let mut last = io::ErrorKind::AddrInUse.into();
    for _ in 0..8 {
        let port = UdpSocket::bind(addr)?.local_addr()?.port();
        match UdpSocket::bind(SocketAddr::new(addr.ip(), port)) {
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => last = e,
            bound => return bound,
        }
    }
    Err(last)
}

/// Why a drain stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// It took as many as asked.
    Max,
    /// A batch came back short: most likely empty, not proven (a short batch may also end
    /// at an error the kernel reports on the next call).
    Short,
    /// The kernel said so (`WouldBlock`).
    Empty,
    /// Another error: an ICMP error queued for the socket, reported once.
    Error,
}

impl RtpSocket {
    /// Binds `addr`, non-blocking. Port 0 takes a free port, bound as if it had been
    /// given: Linux lets a disconnect take back a port it picked itself.
    pub fn bind(addr: SocketAddr) -> io::Result<Self> {
        let sock = if addr.port() == 0 {
            bind_free(addr)?
        } else {
            UdpSocket::bind(addr)?
        };
        sock.set_nonblocking(true)?;
        Ok(Self {
            sock,
            v6: addr.is_ipv6(),
            heard: Heard::Everyone,
        })
    }

    /// Hears any port of `ip` only: what the caller's SDP says, before its first packet
    /// tells which port it sends from. An error (no route to `ip`) leaves the socket
    /// hearing everyone, its owner filtering by source.
    pub fn hear_only(&mut self, ip: IpAddr) -> io::Result<()> {
        match self.sock.connect(SocketAddr::new(ip, 0)) {
            Ok(()) => {
                self.heard = Heard::Ip;
                Ok(())
            }
            Err(e) => {
                self.disconnect()?;
                Err(e)
            }
        }
    }

    /// Hears only `peer` from now on. An error leaves the socket as it was.
    pub fn connect(&mut self, peer: SocketAddr) -> io::Result<()> {
        self.sock.connect(peer)?;
        self.heard = Heard::Peer {
            peer,
            settled: false,
        };
        Ok(())
    }

    /// Hears everyone again.
    pub fn disconnect(&mut self) -> io::Result<()> {
        if !matches!(self.heard, Heard::Everyone) {
            rustix::net::connect_unspec(&self.sock)?;
            self.heard = Heard::Everyone;
        }
        Ok(())
    }

    /// The one source it hears, if connected to one.
    pub fn peer(&self) -> Option<SocketAddr> {
        match self.heard {
            Heard::Peer { peer, .. } => Some(peer),
            _ => None,
        }
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
    pub fn drain(&mut self, max: usize, each: impl FnMut(&[u8], SocketAddr)) -> usize {
        match self.heard {
            Heard::Peer {
                peer,
                settled: true,
            } => imp::drain_from(&self.sock, peer, max, each).0,
            Heard::Peer {
                peer,
                settled: false,
            } => {
                // Until the kernel says the socket is empty, what waits may predate the
                // connect: ask for each source, and go on past a short batch to prove it.
                let (n, stop) = imp::drain(&self.sock, self.v6, max, true, each);
                if stop == Stop::Empty {
                    self.heard = Heard::Peer {
                        peer,
                        settled: true,
                    };
                }
                n
            }
            Heard::Everyone | Heard::Ip => imp::drain(&self.sock, self.v6, max, false, each).0,
        }
    }
}

#[cfg(target_os = "linux")]
mod imp {
    use std::cell::RefCell;
    use std::io::IoSliceMut;
    use std::net::{SocketAddr, UdpSocket};
    use std::os::fd::AsRawFd;

    use nix::errno::Errno;
    use nix::sys::socket::{
        MsgFlags, MultiHeaders, SockaddrIn, SockaddrIn6, SockaddrLike, recvmmsg,
    };

    use super::{BATCH, DATAGRAM_MAX, Stop};

    type Bufs = [[u8; DATAGRAM_MAX]; BATCH];

    /// A worker thread's receive room: one set of buffers, and headers for each kind of
    /// source the kernel may write (the kernel shrinks a header's address length to what
    /// it wrote, so an IPv6 source must find IPv6-sized room; a connected socket's
    /// headers ask for none).
    struct Scratch {
        bufs: Box<Bufs>,
        v4: MultiHeaders<SockaddrIn>,
        v6: MultiHeaders<SockaddrIn6>,
        none: MultiHeaders<()>,
    }

    thread_local! {
        // Allocated at a thread's first drain, then reused: the packet path allocates
        // nothing once warm.
        static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch {
            bufs: Box::new([[0; DATAGRAM_MAX]; BATCH]),
            v4: MultiHeaders::preallocate(BATCH, None),
            v6: MultiHeaders::preallocate(BATCH, None),
            none: MultiHeaders::preallocate(BATCH, None),
        });
    }

    pub(super) fn drain(
        sock: &UdpSocket,
        v6: bool,
        max: usize,
        until_empty: bool,
        mut each: impl FnMut(&[u8], SocketAddr),
    ) -> (usize, Stop) {
        SCRATCH.with_borrow_mut(|s| {
            if v6 {
                drain_into(&mut s.v6, &mut s.bufs, sock, max, until_empty, |a, d| {
                    each(d, a.into())
                })
            } else {
                drain_into(&mut s.v4, &mut s.bufs, sock, max, until_empty, |a, d| {
                    each(d, a.into())
                })
            }
        })
    }

    /// A connected socket's drain: every datagram is `peer`'s, so none is asked its source.
    pub(super) fn drain_from(
        sock: &UdpSocket,
        peer: SocketAddr,
        max: usize,
        mut each: impl FnMut(&[u8], SocketAddr),
    ) -> (usize, Stop) {
        SCRATCH.with_borrow_mut(|s| {
            drain_into(&mut s.none, &mut s.bufs, sock, max, false, |(), d| {
                each(d, peer)
            })
        })
    }

    fn drain_into<S>(
        headers: &mut MultiHeaders<S>,
        bufs: &mut Bufs,
        sock: &UdpSocket,
        max: usize,
        until_empty: bool,
        mut each: impl FnMut(S, &[u8]),
    ) -> (usize, Stop)
    where
        S: SockaddrLike + Copy,
    {
        let mut taken = 0;
        while taken < max {
            let want = (max - taken).min(BATCH);
            let mut iovs: [[IoSliceMut<'_>; 1]; BATCH] =
                bufs.each_mut().map(|b| [IoSliceMut::new(b)]);
            let got = match recvmmsg(
                sock.as_raw_fd(),
                headers,
                iovs[..want].iter_mut(),
                MsgFlags::MSG_DONTWAIT,
                None,
            ) {
                Ok(got) => got,
                Err(Errno::EAGAIN) => return (taken, Stop::Empty),
                Err(_) => return (taken, Stop::Error),
            };
            let mut n = 0;
            for msg in got {
                n += 1;
                if let (Some(from), Some(data)) = (msg.address, msg.iovs().next()) {
                    each(from, &data[..msg.bytes.min(data.len())]);
                }
            }
            taken += n;
            if n < want && !until_empty {
                return (taken, Stop::Short); // most likely empty: spare the call that proves it
            }
        }
        (taken, Stop::Max)
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use std::io::ErrorKind;
    use std::net::{SocketAddr, UdpSocket};

    use super::{DATAGRAM_MAX, Stop};

    pub(super) fn drain(
        sock: &UdpSocket,
        _v6: bool,
        max: usize,
        _until_empty: bool,
        mut each: impl FnMut(&[u8], SocketAddr),
    ) -> (usize, Stop) {
        let mut buf = [0u8; DATAGRAM_MAX];
        let mut taken = 0;
        while taken < max {
            match sock.recv_from(&mut buf) {
                Ok((n, from)) => each(&buf[..n], from),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return (taken, Stop::Empty),
                Err(_) => return (taken, Stop::Error),
            }
            taken += 1;
        }
        (taken, Stop::Max)
    }

    pub(super) fn drain_from(
        sock: &UdpSocket,
        peer: SocketAddr,
        max: usize,
        mut each: impl FnMut(&[u8], SocketAddr),
    ) -> (usize, Stop) {
        drain(sock, false, max, false, |d, _| each(d, peer))
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
        let (mut rx, tx) = pair();
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
        let (mut rx, tx) = pair();
        sent(&tx, 30);
        let mut seen = Vec::new();
        assert_eq!(rx.drain(11, |d, _| seen.push(d[0])), 11);
        assert_eq!(rx.drain(64, |d, _| seen.push(d[0])), 19);
        assert_eq!(seen, (0..30).collect::<Vec<u8>>());
    }

    #[test]
    fn a_datagram_longer_than_the_room_is_cut_to_it() {
        let (mut rx, tx) = pair();
        tx.send(&vec![7u8; DATAGRAM_MAX + 100]).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let mut len = 0;
        assert_eq!(rx.drain(64, |d, _| len = d.len()), 1);
        assert_eq!(len, DATAGRAM_MAX);
    }

    #[test]
    fn an_ipv6_source_is_whole_after_ipv4_sources_on_the_same_thread() {
        let (mut rx4, tx4) = pair();
        sent(&tx4, 3);
        assert_eq!(
            rx4.drain(64, |_, from| assert_eq!(from, tx4.local_addr().unwrap())),
            3
        );
        let Ok(mut rx6) = RtpSocket::bind("[::1]:0".parse().unwrap()) else {
            return; // no IPv6 loopback on this machine
        };
        let tx6 = UdpSocket::bind("[::1]:0").unwrap();
        tx6.connect(rx6.local_addr().unwrap()).unwrap();
        sent(&tx6, 3);
        let want = tx6.local_addr().unwrap();
        assert_eq!(rx6.drain(64, |_, from| assert_eq!(from, want)), 3);
    }

    #[test]
    fn once_connected_only_the_peer_is_heard_and_what_came_before_keeps_its_source() {
        let (mut rx, peer) = pair();
        let stranger = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = rx.local_addr().unwrap();
        stranger.send_to(&[1; 172], to).unwrap(); // queued before the connect
        sent(&peer, 1);
        rx.connect(peer.local_addr().unwrap()).unwrap();
        stranger.send_to(&[2; 172], to).unwrap(); // dropped by the kernel
        sent(&peer, 2);
        let mut seen = Vec::new();
        assert_eq!(rx.drain(64, |d, from| seen.push((d[0], from))), 4);
        let (p, s) = (peer.local_addr().unwrap(), stranger.local_addr().unwrap());
        assert_eq!(seen, [(1, s), (0, p), (0, p), (1, p)]);
        // Found empty since the connect: from here on no source is asked for.
        sent(&peer, 12);
        seen.clear();
        stranger.send_to(&[3; 172], to).unwrap();
        assert_eq!(rx.drain(64, |d, from| seen.push((d[0], from))), 12);
        assert!(seen.iter().enumerate().all(|(i, &x)| x == (i as u8, p)));
    }

    #[test]
    fn disconnected_it_hears_everyone_again() {
        let (mut rx, peer) = pair();
        let stranger = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = rx.local_addr().unwrap();
        rx.connect(peer.local_addr().unwrap()).unwrap();
        assert_eq!(rx.peer(), Some(peer.local_addr().unwrap()));
        stranger.send_to(&[1; 172], to).unwrap();
        sent(&peer, 1);
        assert_eq!(rx.drain(64, |_, _| {}), 1);
        rx.disconnect().unwrap();
        assert_eq!(rx.peer(), None);
        stranger.send_to(&[1; 172], to).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let mut from = None;
        assert_eq!(rx.drain(64, |_, f| from = Some(f)), 1);
        assert_eq!(from, Some(stranger.local_addr().unwrap()));
    }

    #[test]
    fn hearing_one_ip_takes_any_of_its_ports_and_drops_other_addresses() {
        let (mut rx, tx) = pair();
        let to = rx.local_addr().unwrap();
        let other_port = UdpSocket::bind("127.0.0.1:0").unwrap();
        let Ok(stranger) = UdpSocket::bind("127.0.0.2:0") else {
            return; // no 127.0.0.2 on this machine's loopback
        };
        rx.hear_only("127.0.0.1".parse().unwrap()).unwrap();
        assert_eq!(rx.peer(), None);
        stranger.send_to(&[9; 172], to).unwrap();
        other_port.send_to(&[1; 172], to).unwrap();
        sent(&tx, 1);
        let mut seen = Vec::new();
        assert_eq!(rx.drain(64, |d, from| seen.push((d[0], from))), 2);
        let (a, b) = (other_port.local_addr().unwrap(), tx.local_addr().unwrap());
        assert_eq!(seen, [(1, a), (0, b)]);
        // Then one of them is latched: the other port is dropped too.
        rx.connect(b).unwrap();
        other_port.send_to(&[1; 172], to).unwrap();
        sent(&tx, 1);
        seen.clear();
        assert_eq!(rx.drain(64, |d, from| seen.push((d[0], from))), 1);
        assert_eq!(seen, [(0, b)]);
    }
}
