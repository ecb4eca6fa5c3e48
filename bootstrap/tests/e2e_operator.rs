//! The operator under faults, end to end on real sandbox hosts (issue 10):
//! a dry run leaves its host untouched; a link cut mid-join, then healed,
//! still ends Ready; the operator pod killed mid-join restarts and finishes
//! with one Node per host; kubelet serving certificates are approved for
//! the joined nodes; no operator log line, Event or WorkerJoin status
//! carries the SSH private key; with two replicas, the leader killed while a
//! join waits in Certificates (the CSR signer stopped) → the standby takes
//! over and finishes it with exactly one approved CSR. One sandbox (4
//! hosts), steps in order, a guard tearing it down even on panic.
//!
//! Needs root, the sandbox prerequisites, the bundle and the operator image
//! (`cargo xtask bundle && cargo xtask image`); anything missing fails with
//! the reason. Only one sandbox fits on a machine: while another holds the
//! address range this test waits (up to 20 min) for it.

// An integration test, not product code: a panic here is a test failure.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::string_slice,
    clippy::panic
)]

use std::path::PathBuf;
use std::process::Output;
use std::time::{Duration, Instant};

mod common;
use common::*;
const NS: &str = "kubeup-system";

struct Cluster {
    dir: PathBuf,
}

impl Cluster {
    fn kubectl(&self, args: &[&str]) -> Output {
        kubectl(&self.dir, args)
    }

    fn kubectl_ok(&self, args: &[&str]) -> String {
        kubectl_ok(&self.dir, args)
    }

    /// `.status.<field>` of the WorkerJoin `wj` (it must exist).
    fn status_of(&self, wj: &str, field: &str) -> String {
        let path = format!("jsonpath={{.status.{field}}}");
        self.kubectl_ok(&["-n", NS, "get", "workerjoin", wj, "-o", &path])
    }

