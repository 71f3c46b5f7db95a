//! What crosses between the SIP sockets and the calls: where SIP bytes go out
//! ([`SipTx`]), a stateless answer, and a message handed to a call's task
//! ([`CallEvent`]). It sits below the socket driver and the call task, which both use it.

use std::net::SocketAddr;
use std::sync::Arc;

use boxless_sip::{Message, OwnedMessage, write_response};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::admission::Refusal;

/// Where SIP bytes for a peer go out.
#[derive(Debug, Clone)]
pub(crate) enum SipTx {
    /// The server's UDP socket.
    Udp(Arc<UdpSocket>),
    /// One TCP or TLS connection's writer (`true`: TLS).
    Stream(mpsc::Sender<Vec<u8>>, bool),
}

impl SipTx {
    pub(crate) async fn send(&self, bytes: &[u8], to: SocketAddr) {
        match self {
            SipTx::Udp(s) => {
                if let Err(e) = s.send_to(bytes, to).await {
                    tracing::debug!(error = %e, %to, "SIP send failed");
                }
            }
            SipTx::Stream(tx, _) => {
                let _ = tx.try_send(bytes.to_vec());
            }
        }
    }

    pub(crate) fn via_transport(&self) -> &'static str {
        match self {
            SipTx::Udp(_) => "UDP",
            SipTx::Stream(_, false) => "TCP",
            SipTx::Stream(_, true) => "TLS",
        }
    }

    pub(crate) fn is_tls(&self) -> bool {
        matches!(self, SipTx::Stream(_, true))
    }
}

/// A SIP message for a call task, parsed by the socket task (not again by the call).
#[derive(Debug)]
pub(crate) struct CallEvent {
    pub(crate) msg: OwnedMessage,
    pub(crate) reply_to: SocketAddr,
}

/// Answers `msg` statelessly (the To-tag derived from the request, so a retransmission
/// gets the same one).
pub(crate) async fn respond(
    tx: &SipTx,
    msg: &Message<'_>,
    code: u16,
    reason: &str,
    to: SocketAddr,
    extra: &[u8],
) {
    let tag = format!("{:x}", boxless_sip::stateless_tag(msg));
    let mut b = Vec::with_capacity(512);
    let tag_ref: Option<&dyn std::fmt::Display> = if code >= 200 { Some(&tag) } else { None };
    write_response(&mut b, msg, code, reason, tag_ref, None, extra, None);
    tx.send(&b, to).await;
}

pub(crate) async fn refuse(tx: &SipTx, msg: &Message<'_>, reply_to: SocketAddr, r: Refusal) {
    respond(tx, msg, r.code, r.reason, reply_to, r.extra.as_bytes()).await
}
