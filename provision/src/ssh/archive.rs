//! Many files in one stream: a zstd-compressed tar archive, unpacked on
//! the host into a staging directory and moved into place only when whole.
//!
//! One file per upload costs two round trips and a dozen short processes
//! on the host each; for a fresh worker (13 files) that was about a second
//! of the join, and three joins at once spent more on process start-up than
//! on bytes. The archive needs one round trip and a handful of processes
//! whatever the number of files. It is never compressed as a whole: each
//! file's zstd copy is a frame of its own, and the tar headers and padding
//! between them are small frames made on the fly; zstd decompresses
//! concatenated frames as one stream, so the copies made once serve every
//! host and every combination of files.
//!
//! zstd's frame checksum (xxHash) only catches accidents: a valid frame of
//! other bytes passes it. So before anything is moved into place the host
//! hashes every unpacked file and compares it with the manifest's sha256.

use std::io;

use super::command::quote;
use super::error::{Result, SshError};
use super::session::Session;
use super::upload::REMOTE_SHA256_FILES;
use super::upload::{Segment, check_remote_path};
use crate::artifacts::zstd_frame;

/// One file of an [`Archive`].
#[derive(Clone, Debug)]
pub struct ArchiveFile {
    /// Path relative to the destination directory (`bin/kubelet`).
    pub name: String,
    pub size: u64,
    pub mode: u32,
    /// The sha256 (hex) the unpacked file must have: the manifest's.
    pub sha256: String,
    /// Its content as one or more zstd frames with content checksums.
    pub frames: Segment,
}

/// The ustar header of a root-owned regular file.
fn tar_header(name: &str, size: u64, mode: u32) -> io::Result<[u8; 512]> {
    let mut h = tar::Header::new_ustar();
    h.set_path(name)?;
    h.set_size(size);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    let mut out = [0u8; 512];
    out.copy_from_slice(h.as_bytes());
    Ok(out)
}

/// The stream: per file a frame with its header, its frames, a frame with
/// its padding; then the end-of-archive blocks.
fn segments(files: &[ArchiveFile]) -> io::Result<Vec<Segment>> {
    let mut out = Vec::with_capacity(files.len() * 3 + 1);
    for f in files {
        out.push(Segment::Bytes(zstd_frame(&tar_header(
            &f.name, f.size, f.mode,
        )?)?));
        out.push(f.frames.clone());
        let pad = (512 - f.size % 512) % 512;
        if pad > 0 {
            out.push(Segment::Bytes(zstd_frame(&vec![0u8; pad as usize])?));
        }
    }
    out.push(Segment::Bytes(zstd_frame(&[0u8; 1024])?));
    Ok(out)
}

/// A name the sha256 lists on the host can carry: one line, no backslash
/// (`sha256sum` escapes those), no leading dash, relative.
fn check_archive_name(name: &str) -> Result<()> {
    let bad = name.is_empty()
        || name.starts_with('-')
        || name.starts_with('/')
        || name.contains(['\n', '\r', '\\']);
    if bad {
        return Err(SshError::InvalidArgument {
            reason: format!(
                "archive member {name:?} must be a relative path without newlines or backslashes"
            ),
        });
    }
    Ok(())
}

/// The staging check of every file's sha256: `hex ./name` lines expected,
/// the host's own hashes in the same form, and on a difference the names
/// of the files that differ (or are missing) in the error. Runs in the
/// staging directory; `set -e` ends the script on the `exit`.
fn sha256_check(files: &[ArchiveFile]) -> Result<String> {
    let mut want = String::new();
    let mut paths = Vec::with_capacity(files.len());
    for f in files {
        let path = quote(&format!("./{}", f.name))?;
        want.push_str(&format!(" {} {path}", quote(&f.sha256)?));
        paths.push(path);
    }
    let paths = paths.join(" ");
    Ok(format!(
        "printf '%s %s\\n'{want} > .kubeup-sha256-want\n\
         {REMOTE_SHA256_FILES}\n\
         h256 {paths} 2>/dev/null \
         | sed 's/^\\([0-9a-f]\\{{64\\}}\\) [ *]/\\1 /' > .kubeup-sha256-got || true\n\
         if ! cmp -s .kubeup-sha256-want .kubeup-sha256-got; then\n\
         \x20 bad=$(grep -vxF -f .kubeup-sha256-got .kubeup-sha256-want | cut -c68- | tr '\\n' ' ')\n\
         \x20 echo \"archive for $d refused: sha256 on this host differs from the manifest's for: ${{bad:-(unreadable sums)}}; nothing was moved into place\" >&2; exit 3\n\
         fi\n"
    ))
}

