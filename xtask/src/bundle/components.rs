//! What the bundle holds and how each part is made.

use std::path::Path;

use anyhow::{Context, Result, bail};
use kubeup_provision::artifacts::{BundleFile, sha256_file};
use sha2::{Digest, Sha256};

use super::{Ctx, addons, debian, go};
use crate::oci;

/// The pause image every pod sandbox starts from; containerd's
/// `sandbox_image` and kubelet's `--pod-infra-container-image` name it.
pub const PAUSE_IMAGE: &str = "registry.k8s.io/pause:3.10.1";
const PAUSE_VERSION: &str = "3.10.1";

/// Names under `bin/` that are symlinks to the multi-call `hyperkube`
/// (`bin/kubenode`, its worker-only build, has no links here: the operator
/// points a worker's kubelet and kube-proxy at it).
pub const HYPERKUBE_COMMANDS: [&str; 6] = [
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "kube-proxy",
    "kubectl",
];

/// One independently cached unit: rebuilt as a whole when any of its files
/// is missing or corrupt, or its recipe changed.
pub struct Component {
    pub name: &'static str,
    recipe: Recipe,
}

enum Recipe {
    /// Main packages built from the Go module in `hack/bundle/<dir>`.
    Go {
        dir: &'static str,
        targets: &'static [GoTarget],
    },
    /// Files taken from a Debian package: (path in the package, bundle path).
    Debian {
        package: &'static str,
        files: &'static [(&'static str, &'static str)],
    },
    /// The pause binary from `hack/bundle/pause`, wrapped into an OCI archive.
    Pause,
    /// Debian's busybox-static as the smoke-test image (addons.rs).
    TestImage,
    /// CoreDNS from `hack/bundle/coredns` as an image (addons.rs).
    CoreDns,
}

#[derive(Debug)]
struct GoTarget {
    /// The module whose version the binary reports (and the manifest records).
    module: &'static str,
    package: &'static str,
    out: &'static str,
    tags: &'static [&'static str],
    stamp: Stamp,
}

/// How a binary learns its own version at link time (`-X` flags).
#[derive(Debug)]
enum Stamp {
    /// Compiled in already (etcd's version is a constant of its api module).
    None,
    /// k8s.io/component-base and client-go version variables, both set so
    /// servers and kubectl report the same thing.
    Kubernetes,
    Crictl,
    Helm,
    Flannel,
}

pub fn all() -> Vec<Component> {
    vec![
        Component {
            name: "containerd",
            recipe: Recipe::Debian {
                package: "containerd",
                files: &[
                    ("usr/bin/containerd", "bin/containerd"),
                    (
                        "usr/bin/containerd-shim-runc-v2",
                        "bin/containerd-shim-runc-v2",
                    ),
                    ("usr/bin/ctr", "bin/ctr"),
                ],
            },
        },
        Component {
            name: "runc",
            recipe: Recipe::Debian {
                package: "runc",
                files: &[("usr/sbin/runc", "bin/runc")],
            },
        },
        Component {
            name: "cni-plugins",
            recipe: Recipe::Debian {
                package: "containernetworking-plugins",
                files: &[
                    ("usr/lib/cni/bridge", "cni/bridge"),
                    ("usr/lib/cni/host-local", "cni/host-local"),
                    ("usr/lib/cni/loopback", "cni/loopback"),
                    ("usr/lib/cni/portmap", "cni/portmap"),
                ],
            },
        },
        Component {
            name: "pause",
            recipe: Recipe::Pause,
        },
        Component {
            name: "etcd",
            recipe: Recipe::Go {
                dir: "etcd",
                targets: &[
                    GoTarget {
                        module: "go.etcd.io/etcd/server/v3",
                        package: ".",
                        out: "bin/etcd",
                        tags: &[],
                        stamp: Stamp::None,
                    },
                    GoTarget {
                        module: "go.etcd.io/etcd/etcdctl/v3",
                        package: "go.etcd.io/etcd/etcdctl/v3",
                        out: "bin/etcdctl",
                        tags: &[],
                        stamp: Stamp::None,
                    },
                ],
            },
        },
        Component {
            name: "crictl",
            recipe: Recipe::Go {
                dir: "crictl",
                targets: &[GoTarget {
                    module: "sigs.k8s.io/cri-tools",
                    package: "sigs.k8s.io/cri-tools/cmd/crictl",
                    out: "bin/crictl",
                    tags: &[],
                    stamp: Stamp::Crictl,
                }],
            },
        },
        Component {
            name: "helm",
            recipe: Recipe::Go {
                dir: "helm",
                targets: &[GoTarget {
                    module: "helm.sh/helm/v3",
                    package: "helm.sh/helm/v3/cmd/helm",
                    out: "bin/helm",
                    tags: &[],
                    stamp: Stamp::Helm,
                }],
            },
        },
        Component {
            name: "flannel",
            recipe: Recipe::Go {
                dir: "flannel",
                targets: &[GoTarget {
                    module: "github.com/flannel-io/flannel",
                    package: ".",
                    out: "bin/flanneld",
                    tags: &[],
                    stamp: Stamp::Flannel,
                }],
            },
        },
        Component {
            name: "testimage",
            recipe: Recipe::TestImage,
        },
        Component {
            name: "coredns",
            recipe: Recipe::CoreDns,
        },
        Component {
            name: "kubernetes",
            recipe: Recipe::Go {
                dir: "kubernetes",
                targets: &[
                    GoTarget {
                        module: "k8s.io/kubernetes",
                        package: ".",
                        out: "bin/hyperkube",
                        // Leaves out the in-tree cloud providers kubeup never uses.
                        tags: &["providerless"],
                        stamp: Stamp::Kubernetes,
                    },
                    // What a worker runs, from the same packages (the Go
                    // cache makes this one a link, not a second build).
                    GoTarget {
                        module: "k8s.io/kubernetes",
                        package: ".",
                        out: "bin/kubenode",
                        tags: &["providerless", "nodeonly"],
                        stamp: Stamp::Kubernetes,
                    },
                ],
            },
        },
    ]
}

