//! The documents stay true to the code: every test that `docs/security.md`
//! names as the proof of a claim exists.

use std::path::{Path, PathBuf};

use vminitd_tests::workspace_root;

/// Every `.rs` file of the workspace's crates.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if name == "target" || name == ".git" || name == "build" {
            continue;
        }
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The test names a document cites: in code spans, the last segment of a
/// `path::to::test` (a trailing `*` is a prefix), or a lone snake_case name
/// of at least four words.
fn cited_tests(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    for span in text.split('`').skip(1).step_by(2) {
        for word in span.split([' ', ',']) {
            let last = match word.rsplit_once("::") {
                Some((_, last)) => last,
                None if word.matches('_').count() >= 3
                    && word
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '*') =>
                {
                    word
                }
                None => continue,
            };
            let is_name = !last.is_empty()
                && last != "*"
                && last
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '*');
            if is_name {
                names.push(last.to_owned());
            }
        }
    }
    names.sort();
    names.dedup();
    names
}

#[test]
fn every_test_the_threat_model_cites_exists() {
    let root = workspace_root();
    let doc = std::fs::read_to_string(root.join("docs/security.md")).expect("docs/security.md");
    let mut files = Vec::new();
    sources(&root, &mut files);
    let code: String = files
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .collect::<Vec<_>>()
        .join("\n");
    let cited = cited_tests(&doc);
    assert!(cited.len() > 20, "the threat model cites its tests: {cited:?}");
    let missing: Vec<&String> = cited
        .iter()
        .filter(|name| match name.strip_suffix('*') {
            Some(prefix) => !code.contains(&format!("fn {prefix}")),
            None => !code.contains(&format!("fn {name}(")) && !code.contains(&format!("fn {name}<")),
        })
        .collect();
    assert!(
        missing.is_empty(),
        "docs/security.md cites tests that do not exist: {missing:?}"
    );
}

#[test]
fn cited_names_are_found_in_spans() {
    let text = "a `file::a_b_c_d` and `crate mod::tests::x_y*`, `lone_name_of_words` but not `CONFIG_X_Y_Z` or `a_b`";
    assert_eq!(cited_tests(text), ["a_b_c_d", "lone_name_of_words", "x_y*"]);
}
