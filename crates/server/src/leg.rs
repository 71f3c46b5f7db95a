//! The caller's leg of a call, as the UAS: the dialog, our `2xx` until its ACK, the SDP
//! offer/answer (in the INVITE, or late: our offer in the `2xx`, the answer in the ACK),
//! re-INVITE and UPDATE inside the call (session refresh, hold, a new codec), RFC 4028
//! session timers in either role, and the BYE in both directions.
//!
//! Sans-IO: every method takes `now`, pushes what to send onto the caller's queue and
//! returns at most one [`LegEvent`] for the call machine above it ([`crate::deposit`],
//! [`crate::retrieval`]), which alone decides what the call means.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Instant;

use boxless_media::{Negotiated, RtpSender, negotiate, write_sdp};
use boxless_sip::session::{self, Negotiation, Refresher, SessionTimer};
use boxless_sip::{
    Dialog, Fired, Message, Method, SipTimers, UacNonInvite, UasInvite, write_response,
};
use boxless_timer::TimerTable;

use crate::flow::Output;

/// What we allow and support, in every `2xx` and `405`.
pub(crate) const ALLOW: &str = "Allow: INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE, INFO\r\n";
const SUPPORTED: &str = "Supported: timer\r\n";

/// What the driver knows of the leg when the INVITE is answered.
#[derive(Debug, Clone)]
pub struct LegSetup {
    /// Where responses to the INVITE go (RFC 3261 §18.2.2).
    pub reply_to: SocketAddr,
    /// Where our requests go when the dialog names no IP literal (the INVITE's source).
    pub fallback_hop: SocketAddr,
    /// TCP or TLS: the transport retransmits our requests.
    pub reliable: bool,
    /// Our local media address.
    pub media: SocketAddr,
    /// SDP session id.
    pub session_id: u64,
    /// RFC 3261 timers.
    pub timers: SipTimers,
    /// Our `Min-SE` (RFC 4028).
    pub min_se: u32,
}

/// What happened on the leg that the call machine must act on.
#[derive(Debug)]
pub enum LegEvent {
    /// Media is (newly) agreed: the late offer's answer came in the ACK, or a re-INVITE or
    /// UPDATE changed the address, codec or direction.
    Media(Negotiated),
    /// The caller hung up; answer with [`Leg::answer_bye`] when the call allows.
    Bye(PendingBye),
    /// No ACK for our `2xx` within 64·T1.
    NoAck,
    /// The late offer's ACK carried no usable answer; our BYE is on its way.
    NoMedia,
    /// The session timer ran out (no refresh, or our refresh failed).
    Expired,
    /// Our BYE was answered or timed out: nothing more will come.
    Closed,
}

/// The caller's BYE, answered later: `200` once the call allows, `500` when what it promised
/// (a stored message) failed.
#[derive(Debug)]
pub struct PendingBye {
    cseq: u32,
    ok: Vec<u8>,
    fail: Vec<u8>,
    to: SocketAddr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Uac {
    Bye,
    Refresh,
}

#[derive(Debug, Clone, Copy)]
enum Timer {
    /// RFC 4028: time to refresh (we are the refresher) or to give up (the caller is).
    Session,
}

impl From<Timer> for usize {
    fn from(t: Timer) -> usize {
        t as usize
    }
}

/// What answering an INVITE needs, whichever machine runs the call.
#[derive(Debug)]
pub struct Answer<'a> {
    /// The INVITE.
    pub invite: &'a Message<'a>,
    /// Its dialog.
    pub dialog: Dialog,
    /// The leg's addresses and timers.
    pub setup: LegSetup,
    /// The INVITE's offer, negotiated; `None`: late offer.
    pub offer: Option<Negotiated>,
    /// RFC 4028 timer agreed by admission.
    pub timer: Option<SessionTimer>,
    /// Our RTP stream.
    pub tx: RtpSender,
}