impl Component {
    /// Bundle paths of the regular files this component produces.
    pub fn outputs(&self) -> Vec<&'static str> {
        match &self.recipe {
            Recipe::Go { targets, .. } => targets.iter().map(|t| t.out).collect(),
            Recipe::Debian { files, .. } => files.iter().map(|(_, out)| *out).collect(),
            Recipe::Pause => vec!["images/pause.tar"],
            Recipe::TestImage => vec![addons::TEST_IMAGE_FILE],
            Recipe::CoreDns => vec![addons::COREDNS_IMAGE_FILE],
        }
    }

    /// A digest of everything the output depends on that lives in this repo
    /// (the recipe itself, go.mod/go.sum/main.go, the image writer), so a
    /// changed recipe rebuilds even when the old files are intact.
    pub fn recipe_digest(&self, ctx: &Ctx) -> Result<String> {
        let mut h = Sha256::new();
        h.update(self.name);
        h.update(ctx.kubernetes_version.as_bytes());
        match &self.recipe {
            Recipe::Go { dir, targets } => {
                h.update(format!("{targets:?}"));
                hash_dir(&mut h, &ctx.recipes.join(dir))?;
            }
            Recipe::Debian { package, files } => h.update(format!("{package} {files:?}")),
            Recipe::Pause => {
                h.update(PAUSE_IMAGE);
                hash_dir(&mut h, &ctx.recipes.join("pause"))?;
                h.update(include_str!("../oci.rs"));
            }
            Recipe::CoreDns => {
                h.update(addons::COREDNS_IMAGE);
                hash_dir(&mut h, &ctx.recipes.join("coredns"))?;
                h.update(include_str!("addons.rs"));
                h.update(include_str!("../oci.rs"));
            }
            Recipe::TestImage => {
                h.update(addons::TEST_IMAGE);
                hash_dir(&mut h, &ctx.recipes.join("testimage"))?;
                h.update(include_str!("addons.rs"));
                h.update(include_str!("../oci.rs"));
            }
        }
        Ok(hex::encode(h.finalize()))
    }

    /// Build into `staging` (same layout as the bundle) and describe each
    /// output; `recipe` is left for the caller to fill in.
    pub fn build(&self, ctx: &Ctx, staging: &Path) -> Result<Vec<(String, BundleFile)>> {
        match &self.recipe {
            Recipe::Go { dir, targets } => build_go(ctx, dir, targets, staging),
            Recipe::Debian { package, files } => build_debian(package, files, staging),
            Recipe::Pause => build_pause(ctx, staging),
            Recipe::TestImage => addons::build_test_image(ctx, staging),
            Recipe::CoreDns => addons::build_coredns_image(ctx, staging),
        }
    }
}

fn build_go(
    ctx: &Ctx,
    dir: &str,
    targets: &[GoTarget],
    staging: &Path,
) -> Result<Vec<(String, BundleFile)>> {
    let dir = ctx.recipes.join(dir);
    let mut built = Vec::new();
    for t in targets {
        let (version, released) = go::module_version(&ctx.cache_root, &dir, t.module)?;
        if t.module == "k8s.io/kubernetes" && version != ctx.kubernetes_version {
            bail!(
                "{} requires k8s.io/kubernetes {version}, but the bundle is for {}; update go.mod",
                dir.display(),
                ctx.kubernetes_version
            );
        }
        let out = staging.join(t.out);
        std::fs::create_dir_all(out.parent().unwrap())?;
        let build = go::Build {
            package: t.package,
            tags: t.tags,
            xflags: stamp(&t.stamp, &version, &released)?,
            out: out.clone(),
        };
        go::build(&ctx.cache_root, &dir, &build)?;
        built.push((
            t.out.to_owned(),
            describe(&out, &version, format!("go:{}@{version}", t.module), true)?,
        ));
    }
    Ok(built)
}

