//! The README's install step names a crate that builds the `kldiv` command (building it is
//! too slow for the tests: this checks what the command points at). The root is a virtual
//! workspace manifest, so `cargo install --path .` fails there; this test caught it.

use std::path::Path;

#[test]
fn readme_install_path_is_the_crate_of_the_kldiv_binary() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let line = readme
        .lines()
        .find(|l| l.trim_start().starts_with("cargo install"))
        .expect("an install command in the README");
    let words: Vec<&str> = line.split_whitespace().collect();
    let path = words
        .iter()
        .position(|w| *w == "--path")
        .and_then(|i| words.get(i + 1))
        .unwrap_or_else(|| panic!("no --path in {line:?}"));
    let manifest = std::fs::read_to_string(root.join(path).join("Cargo.toml"))
        .unwrap_or_else(|e| panic!("{line:?}: no Cargo.toml at {path}: {e}"));
    assert!(
        manifest.contains("[package]"),
        "{line:?}: {path}/Cargo.toml is not a package (cargo install needs one)"
    );
    let bin = manifest
        .split("[[bin]]")
        .nth(1)
        .and_then(|rest| rest.split("\n[").next())
        .unwrap_or_else(|| panic!("{line:?}: {path}/Cargo.toml declares no binary"));
    assert!(
        bin.contains("name = \"kldiv\""),
        "{line:?}: the binary of {path}/Cargo.toml is not `kldiv`"
    );
}
