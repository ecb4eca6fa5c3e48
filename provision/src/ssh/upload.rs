//! File transfer: streamed, atomic, skipped when the host already has the
//! same bytes.
//!
//! Protocol, in one exec channel running (as root) a small script:
//! 1. `mktemp` next to the destination (same filesystem, so `mv` is an
//!    atomic rename);
//! 2. `dd … count_bytes count=SIZE > tmp` reads exactly the file's bytes
//!    from stdin (1 MiB reads; never past SIZE, so the verdict line that
//!    follows stays in stdin);
//! 3. the client then sends one line, `commit SHA256` — only after the
//!    whole file was sent and its streamed sha256 equals the one the
//!    skip-check used (or, when the host had no copy of that size and no
//!    hash was made beforehand, its length is still the one announced) —
//!    or `abort`;
//! 4. size check, `commit` seen, then the host hashes tmp itself and
//!    compares: with the sha256 on the verdict line for a plain upload,
//!    with the manifest's for a compressed one (the zstd frame checksum is
//!    not cryptographic: a valid frame of other bytes passes it) → chmod,
//!    chown, `mv -f tmp dest`; anything else (connection lost, short read,
//!    abort, other bytes) → the trap removes tmp and the old file stays
//!    untouched.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use sha2::{Digest, Sha256};

use super::command::{Command, Output, quote};
use super::error::{Result, SshError};
use super::session::{Session, kill, read_channel};

/// Bytes read from disk and handed to the channel at a time, and how many
/// such chunks may wait: together a little more than an SSH window (2 MiB),
/// so the channel never starves, while memory stays bounded — the operator
/// runs many uploads at once and must stay small.
const CHUNK: usize = 256 << 10;
const QUEUED_CHUNKS: usize = 12;

/// The host's sha256 of stdin: OpenSSL uses the CPU's SHA extensions and is
/// about 4x faster than coreutils' `sha256sum` on hundreds of MB (it decides
/// whether an unchanged upload takes well under a second); `sha256sum` when
/// there is no openssl.
const REMOTE_SHA256: &str =
    "if command -v openssl >/dev/null 2>&1; then openssl dgst -sha256 -r; else sha256sum; fi";

/// A shell function `h256 FILE…`: the host's sha256 of each file (`hex
/// *name` or `hex  name` lines, in order), by the same fastest-first choice.
pub(super) const REMOTE_SHA256_FILES: &str = "h256() { if command -v openssl >/dev/null 2>&1; \
     then openssl dgst -sha256 -r \"$@\"; else sha256sum \"$@\"; fi; }";

/// What an upload did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UploadOutcome {
    /// Content sent; `bytes` long.
    Uploaded { bytes: u64 },
    /// Same content already there; only mode/owner were corrected.
    AttributesUpdated,
    /// Same content, mode and owner: nothing done.
    Unchanged,
}

/// A file's zstd copy, as [`Session::upload_compressed`] sends it.
#[derive(Clone, Copy, Debug)]
pub struct CompressedSource<'a> {
    /// The compressed copy (a zstd frame with its content checksum).
    pub path: &'a Path,
    /// The decompressor on the host (`zstd`).
    pub decoder: &'a str,
    /// Size and sha256 of the file itself (decompressed).
    pub size: u64,
    pub sha256: &'a str,
    /// Also keep the compressed stream on the host at this path (the
    /// controller keeps what `up` sent for the operator's later uploads);
    /// best effort: a failure to keep it does not fail the upload.
    pub keep_as: Option<&'a str>,
}

/// One file's bytes on their way to the host.
struct Transfer<'a> {
    source: Source<'a>,
    remote: &'a str,
    q_remote: &'a str,
    q_owner: Option<&'a str>,
    mode: u32,
    /// What the streamed bytes must hash to for the client to commit.
    sha256: Option<&'a str>,
    /// What the file must hash to on the host: the manifest's sha256 for a
    /// compressed stream; `None` takes the one on the verdict line (the
    /// streamed bytes are the file's).
    file_sha256: Option<&'a str>,
    /// Bytes sent (the compressed length when `decoder` is set).
    stream_len: u64,
    /// Quoted decompressor the host pipes the stream through, and where
    /// (quoted) to keep the compressed stream too.
    decoder: Option<(String, Option<String>)>,
    /// Bytes the host's file must have in the end.
    size: u64,
    local_name: &'a str,
}

