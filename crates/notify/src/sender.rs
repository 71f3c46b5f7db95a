//! SMS transports: the log (for a first look) and SMPP 3.4 (bind_transceiver, submit_sm in
//! one or more parts, delivery receipts and MO texts over `deliver_sm`, enquire_link,
//! reconnect).

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use boxless_control::Recipients;
use boxless_core::config::LongText;
use boxless_core::recipient::Languages;
use boxless_core::{PhoneNumber, now_ms};
use boxless_store::{Delivery, OutboxJob, Receipted, Store};
use futures_util::StreamExt;
use rusmpp::pdus::{BindTransceiver, DeliverSm, SubmitSm};
use rusmpp::tlvs::{MessageSubmissionRequestTlvValue, TlvValue};
use rusmpp::types::{COctetString, OctetString};
use rusmpp::values::{
    DataCoding, EsmClass, MessageState, Npi, RegisteredDelivery, ServiceType, Ton,
};
use rusmpp::{CommandId, CommandStatus, Pdu};

use crate::peers::{Applied, ReceiptBook, record_settled};
use crate::receipt::{self, Inbound};
use crate::text;

/// Why a notice was not taken. A failure is retried with backoff unless `permanent`:
/// the far end refused it for good, and the recipient's next channel is tried.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{detail}")]
pub struct SendError {
    /// What happened.
    pub detail: String,
    /// Never worth retrying (a destination that takes no SMS, a mail server's 5xx).
    pub permanent: bool,
}

impl SendError {
    /// A failure worth retrying.
    pub fn retry(detail: impl Into<String>) -> SendError {
        SendError {
            detail: detail.into(),
            permanent: false,
        }
    }

    /// A refusal for good.
    pub fn permanent(detail: impl Into<String>) -> SendError {
        SendError {
            detail: detail.into(),
            permanent: true,
        }
    }
}

/// SMSC answers that say the destination cannot take SMS at all (a landline, a number
/// that does not exist): no retry, the next channel at once. Their SMPP names.
fn no_sms_here(status: CommandStatus) -> Option<&'static str> {
    match status {
        CommandStatus::EsmeRinvdstadr => Some("ESME_RINVDSTADR"),
        CommandStatus::EsmeRinvdstton => Some("ESME_RINVDSTTON"),
        CommandStatus::EsmeRinvdstnpi => Some("ESME_RINVDSTNPI"),
        _ => None,
    }
}

/// SMPP settings.
#[derive(Debug, Clone)]
pub struct SmppSettings {
    /// host:port of the SMSC.
    pub address: String,
    /// system_id.
    pub system_id: String,
    /// password.
    pub password: String,
    /// enquire_link interval.
    pub enquire_link: Duration,
    /// Ask for delivery receipts, and stay bound to receive them.
    pub receipts: bool,
    /// How the parts of a long text are marked.
    pub long_text: LongText,
    /// The language of a STOP/START answer.
    pub languages: Languages,
}

/// Where SMS go.
#[derive(Debug)]
pub enum Sender {
    /// Written to the log at INFO under target `sms`.
    Log,
    /// An SMSC over SMPP 3.4.
    Smpp(Smpp),
}

impl Sender {
    /// Submits one SMS; Ok with its number of parts once the SMSC (or the log) took them all.
    pub async fn submit(&mut self, job: &OutboxJob) -> Result<u8, SendError> {
        match self {
            Sender::Log => {
                let from = job.source.map(|s| s.to_string()).unwrap_or_default();
                // Access codes are never logged, not even here.
                let text = crate::text::for_log(&job.text);
                tracing::info!(target: "sms", to = %job.destination, from = %from, text = %text, "SMS");
                Ok(1)
            }
            Sender::Smpp(s) => s.submit(job).await,
        }
    }

    /// Between submits: stays bound when receipts are expected (they arrive any time).
    pub async fn keep_bound(&mut self) {
        if let Sender::Smpp(s) = self
            && s.settings.receipts
        {
            s.keep_bound().await;
        }
    }
}

/// An SMPP client that (re)binds on demand, and at once when receipts are expected.
#[derive(Debug)]
pub struct Smpp {
    settings: SmppSettings,
    client: Option<rusmppc::Client>,
    store: Arc<Store>,
    book: Arc<ReceiptBook>,
    recipients: Option<Recipients>,
    /// No bind attempt before this (after failures, doubling up to a minute).
    next_bind: Option<Instant>,
    bind_failures: u32,
}

