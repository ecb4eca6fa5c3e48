//! The cluster add-ons of `spec.addons`: persistent volumes (rancher's
//! local-path-provisioner) and ingress (Traefik v3). Their images are built
//! by `cargo xtask bundle` from the Go modules in hack/bundle/ and imported
//! on the nodes (no registry); `kubeup up` applies their manifests
//! (deploy/addons/local-path.yaml, deploy/addons/traefik.yaml).
//!
//! Where the images must be: local-path's on every node (its helper pods
//! make and remove volume directories on the node a volume lives on; its
//! provisioner runs on the controller); Traefik's on every worker (its
//! DaemonSet) and on a controller only when labelled for it, which
//! [`images_for`] leaves to the bundle's "controller has everything".

use std::collections::BTreeMap;

use kubeup_crds::cluster::{Addons, Ingress, Storage, TraefikSettings};

use crate::artifacts::BundleManifest;
use crate::config::Problem;
use crate::hostplan::layout;

/// local-path-provisioner and Debian's busybox-static (the helpers' shell).
pub const LOCAL_PATH_IMAGE: &str = "kubeup.dev/local-path-provisioner:v0.0.30";
/// Bundle path of [`LOCAL_PATH_IMAGE`].
pub const LOCAL_PATH_IMAGE_FILE: &str = "images/local-path-provisioner.tar";
/// Traefik v3, one static binary.
pub const TRAEFIK_IMAGE: &str = "kubeup.dev/traefik:v3.6.12";
/// Bundle path of [`TRAEFIK_IMAGE`].
pub const TRAEFIK_IMAGE_FILE: &str = "images/traefik.tar";
/// The default StorageClass (reclaim Delete).
pub const STORAGE_CLASS: &str = "local-path";
/// The StorageClass whose volumes outlive their PVC and `kubeup reset`
/// (reclaim Retain), in `<dir>/retained`.
pub const RETAIN_STORAGE_CLASS: &str = "local-path-retain";
/// Subdirectory of `addons.localPath.dir` for [`RETAIN_STORAGE_CLASS`].
pub const RETAINED_SUBDIR: &str = "retained";
/// The default IngressClass Traefik serves.
pub const INGRESS_CLASS: &str = "traefik";

/// On each node, one file per Delete-class volume holding its directory,
/// written by local-path's setup helper and removed by its teardown:
/// `reset` removes the directories still listed (the node cannot ask the
/// API which volumes exist, and the data directory is configurable).
pub fn volume_record_dir() -> String {
    format!("{}/local-path-volumes", layout::STATE)
}

const LOCAL_PATH: &str = include_str!("../../deploy/addons/local-path.yaml");
const TRAEFIK: &str = include_str!("../../deploy/addons/traefik.yaml");

/// What `kubeup up` applies for `spec.addons` (empty when both are `none`).
pub fn manifests(addons: &Addons) -> String {
    let mut docs = vec![];
    if addons.storage == Storage::LocalPath {
        docs.push(local_path_manifest(
            LOCAL_PATH_IMAGE,
            &addons.local_path.dir,
        ));
    }
    if addons.ingress == Ingress::Traefik {
        docs.push(traefik_manifest(TRAEFIK_IMAGE, &addons.traefik));
    }
    docs.join("---\n")
}

/// deploy/addons/local-path.yaml with its placeholders filled in.
pub fn local_path_manifest(image: &str, dir: &str) -> String {
    LOCAL_PATH
        .replace("${IMAGE}", image)
        .replace("${DIR}", dir.trim_end_matches('/'))
        .replace("${RECORD}", &volume_record_dir())
}