enum Source<'a> {
    File(PathBuf),
    Bytes(&'a [u8]),
}

/// A piece of a stream made of several: a local file's bytes, or bytes
/// in memory.
#[derive(Clone, Debug)]
pub enum Segment {
    File(PathBuf),
    Bytes(Vec<u8>),
}

impl Segment {
    pub fn len(&self) -> std::io::Result<u64> {
        Ok(match self {
            Segment::File(p) => std::fs::metadata(p)?.len(),
            Segment::Bytes(b) => b.len() as u64,
        })
    }

    pub fn is_empty(&self) -> std::io::Result<bool> {
        Ok(self.len()? == 0)
    }
}

/// Read `segments` in CHUNK-sized pieces into `chunks` (at most
/// `stream_len` bytes); their sha256 and length.
fn read_segments(
    segments: Vec<Segment>,
    stream_len: u64,
    chunks: tokio::sync::mpsc::Sender<Vec<u8>>,
) -> std::io::Result<(String, u64)> {
    let mut hasher = Sha256::new();
    let mut sent = 0u64;
    for segment in segments {
        let mut reader: Box<dyn Read> = match segment {
            Segment::File(path) => Box::new(std::fs::File::open(&path)?),
            Segment::Bytes(b) => Box::new(std::io::Cursor::new(b)),
        };
        loop {
            let room = (stream_len - sent).min(CHUNK as u64) as usize;
            let mut buf = Vec::with_capacity(room);
            let filled = reader.by_ref().take(room as u64).read_to_end(&mut buf)?;
            if filled == 0 {
                break;
            }
            hasher.update(&buf);
            sent += filled as u64;
            if chunks.blocking_send(buf).is_err() {
                return Ok((String::new(), sent)); // the channel side gave up
            }
        }
    }
    Ok((hex::encode(hasher.finalize()), sent))
}

/// The destination as found on the host.
#[derive(Debug, PartialEq, Eq)]
struct RemoteState {
    sha256: String,
    mode: u32,
    uid: String,
    gid: String,
    user: String,
    group: String,
}

impl RemoteState {
    fn parse(stdout: &str) -> Option<RemoteState> {
        let mut lines = stdout.lines();
        let sha256 = lines.next()?.trim().to_owned();
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let mut f = lines.next()?.split_whitespace();
        let mode = u32::from_str_radix(f.next()?, 8).ok()?;
        Some(RemoteState {
            sha256,
            mode,
            uid: f.next()?.to_owned(),
            gid: f.next()?.to_owned(),
            user: f.next()?.to_owned(),
            group: f.next()?.to_owned(),
        })
    }

    fn attributes_match(&self, mode: u32, owner: Option<&str>) -> bool {
        if self.mode != mode & 0o7777 {
            return false;
        }
        let Some(owner) = owner else { return true };
        let (user, group) = match owner.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (owner, None),
        };
        let user_ok = user.is_empty() || user == self.user || user == self.uid;
        let group_ok = group.is_none_or(|g| g.is_empty() || g == self.group || g == self.gid);
        user_ok && group_ok
    }
}

/// A remote path kubeup writes must name a file by its absolute path.
pub fn check_remote_path(remote: &str) -> Result<()> {
    if !remote.starts_with('/') || remote.ends_with('/') || remote.contains('\0') {
        return Err(SshError::InvalidArgument {
            reason: format!("remote path {remote:?} must be an absolute file path"),
        });
    }
    Ok(())
}

/// sha256 and length of a local file; `None` when `cancel` was set before
/// the end (the host has no copy to compare with, so the hash is moot).
fn hash_file(path: &Path, cancel: &AtomicBool) -> std::io::Result<Option<(String, u64)>> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut size = 0u64;
    loop {
        if cancel.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        hasher.update(crate::artifacts::filled(&buf, n)?);
    }
    Ok(Some((hex::encode(hasher.finalize()), size)))
}

