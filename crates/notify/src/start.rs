//! The notifier's one boundary with the rest of the process: [`start`] reads the checked
//! configuration and starts one server's workers (SMS; e-mail and recipients' webhooks;
//! the operator's events), as `MessagingServer::start` does for its SIP side; and
//! [`NoticeTexts`] writes every notice's text, the one way the messaging server asks for
//! them.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use boxless_control::Recipients;
use boxless_core::config::{AccessCodePolicy, SmsTransport};
use boxless_core::recipient::{Channel, Language};
use boxless_core::{Checked, PhoneNumber, Rng};
use boxless_store::{SmsFacts, Store};

use crate::{
    Backoff, Limits, Notices, NotifierHandle, ReceiptBook, Sender, Smpp, SmppSettings, SpendPolicy,
    email, text, webhook, worker,
};

/// Why a server's notifier did not start: the key at fault and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("key `{key}`: {problem}")]
#[non_exhaustive]
pub struct StartError {
    /// The configuration key.
    pub key: &'static str,
    /// What is wrong, and the fix.
    pub problem: String,
}

/// Starts the notifier of server `server` (its SMS worker, its notices worker and, with
/// `webhook.url`, its events worker) on `store`; the handle wakes them and says whether
/// they run. `limits` are the process's cluster-wide counts; this server's store joins
/// the stores that seed them.
pub fn start(
    cfg: &Checked,
    server: &str,
    store: &Arc<Store>,
    book: &Arc<ReceiptBook>,
    recipients: &Recipients,
    limits: &Arc<Limits>,
) -> Result<Arc<NotifierHandle>, StartError> {
    let c = &cfg.config;
    let backoff = || {
        Backoff::new(
            c.sms.retry_initial_ms,
            c.sms.retry_max_ms,
            Rng::from_entropy(),
        )
    };
    limits.add(store.clone());
    let notifier = Arc::new(NotifierHandle {
        limits: limits.clone(),
        ..NotifierHandle::default()
    });
    let sender = match c.sms.transport {
        SmsTransport::Log => Sender::Log,
        SmsTransport::Smpp => Sender::Smpp(Smpp::new(
            SmppSettings {
                address: c.sms.address.clone(),
                system_id: c.sms.system_id.clone(),
                password: cfg.secrets.sms_password.expose().to_string(),
                enquire_link: Duration::from_secs(c.sms.enquire_link_seconds.max(1)),
                receipts: c.sms.delivery_receipts,
                long_text: c.sms.long_text,
                languages: cfg.languages.clone(),
            },
            store.clone(),
            book.clone(),
            Some(recipients.clone()),
        )),
    };
    // The hourly limit is the cluster's: `limits` counts it across servers.
    let spend = SpendPolicy {
        allowed_prefixes: c.sms.allowed_prefixes.clone(),
        max_per_hour: c.sms.max_per_recipient_per_hour,
    };
    if c.sms.transport == SmsTransport::Smpp && spend.allowed_prefixes.is_empty() {
        tracing::warn!(
            server,
            "sms.allowed_prefixes is empty: SMS may go to any number in the world (docs/configuration.md)"
        );
    }
    // One set of HTTPS roots for the events and the recipients' webhooks.
    let tls = match &cfg.secrets.webhook_secret {
        Some(_) => Some(
            boxless_net::tls::public_client_config(None).map_err(|e| StartError {
                key: "webhook.secret_file",
                problem: format!("TLS roots: {e}"),
            })?,
        ),
        None => None,
    };
    if let (Some(secret), Some(tls)) = (&cfg.secrets.webhook_secret, &tls)
        && !c.webhook.url.trim().is_empty()
    {
        let url =
            boxless_net::http::Url::parse(c.webhook.url.trim()).ok_or_else(|| StartError {
                key: "webhook.url",
                problem: format!(
                    "`{}` is not an http:// or https:// URL (host, optional port, path)",
                    c.webhook.url
                ),
            })?;
        // Events are written from now on, in the transactions of the changes they report.
        store.enable_events();
        tokio::spawn(webhook::run(
            store.clone(),
            webhook::WebhookSettings {
                url,
                secret: secret.expose().as_bytes().to_vec(),
                tls: tls.clone(),
                server: server.to_string(),
            },
            backoff(),
        ));
    }
    if !c.sms.delivery_receipts {
        // No receipt will come: the SMSC's acceptance is all we learn.
        store.accepted_is_final();
    }
    let email = match c.email.smtp.trim() {
        "" => None,
        _ => Some(
            email::Mailer::new(
                &email::EmailSettings {
                    smtp: c.email.smtp.clone(),
                    user: c.email.user.clone(),
                    password: cfg
                        .secrets
                        .email_password
                        .as_ref()
                        .map(|p| p.expose().to_string())
                        .unwrap_or_default(),
                    from: c.email.from.clone(),
                    attach_audio: c.email.attach_audio,
                },
                store.clone(),
            )
            .map_err(|problem| StartError {
                key: "email.smtp",
                problem,
            })?,
        ),
    };
    let webhook = cfg
        .secrets
        .webhook_secret
        .as_ref()
        .zip(tls)
        .map(|(secret, tls)| webhook::NoticePoster {
            secret: secret.expose().as_bytes().to_vec(),
            tls,
            server: server.to_string(),
        });
    tokio::spawn(worker::run_notices(
        store.clone(),
        Notices { email, webhook },
        backoff(),
        notifier.clone(),
    ));
    tokio::spawn(worker::run(
        store.clone(),
        recipients.copy().clone(),
        sender,
        backoff(),
        worker::SmsRules {
            spend,
            utc_offset_min: c.sms.utc_offset_minutes,
            languages: cfg.languages.clone(),
        },
        limits.clone(),
        notifier.clone(),
    ));
    notifier.healthy.store(true, Ordering::Relaxed);
    Ok(notifier)
}