impl Answer<'_> {
    /// Answers the INVITE: the leg and the output queue holding our `200`.
    pub(crate) fn leg(self, now: Instant) -> (Leg, VecDeque<Output>, RtpSender) {
        let mut out = VecDeque::new();
        let leg = Leg::answer(
            now,
            self.invite,
            self.dialog,
            self.setup,
            self.offer,
            self.timer,
            &mut out,
        );
        (leg, out, self.tx)
    }
}

/// One UAS leg.
#[derive(Debug)]
pub struct Leg {
    dialog: Dialog,
    s: LegSetup,
    next_hop: SocketAddr,
    /// Our `2xx` to the latest INVITE (initial or re-INVITE) and where it goes.
    invite: UasInvite,
    invite_to: SocketAddr,
    /// That `2xx` carried our offer: the answer comes in the ACK.
    awaiting_answer: bool,
    neg: Option<Negotiated>,
    sdp_version: u64,
    last_sdp: String,
    timer: Option<SessionTimer>,
    timers: TimerTable<Timer, 1>,
    uac: Option<(Uac, UacNonInvite)>,
    /// Our answer to the caller's last non-INVITE request (CSeq, bytes, destination), for
    /// its retransmissions.
    last_answer: Option<(u32, Vec<u8>, SocketAddr)>,
    bye_pending: bool,
    closing: bool,
}

impl Leg {
    /// Answers `invite` with `200` (the answer to `offer`, or our offer when it had none)
    /// and starts the leg.
    pub fn answer(
        now: Instant,
        invite: &Message<'_>,
        dialog: Dialog,
        s: LegSetup,
        offer: Option<Negotiated>,
        timer: Option<SessionTimer>,
        out: &mut VecDeque<Output>,
    ) -> Leg {
        let next_hop = dialog.next_hop().unwrap_or(s.fallback_hop);
        let mut leg = Leg {
            dialog,
            next_hop,
            invite: UasInvite::new(now, 0, Vec::new(), s.timers),
            invite_to: s.reply_to,
            awaiting_answer: offer.is_none(),
            neg: offer,
            sdp_version: s.session_id,
            last_sdp: String::new(),
            timer: None,
            timers: TimerTable::default(),
            uac: None,
            last_answer: None,
            bye_pending: false,
            closing: false,
            s,
        };
        leg.set_timer(now, timer);
        let sdp = leg.sdp(offer.as_ref());
        let ok = leg.ok(invite, Some(&sdp));
        leg.invite = UasInvite::new(now, invite.cseq.map_or(0, |c| c.seq), ok, leg.s.timers);
        out.push_back(Output::Sip {
            bytes: leg.invite.message().to_vec(),
            to: leg.invite_to,
        });
        leg
    }

    /// The media agreed so far (`None` until a late offer's answer arrives).
    pub fn media(&self) -> Option<&Negotiated> {
        self.neg.as_ref()
    }

    /// True when we may send media (agreed, and the caller does not hold the call).
    pub fn may_send(&self) -> bool {
        self.neg.is_some_and(|n| n.peer_receives())
    }

