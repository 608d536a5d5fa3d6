//! docs/migration-guide.md's troubleshooting table lists every message the
//! CLI can print and every exit status: the messages are read from the
//! sources (`#[error("…")]` of the crates the CLI links, the CLI's own
//! `bail!`/`anyhow!`/`context`/`eprintln!` texts), so a new message without
//! its row fails here.

use std::path::{Path, PathBuf};

/// Messages the CLI never prints, by a fragment of their text, and why.
const NOT_PRINTED: &[(&str, &str)] = &[
    (
        "optimistic lock conflict on",
        "application code's retry loop",
    ),
    (
        "deadlock: waiting for lock",
        "lock sessions are library-only",
    ),
    (
        "a default keyring is already installed",
        "application startup",
    ),
    ("no default keyring installed", "application column types"),
    ("encrypting a value for", "application column types"),
    ("decrypting a value of", "application column types"),
    ("was already used for", "application idempotent writes"),
    (
        "add it first (manna_store_diesel::schema",
        "application versioned updates",
    ),
    ("cannot reload the keyring", "application key reloads"),
    (
        "cryptographic operation failed",
        "a provider's error: the keyring turns it into the one opaque decryption error",
    ),
    (
        "a migration worker panicked",
        "a bug: the panic message comes first",
    ),
];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The CLI and the workspace crates it links (its `manna-*` dependencies
/// and theirs, from the manifests): the crates whose errors reach its
/// stderr.
fn linked_crates() -> Vec<String> {
    let mut crates = vec!["manna-cli".to_owned()];
    let mut next = 0;
    while let Some(krate) = crates.get(next).cloned() {
        next += 1;
        let manifest = repo().join("crates").join(&krate).join("Cargo.toml");
        let text = std::fs::read_to_string(&manifest).unwrap();
        let deps = text
            .split("\n[")
            .find(|section| section.starts_with("dependencies]"))
            .unwrap_or_default();
        for line in deps.lines().filter(|l| l.starts_with("manna-")) {
            let name = line.split(['.', ' ', '=']).next().unwrap().to_owned();
            if !crates.contains(&name) {
                crates.push(name);
            }
        }
    }
    crates
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            if name != "testing" {
                rust_files(&path, out);
            }
        } else if name.ends_with(".rs") && name != "testing.rs" {
            out.push(path);
        }
    }
}

/// The string literal starting at `text` (just after its opening quote),
/// with escapes and `\`-newline continuations resolved.
fn literal(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => break,
            '\\' => match chars.next() {
                Some('\n') => {
                    let rest: String = chars.clone().collect();
                    let skipped = rest.len() - rest.trim_start().len();
                    for _ in 0..rest[..skipped].chars().count() {
                        chars.next();
                    }
                }
                Some('n') => out.push('\n'),
                Some(other) => out.push(other),
                None => break,
            },
            c => out.push(c),
        }
    }
    out
}

/// The string literal that is the first argument after each of `markers`.
fn messages(source: &str, markers: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for marker in markers {
        for (at, _) in source.match_indices(marker) {
            let rest = &source[at + marker.len()..];
            let Some(open) = rest.find('"') else { continue };
            // Only a literal that is the first argument.
            if !rest[..open].trim().is_empty() {
                continue;
            }
            out.push(literal(&rest[open + 1..]));
        }
    }
    out
}

/// What the table must contain of `message`: the first six words of its
/// text before the first placeholder or, if that is short, of its longest
/// run of text between placeholders; `None` if even that is too short to
/// tell messages apart.
fn fragment(message: &str) -> Option<String> {
    let mut pieces = Vec::new();
    let mut rest = message;
    while let Some(open) = rest.find('{') {
        pieces.push(&rest[..open]);
        rest = rest[open..].split_once('}').map_or("", |(_, r)| r);
    }
    pieces.push(rest);
    let pieces: Vec<&str> = pieces
        .into_iter()
        .map(|p| p.trim_matches(|c: char| c.is_whitespace() || ",.:;()`".contains(c)))
        .collect();
    let chosen = match pieces[0] {
        first if first.len() >= 12 => first,
        _ => pieces.into_iter().max_by_key(|p| p.len())?,
    };
    let words: Vec<&str> = chosen.split_whitespace().take(6).collect();
    let fragment = words.join(" ");
    (fragment.len() >= 12).then_some(fragment)
}

fn troubleshooting() -> String {
    let path = repo().join("docs/migration-guide.md");
    let doc = std::fs::read_to_string(&path).unwrap();
    let start = doc
        .find("## Troubleshooting")
        .expect("a Troubleshooting section");
    let section = &doc[start..];
    let end = section[3..].find("\n## ").map_or(section.len(), |e| e + 3);
    section[..end]
        .replace('\\', "")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn every_message_has_a_row() {
    let table = troubleshooting();
    let mut missing = Vec::new();
    let mut checked = 0;
    let crates = linked_crates();
    assert!(crates.iter().any(|c| c == "manna-store"), "{crates:?}");
    for krate in &crates {
        let mut files = Vec::new();
        rust_files(&repo().join("crates").join(krate).join("src"), &mut files);
        files.sort();
        for file in files {
            let source = std::fs::read_to_string(&file).unwrap();
            let mut found = messages(&source, &["#[error("]);
            if krate == "manna-cli" {
                found.extend(messages(
                    &source,
                    &[
                        "bail!(",
                        "anyhow!(",
                        ".context(",
                        "with_context(|| format!(",
                        "eprintln!(",
                    ],
                ));
            }
            for message in found {
                let Some(fragment) = fragment(&message) else {
                    continue;
                };
                if NOT_PRINTED
                    .iter()
                    .any(|(f, _)| fragment.contains(f) || message.contains(f))
                {
                    continue;
                }
                checked += 1;
                if !table.contains(&fragment) {
                    let file = file.strip_prefix(repo()).unwrap_or(&file).display();
                    missing.push(format!("{file}: {fragment:?} of {message:?}"));
                }
            }
        }
    }
    assert!(
        checked > 50,
        "only {checked} messages found: is the scan broken?"
    );
    missing.sort();
    missing.dedup();
    assert!(
        missing.is_empty(),
        "docs/migration-guide.md's troubleshooting has no row for {} message(s):\n{}",
        missing.len(),
        missing.join("\n")
    );
}

#[test]
fn every_exit_status_has_a_row() {
    let table = troubleshooting();
    for code in 0..=4 {
        assert!(
            table.contains(&format!("| {code} |")),
            "exit status {code} has no row"
        );
    }
}
