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

/// The table is a check only if it refuses something: what it does not draw is not
/// allowed, state by state and as the application sees it (`readyState`).
#[test]
fn the_graph_refuses_what_it_does_not_draw() {
    use wxsocket_core::graph::{is_allowed, is_allowed_ready};
    use wxsocket_core::{ReadyState, State, TRANSITIONS};
    let mut allowed = 0;
    for from in State::ALL {
        for to in State::ALL {
            let drawn = TRANSITIONS.iter().any(|t| t.from == from && t.to == to);
            assert_eq!(is_allowed(from, to), drawn, "{from} -> {to}");
            allowed += usize::from(drawn);
        }
    }
    assert!(allowed < State::ALL.len() * State::ALL.len());
    // Nothing returns to Idle, and only a dial opens.
    for from in State::ALL {
        assert!(!is_allowed(from, State::Idle), "{from} -> Idle");
        assert_eq!(
            is_allowed(from, State::Open),
            from == State::Connecting,
            "{from} -> Open"
        );
    }
    for from in ReadyState::ALL {
        assert!(!is_allowed_ready(from, ReadyState::Idle), "{from} -> Idle");
        assert_eq!(
            is_allowed_ready(from, ReadyState::Open),
            from == ReadyState::Connecting,
            "{from} -> Open"
        );
    }
    assert!(is_allowed_ready(ReadyState::Open, ReadyState::Closing));
    assert!(!is_allowed_ready(ReadyState::Closing, ReadyState::Open));
    let names: Vec<String> = ReadyState::ALL.iter().map(|s| s.to_string()).collect();
    assert_eq!(names, ["Idle", "Connecting", "Open", "Closing", "Closed"]);
}
