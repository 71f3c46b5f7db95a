//! Where a delivery receipt goes ([`ReceiptBook`]): the store that sent its part, in this
//! process or another. Across processes: separate `boxless server` processes that share one SMPP
//! account (an SMSC may return a receipt on any bind of it) hand each other the receipts
//! they cannot place, over NATS.
//!
//! A receipt no store of this process knows is offered on [`SUBJECT`] as a request; the
//! process that sent that part settles it, commits, then answers, so the SMSC gets its
//! `deliver_sm_resp` only once the receipt is stored somewhere. Nobody answering within
//! [`ASK_LIMIT`]: it is kept early here, as in one process, and offered again every
//! [`REOFFER_EVERY`] while it is young ([`REOFFER_FOR`]), for a receipt that came before
//! its `submit_sm_resp` reached the other process.
//!
//! An offer is trusted as far as NATS is: the same clients that may publish a server's
//! status may offer receipts. Offers are small JSON (bounded) and each is one lookup.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use boxless_control::Client;
use boxless_core::now_ms;
use boxless_store::{Delivery, Receipted, Settled, Store};
use futures_util::StreamExt;

/// The stores a receipt may belong to: this server's first, then the others in this
/// process (`boxless serve`), since an SMSC may return a receipt on any bind of the
/// account; then, with NATS, the other processes (this module).
#[derive(Debug, Default)]
pub struct ReceiptBook {
    stores: RwLock<Vec<Arc<Store>>>,
    peers: std::sync::OnceLock<boxless_control::Client>,
}

/// Where a receipt went.
#[derive(Debug)]
pub(crate) enum Applied {
    /// A store of this process.
    Here(Receipted),
    /// Another process stored it.
    Elsewhere,
}

impl ReceiptBook {
    /// Adds a server's store.
    pub fn add(&self, store: Arc<Store>) {
        self.stores
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(store);
    }

    /// Offers receipts no store here knows to other processes over `client`, and
    /// answers theirs (spawns [`serve`]).
    pub fn share(self: &Arc<Self>, client: boxless_control::Client) {
        if self.peers.set(client.clone()).is_ok() {
            tokio::spawn(serve(self.clone(), client));
        }
    }

    pub(crate) fn stores(&self) -> Vec<Arc<Store>> {
        self.stores
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Settles a receipt in the store that sent its part (`own` first), if it is here:
    /// each store in turn, on its writer.
    pub(crate) async fn settle_here(
        &self,
        own: Option<&Arc<Store>>,
        id: &str,
        d: Delivery,
        error: Option<&str>,
        now: u64,
    ) -> boxless_store::Result<Option<Receipted>> {
        let others = self.stores();
        let rest = others
            .iter()
            .filter(|s| own.is_none_or(|o| !Arc::ptr_eq(s, o)));
        for s in own.into_iter().chain(rest) {
            let (id, error) = (id.to_string(), error.map(str::to_string));
            let settled = s
                .write(move |s| s.settle_known(&id, d, error.as_deref(), now))
                .await??;
            if let Some(r) = settled {
                return Ok(Some(r));
            }
        }
        Ok(None)
    }

    /// Applies a receipt: to the store that sent the part, here or (with NATS) in
    /// another process, else kept early in `own`.
    pub(crate) async fn apply(
        self: &Arc<Self>,
        own: &Arc<Store>,
        id: String,
        d: Delivery,
        error: Option<String>,
    ) -> Result<Applied, String> {
        let here = self
            .settle_here(Some(own), &id, d, error.as_deref(), now_ms())
            .await
            .map_err(|e| e.to_string())?;
        if let Some(r) = here {
            return Ok(Applied::Here(r));
        }
        if let Some(client) = self.peers.get()
            && offer(client, &id, d, error.as_deref()).await
        {
            return Ok(Applied::Elsewhere);
        }
        let store = own.clone();
        store
            .write(move |store| {
                store.keep_early(
                    &id,
                    d,
                    error.as_deref(),
                    now_ms(),
                    boxless_store::receipts::MAX_EARLY_RECEIPTS,
                )
            })
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        Ok(Applied::Here(Receipted::Early))
    }
}

/// Counts what a receipt settled.
pub(crate) fn record_settled(s: &Settled) {
    if let (Some(d), Some(ms)) = (s.state, s.latency_ms) {
        metrics::counter!("boxless_sms_receipts_total", "state" => d.as_str()).increment(1);
        if d == Delivery::Delivered {
            metrics::histogram!("boxless_sms_delivery_seconds").record(ms as f64 / 1000.0);
        }
        tracing::info!(job = s.job, message = ?s.message_id, state = d.as_str(), after_ms = ms, "SMS settled by its receipt");
    }
}

/// Where receipts are offered.
pub const SUBJECT: &str = "boxless.receipts";
/// How long an offer waits for the process that sent the part.
pub const ASK_LIMIT: Duration = Duration::from_millis(500);
/// Early receipts are offered again this often...
pub const REOFFER_EVERY: Duration = Duration::from_secs(5);
/// ...while they are younger than this.
pub const REOFFER_FOR: Duration = Duration::from_secs(120);
/// A larger offer is no receipt of ours.
const MAX_OFFER_BYTES: usize = 1024;

/// What is offered: the SMSC's message id and what became of it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Offer {
    /// The SMSC's message id, as the receipt gave it.
    pub id: String,
    /// `delivered` | `undeliverable` | `expired`.
    pub state: String,
    /// The receipt's error, if any.
    pub error: Option<String>,
}

