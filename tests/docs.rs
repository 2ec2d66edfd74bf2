//! The crate table of docs/architecture.md states each crate's deepblocks dependencies; this
//! checks it against the Cargo.toml files, so the picture cannot drift from the code.

use std::collections::BTreeSet;
use std::path::Path;

const CRATES: &[&str] = &[
    "core", "config", "rope", "norm", "embed", "moe", "mla", "sample", "tokenize", "deepseek",
    "params", "testkit",
];

/// The `deepblocks-*` entries of a manifest's `[dependencies]` (not dev-dependencies).
fn manifest_deps(path: &Path) -> BTreeSet<String> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut deps = BTreeSet::new();
    let mut in_deps = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_deps = line == "[dependencies]";
            continue;
        }
        if in_deps && let Some(name) = line.strip_prefix("deepblocks-") {
            let name: String = name
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect();
            deps.insert(name);
        }
    }
    deps
}

#[test]
fn the_crate_table_matches_the_manifests() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("docs/architecture.md")).unwrap();
    let mut seen = BTreeSet::new();
    for row in doc.lines().filter(|l| l.starts_with("| `deepblocks")) {
        let cells: Vec<&str> = row.trim_matches('|').split(" | ").map(str::trim).collect();
        let name = cells[0].trim_matches('`');
        let documented: BTreeSet<String> = cells
            .last()
            .unwrap()
            .split('`')
            .skip(1)
            .step_by(2)
            .filter(|w| CRATES.contains(w))
            .map(str::to_string)
            .collect();
        let manifest = match name.strip_prefix("deepblocks-") {
            Some(short) => root.join("crates").join(short).join("Cargo.toml"),
            None => root.join("Cargo.toml"),
        };
        let mut actual = manifest_deps(&manifest);
        if name == "deepblocks" {
            // The facade row says "every crate above".
            assert_eq!(
                actual.len(),
                CRATES.len() - 1,
                "the facade depends on every crate"
            );
            actual.clear();
        }
        assert_eq!(documented, actual, "docs/architecture.md row of {name}");
        seen.insert(name.to_string());
    }
    assert_eq!(
        seen.len(),
        CRATES.len() + 1,
        "a row per crate and the facade: {seen:?}"
    );
}
