//! Metrics through the `metrics` facade: what is counted and that labels
//! hold only key ids, formats and failure kinds — never data.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use manna_crypto::metrics::{DECRYPTIONS, DECRYPT_FAILURES, ENCRYPTIONS};
use manna_crypto::{AesKey, FernetKey, Keyring};
use metrics::{
    Counter, CounterFn, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};

type Counts = Arc<Mutex<BTreeMap<String, u64>>>;

/// Records counters as `name{label=value,…}` → total.
#[derive(Default)]
struct TestRecorder {
    counts: Counts,
}

struct Handle {
    name: String,
    counts: Counts,
}

impl CounterFn for Handle {
    fn increment(&self, value: u64) {
        *self
            .counts
            .lock()
            .unwrap()
            .entry(self.name.clone())
            .or_default() += value;
    }
    fn absolute(&self, value: u64) {
        self.counts.lock().unwrap().insert(self.name.clone(), value);
    }
}

impl Recorder for TestRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let mut labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        labels.sort();
        Counter::from_arc(Arc::new(Handle {
            name: format!("{}{{{}}}", key.name(), labels.join(",")),
            counts: Arc::clone(&self.counts),
        }))
    }
    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

#[test]
fn counts_by_key_id_format_and_failure_kind() {
    let recorder = TestRecorder::default();
    let primary = AesKey::generate();
    let fernet = FernetKey::generate();
    let (pid, fid) = (primary.id(), fernet.id());
    let keyring = Keyring::builder()
        .primary(primary)
        .fernet(fernet)
        .build()
        .unwrap();
    let secret = b"secret-value-that-must-not-leak";
    let other = Keyring::new(AesKey::generate())
        .encrypt(secret, b"")
        .unwrap();
    metrics::with_local_recorder(&recorder, || {
        let token = keyring.encrypt(secret, b"t.c").unwrap();
        keyring.decrypt(&token, b"t.c").unwrap();
        keyring.decrypt(&token, b"t.c").unwrap();
        let legacy = keyring.encrypt_fernet(secret).unwrap();
        keyring.decrypt(&legacy, b"").unwrap();
        keyring.decrypt(&token, b"wrong").unwrap_err();
        keyring.decrypt("plain secret-value", b"").unwrap_err();
        keyring.decrypt("mn1:broken", b"").unwrap_err();
        keyring.decrypt(&other, b"").unwrap_err();
    });
    let counts = recorder.counts.lock().unwrap().clone();
    let expect = |name: &str, n: u64| {
        assert_eq!(counts.get(name).copied(), Some(n), "{name} in {counts:#?}");
    };
    expect(
        &format!("{ENCRYPTIONS}{{format=aes256gcm,key_id={pid}}}"),
        1,
    );
    expect(&format!("{ENCRYPTIONS}{{format=fernet,key_id={fid}}}"), 1);
    expect(
        &format!("{DECRYPTIONS}{{format=aes256gcm,key_id={pid}}}"),
        2,
    );
    expect(&format!("{DECRYPTIONS}{{format=fernet,key_id={fid}}}"), 1);
    expect(
        &format!("{DECRYPT_FAILURES}{{key_id={pid},kind=authentication}}"),
        1,
    );
    expect(
        &format!("{DECRYPT_FAILURES}{{kind=plaintext_not_accepted}}"),
        1,
    );
    expect(&format!("{DECRYPT_FAILURES}{{kind=unknown_format}}"), 1);
    expect(
        &format!("{DECRYPT_FAILURES}{{key_id=unknown,kind=unknown_key}}"),
        1,
    );
    assert_eq!(counts.len(), 8, "{counts:#?}");
    let all = format!("{counts:?}");
    assert!(!all.contains("secret"), "a label holds data: {all}");
}

/// Issue 9: key ids read from stored data never become label values: values
/// under 50 different unconfigured keys make one `key_id=unknown` series.
#[test]
fn unconfigured_key_ids_are_labelled_unknown() {
    let recorder = TestRecorder::default();
    let keyring = Keyring::new(AesKey::generate());
    let foreign: Vec<String> = (0..50)
        .map(|_| Keyring::new(AesKey::generate()).encrypt(b"x", b"").unwrap())
        .collect();
    metrics::with_local_recorder(&recorder, || {
        for token in &foreign {
            keyring.decrypt(token, b"").unwrap_err();
        }
    });
    let counts = recorder.counts.lock().unwrap().clone();
    assert_eq!(counts.len(), 1, "{counts:#?}");
    assert_eq!(
        counts
            .get(&format!(
                "{DECRYPT_FAILURES}{{key_id=unknown,kind=unknown_key}}"
            ))
            .copied(),
        Some(50),
        "{counts:#?}"
    );
}
