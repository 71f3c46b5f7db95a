//! SMS transports: the log (for a first look) and SMPP 3.4 (bind_transceiver, submit_sm,
//! enquire_link, reconnect).

use std::str::FromStr;
use std::time::Duration;

use boxless_store::OutboxJob;
use futures_util::StreamExt;
use rusmpp::pdus::{BindTransceiver, SubmitSm};
use rusmpp::types::{COctetString, OctetString};
use rusmpp::values::{DataCoding, EsmClass, Npi, RegisteredDelivery, ServiceType, Ton};
use rusmpp::{CommandId, CommandStatus};

use crate::text;

/// Why an SMS was not accepted. Every failure is retried; `transient` only tells the log.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{detail}")]
pub struct SendError {
    /// What happened.
    pub detail: String,
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
    /// Submits one SMS; Ok once the SMSC (or the log) accepted it.
    pub async fn submit(&mut self, job: &OutboxJob) -> Result<(), SendError> {
        match self {
            Sender::Log => {
                let from = job.source.map(|s| s.to_string()).unwrap_or_default();
                // Access codes are never logged, not even here.
                let text = crate::text::mask_code(&job.text);
                tracing::info!(target: "sms", to = %job.destination, from = %from, text = %text, "SMS");
                Ok(())
            }
            Sender::Smpp(s) => s.submit(job).await,
        }
    }
}

/// An SMPP client that (re)binds on demand.
#[derive(Debug)]
pub struct Smpp {
    settings: SmppSettings,
    client: Option<rusmppc::Client>,
}

impl Smpp {
    /// Not connected until the first submit.
    pub fn new(settings: SmppSettings) -> Smpp {
        Smpp {
            settings,
            client: None,
        }
    }

    async fn connect(&mut self) -> Result<&rusmppc::Client, SendError> {
        if let Some(c) = &self.client
            && c.is_active()
        {
            return Ok(self.client.as_ref().expect("checked just above"));
        }
        self.client = None;
        let err = |what: &str, e: &dyn std::fmt::Display| SendError {
            detail: format!("{what}: {e}"),
        };
        let url = format!("smpp://{}", self.settings.address);
        let connect = rusmppc::ConnectionBuilder::new()
            .enquire_link_interval(self.settings.enquire_link)
            .response_timeout(Duration::from_secs(5))
            .disable_interface_version_check()
            .connect(url.as_str());
        let (client, mut events) = tokio::time::timeout(Duration::from_secs(5), connect)
            .await
            .map_err(|_| SendError {
                detail: "connect: timed out".into(),
            })?
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
        // Answer what the SMSC sends us (delivery receipts); the connection task ends with it.
        let c2 = client.clone();
        tokio::spawn(async move {
            while let Some(ev) = events.next().await {
                match ev {
                    rusmppc::Event::Incoming(cmd) if cmd.id() == CommandId::DeliverSm => {
                        let _ = c2
                            .deliver_sm_resp(
                                cmd.sequence_number(),
                                rusmpp::pdus::DeliverSmResp::default(),
                            )
                            .await;
                    }
                    rusmppc::Event::Error(e) => tracing::warn!(error = %e, "SMPP connection"),
                    _ => {}
                }
            }
        });
        self.client = Some(client);
        Ok(self.client.as_ref().expect("set just above"))
    }

    async fn submit(&mut self, job: &OutboxJob) -> Result<(), SendError> {
        let err = |what: &str, e: &dyn std::fmt::Display| SendError {
            detail: format!("{what}: {e}"),
        };
        let coded = text::encode(&job.text);
        let mut octets = coded.octets;
        octets.truncate(254);
        let dest = job.destination.digits();
        let src = job.source.map(|s| s.digits()).unwrap_or_default();
        let (src_ton, src_npi) = if src.is_empty() {
            (Ton::Unknown, Npi::Unknown)
        } else {
            (Ton::International, Npi::Isdn)
        };
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
            .esm_class(EsmClass::default())
            .registered_delivery(RegisteredDelivery::default())
            .data_coding(if coded.data_coding == 8 {
                DataCoding::Ucs2
            } else {
                DataCoding::McSpecific
            })
            .short_message(OctetString::from_vec(octets).map_err(|e| err("short_message", &e))?)
            .build();
        let client = self.connect().await?;
        match client.submit_sm(sm).await {
            Ok(_) => Ok(()),
            Err(rusmppc::error::Error::UnexpectedResponse { response }) => {
                let status = response.status();
                if status == CommandStatus::EsmeRthrottled {
                    Err(SendError {
                        detail: "SMSC throttled (ESME_RTHROTTLED)".into(),
                    })
                } else {
                    Err(SendError {
                        detail: format!("SMSC refused: {status:?}"),
                    })
                }
            }
            Err(e) => {
                // The connection is suspect: drop it, the next attempt reconnects.
                self.client = None;
                Err(err("submit_sm", &e))
            }
        }
    }
}
