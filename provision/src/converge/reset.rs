//! Undo what kubeup installed on a host, and nothing else: units stopped
//! and disabled, every file of the installed list removed, the directories
//! kubeup claimed in that list removed (component data whole, configuration
//! directories only once empty), kubeup's own trees, kube-proxy's iptables
//! rules and the CNI links. Tolerates a host where `up` never ran or half
//! ran.
//!
//! The installed list (`layout::INSTALLED_LIST`) holds one path a line:
//! files, and directories kubeup claimed, which end in `/`. A directory is
//! claimed (see [`claim_script`]) when kubeup's files went in first: it did
//! not exist yet, or held nothing but listed files, when the list was
//! recorded; a claim, once made, is kept. A directory the user had before
//! is never claimed, so a file the user put next to kubeup's survives.
//! A list written before claims existed (files only) claims the data
//! directories of the units it lists: kubeup installed those components,
//! so their data is its own.

use super::{ConvergeError, ssh_err};
use crate::hostplan::{Unit, layout};
use crate::ssh::{Command, Session, quote};

/// Data directories of each unit: filled by the component itself, removed
/// whole when claimed.
const UNIT_DATA: [(&str, &[&str]); 4] = [
    ("etcd", &["/var/lib/etcd"]),
    // CNI plugins the kubelet runs keep their IPAM state in /var/lib/cni.
    ("kubelet", &["/var/lib/kubelet", "/var/lib/cni"]),
    ("containerd", &["/var/lib/containerd", "/run/containerd"]),
    ("flanneld", &["/run/flannel"]),
];

/// Trees that hold only the cluster's configuration and certificates:
/// removed whole when claimed.
const CONFIG_TREES: [&str; 1] = [layout::K8S];

/// Shared configuration directories kubeup writes into: removed, when
/// claimed, only once empty (after kubeup's own files went).
const SHARED_DIRS: [&str; 3] = ["/etc/cni/net.d", "/etc/cni", "/etc/containerd"];

/// kubeup's own trees (the bundle, its state): always removed.
const OWN_TREES: [&str; 2] = [layout::OPT, layout::STATE];

/// Whether `path` lies under the directory `dir`.
fn is_under(path: &str, dir: &str) -> bool {
    path.strip_prefix(dir)
        .is_some_and(|rest| rest.starts_with('/'))
}

/// The directories kubeup may claim for these installed files: the data
/// directories of the units whose unit files are among them, and the
/// configuration directories the files are in.
pub(crate) fn claim_candidates(files: &[&str]) -> Vec<&'static str> {
    let mut dirs = vec![];
    for (unit, data) in UNIT_DATA {
        let unit_file = format!("{}/{unit}.service", layout::SYSTEMD);
        if files.contains(&unit_file.as_str()) {
            dirs.extend_from_slice(data);
        }
    }
    for dir in CONFIG_TREES.iter().chain(&SHARED_DIRS) {
        if files.iter().any(|f| is_under(f, dir)) {
            dirs.push(dir);
        }
    }
    dirs
}

/// Removed whole when claimed (the rest of the claims only when empty).
fn removed_whole() -> Vec<&'static str> {
    let mut dirs: Vec<&str> = UNIT_DATA
        .iter()
        .flat_map(|(_, d)| d.iter().copied())
        .collect();
    dirs.extend_from_slice(&CONFIG_TREES);
    dirs
}

/// A read-only script printing `DIR/` for each of `candidates` kubeup may
/// claim: claimed before, absent, or holding nothing but the listed files
/// (fed on stdin, one a line; kubeup's temp files of writes in flight do
/// not count), or a data directory when the host's list predates claims.
/// Every path is under `root` ("" on a real host; tests use a temporary
/// directory).
pub(crate) fn claim_script(
    root: &str,
    candidates: &[&str],
) -> Result<String, crate::ssh::SshError> {
    let dirs = candidates
        .iter()
        .map(|d| quote(d))
        .collect::<Result<Vec<_>, _>>()?
        .join(" ");
    Ok(format!(
        r#"set -u
R={root}
listed=$(mktemp); trap 'rm -f -- "$listed"' EXIT
sed "s|^|$R|" > "$listed"
prev=$(grep '/$' "$R"{list} 2>/dev/null || true)
legacy=no
if [ -s "$R"{list} ] && [ -z "$prev" ]; then legacy=yes; fi
for d in {dirs}; do
  p="$R$d"
  case " {whole} " in *" $d "*) data=yes;; *) data=no;; esac
  if printf '%s\n' "$prev" | grep -qxF -- "$d/"; then echo "$d/"
  elif [ ! -e "$p" ] && [ ! -L "$p" ]; then echo "$d/"
  elif [ "$legacy" = yes ] && [ "$data" = yes ]; then echo "$d/"
  elif [ -d "$p" ] && [ ! -L "$p" ] && [ -z "$(find "$p" ! -type d ! -name '.*.kubeup-*' | grep -vxF -f "$listed")" ]; then echo "$d/"
  fi
done
"#,
        root = quote(root)?,
        list = layout::INSTALLED_LIST,
        whole = removed_whole().join(" "),
    ))
}

