//! Transport drivers shared by the router and the messaging server.
#![warn(missing_docs)]

use std::time::Duration;

use boxless_sip::{Frame, frame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;
use tokio::sync::mpsc;

/// A connection closes after this long without a byte.
pub const TCP_IDLE: Duration = Duration::from_secs(300);

/// One SIP-over-TCP connection (RFC 3261 §18.3): a writer task fed by a bounded queue,
/// and a reader that hands out whole messages.
#[derive(Debug)]
pub struct TcpSip {
    /// Queue of bytes to write; a full queue drops (the peer is not reading).
    pub writer: mpsc::Sender<Vec<u8>>,
    reader: OwnedReadHalf,
    buf: Vec<u8>,
    max: usize,
}

impl TcpSip {
    /// Splits `stream` and starts its writer task; messages above `max` bytes close it.
    pub fn new(stream: TcpStream, max: usize) -> TcpSip {
        let (reader, mut wr) = stream.into_split();
        let (writer, mut queue) = mpsc::channel::<Vec<u8>>(64);
        tokio::spawn(async move {
            while let Some(b) = queue.recv().await {
                if wr.write_all(&b).await.is_err() {
                    break;
                }
            }
        });
        TcpSip {
            writer,
            reader,
            buf: Vec::with_capacity(8192),
            max,
        }
    }

    /// The next whole message; None when the peer closed, went idle, or sent a stream that
    /// cannot be framed (missing, repeated or bad Content-Length; too large), which closes it.
    pub async fn next(&mut self) -> Option<Vec<u8>> {
        let mut chunk = [0u8; 8192];
        loop {
            match frame(&self.buf, self.max) {
                Frame::Complete { skip, len } => {
                    let msg = self.buf[skip..skip + len].to_vec();
                    self.buf.drain(..skip + len);
                    return Some(msg);
                }
                Frame::Incomplete { .. } => {}
                Frame::Invalid => {
                    metrics::counter!("boxless_sip_dropped_total", "reason" => "bad_framing")
                        .increment(1);
                    return None;
                }
            }
            match tokio::time::timeout(TCP_IDLE, self.reader.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return None,
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }
}