/// The texts of one server's notices, in the recipient's language: the message's notice
/// on each channel, a missed-call alert, a reminder before expiry. Written when the notice
/// is queued (the outbox row holds its text), so a resend says the same.
#[derive(Debug, Clone)]
pub struct NoticeTexts {
    policy: AccessCodePolicy,
    utc_offset_min: i32,
    server: String,
    max_parts: usize,
}

impl NoticeTexts {
    /// The texts of server `server` under `cfg` (access-code policy, time zone).
    pub fn new(cfg: &Checked, server: &str) -> NoticeTexts {
        NoticeTexts {
            policy: cfg.config.retrieval.access_code,
            utc_offset_min: cfg.config.sms.utc_offset_minutes,
            server: server.to_string(),
            max_parts: cfg.config.sms.max_parts as usize,
        }
    }

    /// A message's notice on `channel`: the SMS text, the e-mail, or the recipient's
    /// webhook's JSON.
    pub fn message(&self, f: &SmsFacts<'_>, channel: Channel, lang: Language) -> String {
        self.message_with(f, channel, lang, None, None)
    }

    /// [`NoticeTexts::message`] with the message's transcript: the SMS quotes its opening
    /// words, as many as `sms.max_parts` hold once `link` (the message's web link, which
    /// the text carries as a mark until it is sent) is in; the e-mail and the webhook's
    /// JSON carry it whole.
    pub fn message_with(
        &self,
        f: &SmsFacts<'_>,
        channel: Channel,
        lang: Language,
        transcript: Option<&str>,
        link: Option<&str>,
    ) -> String {
        match (channel, transcript) {
            (Channel::Sms, None) => text::message_sms(f, self.policy, self.utc_offset_min, lang),
            (Channel::Sms, Some(t)) => {
                let base = text::message_sms(f, self.policy, self.utc_offset_min, lang);
                text::with_transcript(&base, link, t, self.max_parts, lang)
            }
            (Channel::Email, t) => {
                let mail = email::message_email(f, self.policy, self.utc_offset_min, lang);
                match t {
                    Some(t) => email::with_transcript(mail, t, lang),
                    None => mail,
                }
            }
            (Channel::Webhook, t) => webhook::notice_body(f, &self.server, t),
        }
    }

    /// `calls` missed calls from `caller`, the last at `at_ms`.
    pub fn missed_call(
        &self,
        caller: Option<PhoneNumber>,
        calls: u32,
        at_ms: u64,
        lang: Language,
    ) -> String {
        text::missed_call_sms(caller, calls, at_ms, self.utc_offset_min, lang)
    }

    /// A message from `caller` on `link` expires at `expires_ms`.
    pub fn reminder(
        &self,
        caller: Option<PhoneNumber>,
        link: PhoneNumber,
        expires_ms: u64,
        lang: Language,
    ) -> String {
        text::reminder_sms(caller, link, expires_ms, self.utc_offset_min, lang)
    }
}