fn stamp(stamp: &Stamp, version: &str, released: &str) -> Result<Vec<String>> {
    Ok(match stamp {
        Stamp::None => vec![],
        Stamp::Kubernetes => {
            let mut parts = version.trim_start_matches('v').split('.');
            let (Some(major), Some(minor)) = (parts.next(), parts.next()) else {
                bail!("cannot split Kubernetes version {version:?} into major.minor");
            };
            let mut x = Vec::new();
            for pkg in [
                "k8s.io/component-base/version",
                "k8s.io/client-go/pkg/version",
            ] {
                x.push(format!("{pkg}.gitVersion={version}"));
                x.push(format!("{pkg}.gitMajor={major}"));
                x.push(format!("{pkg}.gitMinor={minor}"));
                x.push(format!("{pkg}.gitTreeState=clean"));
                // The tag's time from the module proxy, not now: the same
                // recipe gives the same bytes.
                x.push(format!("{pkg}.buildDate={released}"));
            }
            x
        }
        Stamp::Crictl => vec![format!(
            "sigs.k8s.io/cri-tools/pkg/version.Version={version}"
        )],
        Stamp::Helm => vec![
            format!("helm.sh/helm/v3/internal/version.version={version}"),
            "helm.sh/helm/v3/internal/version.gitTreeState=clean".into(),
        ],
        Stamp::Flannel => addons::flannel_stamp(version),
    })
}

fn build_debian(
    package: &str,
    files: &[(&str, &str)],
    staging: &Path,
) -> Result<Vec<(String, BundleFile)>> {
    let unpacked = debian::fetch(package, &staging.join(".deb"))?;
    let mut built = Vec::new();
    for (from, to) in files {
        let src = unpacked.root.join(from);
        let dest = staging.join(to);
        std::fs::create_dir_all(dest.parent().unwrap())?;
        std::fs::copy(&src, &dest)
            .with_context(|| format!("{package} has no {from} (package layout changed?)"))?;
        let source = format!("debian:{package}={}", unpacked.version);
        built.push((
            (*to).to_owned(),
            describe(&dest, &unpacked.version, source, true)?,
        ));
    }
    std::fs::remove_dir_all(staging.join(".deb"))?;
    Ok(built)
}

fn build_pause(ctx: &Ctx, staging: &Path) -> Result<Vec<(String, BundleFile)>> {
    let dir = ctx.recipes.join("pause");
    let binary = staging.join(".pause");
    let build = go::Build {
        package: ".",
        tags: &[],
        xflags: vec![],
        out: binary.clone(),
    };
    go::build(&ctx.cache_root, &dir, &build)?;
    let out = staging.join("images/pause.tar");
    std::fs::create_dir_all(out.parent().unwrap())?;
    let spec = oci::ImageSpec {
        name: PAUSE_IMAGE.into(),
        files: vec![oci::ImageFile {
            path: "/pause".into(),
            content: oci::Content::Path(binary.clone()),
            mode: 0o755,
        }],
        entrypoint: vec!["/pause".into()],
        env: vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()],
        // Upstream's pause image runs as 65535 too: nothing in a sandbox
        // needs root.
        user: "65535:65535".into(),
    };
    oci::write_image_archive(&spec, &out)?;
    std::fs::remove_file(binary)?;
    let mut file = describe(
        &out,
        PAUSE_VERSION,
        "kubeup:hack/bundle/pause".into(),
        false,
    )?;
    file.image = Some(PAUSE_IMAGE.into());
    Ok(vec![("images/pause.tar".into(), file)])
}

pub(super) fn describe(
    path: &Path,
    version: &str,
    source: String,
    executable: bool,
) -> Result<BundleFile> {
    let (size, sha256) =
        sha256_file(path).with_context(|| format!("failed to hash {}", path.display()))?;
    Ok(BundleFile {
        version: version.to_owned(),
        sha256,
        size,
        source,
        executable,
        image: None,
        recipe: None,
    })
}

/// Hash the names and contents of the regular files directly in `dir`.
fn hash_dir(h: &mut Sha256, dir: &Path) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("failed to read recipe directory {}", dir.display()))?
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.path())
        .collect();
    entries.sort();
    for path in entries {
        h.update(path.file_name().unwrap().as_encoded_bytes());
        h.update(std::fs::read(&path)?);
    }
    Ok(())
}
