//! Rendered files: compare by sha256, write only what differs.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use super::{Changes, ConvergeError, ssh_err};
use crate::hostplan::{HostFile, Unit, layout};
use crate::ssh::{Command, Session, check_remote_path, quote};

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
    if !dry_run && !stale.is_empty() {
        write_batch(session, &stale).await?;
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

/// Write `files` in one round trip: a script on stdin (never on a command
/// line: contents may be keys) writes each to a temp file beside it, checks
/// its sha256 (a script cut short never commits a truncated file), sets
/// mode and owner and renames it into place, so a reader sees the old file
/// or the new one, never a part.
pub(super) async fn write_batch(
    session: &Session,
    files: &[&HostFile],
) -> Result<(), ConvergeError> {
    use base64::Engine;
    let mut script = String::from(
        "set -eu\n\
         w() {\n\
         \x20 d=$(dirname -- \"$1\"); mkdir -p -- \"$d\"\n\
         \x20 t=$(mktemp -- \"$d/.$(basename -- \"$1\").kubeup-XXXXXX\")\n\
         \x20 trap 'rm -f -- \"$t\"' EXIT\n\
         \x20 base64 -d > \"$t\"\n\
         \x20 echo \"$3  $t\" | sha256sum -c --quiet --status || { echo \"$1: content damaged in transit\" >&2; exit 3; }\n\
         \x20 chmod -- \"$2\" \"$t\"; chown -- root:root \"$t\"; mv -f -- \"$t\" \"$1\"\n\
         \x20 trap - EXIT\n\
         }\n",
    );
    for f in files {
        check_remote_path(&f.path).map_err(ssh_err(session.host(), "write files"))?;
        let path = quote(&f.path).map_err(ssh_err(session.host(), "write files"))?;
        let sum = hex::encode(Sha256::digest(&f.content));
        let data = base64::engine::general_purpose::STANDARD.encode(&f.content);
        script.push_str(&format!("w {path} {:o} {sum} <<'KUBEUP_EOF'\n", f.mode));
        // base64 lines never spell the delimiter.
        for line in data.as_bytes().chunks(76) {
            // base64 is ASCII: the lossy conversion never replaces anything.
            script.push_str(&String::from_utf8_lossy(line));
            script.push('\n');
        }
        script.push_str("KUBEUP_EOF\n");
    }
    script.push_str("echo done\n");
    let out = session
        .run(&Command::new("sh").arg("-s").stdin(script).privileged())
        .await
        .map_err(ssh_err(session.host(), "write files"))?;
    if out.stdout_str().trim() != "done" {
        return Err(ConvergeError::Host {
            host: session.host().to_owned(),
            step: "write files",
            message: format!("writing {} files ended early", files.len()),
        });
    }
    tracing::info!(host = %session.host(), files = files.len(), "files written");
    Ok(())
}

/// Keep the list of every path kubeup put on the host, and of the
/// directories it claims (see [`super::reset`]): `reset` removes exactly
/// these, nothing else. Claims are decided on the host (read-only) before
/// the list is written; a claim, once recorded, is kept.
pub async fn record_installed(
    session: &Session,
    paths: &[String],
    dry_run: bool,
) -> Result<bool, ConvergeError> {
    record_installed_at(session, "", paths, dry_run).await
}

/// [`record_installed`] for a host whose paths all lie under `root` (""
/// for a real host; a temporary directory in tests).
pub(crate) async fn record_installed_at(
    session: &Session,
    root: &str,
    paths: &[String],
    dry_run: bool,
) -> Result<bool, ConvergeError> {
    let mut files: Vec<&str> = paths.iter().map(String::as_str).collect();
    files.sort_unstable();
    files.dedup();
    let claimed = claimed_dirs(session, root, &files).await?;
    let content = installed_list(&files, &claimed);
    let list = format!("{root}{}", layout::INSTALLED_LIST);
    let file = HostFile::new(list, content, 0o644, &[] as &[Unit]);
    let changes = write_files(session, std::slice::from_ref(&file), dry_run).await?;
    Ok(!changes.written.is_empty())
}

/// The directories (`DIR/`) kubeup claims on the host for these files.
async fn claimed_dirs(
    session: &Session,
    root: &str,
    files: &[&str],
) -> Result<Vec<String>, ConvergeError> {
    let candidates = super::reset::claim_candidates(files);
    if candidates.is_empty() {
        return Ok(vec![]);
    }
    let script = super::reset::claim_script(root, &candidates)
        .map_err(ssh_err(session.host(), "record installed files"))?;
    let listed = files.join("\n") + "\n";
    let out = session
        .run(&Command::shell(script).stdin(listed).privileged())
        .await
        .map_err(ssh_err(session.host(), "record installed files"))?;
    // Only what was asked for: the host's answer names no other path.
    Ok(out
        .stdout_str()
        .lines()
        .filter(|l| candidates.iter().any(|c| l.strip_suffix('/') == Some(c)))
        .map(str::to_owned)
        .collect())
}

/// The list's text: files, then claimed directories, one a line.
fn installed_list(files: &[&str], claimed: &[String]) -> String {
    let mut lines: Vec<&str> = files.to_vec();
    lines.extend(claimed.iter().map(String::as_str));
    lines.join("\n") + "\n"
}
