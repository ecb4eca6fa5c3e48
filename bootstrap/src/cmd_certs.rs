//! `kubeup certs check -f cluster.yaml`.

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Subcommand;
use comfy_table::{Table, presets::NOTHING};
use kubeup_provision::{config, pki};

use crate::{ClusterFile, Output};

#[derive(Subcommand, Debug)]
pub enum CertsCommand {
    /// List every certificate with its expiry; exit 1 if one expires soon.
    Check {
        #[command(flatten)]
        file: ClusterFile,
        /// Fail when a certificate expires within this many days.
        #[arg(long, default_value_t = 30)]
        warn_days: i64,
        #[arg(long, short = 'o', value_enum, default_value_t)]
        output: Output,
    },
}

pub fn run(cmd: CertsCommand) -> Result<ExitCode> {
    let CertsCommand::Check {
        file,
        warn_days,
        output,
    } = cmd;
    let loaded = config::load(&file.file)?;
    let certs = pki::inspect_dir(&loaded.pki_dir()).with_context(|| {
        format!(
            "failed to read the certificates in {}",
            loaded.pki_dir().display()
        )
    })?;
    let expiring: Vec<&pki::CertInfo> = certs.iter().filter(|c| c.days_left < warn_days).collect();
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&certs)?),
        Output::Text => {
            let mut table = Table::new();
            table.load_preset(NOTHING).set_header([
                "NAME",
                "SUBJECT",
                "ISSUER",
                "NOT AFTER",
                "DAYS LEFT",
            ]);
            for c in &certs {
                table.add_row([
                    &c.name,
                    &c.subject,
                    &c.issuer,
                    &c.not_after,
                    &c.days_left.to_string(),
                ]);
            }
            println!("{table}");
        }
    }
    if expiring.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        for c in expiring {
            eprintln!(
                "warning: {} expires in {} days (< {warn_days})",
                c.name, c.days_left
            );
        }
        Ok(ExitCode::FAILURE)
    }
}
