//! `kubeup validate -f cluster.yaml`.

use std::process::ExitCode;

use anyhow::Result;
use kubeup_provision::config::{self, ConfigError};

use crate::ClusterFile;

pub fn run(file: &ClusterFile) -> Result<ExitCode> {
    match config::load(&file.file) {
        Ok(_) => {
            println!("ok");
            Ok(ExitCode::SUCCESS)
        }
        Err(ConfigError::Invalid { path, problems }) => {
            eprintln!("{}: {} problem(s)", path.display(), problems.len());
            for p in problems {
                eprintln!("  {}: {}", p.path, p.message);
                if !p.hint.is_empty() {
                    eprintln!("      → {}", p.hint);
                }
            }
            Ok(ExitCode::FAILURE)
        }
        Err(other) => Err(other.into()),
    }
}
