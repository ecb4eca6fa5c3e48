//! Binaries and images from the verified bundle, uploaded only where the
//! host's copy differs.

use std::path::Path;

use futures::StreamExt;

use super::{Changes, ConvergeError, ssh_err, stamp};
use crate::artifacts::{BundleFile, BundleManifest, CompressedCache, frame_of};
use crate::hostplan::{Unit, layout};
use crate::ssh::{ArchiveFile, Command, CompressedSource, Segment, Session, quote};

/// Uploads in flight on one connection.
const UPLOAD_CHANNELS: usize = 4;

/// Which units run a bundle file (restart them when it changes).
fn units_of(name: &str) -> &'static [Unit] {
    match name.rsplit('/').next().unwrap_or(name) {
        "hyperkube" => &[
            Unit::KubeApiserver,
            Unit::KubeControllerManager,
            Unit::KubeScheduler,
            Unit::Kubelet,
            Unit::KubeProxy,
        ],
        // hyperkube's worker-only build (kubelet and kube-proxy).
        "kubenode" => &[Unit::Kubelet, Unit::KubeProxy],
        "etcd" => &[Unit::Etcd],
        "flanneld" => &[Unit::Flannel],
        "containerd" | "containerd-shim-runc-v2" | "runc" => &[Unit::Containerd],
        _ => &[],
    }
}

/// The probe's first line when the host has the decompressor.
const HAS_DECODER: &str = "#decoder";

fn mode_of(file: &BundleFile) -> u32 {
    if file.executable { 0o755 } else { 0o644 }
}

/// Failing to make (or read) a file's compressed copy.
fn compress_err(source: &Path) -> impl FnOnce(std::io::Error) -> ConvergeError + '_ {
    move |e| ConvergeError::Local {
        step: "compress artifacts for transfer",
        path: source.display().to_string(),
        source: e,
    }
}

/// Archive streams to one host at once.
const ARCHIVE_STREAMS: usize = 2;

/// `files` in at most `n` non-empty groups of about equal size (largest
/// first, each into the lightest group).
fn split_even(mut files: Vec<ArchiveFile>, n: usize) -> Vec<Vec<ArchiveFile>> {
    files.sort_by_key(|f| std::cmp::Reverse(f.size));
    let mut groups: Vec<(u64, Vec<ArchiveFile>)> = (0..n.max(1)).map(|_| (0, vec![])).collect();
    for f in files {
        match groups.iter_mut().min_by_key(|(total, _)| *total) {
            Some(lightest) => {
                lightest.0 += f.size;
                lightest.1.push(f);
            }
            // Not reached (there is at least one group), but a file is never dropped.
            None => groups.push((f.size, vec![f])),
        }
    }
    groups
        .into_iter()
        .map(|(_, g)| g)
        .filter(|g| !g.is_empty())
        .collect()
}

/// Whether a compressed copy saves at least a tenth of the bytes (an
/// archive of already compressed layers would not).
fn packed_pays(packed: &Path, size: u64) -> bool {
    std::fs::metadata(packed).is_ok_and(|m| m.len() * 10 < size * 9)
}

/// Upload the bundle (files whose sha256 differs on the host) to
/// `/opt/kubeup/bundle/<version>/` and recreate its symlinks. With a
/// `compressed` cache, files go compressed to hosts that have the
/// decompressor (plain to the others): several at once as one archive
/// (see [`Session::unpack`]), or each on its own channel, files of a MiB
/// or more as their zstd copies, when `keep_in` asks the host to keep each
/// compressed stream there as `<sha256>.zst` (the controller, for the
/// operator).
pub async fn push_bundle(
    session: &Session,
    bundle_dir: &Path,
    manifest: &BundleManifest,
    compressed: Option<&CompressedCache>,
    keep_in: Option<&str>,
    dry_run: bool,
) -> Result<Changes, ConvergeError> {
    push_bundle_part(
        session,
        bundle_dir,
        manifest,
        compressed,
        keep_in,
        dry_run,
        Part::ALL,
    )
    .await
}