impl Smpp {
    /// Not connected until the first submit or [`Sender::keep_bound`]; receipts go to
    /// `store` (or another of `book`).
    /// STOP and START texts change `recipients` (None: they are only logged).
    pub fn new(
        settings: SmppSettings,
        store: Arc<Store>,
        book: Arc<ReceiptBook>,
        recipients: Option<Recipients>,
    ) -> Smpp {
        Smpp {
            settings,
            client: None,
            store,
            book,
            recipients,
            next_bind: None,
            bind_failures: 0,
        }
    }

    async fn keep_bound(&mut self) {
        if self.client.as_ref().is_some_and(|c| c.is_active()) {
            return;
        }
        if self.next_bind.is_some_and(|t| Instant::now() < t) {
            return;
        }
        match self.connect().await {
            Ok(_) => {
                self.bind_failures = 0;
                self.next_bind = None;
            }
            Err(e) => {
                self.bind_failures += 1;
                let wait = Duration::from_millis(500 << self.bind_failures.min(7));
                self.next_bind = Some(Instant::now() + wait);
                if self.bind_failures == 1 {
                    tracing::warn!(error = %e, "SMPP: cannot bind to receive receipts; retrying");
                }
            }
        }
    }

    async fn connect(&mut self) -> Result<&rusmppc::Client, SendError> {
        if let Some(c) = &self.client
            && c.is_active()
        {
            return Ok(self.client.as_ref().expect("checked just above"));
        }
        self.client = None;
        let err = |what: &str, e: &dyn std::fmt::Display| SendError::retry(format!("{what}: {e}"));
        let url = format!("smpp://{}", self.settings.address);
        let connect = rusmppc::ConnectionBuilder::new()
            .enquire_link_interval(self.settings.enquire_link)
            .response_timeout(Duration::from_secs(5))
            .disable_interface_version_check()
            .connect(url.as_str());
        let (client, mut events) = tokio::time::timeout(Duration::from_secs(5), connect)
            .await
            .map_err(|_| SendError::retry("connect: timed out"))?
            .map_err(|e| err("connect", &e))?;
        let bind = BindTransceiver::builder()
            .system_id(
                COctetString::from_str(&self.settings.system_id)
                    .map_err(|e| err("system_id", &e))?,
            )
            .password(
                COctetString::from_str(&self.settings.password).map_err(|e| err("password", &e))?,
            )
            .system_type(COctetString::empty())
            .addr_ton(Ton::Unknown)
            .addr_npi(Npi::Unknown)
            .address_range(COctetString::empty())
            .build();
        client
            .bind_transceiver(bind)
            .await
            .map_err(|e| err("bind_transceiver", &e))?;
        tracing::info!(smsc = %self.settings.address, "SMPP bound as transceiver");
        // What the SMSC sends us (receipts, MO texts), each acknowledged only once it is
        // recorded: a crash before that makes the SMSC send it again. The task ends with
        // the connection.
        let c2 = client.clone();
        let (store, book) = (self.store.clone(), self.book.clone());
        let recipients = self.recipients.clone();
        let languages = self.settings.languages.clone();
        tokio::spawn(async move {
            while let Some(ev) = events.next().await {
                match ev {
                    rusmppc::Event::Incoming(cmd) if cmd.id() == CommandId::DeliverSm => {
                        let seq = cmd.sequence_number();
                        let status = match cmd.pdu() {
                            Some(Pdu::DeliverSm(d)) => {
                                inbound(&store, &book, recipients.as_ref(), &languages, d).await
                            }
                            _ => CommandStatus::EsmeRok,
                        };
                        let resp = rusmpp::pdus::DeliverSmResp::default();
                        let _ = if status == CommandStatus::EsmeRok {
                            c2.deliver_sm_resp(seq, resp).await
                        } else {
                            c2.status(status).deliver_sm_resp(seq, resp).await
                        };
                    }
                    rusmppc::Event::Error(e) => tracing::warn!(error = %e, "SMPP connection"),
                    _ => {}
                }
            }
        });
        self.client = Some(client);
        Ok(self.client.as_ref().expect("set just above"))
    }

