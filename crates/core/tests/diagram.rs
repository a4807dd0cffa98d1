//! The state diagram in the crate's README (and in the workspace README, in a checkout of
//! the repository) must be exactly the state table in the code.

use std::path::Path;
use wxsocket_core::graph::mermaid;

/// The first Mermaid block of the Markdown file at `path`.
fn diagram(path: &Path) -> String {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let start = text
        .find("```mermaid\n")
        .unwrap_or_else(|| panic!("{} has no mermaid block", path.display()))
        + "```mermaid\n".len();
    let end = start + text[start..].find("```").expect("the mermaid block ends");
    text[start..end].to_owned()
}

#[test]
fn crate_readme_diagram_matches_the_state_table() {
    let readme = Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
    assert_eq!(
        diagram(&readme),
        mermaid(),
        "README.md's diagram differs from wxsocket_core::TRANSITIONS; it should be:\n{}",
        mermaid()
    );
}

/// The workspace README exists only in a checkout of the repository, not in the published
/// package; there it must show the same diagram.
#[test]
fn workspace_readme_diagram_matches_the_state_table() {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let workspace = manifest_dir.join("../../Cargo.toml");
    let readme = manifest_dir.join("../../README.md");
    let in_workspace = std::fs::read_to_string(&workspace)
        .is_ok_and(|toml| toml.contains("[workspace]") && toml.contains("\"crates/core\""));
    if !in_workspace {
        eprintln!("diagram: no workspace around this package; only its own README is checked");
        return;
    }
    assert_eq!(
        diagram(&readme),
        mermaid(),
        "the workspace README.md's diagram differs from wxsocket_core::TRANSITIONS; it should be:\n{}",
        mermaid()
    );
}