/// Remove what the installed list names, under `root`: its files, then its
/// claimed directories deepest first (data and configuration trees whole,
/// shared directories only when empty), then kubeup's own trees. Prints
/// what it removed.
fn removal_script(root: &str) -> Result<String, crate::ssh::SshError> {
    Ok(format!(
        r#"set -u
R={root}
list="$R"{list}
removed=""
if [ -f "$list" ]; then
  while IFS= read -r f; do
    case "$f" in ""|*/) continue;; esac
    if [ -e "$R$f" ] || [ -L "$R$f" ]; then rm -f -- "$R$f" && removed="$removed $f"; fi
  done < "$list"
  for d in $(grep '/$' "$list" | sed 's|/$||' | sort -r); do
    p="$R$d"
    [ -d "$p" ] && [ ! -L "$p" ] || continue
    case " {whole} " in
      *" $d "*)
        if mountpoint -q "$p"; then find "$p" -mindepth 1 -delete 2>/dev/null; else rm -rf -- "$p"; fi
        removed="$removed $d";;
      *) rmdir -- "$p" 2>/dev/null && removed="$removed $d";;
    esac
  done
fi
{volumes}for d in {own}; do
  if [ -d "$R$d" ]; then rm -rf -- "$R$d" && removed="$removed $d"; fi
done
echo $removed
"#,
        root = quote(root)?,
        list = layout::INSTALLED_LIST,
        whole = removed_whole().join(" "),
        // local-path volumes, from the record in kubeup's state (removed
        // next): before it goes.
        volumes = crate::addons::reset_volumes_script(),
        own = OWN_TREES.join(" "),
    ))
}

/// Stop and disable every kubeup unit, end the containers' shims, unmount
/// what the kubelet and containerd mounted.
fn stop_script() -> String {
    let units: Vec<String> = Unit::STOP_ORDER.iter().map(|u| u.service()).collect();
    let units = units.join(" ");
    format!(
        r#"systemctl stop {units} 2>/dev/null
systemctl disable --quiet {units} 2>/dev/null
# Containers outlive containerd (KillMode=process): end their shims too.
pkill -TERM -x containerd-shim 2>/dev/null; sleep 0.2; pkill -KILL -x containerd-shim 2>/dev/null
for m in $(awk '$2 ~ "^/var/lib/kubelet/|^/run/containerd/|^/var/lib/containerd/" {{print $2}}' /proc/mounts | sort -r); do umount -l "$m" 2>/dev/null; done
# A unit or mount already gone is not an error: this step only makes sure.
true
"#
    )
}

/// kube-proxy's and flannel's iptables rules, kubeup's bridge and the pod
/// ends attached to it (not every veth of the host: other software makes
/// them too), the pods' slice.
const NETWORK_SCRIPT: &str = r#"if command -v iptables-save >/dev/null; then
  for t in iptables ip6tables; do
    $t-save 2>/dev/null | grep -v -e KUBE- -e CNI- -e FLANNEL- -e 'kubernetes' | $t-restore 2>/dev/null
  done
fi
ip -o link show master cni0 type veth 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1 | while read -r v; do ip link del "$v" 2>/dev/null; done
for l in cni0 flannel.1 kube-ipvs0; do ip link del "$l" 2>/dev/null; done
systemctl stop kubepods.slice 2>/dev/null
systemctl daemon-reload
systemctl reset-failed 2>/dev/null
true
"#;

/// Reset the host; returns the paths removed. The steps in order (each
/// tolerates a host where `up` never ran or half ran); flows that show
/// progress per step walk them as phases ([`super::reset_phases`]).
pub async fn reset_host(session: &Session) -> Result<Vec<String>, ConvergeError> {
    stop_units(session).await?;
    let removed = remove_installed(session).await?;
    clean_network(session).await?;
    Ok(removed)
}