/// deploy/addons/traefik.yaml with its placeholders filled in. The node
/// selector and affinity are JSON flow maps (valid YAML, and quoting every
/// label value keeps `true` or `1` strings).
pub fn traefik_manifest(image: &str, t: &TraefikSettings) -> String {
    let selector = json_map(&t.node_selector);
    let affinity = if t.node_selector.is_empty() {
        // Every node but the controllers (they carry this label).
        r#"{"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [{"key": "node-role.kubernetes.io/control-plane", "operator": "DoesNotExist"}]}]}}}"#
            .to_string()
    } else {
        "{}".to_string()
    };
    // The dashboard and API on the `traefik` entry point (port 9000 of the
    // pod, never a host port): `kubectl port-forward` reaches it.
    let extra = if t.dashboard {
        "\n        - --api.dashboard=true\n        - --api.insecure=true"
    } else {
        ""
    };
    TRAEFIK
        .replace("${IMAGE}", image)
        .replace("${NODE_SELECTOR}", &selector)
        .replace("${AFFINITY}", &affinity)
        .replace("${EXTRA_ARGS}", extra)
}

fn json_map(m: &BTreeMap<String, String>) -> String {
    serde_json::to_string(m).unwrap_or_else(|_| "{}".into())
}

/// The bundle's add-on image files a cluster with `addons` never runs.
pub fn unused_image_files(addons: &Addons) -> Vec<&'static str> {
    let mut unused = vec![];
    if addons.storage == Storage::None {
        unused.push(LOCAL_PATH_IMAGE_FILE);
    }
    if addons.ingress == Ingress::None {
        unused.push(TRAEFIK_IMAGE_FILE);
    }
    unused
}

/// `manifest` without the images of add-ons `addons` turns off: what a
/// node of that cluster needs to be sent and to import.
pub fn images_for(manifest: &BundleManifest, addons: &Addons) -> BundleManifest {
    let unused = unused_image_files(addons);
    let mut m = manifest.clone();
    m.files.retain(|name, _| !unused.contains(&name.as_str()));
    m
}

/// The images a controller imports into its own containerd: those of
/// [`images_for`] without Traefik's, unless `addons.traefik.nodeSelector`
/// may pick a controller (by default Traefik runs on every node but the
/// controllers). Its tar stays in the controller's bundle: the operator
/// sends it to the workers from there. The largest image, so the shortest
/// `up`.
pub fn controller_images(manifest: &BundleManifest, addons: &Addons) -> BundleManifest {
    let mut m = images_for(manifest, addons);
    if addons.traefik.node_selector.is_empty() {
        m.files.retain(|name, _| name != TRAEFIK_IMAGE_FILE);
    }
    m
}

/// Directories a volume directory may never be in (or be): the system's,
/// and kubeup's and the node components' own, which `reset` removes whole.
const FORBIDDEN_DIRS: [&str; 16] = [
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/lib",
    "/proc",
    "/run",
    "/sbin",
    "/sys",
    "/usr",
    "/opt/kubeup",
    "/var/lib/kubeup",
    "/var/lib/kubelet",
    "/var/lib/containerd",
    "/var/lib/etcd",
    "/var/lib/cni",
];

/// Problems of `spec.addons` the schema cannot express.
pub fn validate(addons: &Addons) -> Vec<Problem> {
    let mut p = vec![];
    if addons.storage == Storage::LocalPath {
        check_dir(&mut p, &addons.local_path.dir);
    }
    for (key, value) in &addons.traefik.node_selector {
        let path = format!("spec.addons.traefik.nodeSelector.{key}");
        if let Err(why) = kubeup_crds::validation::qualified_name(key) {
            p.push(Problem::new(
                path.clone(),
                why,
                "use a Kubernetes label key, e.g. `ingress`",
            ));
        }
        if let Err(why) = kubeup_crds::validation::label_value(value) {
            p.push(Problem::new(
                path,
                why,
                "use a Kubernetes label value, e.g. \"true\"",
            ));
        }
    }
    p
}