/// Which of the bundle's files one push covers: all of them, or a share in
/// a run of pushes (a controller's etcd and apiserver start while the rest
/// streams).
#[derive(Clone, Copy)]
pub struct Part<'a> {
    /// The files (names as the manifest has them) this push covers.
    pub covers: &'a (dyn Fn(&str) -> bool + Send + Sync),
    /// Whether it ends the run: the host's verified stamp is written then,
    /// covering every file; the pushes before it in the same run put their
    /// files in place and verified them.
    pub last: bool,
}

impl Part<'static> {
    pub const ALL: Self = Part {
        covers: &|_| true,
        last: true,
    };
}

/// Whether the host's copy of the bundle is whole and current, its
/// symlinks too, by the stamp a finished push left (one round trip, no
/// checksum computed): a caller then skips the push, and what it would set
/// up for one (the operator's connection of its own for uploads).
pub async fn bundle_in_place(
    session: &Session,
    manifest: &BundleManifest,
) -> Result<bool, ConvergeError> {
    let host_dir = layout::bundle_dir(&manifest.kubernetes_version);
    let q = |s: &str| quote(s).map_err(ssh_err(session.host(), "check artifacts"));
    let mut links = String::new();
    for (link, target) in &manifest.symlinks {
        links.push_str(&format!(
            "[ \"$(readlink {} 2>/dev/null)\" = {} ] || echo '{STALE_LINK}'; ",
            q(&format!("{host_dir}/{link}"))?,
            q(target)?
        ));
    }
    let stdout = stamp_probe(session, manifest, &q(&host_dir)?, &links, "check artifacts").await?;
    if stdout.lines().any(|l| l == STALE_LINK) {
        return Ok(false);
    }
    let (recorded, current) = stamp::parse_probe(manifest, &stdout);
    Ok(recorded == current)
}

/// `checks` (a caller's own, a line of output each), then the stamp's
/// probe in the host's bundle directory `q_dir` (quoted), in one round
/// trip: what they printed.
async fn stamp_probe(
    session: &Session,
    manifest: &BundleManifest,
    q_dir: &str,
    checks: &str,
    step: &'static str,
) -> Result<String, ConvergeError> {
    let probe = format!(
        "{checks}cd {q_dir} 2>/dev/null && {}; true",
        stamp::remote_probe(manifest)
    );
    let out = session
        .run(&Command::shell(probe).privileged())
        .await
        .map_err(ssh_err(session.host(), step))?;
    Ok(out.stdout_str())
}

/// [`bundle_in_place`]'s line for a symlink that is missing or points
/// elsewhere.
const STALE_LINK: &str = "#stale-link";

