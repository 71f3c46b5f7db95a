//! A parsed message that owns its bytes, to hand to another task without parsing it
//! again: the socket task parses a datagram in its own buffer, and when the message is
//! for a call, copies the bytes once and moves the parsed fields onto the copy
//! ([`Message::rebase`]).

use yoke::Yoke;

use crate::parse::{Error, Message};

/// A [`Message`] with its bytes; one pointer wide (the parsed fields, some kilobytes, live
/// on the heap with it, so queues of these stay small).
#[derive(Debug)]
pub struct OwnedMessage(Box<Yoke<Message<'static>, Box<[u8]>>>);

impl OwnedMessage {
    /// Parses `bytes` (as [`Message::parse`]).
    pub fn parse(bytes: Box<[u8]>, stream: bool) -> Result<OwnedMessage, Error> {
        Yoke::try_attach_to_cart(bytes, |b| Message::parse(b, stream))
            .map(|y| OwnedMessage(Box::new(y)))
    }

    /// `msg`, parsed from `buf`, over a copy of `buf`: not parsed again. `None` only if
    /// `msg` did not come from `buf`.
    pub fn copy_of(msg: &Message<'_>, buf: &[u8]) -> Option<OwnedMessage> {
        let copy: Box<[u8]> = buf.into();
        Yoke::try_attach_to_cart(copy, |c| msg.rebase(buf, c).ok_or(()))
            .ok()
            .map(|y| OwnedMessage(Box::new(y)))
    }

    /// The message.
    pub fn get(&self) -> &Message<'_> {
        self.0.get()
    }

    /// Its bytes.
    pub fn bytes(&self) -> &[u8] {
        self.0.backing_cart()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &[u8] = b"INVITE sip:+15551230002@127.0.0.1 SIP/2.0\r\n\
Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK77\r\nFrom: <sip:+15551230001@h>;tag=a\r\n\
To: <sip:+15551230002@h>\r\nCall-ID: c1@h\r\nCSeq: 7 INVITE\r\nMax-Forwards: 70\r\n\
X-Odd: caf\xc3\xa9\r\nContent-Type: application/sdp\r\nContent-Length: 4\r\n\r\nv=0\n";

    #[test]
    fn a_copy_holds_the_same_message_in_its_own_bytes() {
        let buf = INVITE.to_vec();
        let msg = Message::parse(&buf, false).unwrap();
        let owned = OwnedMessage::copy_of(&msg, &buf).unwrap();
        drop(buf);
        let parsed = Message::parse(INVITE, false).unwrap();
        let m = owned.get();
        assert_eq!(format!("{m:?}"), format!("{parsed:?}"), "field for field");
        assert_eq!(m.header("x-odd"), Some("café"));
        assert_eq!(m.body, b"v=0\n");
        assert_eq!(owned.bytes(), INVITE);
        let again = OwnedMessage::parse(INVITE.into(), false).unwrap();
        assert_eq!(format!("{:?}", again.get()), format!("{parsed:?}"));
    }

    #[test]
    fn a_message_is_not_moved_onto_other_bytes() {
        let msg = Message::parse(INVITE, false).unwrap();
        let other = INVITE.to_vec();
        assert!(OwnedMessage::copy_of(&msg, &other[..other.len() - 1]).is_none());
        assert!(
            msg.rebase(&other, &other).is_none(),
            "its fields lie in INVITE, not `other`"
        );
    }

    #[test]
    fn odd_messages_survive_the_move() {
        let odd: [&[u8]; 5] = [
            b"SIP/2.0 200 \r\nv: SIP/2.0/UDP h;branch=z9hG4bK1\r\ni: x\r\nf: <sip:a@h>;tag=1\r\nt: <sip:b@h>\r\nCSeq: 1 OPTIONS\r\n\r\n",
            b"NEWMETHOD sip:b@h SIP/2.0\r\nVia: SIP/2.0/TCP h\r\n  ;branch=z9hG4bK2\r\nCall-ID: y\r\nCSeq: 2 NEWMETHOD\r\nEmpty:\r\nContent-Length: 0\r\n\r\n",
            b"INVITE sip:b@h SIP/2.0\r\nCSeq: 9 BYE\r\n\r\nrest of a datagram",
            b"ACK sip:b@h SIP/2.0\r\n\r\n",
            b"OPTIONS sip:b@h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK3\r\nVia: SIP/2.0/UDP g\r\nContent-Length: 2\r\n\r\n\x00\xff",
        ];
        for m in odd {
            let msg = Message::parse(m, false).unwrap();
            let owned = OwnedMessage::copy_of(&msg, m).expect("moves");
            assert_eq!(format!("{:?}", owned.get()), format!("{msg:?}"));
        }
    }
}