/// Stop and disable kubeup's units, end the containers, unmount their mounts.
pub async fn stop_units(session: &Session) -> Result<(), ConvergeError> {
    run_step(session, stop_script()).await.map(drop)
}

/// Remove what the installed list names and kubeup's own trees; the paths
/// removed.
pub async fn remove_installed(session: &Session) -> Result<Vec<String>, ConvergeError> {
    let script = removal_script("").map_err(ssh_err(session.host(), "reset"))?;
    run_removal(session, script).await
}

/// kube-proxy's and flannel's rules, kubeup's links, the pods' slice.
pub async fn clean_network(session: &Session) -> Result<(), ConvergeError> {
    run_step(session, NETWORK_SCRIPT.to_string())
        .await
        .map(drop)
}

/// What the installed list names, one a line (nothing when `up` never
/// ran): read-only, for a plan of the removal.
pub async fn installed_list(session: &Session) -> Result<Vec<String>, ConvergeError> {
    let out = session
        .run(
            &Command::shell(format!("cat {} 2>/dev/null; true", layout::INSTALLED_LIST))
                .privileged(),
        )
        .await
        .map_err(ssh_err(session.host(), "reset"))?;
    Ok(out.stdout_str().lines().map(str::to_string).collect())
}

/// The scripts of the steps, in order (each valid shell on its own).
#[cfg(test)]
fn step_scripts() -> Result<Vec<String>, crate::ssh::SshError> {
    Ok(vec![
        stop_script(),
        removal_script("")?,
        NETWORK_SCRIPT.to_string(),
    ])
}

async fn run_step(session: &Session, script: String) -> Result<crate::ssh::Output, ConvergeError> {
    session
        .run(
            &Command::shell(script)
                .privileged()
                .timeout(std::time::Duration::from_secs(120)),
        )
        .await
        .map_err(ssh_err(session.host(), "reset"))
}

