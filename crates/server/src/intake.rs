//! A call's received media, taken on the call's own clock: when its RTP socket is drained
//! (ticks of a process-wide grid, coarser while a message is recorded than while the
//! caller may be pressing keys), and the tape a deposit's audio is written to as it is
//! taken.

use std::time::{Duration, Instant};

use boxless_media::{Law, Pending};
use boxless_store::{Arrival, Encoding, Recording, Store};

use crate::call::CallFlow;

/// How long received RTP may wait in the socket of a call that is not recording (a menu
/// listening for keys, a call setting up or ending): 10 packets of 20 ms. A key is acted on
/// this late at most. A call that plays takes its packets at every 20 ms frame anyway.
pub(crate) const LISTEN_DRAIN: Duration = Duration::from_millis(200);

/// How long received RTP may wait in the socket of a call whose message is being
/// recorded: 25 packets of 20 ms, one `recvmmsg`. Nothing in it is urgent but a `#`, which
/// ends the message this late at most (the packets after it are not recorded). Measured
/// at 1,000 recordings: about 20 % less CPU than draining every 200 ms
/// (`bench/RESULTS.md`); 1 s saved little more, and would keep a `#` waiting a second and
/// hold 50 packets in the kernel, a quarter of a small default socket buffer.
pub(crate) const RECORD_DRAIN: Duration = Duration::from_millis(500);

/// How many groups the calls' drains are spread over, a period / this apart.
const DRAIN_PHASES: u32 = 10;

/// Packets taken from a call's socket at one wake, at most: 500 ms of 10 ms packets is 50.
/// A flood past it stays in the kernel's socket buffer, which drops the overflow.
pub(crate) const DRAIN_MAX: usize = 64;

/// The call on RTP `port` counted among all calls: ports are handed out in order, even ones
/// only, so consecutive calls have consecutive indexes. Both the drain's phase and the
/// call's shard ([`crate::shard::Shards::spawn`]) are this modulo their count, so a shard
/// count that divides [`DRAIN_PHASES`] puts each phase on one shard.
pub(crate) fn call_index(port: u16) -> u32 {
    u32::from(port / 2)
}

/// How long `machine`'s received RTP may wait.
pub(crate) fn drain_period(machine: &CallFlow) -> Duration {
    if machine.is_recording() {
        RECORD_DRAIN
    } else {
        LISTEN_DRAIN
    }
}

/// Where the process's grids start: the drains' and the frames' ([`crate::FrameGrid`]).
/// A listening call's drain (a phase of [`LISTEN_DRAIN`] / [`DRAIN_PHASES`], 20 ms apart)
/// falls on a frame's tick, so a call that plays wakes no more often to drain.
pub(crate) fn epoch() -> Instant {
    static EPOCH: std::sync::LazyLock<Instant> = std::sync::LazyLock::new(Instant::now);
    *EPOCH
}

/// When the next drain of the call on RTP `port` is due after `now`: the next tick of a
/// process-wide grid of `period`, shifted by the call's phase, not `now + period`. Calls of
/// one phase drain together, so a worker thread parks and wakes once for many of them
/// rather than once every millisecond or so for a few (measured: about 14 % of the
/// server's CPU at 1,000 recordings, `bench/RESULTS.md`); [`DRAIN_PHASES`] phases keep
/// each burst to a tenth of the calls, so a playing call's 20 ms frame never waits behind
/// all of them. Consecutive calls ([`call_index`]) fall in consecutive phases.
pub(crate) fn drain_due(now: Instant, period: Duration, port: u16) -> Instant {
    let phase = period / DRAIN_PHASES * (call_index(port) % DRAIN_PHASES);
    // Strictly after `now`: a drain that falls on a tick is not due again at once.
    crate::flow::tick_at_or_after(epoch() + phase, period, now + Duration::from_nanos(1))
}

/// Where a deposit's audio goes as it is taken: the recording's file, started at the first
/// write; nowhere once a write failed (disk full), and the call then ends as a failed
/// store.
#[derive(Default)]
pub(crate) struct Tape {
    recording: Option<Recording>,
    failed: bool,
}

impl Tape {
    /// Appends what `machine` has due to the recording, starting it if need be. The write
    /// goes to the page cache (about 8 KB a second a call) right here: a hop to a blocking
    /// thread would cost more than the write; the fsync, which may wait on the disk,
    /// happens at the end on a blocking thread.
    pub(crate) fn take(&mut self, machine: &mut CallFlow, store: &Store, arrival: Arrival) {
        let (rate, audio) = machine.audio();
        let n = audio.len();
        if !self.failed {
            if self.recording.is_none() {
                let enc = match audio {
                    Pending::G711(Law::Alaw, _) => Encoding::Alaw,
                    Pending::G711(..) => Encoding::Mulaw,
                    Pending::Pcm(_) => Encoding::Pcm16,
                };
                match store.start_recording(arrival, rate, enc) {
                    Ok(r) => self.recording = Some(r),
                    Err(e) => {
                        tracing::error!(error = %e, "recording NOT started");
                        self.failed = true;
                    }
                }
            }
            let written = match (self.recording.as_mut(), audio) {
                (Some(_), _) if n == 0 => None,
                (Some(rec), Pending::Pcm(samples)) => Some(rec.append(samples)),
                (Some(rec), Pending::G711(_, octets)) => Some(rec.append_coded(octets)),
                (None, _) => None,
            };
            if let Some(Err(e)) = written {
                tracing::error!(error = %e, "recording NOT written");
                self.failed = true;
            }
        }
        machine.audio_taken(n);
    }