impl Session {
    /// Upload a local file to `remote` (absolute path; parent directories
    /// are created) with `mode` and optional `owner` (`user[:group]`).
    /// Streamed from disk, atomic, skipped when the host's copy already has
    /// the same sha256 (mode/owner still corrected).
    pub async fn upload(
        &self,
        local: &Path,
        remote: &str,
        mode: u32,
        owner: Option<&str>,
    ) -> Result<UploadOutcome> {
        self.transfer(Source::File(local.to_owned()), remote, mode, owner)
            .await
    }

    /// [`Session::upload`] for bytes in memory (rendered configs, certs).
    pub async fn write_file(
        &self,
        data: &[u8],
        remote: &str,
        mode: u32,
        owner: Option<&str>,
    ) -> Result<UploadOutcome> {
        self.transfer(Source::Bytes(data), remote, mode, owner)
            .await
    }

    async fn transfer(
        &self,
        source: Source<'_>,
        remote: &str,
        mode: u32,
        owner: Option<&str>,
    ) -> Result<UploadOutcome> {
        check_remote_path(remote)?;
        let q_remote = quote(remote)?;
        let q_owner = owner.map(quote).transpose()?;
        let local_name = match &source {
            Source::File(p) => p.display().to_string(),
            Source::Bytes(_) => "(generated content)".to_owned(),
        };
        let local_err = |source| SshError::LocalIo {
            path: local_name.clone(),
            source,
        };

        // The size decides first: the host hashes its copy only when it has
        // one of the same length. Meanwhile the local file is hashed too (the
        // skip check then costs max(local, remote), not their sum); that
        // hash is abandoned as soon as the host answers that it has nothing
        // comparable, so a first upload starts streaming at once and its
        // sha256 is computed while it is sent.
        let size = match &source {
            Source::File(p) => std::fs::metadata(p).map_err(local_err)?.len(),
            Source::Bytes(b) => b.len() as u64,
        };
        let cancel = Arc::new(AtomicBool::new(false));
        let local_hash = async {
            match &source {
                Source::File(p) => {
                    let (p, cancel) = (p.clone(), cancel.clone());
                    tokio::task::spawn_blocking(move || hash_file(&p, &cancel))
                        .await
                        .map_err(std::io::Error::other)
                        .and_then(|r| r)
                }
                Source::Bytes(b) => Ok(Some((hex::encode(Sha256::digest(b)), size))),
            }
        };
        let remote_state = async {
            let state = self.remote_state(&q_remote, size).await;
            if !matches!(state, Ok(Some(_))) {
                cancel.store(true, Ordering::Relaxed);
            }
            state
        };
        let (local, state) = tokio::join!(local_hash, remote_state);
        let local = local.map_err(local_err)?;
        let state = state?;

        if let (Some(state), Some((sha256, hashed))) = (&state, &local)
            && *hashed == size
            && state.sha256 == *sha256
        {
            return self
                .settle_attributes(state, remote, &q_remote, mode, owner, q_owner.as_deref())
                .await;
        }
        // What the streamed bytes must match for the host to commit: the
        // hash the skip check used, or (none made) the size seen above.
        let expected = local.map(|(sha256, _)| sha256);

        let started = Instant::now();
        self.send(Transfer {
            source,
            remote,
            q_remote: &q_remote,
            q_owner: q_owner.as_deref(),
            mode,
            sha256: expected.as_deref(),
            file_sha256: None,
            stream_len: size,
            decoder: None,
            size,
            local_name: &local_name,
        })
        .await?;
        tracing::info!(host = %self.host(), path = remote, bytes = size, elapsed = ?started.elapsed(), "uploaded");
        Ok(UploadOutcome::Uploaded { bytes: size })
    }

