//! Prints how the parser classifies each RFC 4475 message: `torture DIR`.
fn main() {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "../shared/conformance/rfc4475".into());
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .expect("readable corpus directory")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "dat"))
        .collect();
    names.sort();
    for p in names {
        let b = std::fs::read(&p).expect("readable message");
        let v = match boxless_sip::Message::parse(&b, false) {
            Ok(m) => match m.defect {
                Some(d) => format!("{} {}", d.code, d.reason),
                None => "ok".into(),
            },
            Err(e) => format!("drop: {e}"),
        };
        println!("{:12} {v}", p.file_stem().unwrap().to_string_lossy());
    }
}
