//! No code: a dependency of the CLI and the Python package that gives every build of the
//! workspace the same features of shared dependencies (see Cargo.toml), so that one compiled
//! kldiv serves the tests, the CLI and the Python package.