    /// Upload a bundle file from its zstd copy (see
    /// [`crate::artifacts::CompressedCache`]): the host decompresses the
    /// stream with the decoder (which must be there) straight into the temp
    /// file, whose size and sha256 must then be the file's (zstd's frame
    /// checksum alone would pass a valid frame of other bytes). Skipped,
    /// like [`Session::upload`], when the host's copy already has the
    /// file's sha256.
    pub async fn upload_compressed(
        &self,
        src: &CompressedSource<'_>,
        remote: &str,
        mode: u32,
        owner: Option<&str>,
    ) -> Result<UploadOutcome> {
        check_remote_path(remote)?;
        if let Some(k) = src.keep_as {
            check_remote_path(k)?;
        }
        let q_remote = quote(remote)?;
        let q_owner = owner.map(quote).transpose()?;
        let decoder = (quote(src.decoder)?, src.keep_as.map(quote).transpose()?);
        let (compressed, size) = (src.path, src.size);
        if let Some(state) = self.remote_state(&q_remote, size).await?
            && state.sha256 == src.sha256
        {
            return self
                .settle_attributes(&state, remote, &q_remote, mode, owner, q_owner.as_deref())
                .await;
        }
        let local_name = compressed.display().to_string();
        let stream_len = std::fs::metadata(compressed)
            .map_err(|source| SshError::LocalIo {
                path: local_name.clone(),
                source,
            })?
            .len();
        let started = Instant::now();
        self.send(Transfer {
            source: Source::File(compressed.to_owned()),
            remote,
            q_remote: &q_remote,
            q_owner: q_owner.as_deref(),
            mode,
            sha256: None,
            file_sha256: Some(src.sha256),
            stream_len,
            decoder: Some(decoder),
            size,
            local_name: &local_name,
        })
        .await?;
        tracing::info!(host = %self.host(), path = remote, bytes = size, sent = stream_len, elapsed = ?started.elapsed(), "uploaded compressed");
        Ok(UploadOutcome::Uploaded { bytes: size })
    }

    /// The host's copy of `q_remote` when it has one of `size` bytes (its
    /// sha256, mode and owner); `None` when absent or of another size.
    async fn remote_state(&self, q_remote: &str, size: u64) -> Result<Option<RemoteState>> {
        let state_cmd = Command::shell(format!(
            "f={q_remote}; if [ ! -f \"$f\" ]; then echo absent; \
             elif [ \"$(stat -c %s -- \"$f\")\" != {size} ]; then echo size-differs; \
             else {{ {REMOTE_SHA256} < \"$f\"; }} | cut -c1-64 && \
             stat -c '%a %u %g %U %G' -- \"$f\"; fi"
        ))
        .privileged();
        let out = self.output(&state_cmd).await?;
        Ok(if out.success() {
            RemoteState::parse(&out.stdout_str())
        } else {
            None
        })
    }

    /// Same content on the host: correct mode and owner where they differ.
    async fn settle_attributes(
        &self,
        state: &RemoteState,
        remote: &str,
        q_remote: &str,
        mode: u32,
        owner: Option<&str>,
        q_owner: Option<&str>,
    ) -> Result<UploadOutcome> {
        if state.attributes_match(mode, owner) {
            tracing::debug!(host = %self.host(), path = remote, "unchanged");
            return Ok(UploadOutcome::Unchanged);
        }
        let mut script = format!("chmod -- {mode:o} {q_remote}");
        if let Some(o) = q_owner {
            script.push_str(&format!(" && chown -- {o} {q_remote}"));
        }
        self.run(&Command::shell(script).privileged()).await?;
        tracing::info!(host = %self.host(), path = remote, mode = %format!("{mode:o}"), owner, "attributes updated");
        Ok(UploadOutcome::AttributesUpdated)
    }

