//! Datagrams many a system call, for a thread that owns a blocking UDP socket: what waits
//! in the socket is taken by one `recvmmsg`, and the replies to it leave by one
//! `sendmmsg`. The router's redirect path spends most of its CPU in the kernel, a good
//! part of it entering and leaving it once per datagram (bench/RESULTS.md, "Router").
//!
//! Nothing is allocated once a [`Datagrams`] exists.

use std::io::{IoSlice, IoSliceMut};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

use nix::errno::Errno;
use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg};

/// Datagrams taken or sent by one system call, at most.
pub const BATCH: usize = 32;

/// Room for [`BATCH`] datagrams in and their replies out.
pub struct Datagrams {
    /// Bytes a received datagram may have; one more tells a longer one (cut) apart.
    slot: usize,
    bufs: Box<[u8]>,
    lens: [usize; BATCH],
    froms: [Option<SocketAddr>; BATCH],
    rx: MultiHeaders<SockaddrStorage>,
    /// Replies, one after the other; `ends[i]` is where reply `i` ends.
    out: Vec<u8>,
    ends: [usize; BATCH],
    tos: [Option<SockaddrStorage>; BATCH],
    queued: usize,
    tx: MultiHeaders<SockaddrStorage>,
}

impl std::fmt::Debug for Datagrams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Datagrams")
            .field("slot", &self.slot)
            .field("queued", &self.queued)
            .finish()
    }
}

impl Datagrams {
    /// Room for datagrams of up to `max` bytes: a longer one is taken cut to `max + 1`
    /// bytes, so that [`Datagrams::get`] shows it longer than `max`.
    pub fn new(max: usize) -> Datagrams {
        let slot = max + 1;
        Datagrams {
            slot,
            bufs: vec![0; slot * BATCH].into_boxed_slice(),
            lens: [0; BATCH],
            froms: [None; BATCH],
            rx: MultiHeaders::preallocate(BATCH, None),
            out: Vec::with_capacity(BATCH * 1024),
            ends: [0; BATCH],
            tos: [None; BATCH],
            queued: 0,
            tx: MultiHeaders::preallocate(BATCH, None),
        }
    }

    /// Waits (the socket blocking) for a datagram, then takes it and whatever else waits,
    /// up to [`BATCH`]: how many (none when a signal came first).
    pub fn recv(&mut self, sock: &UdpSocket) -> std::io::Result<usize> {
        let slot = self.slot;
        let mut chunks = self.bufs.chunks_mut(slot);
        let mut iovs: [[IoSliceMut<'_>; 1]; BATCH] = std::array::from_fn(|_| {
            [IoSliceMut::new(
                chunks.next().expect("BATCH slots of `slot` bytes"),
            )]
        });
        let got = match recvmmsg(
            sock.as_raw_fd(),
            &mut self.rx,
            iovs.iter_mut(),
            MsgFlags::MSG_WAITFORONE,
            None,
        ) {
            Ok(got) => got,
            // A signal: nothing taken, the caller asks again.
            Err(Errno::EINTR) => return Ok(0),
            Err(e) => return Err(e.into()),
        };
        let mut n = 0;
        for msg in got {
            self.lens[n] = msg.bytes.min(slot);
            self.froms[n] = msg.address.and_then(|a| to_std(&a));
            n += 1;
        }
        Ok(n)
    }

    /// Datagram `i` of the last [`Datagrams::recv`]: its bytes (cut to `max + 1`) and
    /// its source (`None` when the kernel gave none it could name).
    pub fn get(&self, i: usize) -> (&[u8], Option<SocketAddr>) {
        let start = i * self.slot;
        (&self.bufs[start..start + self.lens[i]], self.froms[i])
    }

    /// Queues a reply to `to`; [`Datagrams::flush`] sends the queue, and so does a full one.
    pub fn queue(&mut self, sock: &UdpSocket, bytes: &[u8], to: SocketAddr) {
        if self.queued == BATCH {
            self.flush(sock);
        }
        self.out.extend_from_slice(bytes);
        self.ends[self.queued] = self.out.len();
        self.tos[self.queued] = Some(SockaddrStorage::from(to));
        self.queued += 1;
    }

    /// Sends the queued replies, one system call for all when the kernel takes them all. A
    /// reply the kernel refuses (no route, a full buffer) is dropped, as a lone `send_to`'s
    /// error would be: UDP is best effort, and SIP retransmits.
    pub fn flush(&mut self, sock: &UdpSocket) {
        let mut from = 0;
        while from < self.queued {
            let mut start = if from == 0 { 0 } else { self.ends[from - 1] };
            let iovs: [[IoSlice<'_>; 1]; BATCH] = std::array::from_fn(|i| {
                let end = if from + i < self.queued {
                    self.ends[from + i]
                } else {
                    start
                };
                let s = IoSlice::new(&self.out[start..end]);
                start = end;
                [s]
            });
            let n = self.queued - from;
            let sent = match sendmmsg(
                sock.as_raw_fd(),
                &mut self.tx,
                iovs[..n].iter(),
                &self.tos[from..self.queued],
                [],
                MsgFlags::empty(),
            ) {
                Ok(r) => r.count(),
                // A signal came first: nothing went, ask again.
                Err(Errno::EINTR) => continue,
                // The first reply was refused: skip it, send the rest.
                Err(_) => 1,
            };
            from += sent.max(1);
        }
        self.out.clear();
        self.queued = 0;
    }
}

fn to_std(a: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        Some(SocketAddr::V4((*v4).into()))
    } else {
        a.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (UdpSocket, UdpSocket) {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        b.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        (a, b)
    }

    #[test]
    fn what_waits_is_taken_at_once_and_replies_leave_in_order() {
        let (router, peer) = pair();
        let to = router.local_addr().unwrap();
        for i in 0..40u8 {
            peer.send_to(&[i; 10], to).unwrap();
        }
        let mut d = Datagrams::new(100);
        let mut seen = Vec::new();
        while seen.len() < 40 {
            let n = d.recv(&router).unwrap();
            assert!((1..=BATCH).contains(&n));
            for i in 0..n {
                let (bytes, from) = d.get(i);
                assert_eq!(from, Some(peer.local_addr().unwrap()));
                seen.push(bytes[0]);
                // Replies of different lengths, more than a batch of them in all.
                let reply = vec![bytes[0]; 1 + usize::from(bytes[0])];
                d.queue(&router, &reply, from.unwrap());
            }
            d.flush(&router);
        }
        assert_eq!(seen, (0..40).collect::<Vec<_>>());
        let mut buf = [0u8; 200];
        for i in 0..40u8 {
            let (n, _) = peer.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], &vec![i; 1 + usize::from(i)][..]);
        }
    }

    #[test]
    fn a_datagram_over_the_limit_shows_longer_than_it() {
        let (router, peer) = pair();
        peer.send_to(&[7u8; 300], router.local_addr().unwrap())
            .unwrap();
        let mut d = Datagrams::new(100);
        assert_eq!(d.recv(&router).unwrap(), 1);
        assert_eq!(d.get(0).0.len(), 101);
    }

    #[test]
    fn a_refused_reply_does_not_stop_the_others() {
        let (router, peer) = pair();
        let mut d = Datagrams::new(100);
        // Port 0 cannot be sent to: the kernel refuses that one reply.
        d.queue(&router, b"lost", "127.0.0.1:0".parse().unwrap());
        d.queue(&router, b"kept", peer.local_addr().unwrap());
        d.flush(&router);
        let mut buf = [0u8; 16];
        let (n, _) = peer.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"kept");
    }
}
