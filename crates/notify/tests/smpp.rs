//! The SMPP sender against the test kit's SMSC: a long text goes as a concatenated SMS
//! (UDH or `sar_*`), every part asks for a receipt, and each part's id is stored.

use std::sync::Arc;
use std::time::Duration;

use boxless_core::config::LongText;
use boxless_core::{LinkPool, PhoneNumber, Rng};
use boxless_notify::{ReceiptBook, Sender, Smpp, SmppSettings};
use boxless_store::{NewMessage, Store};
use boxless_testkit::FakeSmsc;

fn store() -> (Arc<Store>, std::path::PathBuf) {
    let d = std::env::temp_dir().join(format!(
        "boxless-smpp-{}-{}",
        std::process::id(),
        Rng::from_entropy().next_u64()
    ));
    std::fs::create_dir_all(&d).unwrap();
    let s = Store::open(
        &d,
        "ms1",
        LinkPool::parse(&["+18005550100-+18005550109"]).unwrap(),
    )
    .unwrap();
    (Arc::new(s), d)
}

async fn send_long(long_text: LongText) -> (Vec<boxless_testkit::Sms>, Vec<u8>) {
    let smsc = FakeSmsc::start().await.unwrap();
    let (store, dir) = store();
    let m = NewMessage {
        recipient: PhoneNumber::parse_e164("+15551230002").unwrap(),
        caller: PhoneNumber::parse_e164("+15551230001"),
        received_at_ms: 1_000,
        samples: &[0i16; 800],
        sample_rate: 8000,
        encoding: boxless_store::Encoding::Pcm16,
    };
    // 200 characters: two parts of at most 153.
    let text = format!("Voice message {}", "x".repeat(186));
    store.deposit(&m, |_| text.clone()).unwrap();
    let job = store
        .due(u64::MAX / 2, 1, boxless_store::Lane::Sms)
        .unwrap()
        .remove(0);
    let mut sender = Sender::Smpp(Smpp::new(
        SmppSettings {
            address: smsc.addr.to_string(),
            system_id: "boxless".into(),
            password: "secret".into(),
            enquire_link: Duration::from_secs(30),
            receipts: true,
            long_text,
            languages: Default::default(),
        },
        store.clone(),
        Arc::new(ReceiptBook::default()),
        None,
    ));
    assert_eq!(sender.submit(&job).await.unwrap(), 2);
    let parts = store.parts_accepted(job.id).unwrap();
    std::fs::remove_dir_all(dir).unwrap();
    (smsc.wait_for(2, Duration::from_secs(5)).await, parts)
}

#[tokio::test]
async fn a_long_text_goes_in_parts_with_a_udh() {
    let (sms, parts) = send_long(LongText::Udh).await;
    assert_eq!(parts, [0, 1], "both parts' ids stored");
    assert_eq!(sms.len(), 2);
    for (k, s) in sms.iter().enumerate() {
        assert_eq!(s.esm_class & 0x40, 0x40, "UDHI");
        assert_eq!(s.registered_delivery, 1);
        assert_eq!(&s.octets[..3], [0x05, 0x00, 0x03]);
        assert_eq!(s.octets[4..6], [2, k as u8 + 1]);
        assert!(s.tlvs.is_empty());
    }
    assert_eq!(sms[0].octets[3], sms[1].octets[3], "one reference");
    assert_eq!(sms[0].octets.len() - 6 + sms[1].octets.len() - 6, 200);
}

#[tokio::test]
async fn a_long_text_goes_in_parts_with_sar_tlvs() {
    let (sms, _) = send_long(LongText::Sar).await;
    assert_eq!(sms.len(), 2);
    for (k, s) in sms.iter().enumerate() {
        assert_eq!(s.esm_class & 0x40, 0);
        let tlv = |tag: u16| {
            s.tlvs
                .iter()
                .find(|(t, _)| *t == tag)
                .map(|(_, v)| v.clone())
        };
        assert!(tlv(0x020C).is_some(), "sar_msg_ref_num");
        assert_eq!(tlv(0x020E), Some(vec![2]), "sar_total_segments");
        assert_eq!(tlv(0x020F), Some(vec![k as u8 + 1]), "sar_segment_seqnum");
    }
    assert_eq!(sms[0].octets.len() + sms[1].octets.len(), 200);
}