    /// When [`Leg::handle_timeout`] wants to run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.invite.poll_timeout(),
            self.uac.as_ref().and_then(|(_, t)| t.poll_timeout()),
            self.timers.next(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Advances the leg's timers.
    pub fn handle_timeout(&mut self, now: Instant, out: &mut VecDeque<Output>) -> Option<LegEvent> {
        match self.invite.handle_timeout(now) {
            Some(Fired::Retransmit) => out.push_back(Output::Sip {
                bytes: self.invite.message().to_vec(),
                to: self.invite_to,
            }),
            Some(Fired::TimedOut) if !self.closing => return Some(LegEvent::NoAck),
            _ => {}
        }
        if let Some((kind, tsx)) = self.uac.as_mut() {
            match tsx.handle_timeout(now) {
                Some(Fired::Retransmit) => out.push_back(Output::Sip {
                    bytes: tsx.message().to_vec(),
                    to: self.next_hop,
                }),
                Some(Fired::TimedOut) => {
                    let kind = *kind;
                    self.uac = None;
                    return self.uac_finished(kind, 408);
                }
                None => {}
            }
        }
        if self.timers.fired(Timer::Session, now)
            && let Some(t) = self.timer
            && !self.closing
        {
            match t.refresher {
                Refresher::Uac => return Some(LegEvent::Expired),
                Refresher::Uas => {
                    self.send_refresh(now, t, out);
                    self.timers.set(Timer::Session, now + t.refresh_after());
                }
            }
        }
        None
    }

    /// A SIP message of this dialog (the driver matched it); `reply_to` is where a response
    /// to it goes.
    pub fn handle_sip(
        &mut self,
        now: Instant,
        msg: &Message<'_>,
        reply_to: SocketAddr,
        out: &mut VecDeque<Output>,
    ) -> Option<LegEvent> {
        let Some(method) = msg.method() else {
            return self.response(msg);
        };
        let seq = msg.cseq.map_or(0, |c| c.seq);
        match method {
            Method::Ack => return self.ack(now, msg, out),
            Method::Invite if seq == self.invite.cseq() => {
                // A retransmission: our 2xx again until the ACK.
                if !self.invite.acked() {
                    out.push_back(Output::Sip {
                        bytes: self.invite.message().to_vec(),
                        to: self.invite_to,
                    });
                }
                return None;
            }
            Method::Cancel => {
                // The INVITE is answered already: CANCEL changes nothing (§9.2).
                self.reply(msg, 200, "OK", reply_to, "", out);
                return None;
            }
            _ => {}
        }
        if let Some((last, bytes, to)) = &self.last_answer
            && *last == seq
        {
            out.push_back(Output::Sip {
                bytes: bytes.clone(),
                to: *to,
            });
            return None;
        }
        if method == Method::Bye && self.bye_pending {
            return None; // held until the call answers it
        }
        if !self.dialog.remote_cseq(msg) {
            self.reply(msg, 500, "Server Internal Error", reply_to, "", out);
            return None;
        }
        match method {
            Method::Bye => {
                self.bye_pending = true;
                Some(LegEvent::Bye(self.pending_bye(msg, reply_to)))
            }
            Method::Invite => self.reinvite(now, msg, reply_to, out),
            Method::Update => self.update(now, msg, reply_to, out),
            Method::Options => {
                let extra = format!("{ALLOW}{SUPPORTED}Accept: application/sdp\r\n");
                self.reply(msg, 200, "OK", reply_to, &extra, out);
                None
            }
            // INFO (DTMF relay, media control) is acknowledged and ignored: digits come as
            // RFC 4733 events or tones.
            Method::Info => {
                self.reply(msg, 200, "OK", reply_to, "", out);
                None
            }
            _ => {
                self.reply(msg, 405, "Method Not Allowed", reply_to, ALLOW, out);
                None
            }
        }
    }

    /// Hangs up with `reason` (a `Reason` header value, RFC 3326).
    pub fn bye(&mut self, now: Instant, reason: &str, out: &mut VecDeque<Output>) {
        if self.closing {
            return;
        }
        self.closing = true;
        self.timers.clear(Timer::Session);
        let extra = format!("Reason: {reason}\r\n");
        // A refresh in flight no longer matters.
        self.send_request(now, Uac::Bye, &extra, out);
    }

    /// Sends our next in-dialog request (`BYE` or a refreshing `UPDATE`) and starts its
    /// client transaction, replacing any in flight.
    fn send_request(&mut self, now: Instant, kind: Uac, extra: &str, out: &mut VecDeque<Output>) {
        let method = match kind {
            Uac::Bye => "BYE",
            Uac::Refresh => "UPDATE",
        };
        let mut b = Vec::with_capacity(512);
        let branch = self.dialog.request(&mut b, method, extra.as_bytes(), None);
        out.push_back(Output::Sip {
            bytes: b.clone(),
            to: self.next_hop,
        });
        self.uac = Some((
            kind,
            UacNonInvite::new(now, b, branch, self.s.reliable, self.s.timers),
        ));
    }

    /// Answers the caller's BYE: `200`, or `500` when `ok` is false. The leg is then over.
    pub fn answer_bye(&mut self, bye: PendingBye, ok: bool, out: &mut VecDeque<Output>) {
        let bytes = if ok { bye.ok } else { bye.fail };
        self.bye_pending = false;
        self.closing = true;
        self.timers.clear(Timer::Session);
        self.invite.ack();
        self.uac = None;
        // A retransmission of the BYE gets the same answer.
        self.last_answer = Some((bye.cseq, bytes.clone(), bye.to));
        out.push_back(Output::Sip { bytes, to: bye.to });
    }

    fn ack(
        &mut self,
        now: Instant,
        msg: &Message<'_>,
        out: &mut VecDeque<Output>,
    ) -> Option<LegEvent> {
        if msg.cseq.map(|c| c.seq) != Some(self.invite.cseq()) || self.invite.acked() {
            return None;
        }
        self.invite.ack();
        if !std::mem::take(&mut self.awaiting_answer) {
            return None;
        }
        match negotiate(msg.body) {
            Ok(neg) => {
                self.neg = Some(neg);
                Some(LegEvent::Media(neg))
            }
            Err(e) => {
                metrics::counter!("boxless_calls_failed_total", "reason" => "no_sdp_answer")
                    .increment(1);
                tracing::warn!(error = %e, "no usable SDP answer in the ACK; hanging up");
                self.bye(now, "SIP;cause=488;text=\"No usable SDP answer\"", out);
                Some(LegEvent::NoMedia)
            }
        }
    }

    fn response(&mut self, msg: &Message<'_>) -> Option<LegEvent> {
        let code = msg.status()?;
        let branch = msg.top_via().and_then(|v| v.branch)?;
        let (kind, tsx) = self.uac.as_mut()?;
        if tsx.branch() != branch || !tsx.response(code) {
            return None;
        }
        let kind = *kind;
        self.uac = None;
        self.uac_finished(kind, code)
    }

    fn uac_finished(&mut self, kind: Uac, code: u16) -> Option<LegEvent> {
        match kind {
            Uac::Bye => Some(LegEvent::Closed),
            // RFC 4028 §10: a refresh that times out or finds no dialog ends the session;
            // one the caller refuses otherwise (405, 501: it takes no UPDATE) does not.
            Uac::Refresh if matches!(code, 408 | 481) => Some(LegEvent::Expired),
            Uac::Refresh => None,
        }
    }

    fn reinvite(
        &mut self,
        now: Instant,
        msg: &Message<'_>,
        reply_to: SocketAddr,
        out: &mut VecDeque<Output>,
    ) -> Option<LegEvent> {
        if self.closing {
            self.reply(
                msg,
                481,
                "Call/Transaction Does Not Exist",
                reply_to,
                "",
                out,
            );
            return None;
        }
        if !self.invite.acked() {
            // §14.2: the previous INVITE is still in progress on our side.
            self.reply(
                msg,
                500,
                "Server Internal Error",
                reply_to,
                "Retry-After: 1\r\n",
                out,
            );
            return None;
        }
        let offer = self.refresh(now, msg, reply_to, out)?;
        let sdp = self.sdp(offer.as_ref());
        let ok = self.ok(msg, Some(&sdp));
        self.invite = UasInvite::new(now, msg.cseq.map_or(0, |c| c.seq), ok, self.s.timers);
        self.invite_to = reply_to;
        out.push_back(Output::Sip {
            bytes: self.invite.message().to_vec(),
            to: reply_to,
        });
        self.awaiting_answer = offer.is_none();
        self.media_changed(offer)
    }

    fn update(
        &mut self,
        now: Instant,
        msg: &Message<'_>,
        reply_to: SocketAddr,
        out: &mut VecDeque<Output>,
    ) -> Option<LegEvent> {
        let offer = self.refresh(now, msg, reply_to, out)?;
        let sdp = offer.map(|o| self.sdp(Some(&o)));
        let ok = self.ok(msg, sdp.as_deref());
        self.last_answer = Some((msg.cseq.map_or(0, |c| c.seq), ok.clone(), reply_to));
        out.push_back(Output::Sip {
            bytes: ok,
            to: reply_to,
        });
        self.media_changed(offer)
    }

    /// What a re-INVITE and an UPDATE share: the session timer it asks for (`422` below our
    /// minimum), its offer if any (`488` when none is usable: the session goes on as it
    /// was, §14.2), and the target refresh. `None` when it was refused (answered already);
    /// else `Some(offer)`, `Some(None)` for a request without SDP.
    fn refresh(
        &mut self,
        now: Instant,
        msg: &Message<'_>,
        reply_to: SocketAddr,
        out: &mut VecDeque<Output>,
    ) -> Option<Option<Negotiated>> {
        let timer = self.timer_for(msg, reply_to, out).ok()?;
        let offer = if msg.body.is_empty() {
            None
        } else {
            match negotiate(msg.body) {
                Ok(n) => Some(n),
                Err(e) => {
                    let extra = format!("Warning: 399 boxless \"{e}\"\r\n");
                    self.reply(msg, 488, "Not Acceptable Here", reply_to, &extra, out);
                    return None;
                }
            }
        };
        self.dialog.refresh_target(msg);
        self.next_hop = self.dialog.next_hop().unwrap_or(self.next_hop);
        self.set_timer(now, timer);
        Some(offer)
    }

    fn media_changed(&mut self, offer: Option<Negotiated>) -> Option<LegEvent> {
        let neg = offer?;
        let changed = self.neg != Some(neg);
        self.neg = Some(neg);
        changed.then_some(LegEvent::Media(neg))
    }

    /// The session timer a refreshing request asks for, or `Err` after answering `422`.
    fn timer_for(
        &mut self,
        msg: &Message<'_>,
        reply_to: SocketAddr,
        out: &mut VecDeque<Output>,
    ) -> Result<Option<SessionTimer>, ()> {
        match session::negotiate(msg, self.s.min_se) {
            Negotiation::Off => Ok(None),
            Negotiation::On(t) => Ok(Some(t)),
            Negotiation::TooSmall(min) => {
                let extra = format!("Min-SE: {min}\r\n");
                self.reply(
                    msg,
                    422,
                    "Session Interval Too Small",
                    reply_to,
                    &extra,
                    out,
                );
                Err(())
            }
        }
    }

    fn set_timer(&mut self, now: Instant, timer: Option<SessionTimer>) {
        self.timer = timer;
        match timer {
            Some(t) if t.refresher == Refresher::Uas => {
                self.timers.set(Timer::Session, now + t.refresh_after())
            }
            Some(t) => self.timers.set(Timer::Session, now + t.expire_after()),
            None => self.timers.clear(Timer::Session),
        }
    }

    /// We are the refresher: an UPDATE without SDP keeps the session alive (RFC 4028 §7.4
    /// prefers UPDATE; the media stays as it is).
    fn send_refresh(&mut self, now: Instant, t: SessionTimer, out: &mut VecDeque<Output>) {
        if self.uac.is_some() {
            return;
        }
        let extra = format!(
            "Session-Expires: {};refresher=uas\r\n{SUPPORTED}",
            t.interval.as_secs()
        );
        self.send_request(now, Uac::Refresh, &extra, out);
    }

    /// Our SDP: the answer to `offer`, or our offer. The `o=` version rises only when the
    /// content changes, so a plain session refresh gets the same SDP back (RFC 4028 §7.4).
    fn sdp(&mut self, offer: Option<&Negotiated>) -> String {
        let body = write_sdp(self.s.media, self.s.session_id, self.sdp_version, offer);
        if self.last_sdp.is_empty() || body == self.last_sdp {
            self.last_sdp = body.clone();
            return body;
        }
        self.sdp_version += 1;
        let body = write_sdp(self.s.media, self.s.session_id, self.sdp_version, offer);
        self.last_sdp = body.clone();
        body
    }

    fn ok(&self, req: &Message<'_>, sdp: Option<&str>) -> Vec<u8> {
        let timer = self.timer.map(|t| t.header()).unwrap_or_default();
        // A 2xx to an INVITE carries the request's Record-Route (§12.1.1), so that the
        // caller's side builds the same route set.
        let mut rr = String::new();
        if req.method() == Some(Method::Invite) {
            for v in req.header_values("record-route") {
                rr.push_str("Record-Route: ");
                rr.push_str(v);
                rr.push_str("\r\n");
            }
        }
        let extra = format!(
            "{rr}Contact: <{}>\r\n{ALLOW}{SUPPORTED}{timer}Server: boxless\r\n",
            self.dialog.contact()
        );
        let mut b = Vec::with_capacity(1024);
        write_response(
            &mut b,
            req,
            200,
            "OK",
            Some(&self.dialog.id().local_tag),
            None,
            extra.as_bytes(),
            sdp.map(|s| ("application/sdp", s.as_bytes())),
        );
        b
    }

    fn reply(
        &mut self,
        msg: &Message<'_>,
        code: u16,
        reason: &str,
        to: SocketAddr,
        extra: &str,
        out: &mut VecDeque<Output>,
    ) {
        let mut b = Vec::with_capacity(512);
        write_response(
            &mut b,
            msg,
            code,
            reason,
            None,
            None,
            extra.as_bytes(),
            None,
        );
        if msg.method() != Some(Method::Cancel) {
            self.last_answer = Some((msg.cseq.map_or(0, |c| c.seq), b.clone(), to));
        }
        out.push_back(Output::Sip { bytes: b, to });
    }

    fn pending_bye(&self, msg: &Message<'_>, to: SocketAddr) -> PendingBye {
        let mut ok = Vec::with_capacity(512);
        write_response(&mut ok, msg, 200, "OK", None, None, b"", None);
        let mut fail = Vec::with_capacity(512);
        write_response(
            &mut fail,
            msg,
            500,
            "Message Not Stored",
            None,
            None,
            b"Retry-After: 5\r\n",
            None,
        );
        PendingBye {
            cseq: msg.cseq.map_or(0, |c| c.seq),
            ok,
            fail,
            to,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use boxless_media::Codec;

    use crate::flow::EndReason;
    use crate::harness::{deposit, invite, request, retrieval, sdp, settings};
    use boxless_sip::Method;

    #[test]
    fn late_offer_ours_in_the_200_the_answer_in_the_ack() {
        let mut h = deposit(settings(), 100, &invite(false, ""));
        let ok = h.last();
        assert_eq!(ok.status(), Some(200));
        let offer = boxless_media::negotiate(ok.body).expect("our offer in the 200");
        assert_eq!(offer.remote.port(), 20000);
        assert!(String::from_utf8_lossy(ok.body).contains("RTP/AVP 0 8 9 101"));
        h.wait(Duration::from_millis(200));
        assert_eq!(h.rtp, 0, "no media before the answer");
        h.sip(&request("ACK", 1, "", &sdp(7000, "8 101", "sendrecv")));
        assert_eq!(h.media_peer, Some("127.0.0.1:7000".parse().unwrap()));
        h.wait(Duration::from_millis(100));
        assert_eq!(h.rtp, 5, "the greeting starts once the answer came");
        h.wait(Duration::from_millis(100));
        let mut tx = boxless_media::RtpSender::new(Codec::Pcma, 8, 9, 1, 1);
        h.send_with(&mut tx, 75, &[8000; 160]);
        h.sip(&request("BYE", 2, "", ""));
        assert_eq!(
            h.stored.as_ref().map(Vec::len),
            Some(12_000),
            "PCMA recorded"
        );
    }

    #[test]
    fn record_route_is_copied_into_the_200_and_our_bye_follows_it() {
        let rr = "Record-Route: <sip:127.0.0.5:5060;lr>\r\n";
        let mut h = deposit(settings(), 20, &invite(true, rr));
        assert_eq!(
            h.last().header("record-route"),
            Some("<sip:127.0.0.5:5060;lr>")
        );
        h.sip(&request("ACK", 1, "", ""));
        h.speak(1500, 8000);
        h.wait(Duration::from_secs(4));
        h.d.handle_stored(h.now, true);
        let mut to = None;
        while let Some(o) = h.d.poll_output() {
            if let crate::flow::Output::Sip { bytes, to: t } = o {
                h.sip.push(bytes);
                to = Some(t);
            }
        }
        let bye = h.last();
        assert_eq!(bye.method(), Some(Method::Bye));
        assert_eq!(bye.header("route"), Some("<sip:127.0.0.5:5060;lr>"));
        assert_eq!(
            to,
            Some("127.0.0.5:5060".parse().unwrap()),
            "to the router first"
        );
    }

    #[test]
    fn late_offer_without_a_usable_answer_hangs_up_with_a_reason() {
        let mut h = deposit(settings(), 100, &invite(false, ""));
        h.sip(&request("ACK", 1, "", ""));
        let bye = h.last();
        assert_eq!(bye.method(), Some(Method::Bye));
        assert!(bye.header("reason").unwrap().contains("cause=488"));
        assert!(!h.missed && h.stored.is_none(), "no message, no alert");
        h.answer_last(200);
        assert_eq!(h.ended, Some(EndReason::NoMedia));
    }

    #[test]
    fn reinvite_refresh_hold_and_codec_change_keep_the_recording() {
        let mut h = deposit(settings(), 20, &invite(true, ""));
        h.sip(&request("ACK", 1, "", ""));
        h.speak(1000, 8000);
        let first = h.last().body.to_vec();
        // A session refresh with the same offer: the same SDP back, version unchanged.
        h.sip(&request("INVITE", 2, "", &sdp(6000, "0 8 101", "sendrecv")));
        let ok = h.last();
        assert_eq!(ok.status(), Some(200));
        assert_eq!(ok.cseq.unwrap().seq, 2);
        assert_eq!(ok.body, &first[..], "same SDP for a refresh");
        // Its retransmission gets the same 200; the ACK stops the retransmissions.
        let n = h.sip.len();
        h.sip(&request("INVITE", 2, "", &sdp(6000, "0 8 101", "sendrecv")));
        assert_eq!(h.sip.len(), n + 1);
        h.sip(&request("ACK", 2, "", ""));
        h.speak(500, 8000);
        // Hold: answered recvonly, and we send nothing while held.
        h.sip(&request("INVITE", 3, "", &sdp(6000, "0 101", "sendonly")));
        let ok = h.last();
        assert!(String::from_utf8_lossy(ok.body).contains("a=recvonly"));
        assert!(
            String::from_utf8_lossy(ok.body).contains("o=boxless 7 8 "),
            "new version"
        );
        h.sip(&request("ACK", 3, "", ""));
        h.speak(500, 8000);
        // A new codec and address.
        h.sip(&request("UPDATE", 4, "", &sdp(6002, "8 101", "sendrecv")));
        assert_eq!(h.last_status(), Some(200));
        assert_eq!(h.media_peer, Some("127.0.0.1:6002".parse().unwrap()));
        let mut tx = boxless_media::RtpSender::new(Codec::Pcma, 8, 78, 200, 20_000);
        h.send_with(&mut tx, 25, &[8000; 160]);
        h.sip(&request("BYE", 5, "", ""));
        let n = h.stored.as_ref().map_or(0, Vec::len);
        assert_eq!(n, 8000 * 5 / 2, "all 2.5 s recorded across the changes");
    }

    #[test]
    fn refused_offers_and_stale_cseqs_leave_the_call_as_it_was() {
        let mut h = deposit(settings(), 20, &invite(true, ""));
        h.sip(&request("ACK", 1, "", ""));
        h.sip(&request("INVITE", 2, "", &sdp(6000, "18", "sendrecv")));
        assert_eq!(h.last_status(), Some(488));
        h.sip(&request("UPDATE", 2, "", ""));
        assert_eq!(
            h.last_status(),
            Some(488),
            "a retransmission: the same answer"
        );
        h.sip(&request("UPDATE", 1, "", ""));
        assert_eq!(h.last_status(), Some(500), "CSeq below the last one");
        h.sip(&request("UPDATE", 3, "Session-Expires: 30\r\n", ""));
        assert_eq!(h.last_status(), Some(422));
        assert_eq!(h.last().header("min-se"), Some("90"));
        h.sip(&request("MESSAGE", 4, "", ""));
        assert_eq!(h.last_status(), Some(405));
        h.speak(1500, 8000);
        h.sip(&request("BYE", 5, "", ""));
        assert!(h.stored.is_some(), "the call went on");
    }

    #[test]
    fn reinvite_without_sdp_gets_our_offer_and_takes_the_answer_from_the_ack() {
        let mut h = retrieval(1000, &invite(true, ""));
        h.sip(&request("ACK", 1, "", ""));
        h.sip(&request("INVITE", 2, "", ""));
        let ok = h.last();
        assert!(String::from_utf8_lossy(ok.body).contains("RTP/AVP 0 8 9 101"));
        h.sip(&request("ACK", 2, "", &sdp(6100, "8 101", "sendrecv")));
        assert_eq!(h.media_peer, Some("127.0.0.1:6100".parse().unwrap()));
    }

    #[test]
    fn session_timer_the_callers_refresh_keeps_it_up_its_absence_ends_it() {
        let se = "Supported: timer\r\nSession-Expires: 120;refresher=uac\r\n";
        let mut s = settings();
        s.silence = Duration::from_secs(600);
        s.max_samples = 8000 * 600;
        let mut h = deposit(s, 20, &invite(true, se));
        let ok = h.last();
        assert_eq!(ok.header("session-expires"), Some("120;refresher=uac"));
        assert_eq!(ok.header("require"), Some("timer"));
        h.sip(&request("ACK", 1, "", ""));
        h.speak(1000, 8000);
        h.wait(Duration::from_secs(60));
        h.sip(&request("UPDATE", 2, se, ""));
        assert_eq!(h.last_status(), Some(200));
        h.wait(Duration::from_secs(80));
        assert!(h.stored.is_none(), "refreshed: still up at 141 s");
        h.wait(Duration::from_secs(10));
        assert!(
            h.stored.is_some(),
            "no refresh within 88 s: the message is kept"
        );
        h.d.handle_stored(h.now, true);
        h.drain();
        let bye = h.last();
        assert_eq!(bye.method(), Some(Method::Bye));
        assert!(bye.header("reason").unwrap().contains("Session expired"));
    }

    #[test]
    fn session_timer_we_refresh_with_update_when_the_caller_cannot() {
        let mut s = settings();
        s.silence = Duration::from_secs(600);
        s.max_samples = 8000 * 600;
        let mut h = deposit(s, 20, &invite(true, "Session-Expires: 100\r\n"));
        assert_eq!(
            h.last().header("session-expires"),
            Some("100;refresher=uas")
        );
        assert_eq!(h.last().header("require"), None);
        h.sip(&request("ACK", 1, "", ""));
        h.wait(Duration::from_secs(51));
        let up = h.last();
        assert_eq!(up.method(), Some(Method::Update));
        assert_eq!(up.header("session-expires"), Some("100;refresher=uas"));
        assert!(up.body.is_empty());
        h.answer_last(200);
        let n = h.sip.len();
        h.wait(Duration::from_secs(20));
        assert_eq!(h.sip.len(), n, "answered: no retransmission");
        h.wait(Duration::from_secs(40));
        assert_eq!(h.last().method(), Some(Method::Update), "the next refresh");
        assert_eq!(h.ended, None);
    }
}
