//! Any datagram: parsing never panics, and a response printed for a parsed request parses
//! again as a response with the same Call-ID and CSeq, and the message moved onto a copy
//! of its bytes is the same message.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(m) = boxless_sip::Message::parse(data, false) else { return };
    let owned = boxless_sip::OwnedMessage::copy_of(&m, data).expect("moves onto a copy");
    assert_eq!(format!("{:?}", owned.get()), format!("{m:?}"));
    let _ = boxless_sip::parties::recipient(&m);
    let _ = boxless_sip::parties::caller(&m);
    if m.is_request() && m.defect.is_none() {
        let mut out = Vec::new();
        boxless_sip::write_response(&mut out, &m, 400, "Bad Request", Some(&"t"), None, b"", None);
        let r = boxless_sip::Message::parse(&out, false).expect("our own response parses");
        assert_eq!(r.status(), Some(400));
        assert_eq!(r.call_id, m.call_id);
        assert_eq!(r.cseq, m.cseq);
    }
});
