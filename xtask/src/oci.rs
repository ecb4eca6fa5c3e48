//! Hand-made OCI images: a list of files becomes a one-layer image in an OCI
//! image-layout tar that `ctr -n k8s.io images import` accepts.
//!
//! No registry and no Docker daemon are reachable here, so images (pause, the
//! operator, CoreDNS) are written directly. The output is deterministic: the
//! same files give the same digests (mtime 0, root-owned, sorted entries), so
//! a rebuild does not change what hosts already have.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, Seek, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde_json::json;
use sha2::{Digest, Sha256};

const MEDIA_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const MEDIA_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
// Uncompressed: images here are side-loaded from a local file, so gzip would
// only cost time, and the layer digest doubles as its diff_id.
const MEDIA_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";

/// Where a file's content comes from.
pub enum Content {
    Path(PathBuf),
    // Small generated files (an /etc/passwd, a Corefile) for the images that
    // reuse this module; only the tests build one so far.
    #[allow(dead_code)]
    Bytes(Vec<u8>),
}

/// One regular file of the image.
pub struct ImageFile {
    /// Absolute path inside the image, e.g. `/pause`.
    pub path: String,
    pub content: Content,
    pub mode: u32,
}

/// What to build.
pub struct ImageSpec {
    /// Full reference the image carries once imported, e.g.
    /// `registry.k8s.io/pause:3.10.1`.
    pub name: String,
    pub files: Vec<ImageFile>,
    pub entrypoint: Vec<String>,
    pub env: Vec<String>,
    /// `uid[:gid]` the entrypoint runs as; empty means root.
    pub user: String,
}

/// Write `spec` as an OCI image-layout tar at `out`.
pub fn write_image_archive(spec: &ImageSpec, out: &Path) -> Result<()> {
    let (tag, _) = split_reference(&spec.name)?;
    // The layer can be large (an operator binary): spool it to disk while
    // hashing rather than holding it in memory.
    let mut layer = tempfile::tempfile().context("failed to create a temp file for the layer")?;
    let mut hashing = HashingWriter::new(&mut layer);
    write_layer(&spec.files, &mut hashing)?;
    let (layer_digest, layer_size) = hashing.finish();

    let config = serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Entrypoint": spec.entrypoint,
            "Env": spec.env,
            "User": spec.user,
        },
        "rootfs": { "type": "layers", "diff_ids": [format!("sha256:{layer_digest}")] },
        "history": [{ "created_by": "kubeup xtask oci" }],
    }))?;
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": descriptor(MEDIA_CONFIG, &sha256_hex(&config), config.len() as u64),
        "layers": [descriptor(MEDIA_LAYER, &layer_digest, layer_size)],
    }))?;
    let manifest_digest = sha256_hex(&manifest);
    let mut manifest_desc = descriptor(MEDIA_MANIFEST, &manifest_digest, manifest.len() as u64);
    manifest_desc["platform"] = json!({ "architecture": "amd64", "os": "linux" });
    // containerd names the imported image after io.containerd.image.name;
    // ref.name carries the tag as the OCI spec and `ctr export` have it.
    manifest_desc["annotations"] = json!({
        "io.containerd.image.name": spec.name,
        "org.opencontainers.image.ref.name": tag,
    });
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_INDEX,
        "manifests": [manifest_desc],
    }))?;

    let file = File::create(out).with_context(|| format!("failed to create {}", out.display()))?;
    let mut tar = tar::Builder::new(io::BufWriter::new(file));
    append_bytes(
        &mut tar,
        "oci-layout",
        br#"{"imageLayoutVersion":"1.0.0"}"#,
        0o644,
    )?;
    append_bytes(&mut tar, "index.json", &index, 0o644)?;
    append_dir(&mut tar, "blobs/")?;
    append_dir(&mut tar, "blobs/sha256/")?;
    append_bytes(&mut tar, &blob(&sha256_hex(&config)), &config, 0o644)?;
    append_bytes(&mut tar, &blob(&manifest_digest), &manifest, 0o644)?;
    layer.rewind()?;
    let mut header = header(tar::EntryType::Regular, layer_size, 0o644);
    tar.append_data(&mut header, blob(&layer_digest), &mut layer)?;
    tar.into_inner()?
        .into_inner()
        .map_err(|e| e.into_error())?
        .sync_all()?;
    Ok(())
}

/// The layer tar: every file, with its parent directories listed first.
fn write_layer(files: &[ImageFile], out: impl Write) -> Result<()> {
    let mut tar = tar::Builder::new(out);
    let mut dirs = BTreeSet::new();
    let mut sorted: Vec<&ImageFile> = files.iter().collect();
    sorted.sort_by(|a, b| a.path.cmp(&b.path));
    for file in sorted {
        let rel = file
            .path
            .strip_prefix('/')
            .filter(|p| !p.is_empty() && !p.split('/').any(|c| c.is_empty() || c == ".."))
            .with_context(|| format!("image path {:?} is not a clean absolute path", file.path))?;
        let mut parent = String::new();
        for component in rel.split('/').collect::<Vec<_>>().split_last().unwrap().1 {
            parent.push_str(component);
            parent.push('/');
            if dirs.insert(parent.clone()) {
                append_dir(&mut tar, &parent)?;
            }
        }
        match &file.content {
            Content::Bytes(bytes) => append_bytes(&mut tar, rel, bytes, file.mode)?,
            Content::Path(src) => {
                let mut f =
                    File::open(src).with_context(|| format!("failed to open {}", src.display()))?;
                let size = f.metadata()?.len();
                let mut h = header(tar::EntryType::Regular, size, file.mode);
                tar.append_data(&mut h, rel, &mut f)?;
            }
        }
    }
    tar.finish()?;
    Ok(())
}

