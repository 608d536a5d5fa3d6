//! The wiring of `examples/prometheus`, in-process: with the Prometheus
//! recorder installed, manna's crypto, lock and key-gauge metrics appear in
//! what Prometheus scrapes.

#[path = "../examples/prometheus/wiring.rs"]
mod wiring;

use manna::crypto::metrics as crypto;
use manna::lock::metric_names as lock;
use metrics_exporter_prometheus::PrometheusBuilder;

#[test]
fn the_scraped_text_has_crypto_lock_and_key_gauge_metrics() {
    let handle = PrometheusBuilder::new()
        .install_recorder()
        .expect("the only recorder of this test binary");
    let status = wiring::exercise().expect("the example's wiring runs");
    let primary = status.primary_key_id.expect("a primary key").to_string();

    let text = handle.render();
    for name in [
        crypto::ENCRYPTIONS,
        crypto::DECRYPTIONS,
        crypto::DECRYPT_FAILURES,
        crypto::KEY_INFO,
        crypto::KEY_AGE_SECONDS,
        crypto::KEY_EXPIRES_IN_SECONDS,
        lock::ACQUISITIONS,
        lock::HELD_SECONDS,
    ] {
        assert!(text.contains(name), "{name} missing from:\n{text}");
    }
    assert!(
        text.contains(&format!(
            "{}{{key_id=\"{primary}\",role=\"primary\"}} 1",
            crypto::KEY_INFO
        )),
        "the primary key's info gauge:\n{text}"
    );
    // Nothing secret: the plaintexts never appear.
    assert!(!text.contains("token-0"), "{text}");
}