impl Session {
    /// Put `files` under `dest_dir` (created if needed) in one stream,
    /// decompressed on the host by `decoder` (zstd) and unpacked by tar,
    /// root-owned with each file's mode. None of them is replaced unless
    /// every frame's checksum held and every file has its size and its
    /// sha256 (checked on the host, in the staging directory).
    pub async fn unpack(&self, files: &[ArchiveFile], decoder: &str, dest_dir: &str) -> Result<()> {
        check_remote_path(dest_dir)?;
        let local_err = |source| SshError::LocalIo {
            path: "(archive)".into(),
            source,
        };
        let segments = segments(files).map_err(local_err)?;
        let mut stream_len = 0;
        for s in &segments {
            stream_len += s.len().map_err(local_err)?;
        }
        let mut names = Vec::with_capacity(files.len());
        for f in files {
            check_archive_name(&f.name)?;
            check_remote_path(&format!("{dest_dir}/{}", f.name))?;
            names.push(quote(&f.name)?);
        }
        let sizes: Vec<String> = files.iter().map(|f| f.size.to_string()).collect();
        // One mv per directory.
        let mut dirs: Vec<&str> = files
            .iter()
            .map(|f| f.name.rsplit_once('/').map_or("", |(d, _)| d))
            .collect();
        dirs.sort_unstable();
        dirs.dedup();
        let mut moves = String::new();
        for dir in dirs {
            let in_dir: Vec<&String> = files
                .iter()
                .zip(&names)
                .filter(|(f, _)| f.name.rsplit_once('/').map_or("", |(d, _)| d) == dir)
                .map(|(_, q)| q)
                .collect();
            let target = if dir.is_empty() {
                "\"$d\"".to_string()
            } else {
                format!("\"$d\"/{}", quote(dir)?)
            };
            moves.push_str(&format!(
                "mkdir -p -- {target} && mv -f -t {target} -- {}\n",
                in_dir
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(" ")
            ));
        }
        let q_dest = quote(dest_dir)?;
        let q_decoder = quote(decoder)?;
        let sha256_check = sha256_check(files)?;
        let script = format!(
            "set -eu\n\
             d={q_dest}\n\
             mkdir -p -- \"$d\"\n\
             find \"$d\" -maxdepth 1 -name '.kubeup-stage-*' -mmin +60 -exec rm -rf -- {{}} + 2>/dev/null || true\n\
             st=$(mktemp -d -- \"$d/.kubeup-stage-XXXXXX\")\n\
             trap 'rm -rf -- \"$st\"' EXIT\n\
             dd bs=1M iflag=fullblock,count_bytes count={stream_len} status=none \
             | {{ {q_decoder} -d -c -q && echo ok > \"$st/.kubeup-decoded\"; }} \
             | tar -x -m -f - -C \"$st\"\n\
             [ -f \"$st/.kubeup-decoded\" ] || {{ echo \"archive for $d damaged or cut short\" >&2; exit 3; }}\n\
             cd \"$st\"\n\
             [ \"$(stat -c %s -- {names} | tr '\\n' ' ')\" = '{sizes} ' ] || {{ echo \"archive for $d incomplete\" >&2; exit 3; }}\n\
             {sha256_check}\
             IFS= read -r verdict || verdict=\n\
             case \"$verdict\" in \"commit \"*) ;; *) echo \"archive for $d aborted: a local file changed while it was sent\" >&2; exit 3;; esac\n\
             {moves}",
            names = names.join(" "),
            sizes = sizes.join(" "),
        );
        let display = format!("unpack {} files into {dest_dir}", files.len());
        let started = std::time::Instant::now();
        self.stream(segments, stream_len, None, &script, display, "(archive)")
            .await?;
        tracing::info!(
            host = %self.host(),
            dir = dest_dir,
            files = files.len(),
            bytes = files.iter().map(|f| f.size).sum::<u64>(),
            sent = stream_len,
            elapsed = ?started.elapsed(),
            "unpacked"
        );
        Ok(())
    }
}
