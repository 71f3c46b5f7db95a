//! Session timers (RFC 4028) from the UAS's side: what a request asks for, what we answer,
//! and who refreshes. Plain values; the call machine keeps the clock.

use std::time::Duration;

use crate::hdr::{param, split_commas};
use crate::lex::parse_small_uint;
use crate::parse::Message;

/// Who sends the refreshes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresher {
    /// The caller (the INVITE's sender).
    Uac,
    /// We do.
    Uas,
}

/// A session timer in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionTimer {
    /// Session interval.
    pub interval: Duration,
    /// Who refreshes.
    pub refresher: Refresher,
    /// The caller supports `timer` (our 2xx then carries `Require: timer`).
    pub uac_supports: bool,
}

/// What a (re-)INVITE or UPDATE asks of session timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Negotiation {
    /// No `Session-Expires`: no timer for this session (RFC 4028 §9).
    Off,
    /// Use this timer; answer with [`SessionTimer::header`].
    On(SessionTimer),
    /// The interval is below our minimum: answer `422` with `Min-SE: {0}`.
    TooSmall(u32),
}

/// The smallest interval RFC 4028 allows (and our `Min-SE`).
pub const MIN_SE: u32 = 90;

/// Reads a request's `Session-Expires` and `Supported`/`Require`; `min_se` is ours.
pub fn negotiate(req: &Message<'_>, min_se: u32) -> Negotiation {
    let Some(se) = req.header_values("session-expires").next() else {
        return Negotiation::Off;
    };
    let (delta, params) = match se.split_once(';') {
        Some((d, p)) => (d.trim(), p),
        None => (se.trim(), ""),
    };
    let Some(secs) = parse_small_uint(delta, u32::MAX as u64) else {
        return Negotiation::Off;
    };
    if secs < u64::from(min_se) {
        return Negotiation::TooSmall(min_se);
    }
    let has_timer = |name: &str| {
        req.header_values(name)
            .flat_map(split_commas)
            .any(|t| t.eq_ignore_ascii_case("timer"))
    };
    let uac_supports = has_timer("supported") || has_timer("require");
    // §9: a caller that supports timers may choose the refresher; one that does not
    // cannot refresh, so we do.
    let refresher = match param(params, "refresher").flatten() {
        Some(r) if uac_supports && r.eq_ignore_ascii_case("uac") => Refresher::Uac,
        Some(r) if r.eq_ignore_ascii_case("uas") => Refresher::Uas,
        _ if uac_supports => Refresher::Uac,
        _ => Refresher::Uas,
    };
    Negotiation::On(SessionTimer {
        interval: Duration::from_secs(secs),
        refresher,
        uac_supports,
    })
}

impl SessionTimer {
    /// The header lines of our `2xx` (§9).
    pub fn header(&self) -> String {
        let who = match self.refresher {
            Refresher::Uac => "uac",
            Refresher::Uas => "uas",
        };
        let require = if self.uac_supports {
            "Require: timer\r\n"
        } else {
            ""
        };
        format!(
            "Session-Expires: {};refresher={who}\r\n{require}",
            self.interval.as_secs()
        )
    }

    /// When the refresher should refresh: half the interval (§10).
    pub fn refresh_after(&self) -> Duration {
        self.interval / 2
    }

    /// When the other side gives up without a refresh: the interval less a third of it,
    /// at most 32 s less (§10).
    pub fn expire_after(&self) -> Duration {
        self.interval - (self.interval / 3).min(Duration::from_secs(32))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(extra: &str) -> Vec<u8> {
        format!(
            "INVITE sip:a@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK1\r\n\
From: <sip:b@h>;tag=1\r\nTo: <sip:a@h>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n{extra}Content-Length: 0\r\n\r\n"
        )
        .into_bytes()
    }

    fn n(extra: &str) -> Negotiation {
        negotiate(&Message::parse(&req(extra), false).unwrap(), MIN_SE)
    }

    #[test]
    fn uac_that_supports_timers_refreshes_unless_it_asks_us() {
        let Negotiation::On(t) = n("Supported: timer, 100rel\r\nSession-Expires: 1800\r\n") else {
            panic!()
        };
        assert_eq!(t.refresher, Refresher::Uac);
        assert_eq!(
            t.header(),
            "Session-Expires: 1800;refresher=uac\r\nRequire: timer\r\n"
        );
        assert_eq!(t.refresh_after(), Duration::from_secs(900));
        assert_eq!(t.expire_after(), Duration::from_secs(1768));
        let Negotiation::On(t) = n("k: timer\r\nx: 120;refresher=uas\r\n") else {
            panic!()
        };
        assert_eq!(t.refresher, Refresher::Uas);
        assert_eq!(t.expire_after(), Duration::from_secs(88));
    }

    #[test]
    fn a_proxy_inserted_timer_makes_us_the_refresher_and_small_ones_get_422() {
        let Negotiation::On(t) = n("Session-Expires: 300;refresher=uac\r\n") else {
            panic!()
        };
        assert_eq!(t.refresher, Refresher::Uas, "the UAC cannot refresh");
        assert!(!t.header().contains("Require"));
        assert_eq!(
            n("Supported: timer\r\nSession-Expires: 30\r\n"),
            Negotiation::TooSmall(90)
        );
        assert_eq!(n(""), Negotiation::Off);
        // Hostile values: too large to parse is no timer; the largest is taken, not a panic.
        assert_eq!(
            n("Session-Expires: 99999999999999999999\r\n"),
            Negotiation::Off
        );
        let Negotiation::On(t) = n("Session-Expires: 4294967295;refresher=uas\r\n") else {
            panic!()
        };
        assert_eq!(
            t.refresh_after(),
            Duration::from_millis(4_294_967_295_000 / 2)
        );
        assert_eq!(n("Session-Expires: ;refresher=uac\r\n"), Negotiation::Off);
        assert_eq!(n("Session-Expires: soon\r\n"), Negotiation::Off);
    }
}