    async fn submit(&mut self, job: &OutboxJob) -> Result<u8, SendError> {
        let err = |what: &str, e: &dyn std::fmt::Display| SendError::retry(format!("{what}: {e}"));
        let coded = text::encode(&job.text);
        let parts = text::split(&coded);
        let total = parts.len() as u8;
        // A retry sends only the parts the SMSC has not taken, with the same reference.
        let store = self.store.clone();
        let id = job.id;
        let done = store
            .read(move |store| store.parts_accepted(id))
            .await
            .map_err(|e| err("store", &e))?
            .map_err(|e| err("store", &e))?;
        let reference = (job.id % 255 + 1) as u8;
        let dest = job.destination.digits();
        let src = job.source.map(|s| s.digits()).unwrap_or_default();
        let (src_ton, src_npi) = if src.is_empty() {
            (Ton::Unknown, Npi::Unknown)
        } else {
            (Ton::International, Npi::Isdn)
        };
        for (k, part) in parts.iter().enumerate() {
            if done.contains(&(k as u8)) {
                continue;
            }
            let seq = k as u8 + 1;
            let mut esm = 0u8;
            let mut octets = Vec::with_capacity(part.len() + 6);
            let mut tlvs: Vec<MessageSubmissionRequestTlvValue> = Vec::new();
            if total > 1 {
                match self.settings.long_text {
                    LongText::Udh => {
                        esm |= 0x40;
                        octets.extend_from_slice(&text::udh(reference, total, seq));
                    }
                    LongText::Sar => tlvs.extend([
                        MessageSubmissionRequestTlvValue::SarMsgRefNum(reference as u16),
                        MessageSubmissionRequestTlvValue::SarTotalSegments(total),
                        MessageSubmissionRequestTlvValue::SarSegmentSeqnum(seq),
                    ]),
                }
            }
            octets.extend_from_slice(part);
            let sm = SubmitSm::builder()
                .service_type(ServiceType::default())
                .source_addr_ton(src_ton)
                .source_addr_npi(src_npi)
                .source_addr(COctetString::from_str(&src).map_err(|e| err("source_addr", &e))?)
                .dest_addr_ton(Ton::International)
                .dest_addr_npi(Npi::Isdn)
                .destination_addr(
                    COctetString::from_str(&dest).map_err(|e| err("destination_addr", &e))?,
                )
                .esm_class(EsmClass::from(esm))
                .registered_delivery(RegisteredDelivery::from(u8::from(self.settings.receipts)))
                .data_coding(if coded.data_coding == 8 {
                    DataCoding::Ucs2
                } else {
                    DataCoding::McSpecific
                })
                .short_message(OctetString::from_vec(octets).map_err(|e| err("short_message", &e))?)
                .tlvs(tlvs)
                .build();
            let client = self.connect().await?;
            let message_id = match client.submit_sm(sm).await {
                Ok(resp) => resp.message_id().to_string(),
                Err(rusmppc::error::Error::UnexpectedResponse { response }) => {
                    let status = response.status();
                    return Err(if status == CommandStatus::EsmeRthrottled {
                        SendError::retry("SMSC throttled (ESME_RTHROTTLED)")
                    } else if let Some(name) = no_sms_here(status) {
                        SendError::permanent(format!(
                            "SMSC refused the destination for good ({name}): not a mobile number"
                        ))
                    } else {
                        SendError::retry(format!("SMSC refused: {status:?}"))
                    });
                }
                Err(e) => {
                    // The connection is suspect: drop it, the next attempt reconnects.
                    self.client = None;
                    return Err(err("submit_sm", &e));
                }
            };
            let store = self.store.clone();
            store
                .write(move |store| store.part_accepted(id, k as u8, &message_id))
                .await
                .map_err(|e| err("store", &e))?
                .map_err(|e| err("store", &e))?;
        }
        Ok(total)
    }
}

