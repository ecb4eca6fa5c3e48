//! How a failed run ends, for `up`, `plan` and `reset`: the error names the
//! phase and host and says what to do next, and the progress stream gets
//! its last event (JSON: `failed`) whether the error came from a phase or
//! from before the walk (a cluster.yaml refused, a bundle missing).

use std::fmt;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use kubeup_provision::phase::{Failed, PhaseKey};

use super::Link;
use crate::progress::Progress;

/// A phase failed on a host; the message has the cause and the next step.
#[derive(Debug)]
pub struct PhaseFailed {
    pub phase: &'static str,
    pub host: String,
    message: String,
}

impl fmt::Display for PhaseFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for PhaseFailed {}

/// The engine's failure as the user reads it: "PHASE failed on HOST: cause",
/// then what to do (phases whose own errors say it add nothing).
pub fn explain<K: PhaseKey>(
    failed: Failed<K, anyhow::Error>,
    command: &str,
    file: &Path,
    link: &Link,
) -> anyhow::Error {
    let phase = failed.phase.name();
    let mut message = format!("{phase} failed on {}: {:#}", failed.host, failed.error);
    if let Some(hint) = hint(phase, command, file, &link.controller.address) {
        message.push('\n');
        message.push_str(&hint);
    }
    anyhow::Error::new(PhaseFailed {
        phase,
        host: failed.host,
        message,
    })
}

fn hint(phase: &str, command: &str, file: &Path, address: &str) -> Option<String> {
    let file = file.display();
    let again = format!("kubeup {command} -f {file}");
    match (command, phase) {
        (_, "connect") => Some(format!(
            "Check the host's address, user and key in {file}; `kubeup ssh -f {file} {address} -- true` tries the same connection."
        )),
        (_, "preflight") => Some(format!(
            "Fix what the checks name, then run `{again}` again."
        )),
        // Their errors say where to look.
        (_, "control plane ready" | "operator leading") => None,
        ("reset", _) => Some(format!(
            "`{again} --yes` again is safe: each step tolerates what is already gone."
        )),
        _ => Some(format!(
            "Once the cause is fixed, `{again}` again continues from what is in place; `kubeup ssh -f {file} {address} -- journalctl -u UNIT` shows a unit's log."
        )),
    }
}

/// End a command's run: success, or the last progress event for its error
/// (naming the phase and host when a phase failed) and the error for `main`.
pub fn end_with(progress: &Progress, command: &str, result: Result<()>) -> Result<ExitCode> {
    match result {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            let at = e
                .downcast_ref::<PhaseFailed>()
                .map(|f| (f.phase, f.host.as_str()));
            progress.failed(command, at, &e);
            Err(e)
        }
    }
}
