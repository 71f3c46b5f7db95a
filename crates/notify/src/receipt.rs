//! Reading a `deliver_sm`: a delivery receipt (SMPP 3.4 §2.11, appendix B) or a text a
//! phone sent (MO). Pure: the PDU's fields in, what they say out.
//!
//! The SMSC's message id comes from the `receipted_message_id` TLV, else from the text
//! form `id:… sub:… dlvrd:… submit date:… done date:… stat:DELIVRD err:…`; the outcome
//! from the `message_state` TLV, else from `stat:`. Intermediate states (ENROUTE,
//! ACCEPTD, UNKNOWN) settle nothing.

use boxless_store::Delivery;

/// `message_state` values (SMPP 3.4 §5.2.28).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageState {
    /// 1
    Enroute,
    /// 2
    Delivered,
    /// 3
    Expired,
    /// 4
    Deleted,
    /// 5
    Undeliverable,
    /// 6
    Accepted,
    /// 7
    Unknown,
    /// 8
    Rejected,
    /// 9 (SMPP 5.0)
    Skipped,
}

/// A delivery receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The SMSC's id of the message it is about.
    pub id: String,
    /// What became of it; None for an intermediate state.
    pub delivery: Option<Delivery>,
    /// `stat:… err:…` as the SMSC wrote them, for `last_error` and the log.
    pub detail: String,
}

/// What a `deliver_sm` carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// A delivery receipt.
    Receipt(Receipt),
    /// A text from a phone.
    Mo {
        /// The sender's address as given.
        from: String,
        /// The number it was sent to (one of our link numbers) as given.
        to: String,
        /// Its text.
        text: String,
    },
    /// A receipt without a message id: nothing to match it to.
    Unreadable,
}

/// The `deliver_sm` fields a receipt or an MO text is read from.
#[derive(Debug, Clone, Copy)]
pub struct DeliverSm<'a> {
    /// esm_class.
    pub esm_class: u8,
    /// source_addr.
    pub source: &'a str,
    /// destination_addr.
    pub destination: &'a str,
    /// data_coding (0x08: UCS-2).
    pub data_coding: u8,
    /// short_message (or message_payload).
    pub text: &'a [u8],
    /// The `receipted_message_id` TLV.
    pub receipted_id: Option<&'a str>,
    /// The `message_state` TLV.
    pub state: Option<MessageState>,
}

/// What a text from a phone asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keyword {
    /// No more SMS.
    Stop,
    /// SMS again.
    Start,
}

/// STOP (STOPALL, UNSUBSCRIBE, CANCEL, END, QUIT, and ARRET, ALTO, BAJA, STOPP) or START
/// (UNSTOP, YES), alone in the text, any case; None for anything else.
pub fn keyword(text: &str) -> Option<Keyword> {
    let w = text.trim().trim_end_matches(['.', '!']).to_uppercase();
    match w.as_str() {
        "STOP" | "STOPALL" | "UNSUBSCRIBE" | "CANCEL" | "END" | "QUIT" | "ARRET" | "ARRÊT"
        | "ALTO" | "BAJA" | "STOPP" => Some(Keyword::Stop),
        "START" | "UNSTOP" | "YES" => Some(Keyword::Start),
        _ => None,
    }
}

/// esm_class bits 5..2: 0001 SMSC delivery receipt, 1000 intermediate notification.
const RECEIPT: u8 = 0x04;
const INTERMEDIATE: u8 = 0x20;

/// Reads a `deliver_sm`.
pub fn read(pdu: &DeliverSm<'_>) -> Inbound {
    let kind = pdu.esm_class & 0x3C;
    let is_receipt = kind == RECEIPT || kind == INTERMEDIATE || pdu.receipted_id.is_some();
    let text = decode(pdu.data_coding, pdu.text);
    if !is_receipt {
        return Inbound::Mo {
            from: pdu.source.to_string(),
            to: pdu.destination.to_string(),
            text,
        };
    }
    let id = pdu
        .receipted_id
        .map(str::to_string)
        .filter(|s| !s.trim().is_empty())
        .or_else(|| field(&text, "id:").map(str::to_string));
    let Some(id) = id else {
        return Inbound::Unreadable;
    };
    let stat = field(&text, "stat:");
    let delivery = match pdu.state {
        Some(s) => from_state(s),
        None => stat.and_then(from_stat),
    };
    let mut detail = String::new();
    if let Some(s) = stat {
        detail.push_str("stat:");
        detail.push_str(s);
    } else if let Some(s) = pdu.state {
        detail.push_str(&format!("message_state:{s:?}"));
    }
    if let Some(e) = field(&text, "err:") {
        detail.push_str(" err:");
        detail.push_str(e);
    }
    Inbound::Receipt(Receipt {
        id: id.trim().to_string(),
        delivery,
        detail,
    })
}

fn from_state(s: MessageState) -> Option<Delivery> {
    match s {
        MessageState::Delivered => Some(Delivery::Delivered),
        MessageState::Expired => Some(Delivery::Expired),
        MessageState::Deleted
        | MessageState::Undeliverable
        | MessageState::Rejected
        | MessageState::Skipped => Some(Delivery::Undeliverable),
        MessageState::Enroute | MessageState::Accepted | MessageState::Unknown => None,
    }
}