/// Asks the other processes to settle a receipt; true once one has stored it.
pub async fn offer(client: &Client, id: &str, d: Delivery, error: Option<&str>) -> bool {
    let o = Offer {
        id: id.to_string(),
        state: d.as_str().to_string(),
        error: error.map(str::to_string),
    };
    let Ok(body) = serde_json::to_vec(&o) else {
        return false;
    };
    match tokio::time::timeout(ASK_LIMIT, client.request(SUBJECT, body.into())).await {
        Ok(Ok(answer)) => answer.payload.as_ref() == b"settled",
        // No process knows it (or NATS is away): the caller keeps it early.
        _ => false,
    }
}

/// Reads an offer; None for anything that is not one.
pub fn read_offer(payload: &[u8]) -> Option<(Offer, Delivery)> {
    if payload.len() > MAX_OFFER_BYTES {
        return None;
    }
    let o: Offer = serde_json::from_slice(payload).ok()?;
    let d = Delivery::parse(&o.state)?;
    (!o.id.trim().is_empty() && o.id.len() <= 64).then_some((o, d))
}

/// Answers other processes' offers that this process's stores can settle, and offers
/// this process's young early receipts again; runs until NATS closes the subscription.
pub async fn serve(book: Arc<ReceiptBook>, client: Client) {
    let mut offers = match client.subscribe(SUBJECT).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "receipts from other processes: cannot subscribe");
            return;
        }
    };
    let mut tick = tokio::time::interval(REOFFER_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            m = offers.next() => {
                let Some(m) = m else { return };
                let (Some(reply), Some((o, d))) = (m.reply, read_offer(&m.payload)) else {
                    continue;
                };
                let res = book.settle_here(None, &o.id, d, o.error.as_deref(), now_ms()).await;
                match res {
                    Ok(Some(r)) => {
                        if let Receipted::Settled(s) = &r {
                            record_settled(s);
                        }
                        metrics::counter!("boxless_sms_receipts_from_peers_total").increment(1);
                        // Stored: the offering process may now acknowledge it to the SMSC.
                        let _ = client.publish(reply, "settled".into()).await;
                    }
                    Ok(None) => {}
                    Err(e) => tracing::error!(error = %e, "a receipt offered by another process not recorded"),
                }
            }
            _ = tick.tick() => reoffer(&book, &client).await,
        }
    }
}

/// Offers the young early receipts of this process's stores again; forgets each one
/// another process settled.
async fn reoffer(book: &Arc<ReceiptBook>, client: &Client) {
    let since = now_ms().saturating_sub(REOFFER_FOR.as_millis() as u64);
    for store in book.stores() {
        let s = store.clone();
        let Ok(Ok(early)) = s.read(move |s| s.early_since(since, 100)).await else {
            continue;
        };
        for e in early {
            if offer(client, &e.smsc_id, e.delivery, e.error.as_deref()).await {
                let s = store.clone();
                let _ = s.write(move |s| s.forget_early(&e.smsc_id)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_small_well_formed_offer_is_read() {
        let o = br#"{"id":"a001","state":"undeliverable","error":"stat:UNDELIV err:001"}"#;
        let (offer, d) = read_offer(o).unwrap();
        assert_eq!((offer.id.as_str(), d), ("a001", Delivery::Undeliverable));
        for bad in [
            &br#"{"id":"a001","state":"read"}"#[..],
            br#"{"id":"","state":"delivered"}"#,
            br#"not json"#,
            &[b' '; 2000][..],
        ] {
            assert!(read_offer(bad).is_none());
        }
    }
}
