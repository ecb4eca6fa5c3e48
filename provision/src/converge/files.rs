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

/// Write every file whose content differs; report paths and the units to
/// restart. One round trip: every file goes in the batch and the host
/// keeps its own copy where the checksums match (a dry run only reads the
/// checksums).
pub async fn write_files(
    session: &Session,
    files: &[HostFile],
    dry_run: bool,
) -> Result<Changes, ConvergeError> {
    if dry_run {
        let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
        let remote = remote_sha256(session, &paths).await?;
        return Ok(changes_of(files.iter().filter(|f| {
            remote.get(&f.path) != Some(&hex::encode(Sha256::digest(&f.content)))
        })));
    }
    let all: Vec<&HostFile> = files.iter().collect();
    let written = send_batch(session, &all, Keep::Matching).await?;
    Ok(changes_of(
        files
            .iter()
            .enumerate()
            .filter(|(i, _)| written.contains(i))
            .map(|(_, f)| f),
    ))
}

/// What writing `written` changes: their paths, the units they restart.
fn changes_of<'f>(written: impl Iterator<Item = &'f HostFile>) -> Changes {
    let mut changes = Changes::default();
    for f in written {
        changes.written.push(f.path.clone());
        changes.restart.extend(f.affects.iter().copied());
        if f.path.starts_with(layout::SYSTEMD) {
            changes.units_changed = true;
        }
    }
    changes
}

/// Write `files` in one round trip. Their contents go as one tar stream on
/// stdin (never on a command line: contents may be keys); a short script
/// on the command line unpacks each beside its target under a name of this
/// batch, checks every sha256 at once (a stream cut short never commits a
/// truncated file), and renames each into place in the order given, so a
/// reader sees the old file or the new one, never a part. A handful of
/// processes for the whole batch: the script it replaces spent ~9 per file
/// (0.28 s for a worker's 33 files, on the join's critical path).
pub async fn write_batch(session: &Session, files: &[&HostFile]) -> Result<(), ConvergeError> {
    send_batch(session, files, Keep::None).await.map(|_| ())
}

/// Which files already on the host a batch leaves as they are.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Keep {
    None,
    /// Those whose sha256 matches the new content's.
    Matching,
}

/// [`write_batch`]; with [`Keep::Matching`] the host first reads its
/// files' checksums (one `sha256sum` for all) and moves only the others
/// into place. The indices (in `files`) of the files written.
async fn send_batch(
    session: &Session,
    files: &[&HostFile],
    keep: Keep,
) -> Result<Vec<usize>, ConvergeError> {
    if files.is_empty() {
        return Ok(vec![]);
    }
    let invalid = |e| ssh_err(session.host(), "write files")(e);
    let local = |message: String| ConvergeError::Host {
        host: session.host().to_owned(),
        step: "write files",
        message,
    };
    // A name part no other batch uses: two writers of one path at once (a
    // join and a renewal) never share a temporary file.
    let mut random = [0u8; 8];
    getrandom::fill(&mut random).map_err(|e| local(format!("naming the batch: {e}")))?;
    let batch = hex::encode(random);
    let mut archive = tar::Builder::new(Vec::new());
    let (mut temps, mut dirs, mut sums, mut moves) = (vec![], vec![], String::new(), String::new());
    let mut targets = vec![];
    for (i, f) in files.iter().enumerate() {
        check_batch_path(&f.path).map_err(invalid)?;
        // Absolute (checked): `dir` is "" for a file right under /.
        let (dir, name) = f.path.rsplit_once('/').unwrap_or(("", &f.path));
        let temp = format!("{dir}/.{name}.kubeup-{batch}");
        append(&mut archive, &temp, f).map_err(|e| local(format!("packing {}: {e}", f.path)))?;
        let (qtemp, qpath) = (
            quote(&temp).map_err(invalid)?,
            quote(&f.path).map_err(invalid)?,
        );
        let sum = hex::encode(Sha256::digest(&f.content));
        sums.push_str(&format!("{sum}  {temp}\n"));
        match keep {
            Keep::None => moves.push_str(&format!("mv -f -- {qtemp} {qpath}\n")),
            // sha256sum's line for the target when it holds this content
            // (quoted: matched literally, whatever the path holds).
            Keep::Matching => moves.push_str(&format!(
                "case \"$have\" in *\"$nl\"{line}\"$nl\"*) rm -f -- {qtemp};; *) mv -f -- {qtemp} {qpath}; echo wrote {i};; esac\n",
                line = quote(&format!("{sum}  {}", f.path)).map_err(invalid)?,
            )),
        }
        targets.push(qpath.clone());
        dirs.push(quote(if dir.is_empty() { "/" } else { dir }).map_err(invalid)?);
        temps.push(qtemp);
    }
    dirs.sort();
    dirs.dedup();
    // The targets' checksums, each line between newlines.
    let have = match keep {
        Keep::None => String::new(),
        Keep::Matching => format!(
            "nl='\n'\nhave=\"$nl$(sha256sum -- {} 2>/dev/null || true)$nl\"\n",
            targets.join(" ")
        ),
    };
    let stream = archive
        .into_inner()
        .map_err(|e| local(format!("packing: {e}")))?;
    // Directories keep mkdir's usual mode; the files their own, exactly
    // (-p), owned by root (uid 0 in the stream), dated now (-m).
    let script = format!(
        "set -eu\n\
         cleanup() {{ rm -f -- {temps}; }}\n\
         trap cleanup EXIT\n\
         mkdir -p -- {dirs}\n\
         umask 077\n\
         tar -x -m -p --same-owner --numeric-owner -C / -f -\n\
         sha256sum -c --quiet --status <<'KUBEUP_SUMS' || {{ echo 'content damaged in transit' >&2; exit 3; }}\n\
         {sums}KUBEUP_SUMS\n\
         {have}{moves}trap - EXIT\n\
         echo done\n",
        temps = temps.join(" "),
        dirs = dirs.join(" "),
    );
    let out = session
        .run(&Command::shell(script).stdin(stream).privileged())
        .await
        .map_err(ssh_err(session.host(), "write files"))?;
    let stdout = out.stdout_str();
    let mut lines: Vec<&str> = stdout.lines().collect();
    if lines.pop() != Some("done") {
        return Err(ConvergeError::Host {
            host: session.host().to_owned(),
            step: "write files",
            message: format!("writing {} files ended early", files.len()),
        });
    }
    let written: Vec<usize> = match keep {
        Keep::None => (0..files.len()).collect(),
        Keep::Matching => lines
            .iter()
            .filter_map(|l| l.strip_prefix("wrote ")?.parse().ok())
            .collect(),
    };
    if !written.is_empty() {
        tracing::info!(host = %session.host(), files = written.len(), "files written");
    }
    Ok(written)
}

/// A path the batch script can name: absolute, and without the characters
/// its checksum list cannot carry.
fn check_batch_path(path: &str) -> Result<(), crate::ssh::SshError> {
    check_remote_path(path)?;
    if path.contains(['\n', '\\']) {
        return Err(crate::ssh::SshError::InvalidArgument {
            reason: format!("remote path {path:?} has a newline or backslash"),
        });
    }
    Ok(())
}

/// `f`'s content in `archive` at `temp` (made relative: unpacked at /),
/// regular, root's, with `f`'s mode.
fn append(archive: &mut tar::Builder<Vec<u8>>, temp: &str, f: &HostFile) -> std::io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(f.content.len() as u64);
    header.set_mode(f.mode);
    header.set_uid(0);
    header.set_gid(0);
    archive.append_data(
        &mut header,
        temp.trim_start_matches('/'),
        f.content.as_slice(),
    )
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