fn from_stat(s: &str) -> Option<Delivery> {
    match s.to_ascii_uppercase().as_str() {
        "DELIVRD" | "DELIVERED" => Some(Delivery::Delivered),
        "EXPIRED" => Some(Delivery::Expired),
        "UNDELIV" | "UNDELIVERABLE" | "REJECTD" | "REJECTED" | "DELETED" => {
            Some(Delivery::Undeliverable)
        }
        _ => None,
    }
}

/// The value after `key` (case-insensitive) up to the next blank.
fn field<'t>(text: &'t str, key: &str) -> Option<&'t str> {
    let lower = text.to_ascii_lowercase();
    let mut from = 0;
    while let Some(i) = lower[from..].find(key) {
        let at = from + i;
        // A key starts the text or follows a blank ("sub:" must not match "id:" in "xid:").
        if at == 0 || text.as_bytes()[at - 1].is_ascii_whitespace() {
            let rest = &text[at + key.len()..];
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            return Some(&rest[..end]).filter(|v| !v.is_empty());
        }
        from = at + key.len();
    }
    None
}

/// The text of a short message: UCS-2 (0x08) or, as SMSCs send receipts and most MO,
/// ASCII-compatible octets (GSM-7 unpacked, Latin-1); anything else is replaced.
fn decode(data_coding: u8, octets: &[u8]) -> String {
    if data_coding == 0x08 {
        let units: Vec<u16> = octets
            .chunks_exact(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
            .collect();
        return String::from_utf16_lossy(&units);
    }
    octets
        .iter()
        .map(|&b| if b.is_ascii() { b as char } else { '\u{fffd}' })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pdu<'a>(esm: u8, text: &'a [u8]) -> DeliverSm<'a> {
        DeliverSm {
            esm_class: esm,
            source: "15551230002",
            destination: "18005550100",
            data_coding: 0,
            text,
            receipted_id: None,
            state: None,
        }
    }

    #[test]
    fn the_text_form_of_a_receipt() {
        let t = b"id:0A1B2C sub:001 dlvrd:001 submit date:2611291405 done date:2611291406 stat:DELIVRD err:000 text:Voice message";
        let Inbound::Receipt(r) = read(&pdu(0x04, t)) else {
            panic!()
        };
        assert_eq!(r.id, "0A1B2C");
        assert_eq!(r.delivery, Some(Delivery::Delivered));
        assert_eq!(r.detail, "stat:DELIVRD err:000");
        let t = b"id:77 sub:001 dlvrd:000 submit date:2611291405 done date:2611291406 stat:UNDELIV err:001 text:";
        let Inbound::Receipt(r) = read(&pdu(0x04, t)) else {
            panic!()
        };
        assert_eq!(r.delivery, Some(Delivery::Undeliverable));
        let Inbound::Receipt(r) = read(&pdu(0x04, b"id:9 stat:ENROUTE")) else {
            panic!()
        };
        assert_eq!(r.delivery, None, "intermediate");
        assert_eq!(
            read(&pdu(0x04, b"id:9 stat:EXPIRED")),
            Inbound::Receipt(Receipt {
                id: "9".into(),
                delivery: Some(Delivery::Expired),
                detail: "stat:EXPIRED".into()
            })
        );
    }

    #[test]
    fn tlvs_win_over_the_text() {
        let mut p = pdu(0x04, b"id:1 stat:DELIVRD");
        p.receipted_id = Some("abc");
        p.state = Some(MessageState::Rejected);
        let Inbound::Receipt(r) = read(&p) else {
            panic!()
        };
        assert_eq!(
            (r.id.as_str(), r.delivery),
            ("abc", Some(Delivery::Undeliverable))
        );
        // A receipted_message_id alone marks a receipt even without the esm_class bit.
        let mut p = pdu(0x00, b"");
        p.receipted_id = Some("abc");
        p.state = Some(MessageState::Delivered);
        assert!(matches!(read(&p), Inbound::Receipt(_)));
    }

    #[test]
    fn stop_and_start_keywords() {
        assert_eq!(keyword(" stop\n"), Some(Keyword::Stop));
        assert_eq!(keyword("Arrêt"), Some(Keyword::Stop));
        assert_eq!(keyword("START!"), Some(Keyword::Start));
        assert_eq!(keyword("please stop"), None);
        assert_eq!(keyword(""), None);
    }

    #[test]
    fn an_mo_text_and_an_unreadable_receipt() {
        assert_eq!(
            read(&pdu(0x00, b"STOP")),
            Inbound::Mo {
                from: "15551230002".into(),
                to: "18005550100".into(),
                text: "STOP".into()
            }
        );
        let mut p = pdu(0x00, &[0x00, 0x53, 0x00, 0x54]);
        p.data_coding = 0x08;
        assert!(matches!(read(&p), Inbound::Mo { text, .. } if text == "ST"));
        assert_eq!(read(&pdu(0x04, b"stat:DELIVRD")), Inbound::Unreadable);
        // "id:" inside another word is not the id.
        assert_eq!(read(&pdu(0x04, b"xid:5 stat:DELIVRD")), Inbound::Unreadable);
    }
}
