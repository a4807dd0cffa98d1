//! The README's state diagram must be exactly the state table in the code.

use wxsocket_core::graph::mermaid;

#[test]
fn readme_diagram_matches_the_state_table() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let start = readme
        .find("```mermaid\n")
        .expect("README has a mermaid block")
        + "```mermaid\n".len();
    let end = start + readme[start..].find("```").unwrap();
    assert_eq!(
        &readme[start..end],
        mermaid(),
        "README.md's diagram differs from wxsocket_core::TRANSITIONS; it should be:\n{}",
        mermaid()
    );
}