/// Records what a `deliver_sm` says; the status to answer it with (anything but OK makes
/// the SMSC send it again later).
async fn inbound(
    store: &Arc<Store>,
    book: &Arc<ReceiptBook>,
    recipients: Option<&Recipients>,
    languages: &Languages,
    d: &DeliverSm,
) -> CommandStatus {
    let mut receipted_id = None;
    let mut state = None;
    for tlv in d.tlvs() {
        match tlv.value() {
            Some(TlvValue::ReceiptedMessageId(id)) => receipted_id = Some(id.to_string()),
            Some(TlvValue::MessageState(s)) => state = Some(message_state(*s)),
            _ => {}
        }
    }
    let (source, destination) = (d.source_addr.to_string(), d.destination_addr.to_string());
    let read = receipt::read(&receipt::DeliverSm {
        esm_class: u8::from(d.esm_class),
        source: &source,
        destination: &destination,
        data_coding: u8::from(d.data_coding),
        text: d.short_message().as_ref(),
        receipted_id: receipted_id.as_deref(),
        state: state.flatten(),
    });
    match read {
        Inbound::Receipt(r) => {
            let Some(delivery) = r.delivery else {
                tracing::debug!(id = %r.id, detail = %r.detail, "SMPP: intermediate receipt");
                return CommandStatus::EsmeRok;
            };
            let error = (delivery != Delivery::Delivered).then_some(r.detail);
            match book.apply(store, r.id, delivery, error).await {
                Ok(Applied::Here(Receipted::Settled(s))) => record_settled(&s),
                Ok(Applied::Here(Receipted::Duplicate)) => {
                    metrics::counter!("boxless_sms_receipts_duplicate_total").increment(1)
                }
                Ok(Applied::Here(Receipted::Early)) => {
                    metrics::counter!("boxless_sms_receipts_early_total").increment(1)
                }
                Ok(Applied::Elsewhere) => {
                    metrics::counter!("boxless_sms_receipts_to_peers_total").increment(1)
                }
                other => {
                    tracing::error!(
                        ?other,
                        "SMPP: recording a receipt failed; the SMSC will resend it"
                    );
                    return CommandStatus::EsmeRsyserr;
                }
            }
        }
        Inbound::Mo { from, to, text } => {
            metrics::counter!("boxless_sms_mo_total").increment(1);
            return mo(store, recipients, languages, &from, &to, &text).await;
        }
        Inbound::Unreadable => {
            metrics::counter!("boxless_sms_receipts_unreadable_total").increment(1);
            tracing::warn!("SMPP: a receipt without a message id");
        }
    }
    CommandStatus::EsmeRok
}

/// A text from a phone: STOP (or the usual synonyms) opts its number out of SMS, START
/// back in, each answered once; anything else is logged. A change that cannot be recorded
/// (NATS away) is refused, so the SMSC delivers the text again later.
async fn mo(
    store: &Arc<Store>,
    recipients: Option<&Recipients>,
    languages: &Languages,
    from: &str,
    to: &str,
    text: &str,
) -> CommandStatus {
    let Some(keyword) = receipt::keyword(text) else {
        tracing::info!(from = %from, len = text.len(), "SMPP: a text from a phone (not STOP/START)");
        return CommandStatus::EsmeRok;
    };
    let Some(n) = smpp_number(from) else {
        tracing::warn!(from = %from, "SMPP: STOP/START from an address that is not a phone number");
        return CommandStatus::EsmeRok;
    };
    let Some(r) = recipients else {
        tracing::warn!(from = %n, "SMPP: STOP/START, but this process keeps no preferences");
        return CommandStatus::EsmeRok;
    };
    let out = keyword == receipt::Keyword::Stop;
    match r.set_opted_out(n, out).await {
        Ok(changed) => {
            tracing::info!(from = %n, opted_out = out, changed = changed.is_some(), "SMPP: {}", if out { "STOP" } else { "START" });
            metrics::counter!("boxless_sms_opt_total", "change" => if out { "stop" } else { "start" }).increment(1);
            if let Some(prefs) = changed {
                // Answered from the number it was sent to (a link number), when it is one.
                let from_us = smpp_number(to);
                let lang = languages.for_number(n, Some(&prefs));
                let (s, t) = (store.clone(), text::confirmation(out, lang));
                let _ = s.write(move |s| s.confirm(n, from_us, t, now_ms())).await;
            }
            CommandStatus::EsmeRok
        }
        Err(e) => {
            tracing::error!(from = %n, error = %e, "SMPP: STOP/START not recorded; the SMSC will deliver it again");
            CommandStatus::EsmeRsyserr
        }
    }
}

/// An international SMPP address (digits, `+` tolerated) as a phone number.
fn smpp_number(addr: &str) -> Option<PhoneNumber> {
    PhoneNumber::parse_e164(&format!("+{}", addr.trim_start_matches('+')))
}

fn message_state(s: MessageState) -> Option<receipt::MessageState> {
    use receipt::MessageState as M;
    Some(match s {
        MessageState::Enroute => M::Enroute,
        MessageState::Delivered => M::Delivered,
        MessageState::Expired => M::Expired,
        MessageState::Deleted => M::Deleted,
        MessageState::Undeliverable => M::Undeliverable,
        MessageState::Accepted => M::Accepted,
        MessageState::Unknown => M::Unknown,
        MessageState::Rejected => M::Rejected,
        MessageState::Skipped => M::Skipped,
        _ => return None,
    })
}
