//! placeholder

// Test and build tooling, not product code: a panic here fails a test or a build chore.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::string_slice,
    clippy::panic
)]

pub mod apiserver;
pub mod sshd;

/// The directory of the crate whose test runs. Read at run time (cargo
/// names it then): a target directory shared by several checkouts may hold
/// a test binary built in another, whose compile-time path is not this one.
pub fn crate_dir() -> std::path::PathBuf {
    std::path::PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR")
            .expect("run by cargo, which names the crate's directory"),
    )
}
