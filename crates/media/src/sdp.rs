//! SDP offer/answer for one audio stream (RFC 3264), G.711 and telephone-event only.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use crate::g711::Codec;

/// Why an offer cannot be answered (answer `488`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SdpError {
    /// Not parseable SDP.
    #[error("malformed SDP")]
    Malformed,
    /// No active audio stream over RTP/AVP.
    #[error("no audio stream")]
    NoAudio,
    /// Neither PCMU, PCMA nor G.722 offered.
    #[error("no common codec (PCMU, PCMA or G722)")]
    NoCommonCodec,
    /// The connection address is not an IP literal.
    #[error("connection address is not an IP address")]
    BadAddress,
}

/// Which way media flows, as one side's SDP says it (RFC 3264 §5.1, §8.4: hold).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Direction {
    /// Both ways (the default).
    #[default]
    SendRecv,
    /// This side only sends (the other is put on hold).
    SendOnly,
    /// This side only receives.
    RecvOnly,
    /// Neither (both on hold).
    Inactive,
}

impl Direction {
    /// The attribute name.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    /// What an answer to an offer with this direction says (RFC 3264 §6.1).
    pub fn answer(self) -> Direction {
        match self {
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            d => d,
        }
    }

    /// True when the side whose SDP this is wants media.
    pub fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }

    fn parse(attr: &str) -> Option<Direction> {
        Some(match attr.to_ascii_lowercase().as_str() {
            "sendrecv" => Direction::SendRecv,
            "sendonly" => Direction::SendOnly,
            "recvonly" => Direction::RecvOnly,
            "inactive" => Direction::Inactive,
            _ => return None,
        })
    }
}

/// The outcome of an offer: what both ends will use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    /// The voice codec.
    pub codec: Codec,
    /// Its payload type (static).
    pub pt: u8,
    /// telephone-event payload type, if offered.
    pub dtmf_pt: Option<u8>,
    /// Where the peer wants RTP (`0.0.0.0`: RFC 2543 hold, send nothing).
    pub remote: SocketAddr,
    /// The peer's direction.
    pub direction: Direction,
}

impl Negotiated {
    /// True when the peer wants media from us now (not on hold, a real address).
    pub fn peer_receives(&self) -> bool {
        self.direction.receives() && !self.remote.ip().is_unspecified()
    }
}

/// Picks the first offered codec Boxless speaks, keeping the offer's order (RFC 3264 §6.1).
pub fn negotiate(offer: &[u8]) -> Result<Negotiated, SdpError> {
    let s = sdp_types::Session::parse(offer).map_err(|_| SdpError::Malformed)?;
    let media = s
        .medias
        .iter()
        .find(|m| {
            m.media == "audio" && m.port != 0 && m.proto.to_ascii_uppercase().starts_with("RTP/AVP")
        })
        .ok_or(SdpError::NoAudio)?;
    let conn = media
        .connections
        .first()
        .or(s.connection.as_ref())
        .ok_or(SdpError::BadAddress)?;
    let ip: IpAddr = conn
        .connection_address
        .split('/')
        .next()
        .unwrap_or("")
        .parse()
        .map_err(|_| SdpError::BadAddress)?;
    let rtpmap = |pt: u8| -> Option<String> {
        media
            .attributes
            .iter()
            .filter(|a| a.attribute.eq_ignore_ascii_case("rtpmap"))
            .filter_map(|a| a.value.as_deref())
            .find_map(|v| {
                let (p, enc) = v.split_once(' ')?;
                (p.trim().parse::<u8>().ok()? == pt).then(|| enc.trim().to_ascii_lowercase())
            })
    };
    let mut codec = None;
    let mut dtmf_pt = None;
    for f in media.fmt.split_whitespace() {
        let Ok(pt) = f.parse::<u8>() else { continue };
        let enc = rtpmap(pt);
        let c = match (pt, enc.as_deref()) {
            (0, None) => Some(Codec::Pcmu),
            (8, None) => Some(Codec::Pcma),
            (9, None) => Some(Codec::G722),
            // RFC 3551: G.722's RTP clock is 8000 although it samples at 16 kHz.
            (_, Some(e)) if e.starts_with("g722/8000") => Some(Codec::G722),
            (_, Some(e)) if e.starts_with("pcmu/8000") => Some(Codec::Pcmu),
            (_, Some(e)) if e.starts_with("pcma/8000") => Some(Codec::Pcma),
            (_, Some(e)) if e.starts_with("telephone-event/8000") => {
                dtmf_pt.get_or_insert(pt);
                None
            }
            _ => None,
        };
        if let (None, Some(c)) = (codec, c) {
            codec = Some((c, pt));
        }
    }
    let (codec, pt) = codec.ok_or(SdpError::NoCommonCodec)?;
    // A media-level direction overrides the session-level one (RFC 4566 §6).
    let direction = media
        .attributes
        .iter()
        .chain(s.attributes.iter())
        .find_map(|a| Direction::parse(&a.attribute))
        .unwrap_or_default();
    Ok(Negotiated {
        codec,
        pt,
        dtmf_pt,
        remote: SocketAddr::new(ip, media.port),
        direction,
    })
}

