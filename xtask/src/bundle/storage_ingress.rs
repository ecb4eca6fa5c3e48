//! The images of `spec.addons` (provision/src/addons.rs): rancher's
//! local-path-provisioner (with Debian's busybox-static as its helper
//! pods' shell) and Traefik v3, each built from its Go module in
//! hack/bundle/<dir> (a `tool` line naming the upstream main package) and
//! wrapped into a one-layer OCI archive like CoreDNS. The image tag is the
//! module's version, checked at build time, so bumping go.mod without the
//! tag (or the other way round) fails loudly.

use std::path::Path;

use anyhow::{Context, Result, bail};
use kubeup_provision::addons::{
    LOCAL_PATH_IMAGE, LOCAL_PATH_IMAGE_FILE, TRAEFIK_IMAGE, TRAEFIK_IMAGE_FILE,
};
use kubeup_provision::artifacts::BundleFile;
use sha2::{Digest, Sha256};

use super::components::describe;
use super::{Ctx, Part, debian, go};
use crate::oci;

/// One add-on image made of one Go binary (and, for local-path, busybox).
pub struct GoImage {
    name: &'static str,
    /// Recipe directory under hack/bundle/.
    dir: &'static str,
    module: &'static str,
    package: &'static str,
    image: &'static str,
    file: &'static str,
    /// Where the binary goes in the image (also the entrypoint).
    binary: &'static str,
    /// Add busybox-static as /bin/busybox and /bin/sh.
    busybox: bool,
    user: &'static str,
    /// `-X` flags from (version, release time).
    stamp: fn(&str, &str) -> Vec<String>,
}

/// local-path-provisioner: its helper pods run `/bin/sh /script/setup` in
/// this same image, so the image carries busybox (no second image to ship).
pub fn local_path() -> GoImage {
    GoImage {
        name: "local-path",
        dir: "local-path-provisioner",
        module: "github.com/rancher/local-path-provisioner",
        package: "github.com/rancher/local-path-provisioner",
        image: LOCAL_PATH_IMAGE,
        file: LOCAL_PATH_IMAGE_FILE,
        binary: "/local-path-provisioner",
        busybox: true,
        // The helpers must create directories on the host; the provisioner
        // Deployment runs as nobody through its securityContext.
        user: "0:0",
        stamp: |version, _| vec![format!("main.VERSION={version}")],
    }
}

/// Traefik: listens on 8000/8443/9000 (host ports 80/443 are mapped by the
/// portmap plugin), so nobody needs no capability.
pub fn traefik() -> GoImage {
    GoImage {
        name: "traefik",
        dir: "traefik",
        module: "github.com/traefik/traefik/v3",
        package: "github.com/traefik/traefik/v3/cmd/traefik",
        image: TRAEFIK_IMAGE,
        file: TRAEFIK_IMAGE_FILE,
        binary: "/traefik",
        busybox: false,
        user: "65532:65532",
        stamp: |version, released| {
            let pkg = "github.com/traefik/traefik/v3/pkg/version";
            vec![
                format!("{pkg}.Version={version}"),
                format!("{pkg}.BuildDate={released}"),
            ]
        },
    }
}

impl Part for GoImage {
    fn name(&self) -> &'static str {
        self.name
    }

    fn outputs(&self) -> Vec<&'static str> {
        vec![self.file]
    }

    /// The image's name, the whole recipe directory (traefik's has a
    /// subdirectory), this file and the image writer.
    fn recipe_digest(&self, ctx: &Ctx) -> Result<String> {
        let mut h = Sha256::new();
        h.update(self.name);
        h.update(ctx.kubernetes_version.as_bytes());
        h.update(self.image);
        hash_tree(&mut h, &ctx.recipes.join(self.dir), Path::new(""))?;
        h.update(include_str!("storage_ingress.rs"));
        h.update(include_str!("../oci.rs"));
        Ok(hex::encode(h.finalize()))
    }

    fn build(&self, ctx: &Ctx, staging: &Path) -> Result<Vec<(String, BundleFile)>> {
        let dir = ctx.recipes.join(self.dir);
        let (version, released) = go::module_version(&ctx.cache_root, &dir, self.module)?;
        if !self.image.ends_with(&format!(":{version}")) {
            bail!(
                "{} requires {} {version}, but the image is named {}; update provision/src/addons.rs",
                dir.display(),
                self.module,
                self.image
            );
        }
        let binary = staging.join(format!(".{}", self.name));
        let build = go::Build {
            package: self.package,
            tags: &[],
            xflags: (self.stamp)(&version, &released),
            out: binary.clone(),
        };
        go::build(&ctx.cache_root, &dir, &build)?;
        let mut files = vec![oci::ImageFile {
            path: self.binary.into(),
            content: oci::Content::Path(binary.clone()),
            mode: 0o755,
        }];
        let mut env = vec![];
        if self.busybox {
            let unpacked = debian::fetch("busybox-static", &staging.join(".deb"))?;
            // A copy per name: busybox picks its applet from argv[0], and
            // the one-layer writer makes regular files only.
            for path in ["/bin/busybox", "/bin/sh"] {
                files.push(oci::ImageFile {
                    path: path.into(),
                    content: oci::Content::Path(unpacked.root.join("bin/busybox")),
                    mode: 0o755,
                });
            }
            env.push("PATH=/bin".to_string());
        }
        let out = staging.join(self.file);
        std::fs::create_dir_all(out.parent().context("image path has a parent")?)?;
        let spec = oci::ImageSpec {
            name: self.image.into(),
            files,
            entrypoint: vec![self.binary.into()],
            env,
            user: self.user.into(),
        };
        oci::write_image_archive(&spec, &out)?;
        std::fs::remove_file(binary)?;
        if self.busybox {
            std::fs::remove_dir_all(staging.join(".deb"))?;
        }
        let mut file = describe(
            &out,
            &version,
            format!("go:{}@{version}", self.module),
            false,
        )?;
        file.image = Some(self.image.into());
        Ok(vec![(self.file.into(), file)])
    }
}

/// Hash names and contents of every regular file under `dir`, recursively,
/// in a stable order.
fn hash_tree(h: &mut Sha256, dir: &Path, rel: &Path) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("failed to read recipe directory {}", dir.display()))?
        .filter_map(Result::ok)
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let kind = e.file_type()?;
        let name = rel.join(e.file_name());
        if kind.is_dir() {
            hash_tree(h, &e.path(), &name)?;
        } else if kind.is_file() {
            h.update(name.as_os_str().as_encoded_bytes());
            h.update(std::fs::read(e.path())?);
        }
    }
    Ok(())
}
