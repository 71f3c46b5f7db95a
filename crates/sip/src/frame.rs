//! Stream framing (RFC 3261 §18.3): where one message ends in a TCP byte stream.

use crate::lex::parse_small_uint;
use crate::parse::{find_head_end as head_end, header_is};

/// What the front of a stream buffer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// `skip` bytes of keep-alive CRLFs, then a whole message of `len` bytes.
    Complete {
        /// Leading CRLF bytes to drop first.
        skip: usize,
        /// Length of the message after them.
        len: usize,
    },
    /// More bytes are needed; `skip` leading CRLFs may already be dropped.
    Incomplete {
        /// Leading CRLF bytes to drop.
        skip: usize,
    },
    /// The stream cannot be framed (missing, repeated or bad Content-Length, or too
    /// large): the connection must be closed.
    Invalid,
}

/// Frames the next message at the front of `buf`; messages above `max` bytes are invalid.
pub fn frame(buf: &[u8], max: usize) -> Frame {
    let skip = buf
        .iter()
        .take_while(|&&b| b == b'\r' || b == b'\n')
        .count();
    let buf = &buf[skip..];
    let Some((head_end, body_start)) = head_end(buf) else {
        return if buf.len() > max {
            Frame::Invalid
        } else {
            Frame::Incomplete { skip }
        };
    };
    let Ok(head) = std::str::from_utf8(&buf[..head_end]) else {
        return Frame::Invalid;
    };
    let mut cl = None;
    for line in head.split('\n').skip(1) {
        if line.starts_with([' ', '\t']) {
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if !header_is(name.trim_end(), "content-length") {
            continue;
        }
        match parse_small_uint(value, max as u64) {
            Some(v) if cl.is_none() => cl = Some(v as usize),
            _ => return Frame::Invalid,
        }
    }
    let Some(cl) = cl else { return Frame::Invalid };
    let len = body_start + cl;
    if len > max {
        Frame::Invalid
    } else if buf.len() >= len {
        Frame::Complete { skip, len }
    } else {
        Frame::Incomplete { skip }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_messages_in_a_stream() {
        let m = b"OPTIONS sip:a SIP/2.0\r\nContent-Length: 3\r\n\r\nabcNEXT";
        assert_eq!(
            frame(m, 1000),
            Frame::Complete {
                skip: 0,
                len: m.len() - 4
            }
        );
        assert_eq!(
            frame(&m[..m.len() - 6], 1000),
            Frame::Incomplete { skip: 0 }
        );
        let mut k = b"\r\n\r\n".to_vec();
        k.extend_from_slice(m);
        assert_eq!(
            frame(&k, 1000),
            Frame::Complete {
                skip: 4,
                len: m.len() - 4
            }
        );
    }

    #[test]
    fn bad_lengths_close_the_stream() {
        for m in [
            &b"OPTIONS sip:a SIP/2.0\r\n\r\n"[..],
            b"OPTIONS sip:a SIP/2.0\r\nl: -1\r\n\r\n",
            b"OPTIONS sip:a SIP/2.0\r\nl: 1\r\nContent-Length: 2\r\n\r\nab",
            b"OPTIONS sip:a SIP/2.0\r\nl: 99999\r\n\r\n",
        ] {
            assert_eq!(
                frame(m, 4096),
                Frame::Invalid,
                "{}",
                String::from_utf8_lossy(m)
            );
        }
    }
}