    fn phase(&self, wj: &str) -> String {
        let o = self.kubectl(&[
            "-n",
            NS,
            "get",
            "workerjoin",
            wj,
            "-o",
            "jsonpath={.status.phase}",
        ]);
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn wait_phase(&self, wj: &str, want: &[&str], timeout_s: u64) -> String {
        let started = Instant::now();
        let check = || {
            let p = self.phase(wj);
            want.contains(&p.as_str()).then_some(p)
        };
        loop {
            if let Some(p) = check() {
                return p;
            }
            if started.elapsed().as_secs() >= timeout_s {
                // What the operator saw, for whoever reads the failure.
                let status = self.kubectl(&["-n", NS, "get", "workerjoin", wj, "-o", "yaml"]);
                let logs = self.kubectl(&[
                    "-n",
                    NS,
                    "logs",
                    "-l",
                    "app.kubernetes.io/name=kubeup-operator",
                    "--tail=60",
                    "--prefix",
                ]);
                panic!(
                    "timed out after {timeout_s}s waiting for WorkerJoin {wj} in {want:?}\n{}\n{}",
                    String::from_utf8_lossy(&status.stdout),
                    String::from_utf8_lossy(&logs.stdout)
                );
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// A command on a sandbox host over OpenSSH with the pinned keys.
    fn on_host(&self, address: &str, script: &str) -> String {
        on_host(&self.dir, address, script)
    }

    /// The sandbox's WorkerJoin manifest (Secret + WorkerJoin) for host `i`.
    fn worker_file(&self, i: usize) -> (PathBuf, String, String) {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir.join("workers"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
            .collect();
        files.sort();
        let f = files[i - 2].clone();
        let text = std::fs::read_to_string(&f).unwrap();
        let name = f.file_stem().unwrap().to_str().unwrap().to_string();
        let address = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("address: "))
            .expect("an address")
            .trim_matches('"')
            .to_string();
        (f, name, address)
    }
}

#[test]
fn operator_under_faults() {
    bundle_file("images/kubeup-operator.tar");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cluster");
    let dir_s = dir.to_str().unwrap().to_string();
    sandbox_up(&dir_s, 4);
    let _guard = SandboxGuard(dir.clone());
    let file = dir.join("cluster.yaml");
    kubeup_ok(&["up", "-f", file.to_str().unwrap()]);
    let c = Cluster { dir };
    wait_for_operator(&c.dir, 180);

    let dry_run_phases = step_dry_run_leaves_the_host_untouched(&c);
    step_link_cut_mid_join_then_heal_completes(&c, &dry_run_phases);
    step_operator_killed_mid_join_finishes(&c);
    step_one_node_per_host_and_serving_certificates(&c);
    step_leader_killed_during_certificates_standby_finishes(&c);
    step_no_key_material_in_logs_events_status(&c);
    step_delete_while_cut_off_keeps_the_finalizer_until_reset(&c);
}

/// Deleting the WorkerJoin of a host that cannot be reached: the Node is
/// drained but stays (the kubelet still runs there with valid credentials),
/// the finalizer stays, and status says why. Once the host is back it is
/// reset first, then its Node deleted, then the WorkerJoin released.
fn step_delete_while_cut_off_keeps_the_finalizer_until_reset(c: &Cluster) {
    let (_, name, address) = c.worker_file(2);
    let node = c.status_of(&name, "nodeName");
    assert!(!node.is_empty());
    let dir = c.dir.to_str().unwrap();
    kubeup_ok(&["sandbox", "cut", &name, "--dir", dir]);
    c.kubectl_ok(&["-n", NS, "delete", "workerjoin", &name, "--wait=false"]);
    let error = wait_for("the failed host reset recorded", 240, || {
        let e = c.status_of(&name, "lastError");
        e.contains("finalizer stays").then_some(e)
    });
    eprintln!("while cut off: {error}");
    // Still there after the failed attempt (an Ok from the cleanup used to
    // release the finalizer), and the Node with it, cordoned.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(c.phase(&name), "Deleting");
    let cordoned = c.kubectl_ok(&["get", "node", &node, "-o", "jsonpath={.spec.unschedulable}"]);
    assert_eq!(
        cordoned, "true",
        "the Node stays, cordoned, until the host is reset"
    );
    kubeup_ok(&["sandbox", "heal", &name, "--dir", dir]);
    wait_for("the WorkerJoin released after the reset", 300, || {
        let o = c.kubectl(&["-n", NS, "get", "workerjoin", &name]);
        (!o.status.success()).then_some(())
    });
    let gone = c.kubectl(&["get", "node", &node]);
    assert!(!gone.status.success(), "the Node is deleted");
    let kubelet = c.on_host(&address, "systemctl is-active kubelet; true");
    assert_ne!(
        kubelet.trim(),
        "active",
        "the kubelet was stopped on the host"
    );
}

/// Every file under the places a join writes, with size and mtime.
const FILE_LIST: &str = "find /etc /opt /usr /var/lib -xdev \\( -path /var/lib/systemd -o -path /var/lib/apt \\) -prune -o -printf '%p %s %T@\\n' 2>/dev/null | sort";

/// The phases a WorkerJoin's status shows it went through: those with a
/// duration, and those a dry run planned for (`<Phase>: <action>`).
fn phases_of(c: &Cluster, name: &str) -> std::collections::BTreeSet<String> {
    let durations = c.status_of(name, "phaseDurations");
    let durations: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&durations).unwrap_or_default();
    let planned = c.status_of(name, "plannedActions");
    let planned: Vec<String> = serde_json::from_str(&planned).unwrap_or_default();
    durations
        .keys()
        .cloned()
        .chain(
            planned
                .iter()
                .filter_map(|l| l.split_once(": ").map(|(p, _)| p.to_string())),
        )
        .collect()
}

fn step_dry_run_leaves_the_host_untouched(c: &Cluster) -> std::collections::BTreeSet<String> {
    let (f, name, address) = c.worker_file(2);
    let before = c.on_host(&address, FILE_LIST);
    let text = std::fs::read_to_string(&f)
        .unwrap()
        .replace("dryRun: false", "dryRun: true");
    assert!(text.contains("dryRun: true"), "{text}");
    let dry = c.dir.join("dry-run.yaml");
    std::fs::write(&dry, text).unwrap();
    c.kubectl_ok(&["apply", "-f", dry.to_str().unwrap()]);
    c.wait_phase(&name, &["DryRunComplete"], 120);
    let planned = c.status_of(&name, "plannedActions");
    assert!(
        planned.contains("kubelet"),
        "the dry run plans nothing: {planned}"
    );
    let after = c.on_host(&address, FILE_LIST);
    if before != after {
        let b: std::collections::BTreeSet<&str> = before.lines().collect();
        let a: std::collections::BTreeSet<&str> = after.lines().collect();
        panic!(
            "the dry run changed {address}: gone {:?}, new {:?}",
            b.difference(&a).collect::<Vec<_>>(),
            a.difference(&b).collect::<Vec<_>>()
        );
    }
    let phases = phases_of(c, &name);
    c.kubectl_ok(&["-n", NS, "delete", "workerjoin", &name, "--timeout=60s"]);
    let left = c.on_host(&address, FILE_LIST);
    assert_eq!(
        before, left,
        "deleting a dry-run WorkerJoin touched the host"
    );
    phases
}

fn step_link_cut_mid_join_then_heal_completes(
    c: &Cluster,
    dry_run_phases: &std::collections::BTreeSet<String>,
) {
    let (f, name, address) = c.worker_file(2);
    c.kubectl_ok(&["apply", "-f", f.to_str().unwrap()]);
    c.wait_phase(
        &name,
        &["Installing", "Certificates", "Starting", "WaitingForNode"],
        120,
    );
    let host = name.clone();
    kubeup_ok(&["sandbox", "cut", &host, "--dir", c.dir.to_str().unwrap()]);
    // The join fails (timeout) and backs off; attempts are recorded.
    let cut_at = Instant::now();
    let attempts = wait_for("a failed attempt while cut", 180, || {
        let o = c.kubectl(&[
            "-n",
            NS,
            "get",
            "workerjoin",
            &name,
            "-o",
            "jsonpath={.status.attempts}",
        ]);
        let a = String::from_utf8_lossy(&o.stdout).trim().to_string();
        (a.parse::<u32>().unwrap_or(0) > 0 || cut_at.elapsed() > Duration::from_secs(60))
            .then_some(a)
    });
    eprintln!("attempts while cut: {attempts:?}");
    assert_ne!(c.phase(&name), "Failed", "a cut link is not permanent");
    kubeup_ok(&["sandbox", "heal", &host, "--dir", c.dir.to_str().unwrap()]);
    c.wait_phase(&name, &["Ready"], 420);
    let active = c.on_host(&address, "systemctl is-active kubelet");
    assert_eq!(active.trim(), "active");
    // The dry run walked the same phases the real join of this host did.
    let real = phases_of(c, &name);
    assert_eq!(&real, dry_run_phases, "dry run vs real join");
    assert!(real.contains("Configuring"), "{real:?}");
}

fn operator_pods(c: &Cluster) -> Vec<String> {
    c.kubectl_ok(
        &[
            &OPERATOR_PODS[..],
            &[
                "-o",
                "jsonpath={range .items[*]}{.metadata.name}{\"\\n\"}{end}",
            ],
        ]
        .concat(),
    )
    .lines()
    .map(str::to_string)
    .collect()
}

fn step_operator_killed_mid_join_finishes(c: &Cluster) {
    let (f, name, _) = c.worker_file(3);
    c.kubectl_ok(&["apply", "-f", f.to_str().unwrap()]);
    let phase = c.wait_phase(&name, &["Installing", "Certificates", "Starting"], 120);
    let pods = operator_pods(c);
    assert!(!pods.is_empty(), "no operator pod");
    let mut args = vec!["-n", NS, "delete", "pod", "--grace-period=0", "--force"];
    args.extend(pods.iter().map(String::as_str));
    c.kubectl_ok(&args);
    eprintln!("operator pod(s) {pods:?} killed during {phase}");
    c.wait_phase(&name, &["Ready"], 420);
}

fn step_one_node_per_host_and_serving_certificates(c: &Cluster) {
    let nodes = c.kubectl_ok(&["get", "nodes", "--no-headers"]);
    assert_eq!(
        nodes.lines().count(),
        3,
        "one Node per host (the fourth joins later): {nodes}"
    );
    assert_eq!(
        nodes.lines().filter(|l| l.contains(" Ready ")).count(),
        3,
        "{nodes}"
    );
    for i in [2, 3] {
        let (_, name, _) = c.worker_file(i);
        let node = c.status_of(&name, "nodeName");
        // The kubelet's serving CSR: approved by the operator and signed.
        wait_for(&format!("the serving certificate of {node}"), 120, || {
            let o = c.kubectl(&[
                "get",
                "csr",
                "-o",
                "jsonpath={range .items[?(@.spec.signerName==\"kubernetes.io/kubelet-serving\")]}{.spec.username} {.status.conditions[0].type} {.status.certificate}{\"\\n\"}{end}",
            ]);
            let out = String::from_utf8_lossy(&o.stdout).into_owned();
            out.lines()
                .any(|l| {
                    let p: Vec<&str> = l.split(' ').collect();
                    p.len() == 3
                        && p[0] == format!("system:node:{node}")
                        && p[1] == "Approved"
                        && !p[2].is_empty()
                })
                .then_some(out)
        });
    }
}

const CONTROLLER: &str = "198.18.0.11";

fn lease_holder(c: &Cluster) -> String {
    c.kubectl_ok(&[
        "-n",
        NS,
        "get",
        "lease",
        "kubeup-operator",
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ])
}

fn step_leader_killed_during_certificates_standby_finishes(c: &Cluster) {
    c.kubectl_ok(&[
        "-n",
        NS,
        "scale",
        "deployment",
        "kubeup-operator",
        "--replicas=2",
    ]);
    wait_for("two operator replicas ready", 180, || {
        let ready = c.kubectl_ok(&[
            "-n",
            NS,
            "get",
            "deployment",
            "kubeup-operator",
            "-o",
            "jsonpath={.status.readyReplicas}",
        ]);
        (ready == "2").then_some(())
    });
    let pods = operator_pods(c);
    let leader = lease_holder(c);
    assert!(
        pods.contains(&leader),
        "the Lease names a pod: {leader} vs {pods:?}"
    );
    let standby: Vec<&String> = pods.iter().filter(|p| **p != leader).collect();
    assert_eq!(standby.len(), 1, "{pods:?}");
    let standby = standby[0].clone();
    let standby_log = wait_for(
        "the standby to report that another replica leads",
        60,
        || {
            let log = c.kubectl_ok(&["-n", NS, "logs", &standby]);
            log.contains("another replica leads").then_some(log)
        },
    );
    assert!(
        !standby_log.contains(": leading"),
        "the standby must not reconcile: {standby_log}"
    );

    // Without the CSR signer the join waits in Certificates with its CSR
    // created, recorded and approved but not signed.
    c.on_host(CONTROLLER, "systemctl stop kube-controller-manager");
    let (f, name, _) = c.worker_file(4);
    c.kubectl_ok(&["apply", "-f", f.to_str().unwrap()]);
    let pending = wait_for("a recorded pending CSR", 180, || {
        let o = c.kubectl(&[
            "-n",
            NS,
            "get",
            "workerjoin",
            &name,
            "-o",
            "jsonpath={.status.phase} {.status.pendingCsr}",
        ]);
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        out.strip_prefix("Certificates ")
            .filter(|csr| !csr.is_empty())
            .map(str::to_string)
    });
    // The leader dies there; the signer comes back.
    c.kubectl_ok(&[
        "-n",
        NS,
        "delete",
        "pod",
        &leader,
        "--grace-period=0",
        "--force",
    ]);
    c.on_host(CONTROLLER, "systemctl start kube-controller-manager");
    c.wait_phase(&name, &["Ready"], 420);
    assert_eq!(lease_holder(c), standby, "the standby took over");

    // Exactly one kubelet client CSR of this WorkerJoin was approved: the
    // recorded one, resumed by the new leader.
    let uid = c.kubectl_ok(&[
        "-n",
        NS,
        "get",
        "workerjoin",
        &name,
        "-o",
        "jsonpath={.metadata.uid}",
    ]);
    let csrs = c.kubectl_ok(&[
        "get",
        "csr",
        "-o",
        r#"jsonpath={range .items[?(@.spec.signerName=="kubernetes.io/kube-apiserver-client-kubelet")]}{.metadata.name} {.metadata.annotations.kubeup\.dev/workerjoin-uid} {.status.conditions[*].type}{"\n"}{end}"#,
    ]);
    let ours: Vec<&str> = csrs
        .lines()
        .filter(|l| l.split(' ').nth(1) == Some(uid.as_str()))
        .collect();
    let approved: Vec<&str> = ours
        .iter()
        .copied()
        .filter(|l| l.contains("Approved"))
        .collect();
    assert_eq!(approved.len(), 1, "one approved CSR for {name}: {ours:?}");
    assert!(
        approved[0].starts_with(&format!("{pending} ")),
        "the recorded CSR {pending}: {approved:?}"
    );
    let nodes = c.kubectl_ok(&["get", "nodes", "--no-headers"]);
    assert_eq!(
        nodes.lines().filter(|l| l.contains(" Ready ")).count(),
        4,
        "{nodes}"
    );
    eprintln!(
        "leader {leader} killed during Certificates ({pending}); {standby} finished the join"
    );
    c.kubectl_ok(&[
        "-n",
        NS,
        "scale",
        "deployment",
        "kubeup-operator",
        "--replicas=1",
    ]);
    // The scaled-down pod goes away; its logs are not needed later.
    wait_for("one operator pod again", 120, || {
        (operator_pods(c).len() == 1).then_some(())
    });
}

fn step_no_key_material_in_logs_events_status(c: &Cluster) {
    let key = std::fs::read_to_string(c.dir.join("sandbox/id_ed25519")).unwrap();
    // The key's base64 body and pieces of it: every line but the first
    // (the format header every OpenSSH key shares), and 24-char chunks of
    // the part holding the key pair.
    let body: Vec<&str> = key
        .lines()
        .filter(|l| !l.starts_with("-----") && !l.trim().is_empty())
        .collect();
    assert!(body.len() >= 4, "an unexpected key file");
    let mut needles: Vec<String> = body[1..].iter().map(|s| s.to_string()).collect();
    needles.extend(
        body[2..]
            .concat()
            .as_bytes()
            .chunks(24)
            .filter(|c| c.len() == 24)
            .map(|c| String::from_utf8_lossy(c).into_owned()),
    );
    needles.push("PRIVATE KEY".into());
    let mut haystack = String::new();
    for p in operator_pods(c) {
        haystack.push_str(&c.kubectl_ok(&["-n", NS, "logs", &p, "--tail=-1"]));
        // The killed pod's predecessor, when the kubelet kept it.
        let prev = c.kubectl(&["-n", NS, "logs", &p, "--previous", "--tail=-1"]);
        haystack.push_str(&String::from_utf8_lossy(&prev.stdout));
    }
    haystack.push_str(&c.kubectl_ok(&["get", "events", "-A", "-o", "yaml"]));
    haystack.push_str(&c.kubectl_ok(&["get", "workerjoins", "-A", "-o", "yaml"]));
    haystack.push_str(&c.kubectl_ok(&["get", "csr", "-o", "yaml"]));
    // The apiserver's audit log records Secret reads (metadata only).
    let audit = c.on_host(CONTROLLER, "cat /var/log/kubernetes/audit.log");
    assert!(
        audit.contains("\"resource\":\"secrets\""),
        "the audit log records Secret access"
    );
    haystack.push_str(&audit);
    assert!(haystack.len() > 1000, "too little to search: {haystack}");
    let hits: Vec<&String> = needles.iter().filter(|n| haystack.contains(*n)).collect();
    assert!(
        hits.is_empty(),
        "SSH private key material found in logs/Events/status: {} hits",
        hits.len()
    );
    eprintln!(
        "searched {} bytes of logs, Events, WorkerJoins, CSRs and the audit log for {} pieces of the key: 0 hits",
        haystack.len(),
        needles.len()
    );
}
