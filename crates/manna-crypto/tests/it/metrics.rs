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

mod gauges {
    use manna_crypto::metrics::{
        ENCRYPT_FAILURES, KEY_AGE_SECONDS, KEY_EXPIRES_IN_SECONDS, KEY_INFO,
    };
    use manna_crypto::{AesKey, FernetKey, KeyMetadata, Keyring};
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    use time::macros::datetime;

    /// `(name, sorted labels, value)` of one metric.
    type Sample = (String, Vec<(String, String)>, DebugValue);

    /// Every metric the recorder holds.
    fn snapshot(recorder: &DebuggingRecorder) -> Vec<Sample> {
        recorder
            .snapshotter()
            .snapshot()
            .into_vec()
            .into_iter()
            .map(|(key, _, _, value)| {
                let mut labels: Vec<(String, String)> = key
                    .key()
                    .labels()
                    .map(|l| (l.key().to_owned(), l.value().to_owned()))
                    .collect();
                labels.sort();
                (key.key().name().to_owned(), labels, value)
            })
            .collect()
    }

    fn gauge(snap: &[Sample], name: &str, key_id: &str, role: &str) -> Option<f64> {
        let labels = vec![
            ("key_id".to_owned(), key_id.to_owned()),
            ("role".to_owned(), role.to_owned()),
        ];
        snap.iter()
            .find(|(n, l, _)| n == name && *l == labels)
            .map(|(_, _, v)| match v {
                DebugValue::Gauge(g) => g.into_inner(),
                other => panic!("{name} is not a gauge: {other:?}"),
            })
    }

    #[test]
    fn status_sets_key_age_expiry_and_role_gauges() {
        let recorder = DebuggingRecorder::new();
        let primary = AesKey::generate();
        let previous = AesKey::generate();
        let fernet = FernetKey::generate();
        let (pid, oid, fid) = (primary.id(), previous.id(), fernet.id());
        let created = datetime!(2026-01-01 0:00 UTC);
        let keyring = Keyring::builder()
            .primary_with_metadata(
                primary,
                KeyMetadata {
                    created_at: Some(created),
                    expires_at: Some(datetime!(2026-12-31 0:00 UTC)),
                },
            )
            .previous(previous)
            .fernet(fernet)
            .build()
            .unwrap();
        let now = datetime!(2026-12-01 0:00 UTC);
        metrics::with_local_recorder(&recorder, || keyring.status_at(now));
        let snap = snapshot(&recorder);
        let (pid, oid, fid) = (pid.to_string(), oid.to_string(), fid.to_string());
        assert_eq!(gauge(&snap, KEY_INFO, &pid, "primary"), Some(1.0));
        assert_eq!(gauge(&snap, KEY_INFO, &oid, "decrypt_only"), Some(1.0));
        assert_eq!(gauge(&snap, KEY_INFO, &fid, "fernet"), Some(1.0));
        assert_eq!(
            gauge(&snap, KEY_AGE_SECONDS, &pid, "primary"),
            Some((now - created).as_seconds_f64())
        );
        assert_eq!(
            gauge(&snap, KEY_EXPIRES_IN_SECONDS, &pid, "primary"),
            Some(30.0 * 86_400.0)
        );
        // Unknown dates: no gauge rather than a made-up value.
        assert_eq!(gauge(&snap, KEY_AGE_SECONDS, &oid, "decrypt_only"), None);
        assert_eq!(gauge(&snap, KEY_EXPIRES_IN_SECONDS, &fid, "fernet"), None);
        assert_eq!(snap.len(), 5, "{snap:#?}");
        // Labels hold key ids and roles only.
        for (_, labels, _) in &snap {
            for (k, _) in labels {
                assert!(k == "key_id" || k == "role", "unexpected label {k}");
            }
        }

        // Computing the status again refreshes the gauges.
        let later = datetime!(2026-12-11 0:00 UTC);
        metrics::with_local_recorder(&recorder, || keyring.status_at(later));
        let snap = snapshot(&recorder);
        assert_eq!(
            gauge(&snap, KEY_EXPIRES_IN_SECONDS, &pid, "primary"),
            Some(20.0 * 86_400.0)
        );
    }

    #[test]
    fn a_failed_encryption_is_counted_by_kind() {
        let recorder = DebuggingRecorder::new();
        let keyring = Keyring::builder()
            .primary_with_metadata(
                AesKey::generate(),
                KeyMetadata {
                    created_at: None,
                    expires_at: Some(datetime!(2020-01-01 0:00 UTC)),
                },
            )
            .build()
            .unwrap();
        metrics::with_local_recorder(&recorder, || {
            keyring.encrypt(b"secret", b"").unwrap_err();
            keyring.encrypt_to_bytes(b"secret", b"").unwrap_err();
        });
        let snap = snapshot(&recorder);
        let failures: Vec<_> = snap
            .iter()
            .filter(|(n, _, _)| n == ENCRYPT_FAILURES)
            .collect();
        assert_eq!(failures.len(), 1, "{snap:#?}");
        assert_eq!(
            failures[0].1,
            vec![("kind".to_owned(), "primary_key_expired".to_owned())]
        );
        assert!(matches!(failures[0].2, DebugValue::Counter(2)));
    }

    /// The rollback's Fernet encryptions count their failures too.
    #[test]
    fn a_failed_fernet_encryption_is_counted_by_kind() {
        let recorder = DebuggingRecorder::new();
        let keyring = Keyring::new(AesKey::generate());
        metrics::with_local_recorder(&recorder, || {
            keyring.encrypt_fernet(b"secret").unwrap_err();
        });
        let snap = snapshot(&recorder);
        let failures: Vec<_> = snap
            .iter()
            .filter(|(n, _, _)| n == ENCRYPT_FAILURES)
            .collect();
        assert_eq!(
            failures[0].1,
            vec![("kind".to_owned(), "no_fernet_key".to_owned())],
            "{snap:#?}"
        );
        assert!(matches!(failures[0].2, DebugValue::Counter(1)));
    }
}