/// [`push_bundle`] of one [`Part`] of the bundle.
pub async fn push_bundle_part(
    session: &Session,
    bundle_dir: &Path,
    manifest: &BundleManifest,
    compressed: Option<&CompressedCache>,
    keep_in: Option<&str>,
    dry_run: bool,
    part: Part<'_>,
) -> Result<Changes, ConvergeError> {
    let host_dir = layout::bundle_dir(&manifest.kubernetes_version);
    let q = |s: &str| quote(s).map_err(ssh_err(session.host(), "upload artifacts"));
    let q_dir = q(&host_dir)?;
    // Cheap path first: the host's stamp says its copy was fully verified
    // and no file changed since.
    let decoder_probe = match compressed {
        Some(c) => format!(
            "command -v {} >/dev/null 2>&1 && command -v tar >/dev/null 2>&1 && echo '{HAS_DECODER}'; ",
            q(c.decoder())?
        ),
        None => String::new(),
    };
    let stdout = stamp_probe(
        session,
        manifest,
        &q_dir,
        &decoder_probe,
        "upload artifacts",
    )
    .await?;
    let (compressed, stdout) = match stdout.strip_prefix(&format!("{HAS_DECODER}\n")) {
        Some(rest) => (compressed, rest),
        None => (None, &*stdout),
    };
    let (recorded, current) = stamp::parse_probe(manifest, stdout);
    let files: Vec<(&String, &BundleFile, String)> = manifest
        .files
        .iter()
        .filter(|(name, _)| (part.covers)(name))
        .map(|(name, f)| (name, f, format!("{host_dir}/{name}")))
        .collect();
    let remote = if recorded == current {
        files
            .iter()
            .map(|(_, f, p)| (p.clone(), f.sha256.clone()))
            .collect()
    } else {
        let refs: Vec<&str> = files.iter().map(|(_, _, p)| p.as_str()).collect();
        super::remote_sha256(session, &refs).await?
    };
    let mut changes = Changes::default();
    let mut to_upload = vec![];
    for (name, file, remote_path) in &files {
        if remote.get(remote_path) != Some(&file.sha256) {
            to_upload.push((*name, *file, remote_path));
            changes.restart.extend(units_of(name).iter().copied());
            changes.uploaded.push(remote_path.clone());
        }
    }
    // Several files to a host that keeps no streams: one archive.
    let archive = compressed.filter(|_| !dry_run && keep_in.is_none() && to_upload.len() > 1);
    if let Some(cache) = archive {
        let parts = to_upload.iter().map(|(name, file, _)| async move {
            let source = bundle_dir.join(name);
            let frames = if CompressedCache::worth_it(file) {
                cache.get(&source, file).await.map(Segment::File)
            } else {
                frame_of(&source, file).map(Segment::Bytes)
            };
            let frames = frames.map_err(compress_err(&source))?;
            Ok::<_, ConvergeError>(ArchiveFile {
                name: name.to_string(),
                size: file.size,
                mode: mode_of(file),
                sha256: file.sha256.clone(),
                frames,
            })
        });
        let files = futures::future::try_join_all(parts).await?;
        // Two streams: the host's decompression and the transfer of the
        // other stream then use two cores instead of taking turns.
        let host_dir = host_dir.as_str();
        let unpacks = split_even(files, ARCHIVE_STREAMS)
            .into_iter()
            .map(|part| async move {
                session
                    .unpack(&part, cache.decoder(), host_dir)
                    .await
                    .map_err(ssh_err(session.host(), "upload artifacts"))
            });
        futures::future::try_join_all(unpacks).await?;
    } else if !dry_run {
        // Several channels at once: one big file must not hold up the rest.
        let uploads = to_upload
            .iter()
            .map(|(name, file, remote_path)| async move {
                let mode = mode_of(file);
                let source = bundle_dir.join(name);
                let err = ssh_err(session.host(), "upload artifacts");
                // The zstd copy, when the host can take it and it saves bytes.
                let packed = match compressed.filter(|_| CompressedCache::worth_it(file)) {
                    Some(cache) => {
                        let packed = cache.get(&source, file).await;
                        let packed = packed.map_err(compress_err(&source))?;
                        packed_pays(&packed, file.size).then_some((cache, packed))
                    }
                    None => None,
                };
                let Some((cache, packed)) = packed else {
                    return session
                        .upload(&source, remote_path, mode, Some("root:root"))
                        .await
                        .map_err(err);
                };
                let keep_as = keep_in.map(|dir| format!("{dir}/{}.zst", file.sha256));
                let src = CompressedSource {
                    path: &packed,
                    decoder: cache.decoder(),
                    size: file.size,
                    sha256: &file.sha256,
                    keep_as: keep_as.as_deref(),
                };
                session
                    .upload_compressed(&src, remote_path, mode, Some("root:root"))
                    .await
                    .map_err(err)
            });
        // Collected: a closure over borrowed items held across an await
        // keeps rustc from proving the whole future `Send`, which the phase
        // engine needs.
        let uploads: Vec<_> = uploads.collect();
        let mut uploads = futures::stream::iter(uploads).buffer_unordered(UPLOAD_CHANNELS);
        while let Some(r) = uploads.next().await {
            r?;
        }
    }
    if !dry_run && recorded != current && part.last {
        // Every file now matches its sha256: record that with the stats.
        let write = format!(
            "cd {q_dir} && {{ echo {}; stat -c '%n %s %Y' -- {}; }} > {STAMP}.tmp && mv {STAMP}.tmp {STAMP}",
            stamp::manifest_digest(manifest),
            manifest
                .files
                .keys()
                .map(|n| quote(n).unwrap_or_default())
                .collect::<Vec<_>>()
                .join(" "),
            STAMP = stamp::STAMP
        );
        session
            .run(&Command::shell(write).privileged())
            .await
            .map_err(ssh_err(session.host(), "upload artifacts"))?;
    }
    // Symlinks (kube-apiserver -> hyperkube, …): one idempotent command.
    if !manifest.symlinks.is_empty() {
        let mut script = String::from("set -e; changed=0\n");
        for (link, target) in &manifest.symlinks {
            let link = quote(&format!("{host_dir}/{link}"))
                .map_err(ssh_err(session.host(), "symlinks"))?;
            let target = quote(target).map_err(ssh_err(session.host(), "symlinks"))?;
            let act = if dry_run {
                "changed=1".to_string()
            } else {
                format!("ln -sfn {target} {link}; changed=1")
            };
            script.push_str(&format!(
                "[ \"$(readlink {link} 2>/dev/null)\" = {target} ] || {{ {act}; }}\n"
            ));
        }
        script.push_str("echo $changed\n");
        let out = session
            .run(&Command::shell(script).privileged())
            .await
            .map_err(ssh_err(session.host(), "symlinks"))?;
        if out.stdout_str().trim() == "1" {
            changes.uploaded.push(format!("{host_dir} (symlinks)"));
        }
    }
    Ok(changes)
}

