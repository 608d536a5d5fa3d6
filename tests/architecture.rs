//! Architecture invariants (docs/architecture.md), checked from `cargo metadata`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::process::Command;

use serde_json::Value;

/// Declared dependencies of one workspace package.
struct Dep {
    name: String,
    kind: Option<String>,
    optional: bool,
}

fn workspace_deps() -> BTreeMap<String, Vec<Dep>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut map = BTreeMap::new();
    for pkg in meta["packages"].as_array().unwrap() {
        let deps = pkg["dependencies"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| Dep {
                name: d["name"].as_str().unwrap().to_owned(),
                kind: d["kind"].as_str().map(str::to_owned),
                optional: d["optional"].as_bool().unwrap_or(false),
            })
            .collect();
        map.insert(pkg["name"].as_str().unwrap().to_owned(), deps);
    }
    map
}

fn normal(deps: &[Dep]) -> impl Iterator<Item = &Dep> {
    deps.iter().filter(|d| d.kind.is_none())
}

const DRIVERS: &[&str] = &["diesel", "r2d2", "redis", "pq-sys", "libsqlite3-sys"];

#[test]
fn every_planned_crate_is_a_workspace_member() {
    let deps = workspace_deps();
    for name in [
        "manna",
        "manna-crypto",
        "manna-lock",
        "manna-lock-redis",
        "manna-store",
        "manna-store-diesel",
        "manna-migrate",
        "manna-cli",
        "manna-py",
        "xtask",
    ] {
        assert!(deps.contains_key(name), "{name} is not a workspace member");
    }
}

#[test]
fn domain_crates_depend_on_no_driver() {
    let deps = workspace_deps();
    for krate in ["manna-crypto", "manna-lock", "manna-store", "manna-migrate"] {
        for d in normal(&deps[krate]) {
            assert!(
                !DRIVERS.contains(&d.name.as_str()),
                "{krate} must not depend on the driver {}",
                d.name
            );
        }
    }
}

/// An application that wants an encrypted column (manna-store-diesel with
/// one backend) or only the synchronous lock parts (conflicts, retry,
/// fencing tokens) compiles no async runtime: Tokio is a runtime driver, so
/// these crates may only depend on it behind a feature.
#[test]
fn tokio_is_optional_below_the_engine() {
    let deps = workspace_deps();
    for krate in ["manna-crypto", "manna-store"] {
        assert!(
            normal(&deps[krate]).all(|d| d.name != "tokio"),
            "{krate} must not depend on tokio"
        );
    }
    for krate in ["manna-lock", "manna-store-diesel"] {
        for d in normal(&deps[krate]) {
            if d.name == "tokio" {
                assert!(d.optional, "{krate} depends on tokio outside a feature");
            }
        }
    }
}

/// The same, transitively, as `cargo tree` resolves it.
#[test]
fn an_encrypted_column_on_postgres_compiles_no_runtime() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    for (krate, features) in [
        ("manna-store-diesel", "postgres"),
        ("manna-store-diesel", "sqlite"),
        ("manna-lock", ""),
    ] {
        let out = Command::new(&cargo)
            .args([
                "tree",
                "--offline",
                "-e",
                "normal",
                "--prefix",
                "none",
                "-p",
                krate,
            ])
            .args(["--no-default-features", "--features", features])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("run cargo tree");
        let tree = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "cargo tree failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for runtime in ["tokio ", "mio ", "async-std "] {
            assert!(
                !tree.lines().any(|l| l.starts_with(runtime)),
                "{krate} --features {features:?} compiles {runtime}:\n{tree}"
            );
        }
        assert!(
            !tree.contains("manna-migrate"),
            "{krate} compiles the engine"
        );
    }
}

#[test]
fn internal_dependencies_follow_the_arrows() {
    let allowed: BTreeMap<&str, &[&str]> = BTreeMap::from([
        ("manna-crypto", &[][..]),
        ("manna-lock", &[][..]),
        ("manna-store", &["manna-crypto", "manna-lock"][..]),
        (
            "manna-migrate",
            &["manna-crypto", "manna-lock", "manna-store"][..],
        ),
        ("manna-lock-redis", &["manna-lock"][..]),
        // The Python binding: manna-crypto, and the Redis lock through the
        // lock port's manager.
        (
            "manna-py",
            &["manna-crypto", "manna-lock", "manna-lock-redis"][..],
        ),
        // Not manna-migrate: an application that wants an encrypted column
        // does not compile the migration engine.
        (
            "manna-store-diesel",
            &["manna-crypto", "manna-lock", "manna-store"][..],
        ),
    ]);
    let deps = workspace_deps();
    for (krate, ok) in &allowed {
        for d in normal(&deps[*krate]) {
            if d.name.starts_with("manna") && d.name != *krate {
                assert!(
                    ok.contains(&d.name.as_str()),
                    "{krate} may not depend on {} (allowed: {ok:?})",
                    d.name
                );
            }
        }
    }
    // `cargo xtask` is the CLI, not a copy of it.
    let xtask_internal: Vec<&str> = normal(&deps["xtask"])
        .filter(|d| d.name.starts_with("manna"))
        .map(|d| d.name.as_str())
        .collect();
    assert_eq!(xtask_internal, ["manna-cli"], "xtask only runs manna-cli");
    // Nothing but the binaries depends on the CLI.
    for (krate, krate_deps) in &deps {
        if krate != "xtask" {
            assert!(
                krate_deps.iter().all(|d| d.name != "manna-cli"),
                "{krate} depends on manna-cli"
            );
        }
    }
    // Adapters never depend on each other's drivers.
    assert!(normal(&deps["manna-lock-redis"]).all(|d| d.name != "diesel"));
    assert!(normal(&deps["manna-store-diesel"]).all(|d| d.name != "redis"));
}

/// Binaries only: `manna-cli` is the `manna` binary (its library is the CLI
/// itself, shared with `xtask`, and no other crate depends on it).
const BINARIES: &[&str] = &["manna-cli", "xtask"];

#[test]
fn anyhow_only_in_binaries() {
    for (krate, deps) in workspace_deps() {
        if !BINARIES.contains(&krate.as_str()) {
            assert!(
                normal(&deps).all(|d| d.name != "anyhow"),
                "{krate} uses anyhow; libraries use thiserror"
            );
        }
    }
}

#[test]
fn test_doubles_are_never_plain_dependencies() {
    for (krate, deps) in workspace_deps() {
        for d in normal(&deps) {
            if d.name == "mockall" || d.name == "proptest" {
                assert!(
                    d.optional,
                    "{krate} depends on {} outside a `testing` feature",
                    d.name
                );
            }
        }
    }
}
