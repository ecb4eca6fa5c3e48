//! Rendered files: compare by sha256, write only what differs.

use std::collections::BTreeMap;

use futures::StreamExt;
use sha2::{Digest, Sha256};

use super::{Changes, ConvergeError, ssh_err};
use crate::hostplan::{HostFile, Unit, layout};
use crate::ssh::{Command, Session, quote};

/// sha256 of each existing path on the host (absent paths are missing from
/// the map), in one round trip.
pub async fn remote_sha256(
    session: &Session,
    paths: &[&str],
) -> Result<BTreeMap<String, String>, ConvergeError> {
    if paths.is_empty() {
        return Ok(BTreeMap::new());
    }
    let quoted: Vec<String> = paths
        .iter()
        .map(|p| quote(p))
        .collect::<Result<_, _>>()
        .map_err(ssh_err(session.host(), "checksums"))?;
    let script = format!(
        "for f in {}; do [ -f \"$f\" ] && sha256sum -- \"$f\"; done; true",
        quoted.join(" ")
    );
    let out = session
        .run(&Command::shell(script).privileged())
        .await
        .map_err(ssh_err(session.host(), "checksums"))?;
    Ok(out
        .stdout_str()
        .lines()
        .filter_map(|l| {
            l.split_once("  ")
                .map(|(sum, path)| (path.to_string(), sum.to_string()))
        })
        .collect())
}

/// Write every file whose content differs; report paths and the units to restart.
pub async fn write_files(
    session: &Session,
    files: &[HostFile],
    dry_run: bool,
) -> Result<Changes, ConvergeError> {
    let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
    let remote = remote_sha256(session, &paths).await?;
    let mut changes = Changes::default();
    let stale: Vec<&HostFile> = files
        .iter()
        .filter(|f| remote.get(&f.path) != Some(&hex::encode(Sha256::digest(&f.content))))
        .collect();
    if !dry_run {
        // Independent small files: several channels at once, not one
        // round trip after another. (The futures are collected first: a
        // closure inside the stream's type makes the caller's future
        // non-`Send` for the operator's spawned reconciles.)
        let pending: Vec<_> = stale.iter().map(|f| write_one(session, f)).collect();
        let mut writes = futures::stream::iter(pending).buffer_unordered(WRITE_CHANNELS);
        while let Some(r) = writes.next().await {
            r?;
        }
    }
    for f in stale {
        changes.written.push(f.path.clone());
        changes.restart.extend(f.affects.iter().copied());
        if f.path.starts_with(layout::SYSTEMD) {
            changes.units_changed = true;
        }
    }
    Ok(changes)
}

async fn write_one(session: &Session, f: &HostFile) -> Result<(), ConvergeError> {
    session
        .write_file(&f.content, &f.path, f.mode, Some("root:root"))
        .await
        .map(|_| ())
        .map_err(ssh_err(session.host(), "write files"))
}

/// Files written at once: each an SSH channel of the one connection, well
/// under OpenSSH's default MaxSessions (10).
const WRITE_CHANNELS: usize = 6;

/// Keep the list of every path kubeup put on the host: `reset` removes
/// exactly these (plus the data directories), nothing else.
pub async fn record_installed(
    session: &Session,
    paths: &[String],
    dry_run: bool,
) -> Result<bool, ConvergeError> {
    let mut all: Vec<&str> = paths.iter().map(String::as_str).collect();
    all.sort_unstable();
    all.dedup();
    let content = all.join("\n") + "\n";
    let file = HostFile::new(layout::INSTALLED_LIST, content, 0o644, &[] as &[Unit]);
    let changes = write_files(session, std::slice::from_ref(&file), dry_run).await?;
    Ok(!changes.written.is_empty())
}