/// Import the bundle's images into containerd's `k8s.io` namespace, skipped
/// when a marker records that this exact archive was imported.
pub async fn import_images(
    session: &Session,
    manifest: &BundleManifest,
    dry_run: bool,
) -> Result<Vec<String>, ConvergeError> {
    let host_dir = layout::bundle_dir(&manifest.kubernetes_version);
    let ctr = layout::bin(&manifest.kubernetes_version, "ctr");
    // One after another: at once (tried) they took 2.4x as long on a
    // 2-core host, unpacking side by side while the apiserver starts.
    let mut imported = vec![];
    for (name, file) in manifest.files.iter().filter(|(_, f)| f.image.is_some()) {
        let marker = format!("{}/images/{}.sha256", layout::STATE, name.replace('/', "_"));
        let q = |s: &str| quote(s).map_err(ssh_err(session.host(), "import images"));
        let (qm, qa, qctr) = (q(&marker)?, q(&format!("{host_dir}/{name}"))?, q(&ctr)?);
        let check = format!("[ \"$(cat {qm} 2>/dev/null)\" = {} ]", file.sha256);
        // containerd was just started without blocking: wait for its socket.
        let wait = "for i in $(seq 1 150); do [ -S /run/containerd/containerd.sock ] && break; sleep 0.2; done";
        let script = if dry_run {
            format!("if {check}; then echo same; else echo import; fi")
        } else {
            format!(
                "if {check}; then echo same; else {wait}; \
                 {qctr} -n k8s.io images import {qa} >/dev/null && \
                 mkdir -p {}/images && echo {} > {qm} && echo import; fi",
                layout::STATE,
                file.sha256
            )
        };
        let out = session
            .run(
                &Command::shell(script)
                    .privileged()
                    .timeout(std::time::Duration::from_secs(120)),
            )
            .await
            .map_err(ssh_err(session.host(), "import images"))?;
        if out.stdout_str().trim() == "import" {
            imported.push(file.image.clone().unwrap_or_else(|| name.clone()));
        }
    }
    Ok(imported)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_split_into_even_groups() {
        let file = |name: &str, size| ArchiveFile {
            name: name.into(),
            size,
            mode: 0o755,
            sha256: String::new(),
            frames: Segment::Bytes(vec![]),
        };
        let files = vec![
            file("a", 86),
            file("b", 52),
            file("c", 48),
            file("d", 23),
            file("e", 2),
        ];
        let groups = split_even(files, 2);
        let sizes: Vec<u64> = groups
            .iter()
            .map(|g| g.iter().map(|f| f.size).sum())
            .collect();
        assert_eq!(sizes, [109, 102]);
        assert_eq!(groups.iter().map(Vec::len).sum::<usize>(), 5);
        // Fewer files than streams: no empty group.
        assert_eq!(split_even(vec![file("a", 1)], 2).len(), 1);
    }
}