fn check_dir(p: &mut Vec<Problem>, dir: &str) {
    let path = "spec.addons.localPath.dir";
    let plain = dir.starts_with('/')
        && dir.len() > 1
        && !dir.ends_with('/')
        && dir
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._/-".contains(&b))
        && dir
            .split('/')
            .skip(1)
            .all(|c| !c.is_empty() && c != "." && c != "..");
    if !plain {
        p.push(Problem::new(
            path,
            format!("{dir:?} is not a plain absolute directory"),
            "use an absolute path of letters, digits, '.', '_', '-' and '/', no `..`, no trailing '/', e.g. /var/lib/local-path-provisioner",
        ));
        return;
    }
    let inside = |d: &str| dir == d || dir.starts_with(&format!("{d}/"));
    if let Some(d) = FORBIDDEN_DIRS.iter().find(|d| inside(d)) {
        p.push(Problem::new(
            path,
            format!("{dir} is inside {d}"),
            "keep volumes out of system directories and out of what kubeup and the node components own (reset removes those whole); e.g. /var/lib/local-path-provisioner",
        ));
    }
}

/// Part of `reset`: remove the Delete-class volumes the node's record
/// lists (under `root`, "" on a real host), each only when its path is a
/// local-path volume directory (`…/pvc-…`) outside `retained/`, and the
/// directory that held them once empty. Appends to `$removed`.
pub(crate) fn reset_volumes_script() -> String {
    format!(
        r#"for f in "$R"{record}/*; do
  [ -f "$f" ] || continue
  v=$(head -n 1 "$f")
  case "$v" in /*/pvc-*) ;; *) continue;; esac
  case "$v" in *..*|*/{retained}/*) continue;; esac
  if [ -e "$R$v" ]; then rm -rf -- "$R$v" && removed="$removed $v"; fi
  rmdir -- "$(dirname "$R$v")" 2>/dev/null
done
"#,
        record = volume_record_dir(),
        retained = RETAINED_SUBDIR,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn docs(yaml: &str) -> Vec<serde_yaml_ng::Value> {
        use serde::Deserialize;
        serde_yaml_ng::Deserializer::from_str(yaml)
            .map(|d| serde_yaml_ng::Value::deserialize(d).expect("valid YAML"))
            .filter(|v| !v.is_null())
            .collect()
    }

    fn no_placeholder_left(y: &str) {
        assert!(
            !y.lines()
                .any(|l| !l.trim_start().starts_with('#') && l.contains("${")),
            "{y}"
        );
    }

    #[test]
    fn both_addons_are_on_by_default() {
        let a = Addons::default();
        assert_eq!(a.storage, Storage::LocalPath);
        assert_eq!(a.ingress, Ingress::Traefik);
        let y = manifests(&a);
        no_placeholder_left(&y);
        let kinds: Vec<String> = docs(&y)
            .iter()
            .map(|d| d["kind"].as_str().unwrap_or_default().to_string())
            .collect();
        for k in ["StorageClass", "Deployment", "DaemonSet", "IngressClass"] {
            assert!(kinds.iter().any(|x| x == k), "{k} missing: {kinds:?}");
        }
        assert!(unused_image_files(&a).is_empty());
    }

    #[test]
    fn none_installs_neither() {
        let a = Addons {
            storage: Storage::None,
            ingress: Ingress::None,
            ..Default::default()
        };
        assert_eq!(manifests(&a), "");
        assert_eq!(
            unused_image_files(&a),
            vec![LOCAL_PATH_IMAGE_FILE, TRAEFIK_IMAGE_FILE]
        );
    }

    #[test]
    fn the_default_storage_class_binds_on_first_consumer_and_deletes() {
        let y = local_path_manifest(LOCAL_PATH_IMAGE, "/data/vols/");
        no_placeholder_left(&y);
        let d = docs(&y);
        let class = |name: &str| {
            d.iter()
                .find(|x| x["kind"] == "StorageClass" && x["metadata"]["name"] == name)
                .expect("the class")
                .clone()
        };
        let default = class(STORAGE_CLASS);
        assert_eq!(default["volumeBindingMode"], "WaitForFirstConsumer");
        assert_eq!(default["reclaimPolicy"], "Delete");
        assert_eq!(
            default["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"],
            "true"
        );
        let retain = class(RETAIN_STORAGE_CLASS);
        assert_eq!(retain["reclaimPolicy"], "Retain");
        assert!(
            retain["metadata"]["annotations"].is_null(),
            "one default class"
        );
        let cm = d.iter().find(|x| x["kind"] == "ConfigMap").expect("config");
        let config: serde_json::Value =
            serde_json::from_str(cm["data"]["config.json"].as_str().unwrap_or_default())
                .expect("config.json is JSON");
        assert_eq!(
            config["storageClassConfigs"][STORAGE_CLASS]["nodePathMap"][0]["paths"][0],
            "/data/vols"
        );
        assert_eq!(
            config["storageClassConfigs"][RETAIN_STORAGE_CLASS]["nodePathMap"][0]["paths"][0],
            "/data/vols/retained"
        );
        let helper = cm["data"]["helperPod.yaml"].as_str().unwrap_or_default();
        assert!(helper.contains(&format!("image: {LOCAL_PATH_IMAGE}\n")));
        assert!(helper.contains("imagePullPolicy: Never"));
        let setup = cm["data"]["setup"].as_str().unwrap_or_default();
        assert!(setup.contains(&volume_record_dir()), "{setup}");
    }

    #[test]
    fn traefik_runs_on_workers_unless_told_where() {
        let y = traefik_manifest(TRAEFIK_IMAGE, &TraefikSettings::default());
        no_placeholder_left(&y);
        let d = docs(&y);
        let ds = d
            .iter()
            .find(|x| x["kind"] == "DaemonSet")
            .expect("DaemonSet");
        let pod = &ds["spec"]["template"]["spec"];
        let term = &pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            ["nodeSelectorTerms"][0]["matchExpressions"][0];
        assert_eq!(term["key"], "node-role.kubernetes.io/control-plane");
        assert_eq!(term["operator"], "DoesNotExist");
        let ports = &pod["containers"][0]["ports"];
        assert_eq!(ports[0]["hostPort"], 80);
        assert_eq!(ports[1]["hostPort"], 443);
        assert!(ports[2]["hostPort"].is_null(), "no host port for 9000");
        let args = pod["containers"][0]["args"]
            .as_sequence()
            .expect("args")
            .iter()
            .filter_map(|a| a.as_str())
            .collect::<Vec<_>>();
        assert!(!args.iter().any(|a| a.starts_with("--api")), "{args:?}");
        assert!(args.contains(&"--global.sendAnonymousUsage=false"));
        assert!(args.contains(&"--global.checkNewVersion=false"));
        let class = d
            .iter()
            .find(|x| x["kind"] == "IngressClass")
            .expect("class");
        assert_eq!(class["metadata"]["name"], INGRESS_CLASS);
        assert_eq!(
            class["metadata"]["annotations"]["ingressclass.kubernetes.io/is-default-class"],
            "true"
        );

        let labelled = TraefikSettings {
            node_selector: BTreeMap::from([("ingress".into(), "true".into())]),
            dashboard: true,
        };
        let y = traefik_manifest(TRAEFIK_IMAGE, &labelled);
        let d = docs(&y);
        let ds = d
            .iter()
            .find(|x| x["kind"] == "DaemonSet")
            .expect("DaemonSet");
        let pod = &ds["spec"]["template"]["spec"];
        assert_eq!(pod["nodeSelector"]["ingress"], "true", "a string");
        assert!(pod["affinity"]["nodeAffinity"].is_null());
        let args = format!("{:?}", pod["containers"][0]["args"]);
        assert!(args.contains("--api.dashboard=true"), "{args}");
    }

    #[test]
    fn dirs_are_plain_and_outside_what_reset_removes() {
        let bad = |dir: &str| {
            let a = Addons {
                local_path: kubeup_crds::cluster::LocalPathSettings { dir: dir.into() },
                ..Default::default()
            };
            !validate(&a).is_empty()
        };
        assert!(!bad("/var/lib/local-path-provisioner"));
        assert!(!bad("/data/volumes"));
        for d in [
            "relative",
            "/",
            "/data/",
            "/data/../etc",
            "/data//x",
            "/da ta",
            "/data/$(x)",
            "/etc/vols",
            "/var/lib/kubelet/vols",
            "/var/lib/kubeup",
            "/opt/kubeup/x",
        ] {
            assert!(bad(d), "{d} accepted");
        }
        // Storage off: the directory is not used, so not checked.
        let off = Addons {
            storage: Storage::None,
            local_path: kubeup_crds::cluster::LocalPathSettings { dir: "/etc".into() },
            ..Default::default()
        };
        assert!(validate(&off).is_empty());
        let selector = Addons {
            traefik: TraefikSettings {
                node_selector: BTreeMap::from([("bad key!".into(), "x y".into())]),
                dashboard: false,
            },
            ..Default::default()
        };
        assert_eq!(validate(&selector).len(), 2);
    }

    #[test]
    fn reset_removes_recorded_volumes_but_not_retained_ones() {
        let root = tempfile::tempdir().expect("tmp");
        let r = root.path().to_string_lossy().to_string();
        let record = format!("{r}{}", volume_record_dir());
        std::fs::create_dir_all(&record).expect("record");
        let vols = format!("{r}/data/vols");
        for v in ["pvc-1_default_a", "retained/pvc-2_default_b"] {
            std::fs::create_dir_all(format!("{vols}/{v}")).expect("vol");
            std::fs::write(format!("{vols}/{v}/file"), "x").expect("file");
        }
        std::fs::write(format!("{record}/pvc-1"), "/data/vols/pvc-1_default_a\n").expect("rec");
        // Never followed: not a volume directory, or a retained one.
        std::fs::write(format!("{record}/evil"), "/data\n").expect("rec");
        std::fs::write(
            format!("{record}/ret"),
            "/data/vols/retained/pvc-2_default_b\n",
        )
        .expect("rec");
        std::fs::write(format!("{record}/dots"), "/data/vols/pvc-1/../../x\n").expect("rec");
        let script = format!(
            "set -u\nR={r}\nremoved=\"\"\n{}echo $removed\n",
            reset_volumes_script()
        );
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(&script)
            .output()
            .expect("sh");
        assert!(out.status.success(), "{out:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "/data/vols/pvc-1_default_a"
        );
        assert!(!std::path::Path::new(&format!("{vols}/pvc-1_default_a")).exists());
        assert!(std::path::Path::new(&format!("{vols}/retained/pvc-2_default_b/file")).exists());
        assert!(std::path::Path::new(&format!("{r}/data")).exists());
    }

    #[test]
    fn images_of_disabled_addons_are_left_out() {
        let mut m = BundleManifest::new("v1.34.10");
        for f in [
            LOCAL_PATH_IMAGE_FILE,
            TRAEFIK_IMAGE_FILE,
            "images/pause.tar",
        ] {
            m.files.insert(
                f.into(),
                crate::artifacts::BundleFile {
                    version: String::new(),
                    sha256: String::new(),
                    size: 0,
                    source: String::new(),
                    executable: false,
                    image: Some(f.into()),
                    recipe: None,
                },
            );
        }
        let a = Addons {
            ingress: Ingress::None,
            ..Default::default()
        };
        let w = images_for(&m, &a);
        assert!(w.files.contains_key(LOCAL_PATH_IMAGE_FILE));
        assert!(!w.files.contains_key(TRAEFIK_IMAGE_FILE));
        assert!(w.files.contains_key("images/pause.tar"));
        // A controller imports Traefik only when its nodeSelector may pick
        // one; workers get it either way.
        let mut a = Addons::default();
        assert!(images_for(&m, &a).files.contains_key(TRAEFIK_IMAGE_FILE));
        assert!(
            !controller_images(&m, &a)
                .files
                .contains_key(TRAEFIK_IMAGE_FILE)
        );
        a.traefik
            .node_selector
            .insert("ingress".into(), "true".into());
        assert!(
            controller_images(&m, &a)
                .files
                .contains_key(TRAEFIK_IMAGE_FILE)
        );
    }
}