fn header(kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h
}

fn append_bytes<W: Write>(
    tar: &mut tar::Builder<W>,
    path: &str,
    bytes: &[u8],
    mode: u32,
) -> Result<()> {
    let mut h = header(tar::EntryType::Regular, bytes.len() as u64, mode);
    tar.append_data(&mut h, path, bytes)?;
    Ok(())
}

fn append_dir<W: Write>(tar: &mut tar::Builder<W>, path: &str) -> Result<()> {
    let mut h = header(tar::EntryType::Directory, 0, 0o755);
    tar.append_data(&mut h, path, io::empty())?;
    Ok(())
}

fn descriptor(media_type: &str, digest_hex: &str, size: u64) -> serde_json::Value {
    json!({ "mediaType": media_type, "digest": format!("sha256:{digest_hex}"), "size": size })
}

fn blob(digest_hex: &str) -> String {
    format!("blobs/sha256/{digest_hex}")
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Split `registry/repo:tag` into (tag, repository); a digest reference or a
/// name without a tag is refused, since hosts look images up by tag.
fn split_reference(name: &str) -> Result<(&str, &str)> {
    let (repo, tag) = match name.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') && !repo.is_empty() && !tag.is_empty() => {
            (repo, tag)
        }
        _ => bail!("image name {name:?} has no tag (expected e.g. registry.k8s.io/pause:3.10.1)"),
    };
    if repo.contains('@') {
        bail!("image name {name:?} is a digest reference; give a tag");
    }
    Ok((tag, repo))
}

/// Counts and hashes what passes through to the inner writer.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    size: u64,
}

impl<W: Write> HashingWriter<W> {
    fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            size: 0,
        }
    }
    fn finish(self) -> (String, u64) {
        (hex::encode(self.hasher.finalize()), self.size)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn spec() -> ImageSpec {
        ImageSpec {
            name: "registry.k8s.io/pause:3.10.1".into(),
            files: vec![ImageFile {
                path: "/usr/bin/pause".into(),
                content: Content::Bytes(b"#!pause".to_vec()),
                mode: 0o755,
            }],
            entrypoint: vec!["/usr/bin/pause".into()],
            env: vec![],
            user: String::new(),
        }
    }

    fn entries(path: &Path) -> Vec<(String, Vec<u8>)> {
        let mut archive = tar::Archive::new(File::open(path).unwrap());
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let name = e.path().unwrap().to_string_lossy().into_owned();
                let mut data = Vec::new();
                e.read_to_end(&mut data).unwrap();
                (name, data)
            })
            .collect()
    }

    #[test]
    fn writes_a_consistent_layout() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("img.tar");
        write_image_archive(&spec(), &out).unwrap();
        let entries = entries(&out);
        let get = |name: &str| &entries.iter().find(|(n, _)| n == name).unwrap().1;
        let index: serde_json::Value = serde_json::from_slice(get("index.json")).unwrap();
        let desc = &index["manifests"][0];
        assert_eq!(
            desc["annotations"]["io.containerd.image.name"],
            "registry.k8s.io/pause:3.10.1"
        );
        assert_eq!(
            desc["annotations"]["org.opencontainers.image.ref.name"],
            "3.10.1"
        );
        // Every descriptor's digest and size match the blob it names.
        let check = |desc: &serde_json::Value| {
            let digest = desc["digest"].as_str().unwrap();
            let data = get(&format!("blobs/{}", digest.replace(':', "/")));
            assert_eq!(format!("sha256:{}", sha256_hex(data)), digest);
            assert_eq!(desc["size"].as_u64().unwrap(), data.len() as u64);
            data.clone()
        };
        let manifest: serde_json::Value = serde_json::from_slice(&check(desc)).unwrap();
        check(&manifest["config"]);
        let layer = check(&manifest["layers"][0]);
        let mut layer = tar::Archive::new(&layer[..]);
        let names: Vec<String> = layer
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["usr/", "usr/bin/", "usr/bin/pause"]);
    }

    #[test]
    fn is_deterministic() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        write_image_archive(&spec(), &a).unwrap();
        write_image_archive(&spec(), &b).unwrap();
        assert_eq!(std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    }

    #[test]
    fn refuses_untagged_names_and_unclean_paths() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = spec();
        s.name = "registry.k8s.io/pause".into();
        assert!(write_image_archive(&s, &dir.path().join("x")).is_err());
        let mut s = spec();
        s.files[0].path = "/../etc/passwd".into();
        assert!(write_image_archive(&s, &dir.path().join("y")).is_err());
    }
}
