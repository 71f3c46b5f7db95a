//! Any byte stream: framing never panics and never claims more bytes than it has.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let boxless_sip::Frame::Complete { skip, len } = boxless_sip::frame(data, 65_535) {
        assert!(skip + len <= data.len());
        let _ = boxless_sip::Message::parse(&data[skip..skip + len], true);
    }
});