/// Writes an answer to `neg` (or, without it, an offer of PCMU, PCMA, G.722 and
/// telephone-event 101: G.711 first, for the switches that take the first codec offered). `version` is the `o=` line's: it rises with every new offer or answer in a
/// session (RFC 3264 §8).
pub fn write_sdp(
    local: SocketAddr,
    session_id: u64,
    version: u64,
    neg: Option<&Negotiated>,
) -> String {
    let ipv = if local.is_ipv4() { "IP4" } else { "IP6" };
    let ip = local.ip();
    let mut s = String::with_capacity(256);
    // Writing to a String cannot fail.
    let _ = write!(
        s,
        "v=0\r\no=boxless {session_id} {version} IN {ipv} {ip}\r\ns=boxless\r\nc=IN {ipv} {ip}\r\nt=0 0\r\n"
    );
    let (voice, dtmf): (Vec<(u8, &str)>, Option<u8>) = match neg {
        Some(n) => (vec![(n.pt, n.codec.name())], n.dtmf_pt),
        None => (vec![(0, "PCMU"), (8, "PCMA"), (9, "G722")], Some(101)),
    };
    let _ = write!(s, "m=audio {} RTP/AVP", local.port());
    for (pt, _) in &voice {
        let _ = write!(s, " {pt}");
    }
    if let Some(d) = dtmf {
        let _ = write!(s, " {d}");
    }
    s.push_str("\r\n");
    for (pt, name) in &voice {
        let _ = write!(s, "a=rtpmap:{pt} {name}/8000\r\n");
    }
    if let Some(d) = dtmf {
        let _ = write!(
            s,
            "a=rtpmap:{d} telephone-event/8000\r\na=fmtp:{d} 0-16\r\n"
        );
    }
    let direction = neg.map_or(Direction::SendRecv, |n| n.direction.answer());
    let _ = write!(s, "a=ptime:20\r\na={}\r\n", direction.as_str());
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 18 8 0 101\r\na=rtpmap:101 telephone-event/8000\r\n";

    #[test]
    fn picks_first_common_codec_and_dtmf() {
        let n = negotiate(OFFER.as_bytes()).unwrap();
        assert_eq!(n.codec, Codec::Pcma);
        assert_eq!(n.dtmf_pt, Some(101));
        assert_eq!(n.remote, "127.0.0.1:6000".parse().unwrap());
        assert_eq!(n.direction, Direction::SendRecv);
        let ans = write_sdp("127.0.0.1:20000".parse().unwrap(), 5, 5, Some(&n));
        let back = negotiate(ans.as_bytes()).unwrap();
        assert_eq!(back.codec, Codec::Pcma);
        assert_eq!(back.remote.port(), 20000);
    }

    #[test]
    fn hold_is_answered_in_the_reverse_direction() {
        let held = format!("{OFFER}a=sendonly\r\n");
        let n = negotiate(held.as_bytes()).unwrap();
        assert_eq!(n.direction, Direction::SendOnly);
        assert!(!n.peer_receives());
        let ans = write_sdp("127.0.0.1:20000".parse().unwrap(), 5, 6, Some(&n));
        assert!(ans.contains("a=recvonly\r\n") && ans.contains("o=boxless 5 6 "));
        let old = OFFER.replace("c=IN IP4 127.0.0.1", "c=IN IP4 0.0.0.0");
        let n = negotiate(old.as_bytes()).unwrap();
        assert!(!n.peer_receives(), "RFC 2543 hold");
        let session = OFFER.replace("t=0 0\r\n", "t=0 0\r\na=inactive\r\n");
        assert_eq!(
            negotiate(session.as_bytes()).unwrap().direction,
            Direction::Inactive
        );
    }

    #[test]
    fn refuses_what_it_cannot_answer() {
        let g729 = OFFER.replace("18 8 0 101", "18");
        assert_eq!(negotiate(g729.as_bytes()), Err(SdpError::NoCommonCodec));
        assert_eq!(negotiate(b"garbage"), Err(SdpError::Malformed));
        let host = OFFER.replace("c=IN IP4 127.0.0.1", "c=IN IP4 host.example");
        assert_eq!(negotiate(host.as_bytes()), Err(SdpError::BadAddress));
        let video = OFFER.replace("m=audio", "m=video");
        assert_eq!(negotiate(video.as_bytes()), Err(SdpError::NoAudio));
    }
}
