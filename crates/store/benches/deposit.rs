//! One deposit as the store's writer does it when a caller hangs up: the recording's
//! header finished and fsynced, the message row and its SMS committed, the audio moved to
//! its leaf, the stored message read back. The recording itself (3 s of µ-law, written
//! while the call went on) is made outside the timed part. Each deposit is for another
//! recipient, so none is merged with the one before.
//!
//! Run: `cargo bench -p boxless-store --bench deposit`. `BOXLESS_BENCH_DIR=DIR` puts the
//! store on DIR's file system (default: the temporary directory); on a tmpfs (`/dev/shm`)
//! what is left is the writer's own CPU, with no disk behind its fsyncs.
use std::path::PathBuf;
use std::time::{Duration, Instant};

use boxless_core::recipient::Route;
use boxless_core::{LinkPool, PhoneNumber};
use boxless_store::{Arrival, Encoding, Store};
use criterion::{Criterion, criterion_group, criterion_main};

fn dir() -> PathBuf {
    let base = std::env::var_os("BOXLESS_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let d = base.join(format!("boxless-bench-deposit-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("a directory for the store");
    d
}

fn bench(c: &mut Criterion) {
    let d = dir();
    let pool = LinkPool::parse(&["+18005550000-+18005559999"]).expect("pool");
    let store = Store::open(&d, "ms1", pool).expect("store");
    let voice: Vec<i16> = (0..24_000).map(|i| ((i % 80) as i16 - 40) * 300).collect();
    let mut n = 0u64;
    c.bench_function("deposit_3s_sms", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                n += 1;
                let recipient = PhoneNumber::parse_e164(&format!("+1555{:07}", n % 10_000_000))
                    .expect("a number");
                let arrival = Arrival {
                    recipient,
                    caller: PhoneNumber::parse_e164("+15551230001"),
                    received_at_ms: boxless_core::now_ms(),
                };
                let mut rec = store
                    .start_recording(arrival, 8000, Encoding::Mulaw)
                    .expect("a recording");
                rec.append(&voice).expect("written");
                let t = Instant::now();
                let m = store
                    .deposit_recording(rec, u64::MAX, &[Route::Sms(vec![recipient])], 0, |f, _| {
                        format!("Voice message from {:?}", f.message.caller)
                    })
                    .expect("stored");
                spent += t.elapsed();
                criterion::black_box(m);
            }
            spent
        })
    });
    drop(store);
    let _ = std::fs::remove_dir_all(&d);
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(10));
    targets = bench
}
criterion_main!(benches);
