//! `cargo xtask …`: build chores kept out of the product crates.

// Test and build tooling, not product code: a panic here fails a test or a build chore.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::string_slice,
    clippy::panic
)]

use anyhow::Result;
use clap::{Parser, Subcommand};

mod bundle;
mod chart;
mod crdgen;
mod image;
mod oci;

#[derive(Parser)]
#[command(name = "cargo xtask", about = "kubeup build chores")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write the CRD YAML generated from crds/ to charts/kubeup/crds/.
    Crdgen {
        /// Only check that the checked-in YAML is current; exit 1 if not.
        #[arg(long)]
        check: bool,
    },
    /// Build the Kubernetes binary bundle (cached) into
    /// ${KUBEUP_CACHE:-~/.cache/kubeup}/bundle/<version>/.
    Bundle(bundle::Args),
    /// Lint the operator chart and render it into deploy/kubeup-operator.yaml.
    Chart {
        /// Only check that deploy/kubeup-operator.yaml is current; exit 1 if not.
        #[arg(long)]
        check: bool,
    },
    /// Build the operator image into the bundle (images/kubeup-operator.tar).
    Image(image::Args),
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Crdgen { check } => crdgen::run(check),
        Command::Bundle(args) => bundle::run(args),
        Command::Chart { check } => chart::run(check),
        Command::Image(args) => image::run(args),
    }
}

/// The workspace root. Read when the chore runs (cargo names xtask's
/// directory then): a binary built in another checkout that shares the
/// target directory must not work on that checkout's files.
fn repo_root() -> std::path::PathBuf {
    std::path::PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR")
            .expect("run by cargo, which names the crate's directory"),
    )
    .join("..")
}
