//! `deploy/prometheus/manna-alerts.yml`: every rule has a summary and a
//! runbook, the guide's alerts are all there, and every `manna_*` metric a
//! rule names is one the code records (the crates' metric-name constants).

use std::collections::BTreeSet;

use serde_norway::Value;

const RULES: &str = include_str!("../deploy/prometheus/manna-alerts.yml");

/// Every metric name the crates record.
fn emitted() -> BTreeSet<&'static str> {
    manna::crypto::metrics::ALL
        .iter()
        .chain(manna::lock::metric_names::ALL)
        .chain(manna::migrate::metric_names::ALL)
        .copied()
        .collect()
}

/// The `manna_*` identifiers in a PromQL expression or a text.
fn metric_names(text: &str) -> Vec<&str> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|t| t.starts_with("manna_"))
        .collect()
}

/// A name the code records; histograms are also scraped as `_bucket`,
/// `_sum` and `_count` series.
fn is_emitted(emitted: &BTreeSet<&str>, name: &str) -> bool {
    emitted.contains(name)
        || ["_bucket", "_sum", "_count"].iter().any(|s| {
            name.strip_suffix(s)
                .is_some_and(|base| emitted.contains(base))
        })
}

fn rules() -> Vec<Value> {
    let doc: Value = serde_norway::from_str(RULES).expect("manna-alerts.yml is YAML");
    let groups = doc["groups"].as_sequence().expect("a `groups` list");
    assert!(!groups.is_empty());
    groups
        .iter()
        .flat_map(|g| {
            g["rules"]
                .as_sequence()
                .expect("each group has `rules`")
                .clone()
        })
        .collect()
}

fn text<'a>(rule: &'a Value, path: &[&str]) -> &'a str {
    let mut v = rule;
    for p in path {
        v = &v[*p];
    }
    v.as_str()
        .unwrap_or_else(|| panic!("rule {:?} has no string {path:?}", rule["alert"]))
}

#[test]
fn every_metric_a_rule_names_is_emitted_by_the_code() {
    let emitted = emitted();
    let mut checked = 0;
    for rule in rules() {
        let alert = text(&rule, &["alert"]);
        let expr = text(&rule, &["expr"]);
        let names = metric_names(expr);
        assert!(!names.is_empty(), "{alert}: its expr names no manna metric");
        let annotations = [
            text(&rule, &["annotations", "summary"]),
            text(&rule, &["annotations", "runbook"]),
        ];
        for name in names
            .into_iter()
            .chain(annotations.iter().flat_map(|t| metric_names(t)))
        {
            assert!(
                is_emitted(&emitted, name),
                "{alert} names {name}, which no crate records; known: {emitted:#?}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 5);
}

#[test]
fn the_guides_alerts_are_there_with_a_summary_and_a_runbook() {
    let rules = rules();
    let alerts: Vec<&str> = rules.iter().map(|r| text(r, &["alert"])).collect();
    for expected in [
        "MannaHighLockContention",
        "MannaEncryptionFailure",
        "MannaLockBackendUnavailable",
        "MannaKeyExpiresSoon",
        "MannaMigrationStalled",
    ] {
        assert!(alerts.contains(&expected), "{expected} missing: {alerts:?}");
    }
    for rule in &rules {
        let alert = text(rule, &["alert"]);
        assert!(!text(rule, &["annotations", "summary"]).trim().is_empty());
        let runbook = text(rule, &["annotations", "runbook"]);
        assert!(
            runbook.contains("docs/operations.md#"),
            "{alert}: the runbook should point at its section of docs/operations.md"
        );
    }
}

#[test]
fn the_thresholds_are_the_guides() {
    let rules = rules();
    let expr = |alert: &str| {
        let rule = rules
            .iter()
            .find(|r| text(r, &["alert"]) == alert)
            .expect("alert present");
        text(rule, &["expr"]).to_owned()
    };
    assert!(expr("MannaHighLockContention").contains("* 60 > 10"));
    assert!(expr("MannaKeyExpiresSoon").contains("< 30 * 24 * 3600"));
    assert!(expr("MannaEncryptionFailure").contains("> 0"));
}