async fn run_removal(session: &Session, script: String) -> Result<Vec<String>, ConvergeError> {
    let out = run_step(session, script).await?;
    Ok(out
        .stdout_str()
        .split_whitespace()
        .map(str::to_string)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_follow_the_units_and_directories_of_the_files() {
        let worker = [
            "/etc/systemd/system/kubelet.service",
            "/etc/systemd/system/containerd.service",
            "/etc/cni/net.d/10-kubeup.conflist",
            "/etc/containerd/config.toml",
            "/etc/kubernetes/kubelet.kubeconfig",
        ];
        let c = claim_candidates(&worker);
        for d in [
            "/var/lib/kubelet",
            "/var/lib/containerd",
            "/run/containerd",
            "/etc/cni/net.d",
            "/etc/containerd",
            "/etc/kubernetes",
        ] {
            assert!(c.contains(&d), "{d} missing from {c:?}");
        }
        assert!(
            !c.contains(&"/var/lib/etcd"),
            "a worker runs no etcd: {c:?}"
        );
        assert!(!c.contains(&"/etc/cni/net.dx"));
        assert!(!is_under("/etc/cni/net.dx/a", "/etc/cni/net.d"));
    }

    #[test]
    fn reset_removes_no_shared_directory_whole() {
        let script = removal_script("").unwrap();
        assert!(!script.contains("/etc/cni/net.d"), "{script}");
        assert!(!script.contains("/etc/containerd"), "{script}");
        let whole = removed_whole();
        assert!(!whole.iter().any(|d| SHARED_DIRS.contains(d)));
        let network = NETWORK_SCRIPT;
        assert!(!network.contains("show type veth"), "only cni0's veths");
    }

    #[test]
    fn the_reset_script_is_valid_shell() {
        use std::io::Write;
        for script in step_scripts().unwrap() {
            let mut sh = std::process::Command::new("sh")
                .arg("-n")
                .stdin(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            sh.stdin
                .take()
                .unwrap()
                .write_all(script.as_bytes())
                .unwrap();
            assert!(sh.wait().unwrap().success(), "{script}");
        }
    }

    /// Against a real sshd on this machine, every path under a temporary
    /// root (never this machine's own): reset removes kubeup's files and
    /// claimed directories, and leaves what the user put there.
    #[tokio::test]
    async fn reset_leaves_the_users_files_under_a_root() {
        use kubeup_testsupport::sshd::{Sshd, keygen};
        use std::sync::Arc;

        let sshd = Sshd::start().unwrap();
        let keys = tempfile::tempdir().unwrap();
        let key = keygen(keys.path(), "root", "ed25519", "").unwrap();
        sshd.authorize("root", &key.public).unwrap();
        let mut target = crate::ssh::SshTarget::new(
            sshd.address(),
            sshd.port(),
            "root",
            crate::ssh::Auth::KeyFile {
                path: key.private.clone(),
                passphrase: None,
            },
        );
        target.host_key = crate::ssh::HostKeyTrust {
            policy: crate::ssh::HostKeyPolicy::Pin,
            key: Some(sshd.host_key("ed25519")),
        };
        let store = Arc::new(crate::ssh::MemoryHostKeyStore::new());
        let s = Session::connect(&target, store, &crate::ssh::SshOptions::default())
            .await
            .unwrap();

        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_str().unwrap();
        let at = |p: &str| dir.path().join(p.trim_start_matches('/'));
        let put = |p: &str, data: &str| {
            std::fs::create_dir_all(at(p).parent().unwrap()).unwrap();
            std::fs::write(at(p), data).unwrap();
        };
        // Before kubeup: the user's containerd directories and a unit.
        put("/etc/containerd/user.toml", "user");
        put("/var/lib/containerd/user-image", "user");
        put("/etc/systemd/system/user.service", "user");
        // kubeup's files.
        let installed = [
            "/etc/cni/net.d/10-kubeup.conflist",
            "/etc/containerd/config.toml",
            "/etc/systemd/system/etcd.service",
            "/etc/systemd/system/containerd.service",
            "/etc/kubernetes/pki/ca.crt",
        ];
        for f in installed {
            put(f, "kubeup");
        }
        let listed: Vec<String> = installed.iter().map(|s| s.to_string()).collect();
        super::super::files::record_installed_at(&s, root, &listed, false)
            .await
            .unwrap();
        let list = std::fs::read_to_string(at(layout::INSTALLED_LIST)).unwrap();
        for claimed in [
            "/var/lib/etcd/",
            "/run/containerd/",
            "/etc/cni/net.d/",
            "/etc/kubernetes/",
        ] {
            assert!(list.lines().any(|l| l == claimed), "{claimed}: {list}");
        }
        for not_claimed in ["/etc/containerd/", "/var/lib/containerd/"] {
            assert!(!list.lines().any(|l| l == not_claimed), "{list}");
        }
        // After: the components' data, and the user's file next to kubeup's.
        put("/var/lib/etcd/member/db", "etcd");
        put("/etc/cni/net.d/99-user.conflist", "user");

        let removal = removal_script(root).unwrap();
        let removed = run_removal(&s, removal).await.unwrap();
        for gone in installed
            .iter()
            .chain(&["/var/lib/etcd", "/var/lib/kubeup"])
        {
            assert!(!at(gone).exists(), "{gone} still there");
        }
        for kept in [
            "/etc/cni/net.d/99-user.conflist",
            "/etc/containerd/user.toml",
            "/var/lib/containerd/user-image",
            "/etc/systemd/system/user.service",
        ] {
            assert_eq!(std::fs::read_to_string(at(kept)).unwrap(), "user", "{kept}");
        }
        assert!(removed.contains(&"/etc/cni/net.d/10-kubeup.conflist".to_string()));
        assert!(
            !removed.contains(&"/etc/cni/net.d".to_string()),
            "{removed:?}"
        );

        // A list from before claims: the data of the units it lists is
        // kubeup's; a shared directory with the user's file still is not.
        put("/var/lib/etcd/member/db", "etcd");
        put("/etc/cni/net.d/10-kubeup.conflist", "kubeup");
        put("/etc/systemd/system/etcd.service", "kubeup");
        put(
            layout::INSTALLED_LIST,
            "/etc/cni/net.d/10-kubeup.conflist\n/etc/systemd/system/etcd.service\n",
        );
        let legacy = [
            "/etc/cni/net.d/10-kubeup.conflist".to_string(),
            "/etc/systemd/system/etcd.service".to_string(),
        ];
        super::super::files::record_installed_at(&s, root, &legacy, false)
            .await
            .unwrap();
        let list = std::fs::read_to_string(at(layout::INSTALLED_LIST)).unwrap();
        assert!(list.lines().any(|l| l == "/var/lib/etcd/"), "{list}");
        assert!(!list.lines().any(|l| l == "/etc/cni/net.d/"), "{list}");
    }
}