    async fn send(&self, t: Transfer<'_>) -> Result<()> {
        let Transfer {
            source,
            remote,
            q_remote,
            q_owner,
            mode,
            sha256,
            file_sha256,
            stream_len,
            decoder,
            size,
            local_name,
        } = t;
        let want = match file_sha256 {
            Some(sum) => quote(sum)?,
            None => "\"${verdict#commit }\"".to_owned(),
        };
        let chown = q_owner
            .map(|o| format!("chown -- {o} \"$tmp\"\n"))
            .unwrap_or_default();
        // A decoder fails on a cut or damaged stream, and `set -e` stops
        // the script there (the pipeline's status is the decoder's).
        let (decode, keep_tmp, keep_commit) = match &decoder {
            None => Default::default(),
            Some((d, None)) => (format!(" | {d} -d -c -q"), String::new(), String::new()),
            Some((d, Some(k))) => (
                format!(" | tee -- \"$ktmp\" | {d} -d -c -q"),
                format!(
                    "k={k}; kd=$(dirname -- \"$k\"); mkdir -p -- \"$kd\"\n\
                     find \"$kd\" -maxdepth 1 -name '.kubeup-*' -mmin +60 -delete 2>/dev/null || true\n\
                     ktmp=$(mktemp -- \"$kd/.kubeup-XXXXXX\")\n"
                ),
                // Kept only when whole (tee goes on past a full disk).
                format!(
                    "if [ \"$(stat -c %s -- \"$ktmp\")\" = {stream_len} ]; then \
                     chmod 0644 \"$ktmp\" && mv -f -- \"$ktmp\" \"$k\" || true; fi\n"
                ),
            ),
        };
        // Stale temp files of uploads killed hard (SIGKILL: no trap) are
        // swept when older than an hour.
        let script = format!(
            "set -eu\n\
             f={q_remote}\n\
             d=$(dirname -- \"$f\"); b=$(basename -- \"$f\")\n\
             mkdir -p -- \"$d\"\n\
             find \"$d\" -maxdepth 1 -name \".$b.kubeup-*\" -mmin +60 -delete 2>/dev/null || true\n\
             tmp=$(mktemp -- \"$d/.$b.kubeup-XXXXXX\"); ktmp=\n\
             trap 'rm -f -- \"$tmp\" ${{ktmp:+\"$ktmp\"}}' EXIT\n\
             {keep_tmp}\
             dd bs=1M iflag=fullblock,count_bytes count={stream_len} status=none{decode} > \"$tmp\"\n\
             [ \"$(stat -c %s -- \"$tmp\")\" = {size} ] || {{ echo \"upload of $f interrupted\" >&2; exit 3; }}\n\
             IFS= read -r verdict || verdict=\n\
             case \"$verdict\" in \"commit \"*) ;; *) echo \"upload of $f aborted: the local file changed while it was sent\" >&2; exit 3;; esac\n\
             want={want}\n\
             got=$({{ {REMOTE_SHA256}; }} < \"$tmp\" | cut -c1-64)\n\
             [ \"$got\" = \"$want\" ] || {{ echo \"upload of $f refused: what arrived has sha256 $got on this host, expected $want; nothing was replaced\" >&2; exit 3; }}\n\
             chmod -- {mode:o} \"$tmp\"\n\
             {chown}\
             mv -f -- \"$tmp\" \"$f\"\n\
             {keep_commit}\
             trap - EXIT\n"
        );
        let display = format!("upload {local_name} to {remote}");
        let segments = match source {
            Source::File(path) => vec![Segment::File(path)],
            Source::Bytes(b) => vec![Segment::Bytes(b.to_vec())],
        };
        self.stream(segments, stream_len, sha256, &script, display, local_name)
            .await
    }

