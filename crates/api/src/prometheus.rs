//! How the process's histograms are exported at `/metrics` (docs/http.md).
//!
//! As Prometheus histograms (cumulative `_bucket{le=..}` counts), not summaries.
//! metrics-exporter-prometheus 0.18's summaries lose samples: each scrape files the
//! samples recorded since the last one into a rolling window newest first, and a sample
//! older than the window's first bucket is dropped. Of a burst between two scrapes only
//! the newest 64 or so were kept, so a run of slow deposits could vanish from the p99
//! (`tests` below). A histogram counts every sample, and the counts of several servers
//! add up, which quantiles computed on each server do not.

use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder};

/// Bucket bounds of the `_seconds` histograms: from a deposit's millisecond steps to a
/// delivery receipt an hour late.
const SECONDS: &[f64] = &[
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0,
    900.0, 3600.0,
];

/// Bucket bounds of `boxless_transcript_words`.
const WORDS: &[f64] = &[1.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0];

/// The exporter with Boxless's buckets.
pub fn builder() -> Result<PrometheusBuilder, BuildError> {
    PrometheusBuilder::new()
        .set_buckets(SECONDS)?
        .set_buckets_for_metric(Matcher::Full("boxless_transcript_words".into()), WORDS)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `name`'s count at or below `le` in `text`.
    fn bucket(text: &str, name: &str, le: &str) -> u64 {
        let head = format!("{name}_bucket{{le=\"{le}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(head.as_str()))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {head} in\n{text}"))
    }

    #[test]
    fn every_sample_between_two_scrapes_is_counted() {
        let recorder = builder().unwrap().build_recorder();
        let handle = recorder.handle();
        // 20 slow ones among 1,000, the first ones recorded: a summary kept none of them.
        metrics::with_local_recorder(&recorder, || {
            for i in 0..1000 {
                let v = if i < 20 { 0.05 } else { 0.002 };
                metrics::histogram!("boxless_deposit_store_seconds").record(v);
            }
            metrics::histogram!("boxless_transcript_words").record(42.0);
        });
        let text = handle.render();
        let name = "boxless_deposit_store_seconds";
        assert_eq!(bucket(&text, name, "0.002"), 980);
        assert_eq!(bucket(&text, name, "0.02"), 980);
        assert_eq!(bucket(&text, name, "0.05"), 1000);
        assert_eq!(bucket(&text, name, "+Inf"), 1000);
        assert_eq!(bucket(&text, "boxless_transcript_words", "20"), 0);
        assert_eq!(bucket(&text, "boxless_transcript_words", "50"), 1);
    }
}