    /// [`Tape::take`], if `machine` has audio due. Called after each packet of a drain: a
    /// drain brings up to [`RECORD_DRAIN`] of audio at once, more than the machine's window
    /// keeps room for past its second; taken as it comes due, none of it is turned away.
    pub(crate) fn take_due(&mut self, machine: &mut CallFlow, store: &Store, arrival: Arrival) {
        if !machine.audio().1.is_empty() {
            self.take(machine, store, arrival);
        }
    }

    /// The recording so far, if one was started; the tape is empty after.
    pub(crate) fn unload(&mut self) -> Option<Recording> {
        self.recording.take()
    }

    /// A write failed: what the tape holds is not the whole message.
    pub(crate) fn failed(&self) -> bool {
        self.failed
    }
}

#[cfg(test)]
mod tests {
    use boxless_core::{LinkPool, PhoneNumber};
    use boxless_media::RtpSender;
    use boxless_sip::Message;

    use super::*;
    use crate::harness::{CALLER, deposit, invite, request, settings};

    #[test]
    fn a_drain_of_more_audio_than_the_window_holds_loses_none_of_it() {
        let dir = std::env::temp_dir().join(format!(
            "boxless-intake-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let pool = LinkPool::parse(&["+15550001000"]).unwrap();
        let store = Store::open(&dir, "ms1", pool).unwrap();
        let arrival = Arrival {
            recipient: PhoneNumber::parse_e164("+15551230002").unwrap(),
            caller: PhoneNumber::parse_e164("+15551230001"),
            received_at_ms: 0,
        };
        let mut s = settings();
        s.max_samples = 8000 * 60;
        let mut h = deposit(s, 20, &invite(true, ""));
        h.sip(&request("ACK", 1, "", ""));
        h.wait(Duration::from_millis(40));
        assert!(h.d.is_recording());
        // Three seconds of voice wait in the socket and come in one drain, as the driver
        // hands them over: each packet, then whatever came due. The window keeps room for
        // 1.3 s; the rest must have gone to the tape by the time it arrives.
        let mut tx = RtpSender::new(boxless_media::Codec::Pcmu, 0, 77, 5, 5);
        let mut b = Vec::new();
        let mut tape = Tape::default();
        for _ in 0..150 {
            tx.voice(&[8000; 160], &mut b);
            h.d.handle_rtp(h.now, &b);
            tape.take_due(&mut h.d, &store, arrival);
        }
        let bye = request("BYE", 2, "", "");
        let bye = Message::parse(&bye, false).unwrap();
        h.d.handle_sip(h.now, &bye, CALLER.parse().unwrap());
        assert!(!h.d.is_recording());
        tape.take(&mut h.d, &store, arrival); // the end: all that is left
        assert!(!tape.failed());
        let rec = tape.unload().expect("started");
        assert_eq!(rec.samples(), 150 * 160, "every packet kept");
        store.discard_recording(rec).unwrap();
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_drain_falls_on_its_phase_s_tick_within_one_period() {
        let start = Instant::now();
        for period in [LISTEN_DRAIN, RECORD_DRAIN] {
            for port in [40_000u16, 40_002, 40_018, 40_020, 45_998] {
                let mut dues = Vec::new();
                for ms in [0u64, 1, 57, 199, 200, 201, 499, 500, 999] {
                    let now = start + Duration::from_millis(ms);
                    let due = drain_due(now, period, port);
                    assert!(due > now && due <= now + period, "port {port} at {ms} ms");
                    dues.push(due);
                }
                // Calls of one phase share ticks: a period apart, whoever asks when.
                for pair in dues.windows(2) {
                    let apart = pair[1].duration_since(pair[0]).as_nanos();
                    assert_eq!(apart % period.as_nanos(), 0, "port {port}");
                }
            }
            // Consecutive calls (ports two apart) fall in consecutive phases.
            let later = start + Duration::from_secs(5);
            let (a, b, c) = (
                drain_due(later, period, 40_000),
                drain_due(later, period, 40_002),
                drain_due(later, period, 40_020),
            );
            let step = period / DRAIN_PHASES;
            assert!(b == a + step || a == b + period - step, "{a:?} {b:?}");
            assert_eq!(a, c);
        }
    }
}