    /// Run `script` on the host with `source` on its stdin (exactly
    /// `stream_len` bytes), then one verdict line: `commit SHA256` (the
    /// streamed bytes' sha256) when what was read had that length (and
    /// `sha256`, if given), else `abort`.
    pub(super) async fn stream(
        &self,
        segments: Vec<Segment>,
        stream_len: u64,
        sha256: Option<&str>,
        script: &str,
        display: String,
        local_name: &str,
    ) -> Result<()> {
        let (line, prefix) = self.wrap_privileged(script).await?;
        let (channel, _permit) = self.open_channel(&display).await?;
        let (mut rx, tx) = channel.split();
        let chan_err = |source| SshError::Channel {
            host: self.host().to_owned(),
            doing: display.clone(),
            source: Box::new(source),
        };

        let (chunks_tx, mut chunks) = tokio::sync::mpsc::channel::<Vec<u8>>(QUEUED_CHUNKS);
        let reader =
            tokio::task::spawn_blocking(move || read_segments(segments, stream_len, chunks_tx));

        let stall = self.options().stall_timeout;
        let stalled = || SshError::UploadStalled {
            host: self.host().to_owned(),
            command: display.clone(),
            after: stall,
        };
        // Each chunk must be taken within `stall`: a host that stops
        // reading (the window stays shut) fails the upload now.
        let put = |data: Vec<u8>| async {
            match tokio::time::timeout(stall, tx.data_bytes(data)).await {
                Ok(sent) => sent.map_err(chan_err),
                Err(_) => Err(stalled()),
            }
        };
        let work = async {
            tx.exec(true, line.as_bytes()).await.map_err(chan_err)?;
            let send = async {
                if let Some(p) = prefix {
                    put(p).await?;
                }
                while let Some(chunk) = chunks.recv().await {
                    put(chunk).await?;
                }
                let streamed = reader
                    .await
                    .map_err(|e| SshError::LocalIo {
                        path: local_name.to_owned(),
                        source: std::io::Error::other(e),
                    })?
                    .map_err(|source| SshError::LocalIo {
                        path: local_name.to_owned(),
                        source,
                    })?;
                let unchanged = streamed.1 == stream_len && sha256.is_none_or(|s| s == streamed.0);
                let verdict = if unchanged {
                    format!("commit {}\n", streamed.0)
                } else {
                    "abort\n".to_owned()
                };
                tx.data_bytes(verdict.into_bytes())
                    .await
                    .map_err(chan_err)?;
                tx.eof().await.map_err(chan_err)?;
                Ok::<_, SshError>(())
            };
            let recv = read_channel(&mut rx, self.host());
            tokio::pin!(send, recv);
            // When the remote side ends first (script failed, connection
            // lost) stop sending: the window would never open again.
            let (sent, out): (Result<()>, Output) = tokio::select! {
                out = &mut recv => (Ok(()), out),
                sent = &mut send => match sent {
                    // The host is not reading: nor would it answer.
                    Err(e @ SshError::UploadStalled { .. }) => return Err(e),
                    // Its checks take seconds; silence past `stall` after
                    // the last byte is a hung host or connection, which a
                    // retry on a new connection gets past.
                    sent => match tokio::time::timeout(stall, &mut recv).await {
                        Ok(out) => (sent, out),
                        Err(_) => return Err(SshError::CommandTimeout {
                            host: self.host().to_owned(),
                            command: format!("{display} (its answer after the last byte)"),
                            after: stall,
                        }),
                    },
                },
            };
            Ok::<_, SshError>((sent, out))
        };
        let timeout = self.options().command_timeout;
        let (sent, out) = match tokio::time::timeout(timeout, work).await {
            Ok(Err(e @ (SshError::UploadStalled { .. } | SshError::CommandTimeout { .. }))) => {
                kill(&tx).await;
                return Err(e);
            }
            Ok(r) => r?,
            Err(_) => {
                kill(&tx).await;
                return Err(SshError::CommandTimeout {
                    host: self.host().to_owned(),
                    command: display,
                    after: timeout,
                });
            }
        };
        if out.success() {
            // Exit 0 means the script saw `commit`, which is sent last.
            return Ok(());
        }
        if out.exit_status.is_none() && out.exit_signal.is_none() {
            sent?;
            return Err(SshError::Disconnected {
                host: self.host().to_owned(),
                command: display,
            });
        }
        // The remote failure (disk full, permission…) explains more than a
        // send error caused by the remote side going away.
        Err(self.failed(&display, &out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_state() {
        let s = RemoteState::parse(&format!("{}\n644 0 0 root root\n", "a".repeat(64))).unwrap();
        assert!(s.attributes_match(0o644, None));
        assert!(s.attributes_match(0o100644, Some("root")));
        assert!(s.attributes_match(0o644, Some("0:root")));
        assert!(!s.attributes_match(0o600, None));
        assert!(!s.attributes_match(0o644, Some("root:adm")));
        assert!(RemoteState::parse("absent\n").is_none());
        assert!(check_remote_path("relative").is_err());
        assert!(check_remote_path("/etc/").is_err());
    }
}
