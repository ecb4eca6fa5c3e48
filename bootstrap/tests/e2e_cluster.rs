//! End to end on real sandbox hosts: `kubeup up` brings up a controller,
//! re-runs change nothing, bad input changes nothing, `reset` leaves a clean
//! host. One sandbox cluster for the whole suite (booting is cheap, a
//! control plane is not); steps run in order inside one test so a failure
//! names its step. A guard tears the sandbox down even on panic.
//!
//! Needs root, the sandbox prerequisites (hack/apt/sandbox.txt) and the
//! bundle (`cargo xtask bundle`); anything missing fails with the reason.

// An integration test, not product code: a panic here is a test failure.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::string_slice,
    clippy::panic
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

mod common;
use common::*;

struct Cluster {
    dir: PathBuf,
    file: String,
    controller: String,
}

impl Cluster {
    fn kubectl(&self, args: &[&str]) -> Output {
        kubectl(&self.dir, args)
    }

    fn kubectl_ok(&self, args: &[&str]) -> String {
        kubectl_ok(&self.dir, args)
    }

    /// Run a shell script on the controller through `kubeup ssh`.
    fn on_controller(&self, script: &str) -> Output {
        kubeup(&[
            "ssh",
            "-f",
            &self.file,
            &self.controller,
            "--",
            "sh",
            "-c",
            script,
        ])
    }

    fn on_controller_ok(&self, script: &str) -> String {
        let o = self.on_controller(script);
        assert!(
            o.status.success(),
            "on the controller `{script}` failed: {}",
            describe(&o)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
}

const UNITS: &str =
    "containerd etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy";

#[test]
fn controller_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cluster");
    let dir_s = dir.to_str().unwrap().to_string();
    let _guard = SandboxGuard(dir.clone());
    kubeup_ok(&["sandbox", "up", "--hosts", "3", "--dir", &dir_s]);
    let file = dir.join("cluster.yaml").to_str().unwrap().to_string();
    let text = std::fs::read_to_string(&file).unwrap();
    let controller = text
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("name: kube-")
                .map(|rest| format!("kube-{rest}"))
        })
        .expect("the sandbox names its controller");
    let c = Cluster {
        dir: dir.clone(),
        file: file.clone(),
        controller,
    };

    step_bad_input_changes_nothing(&c, tmp.path());
    step_plan_on_a_fresh_host(&c);
    step_up_brings_up_a_ready_controller(&c);
    step_controller_kubelet_serves_a_kubelet_serving_ca_certificate(&c);
    step_etcd_accepts_only_etcd_ca_clients(&c);
    step_secrets_are_encrypted_at_rest(&c);
    step_audit_log_records_secrets_without_their_data(&c);
    step_second_up_changes_nothing(&c);
    step_plan_walks_the_phases_up_walks(&c);
    step_one_setting_restarts_only_its_units(&c);
    step_reset_then_up_converges(&c);

    // Workers, joined by the operator (issue 9).
    step_operator_is_running(&c);
    step_workers_join(&c);
    step_worker_kubelet_certificate(&c);
    step_pod_runs_on_a_worker(&c);
    step_delete_resets_the_host(&c);
    step_wrong_pin_fails_and_installs_nothing(&c);
    step_kubectl_kubeup_join_waits_for_ready(&c, tmp.path());
    // Last: it takes the everyday admin's rights away for a moment.
    step_admin_is_revocable_and_super_admin_is_break_glass(&c);
}

fn step_bad_input_changes_nothing(c: &Cluster, tmp: &Path) {
    // An unreachable controller: fails fast, names the host.
    let bad_dir = tmp.join("unreachable");
    std::fs::create_dir_all(&bad_dir).unwrap();
    let text = std::fs::read_to_string(&c.file).unwrap();
    let unreachable = text.replace("198.18.0.11", "198.18.0.99");
    std::fs::write(bad_dir.join("cluster.yaml"), &unreachable).unwrap();
    let o = run(
        "cp",
        &[
            "-r",
            c.dir.join("pki").to_str().unwrap(),
            bad_dir.to_str().unwrap(),
        ],
    );
    assert!(o.status.success());
    std::fs::create_dir_all(bad_dir.join("sandbox")).unwrap();
    std::fs::copy(
        c.dir.join("sandbox/id_ed25519"),
        bad_dir.join("sandbox/id_ed25519"),
    )
    .unwrap();
    let started = std::time::Instant::now();
    let o = kubeup(&["up", "-f", bad_dir.join("cluster.yaml").to_str().unwrap()]);
    let err = describe(&o);
    assert!(
        !o.status.success(),
        "up against an unreachable host succeeded: {err}"
    );
    assert!(
        err.contains("198.18.0.99:22"),
        "the error does not name the host: {err}"
    );
    assert!(
        started.elapsed().as_secs() < 60,
        "took {:?} to give up",
        started.elapsed()
    );

    // A malformed cluster.yaml: refused before any SSH, nothing on the host.
    let broken = text.replace("podCidr: 10.244.0.0/16", "podCidr: 10.96.0.0/12");
    std::fs::write(
        bad_dir.join("cluster.yaml"),
        broken.replace("198.18.0.99", "198.18.0.11"),
    )
    .unwrap();
    let o = kubeup(&["up", "-f", bad_dir.join("cluster.yaml").to_str().unwrap()]);
    let err = describe(&o);
    assert!(
        !o.status.success() && err.contains("spec.networking.serviceCidr"),
        "{err}"
    );
    // A value that would add an argument to a unit file: refused before any SSH.
    let injected: String = text
        .lines()
        .map(|l| match l.split_once("name: kube-") {
            Some((indent, _)) => {
                format!(
                    "{indent}name: \"{} --etcd-servers=http://evil.example:2379\"",
                    c.controller
                )
            }
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(bad_dir.join("cluster.yaml"), injected).unwrap();
    let o = kubeup(&["up", "-f", bad_dir.join("cluster.yaml").to_str().unwrap()]);
    let err = describe(&o);
    assert!(
        !o.status.success() && err.contains("spec.controllers[0].name"),
        "{err}"
    );
    let listing = c.on_controller_ok("ls /opt/kubeup /etc/kubernetes 2>&1; true");
    assert!(
        listing.contains("No such file"),
        "bad input changed the host: {listing}"
    );
}

fn step_plan_on_a_fresh_host(c: &Cluster) {
    let plan = kubeup_ok(&["plan", "-f", &c.file]);
    assert!(
        plan.contains("would upload")
            && plan.contains("would issue")
            && plan.contains("would start"),
        "{plan}"
    );
    let listing = c.on_controller_ok("ls /opt/kubeup 2>&1; true");
    assert!(
        listing.contains("No such file"),
        "plan changed the host: {listing}"
    );
}

fn step_up_brings_up_a_ready_controller(c: &Cluster) {
    kubeup_ok(&["up", "-f", &c.file]);
    let nodes = c.kubectl_ok(&["get", "nodes", "--no-headers"]);
    assert!(
        nodes.contains(&c.controller) && nodes.contains(" Ready "),
        "{nodes}"
    );
    assert!(nodes.contains("control-plane"), "{nodes}");
    // `up` returns only once the operator leads: a WorkerJoin applied now
    // is picked up at once (its Lease holder is a running pod already).
    let holder = c.kubectl_ok(&[
        "-n",
        "kubeup-system",
        "get",
        "lease",
        "kubeup-operator",
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ]);
    let phase = c.kubectl_ok(&[
        "-n",
        "kubeup-system",
        "get",
        "pod",
        &holder,
        "-o",
        "jsonpath={.status.phase}",
    ]);
    assert_eq!(
        phase, "Running",
        "the Lease holder {holder} runs when up returns"
    );
    let taints = c.kubectl_ok(&[
        "get",
        "node",
        &c.controller,
        "-o",
        "jsonpath={.spec.taints}",
    ]);
    assert!(
        taints.contains("node-role.kubernetes.io/control-plane") && taints.contains("NoSchedule"),
        "{taints}"
    );
    c.kubectl_ok(&[
        "get",
        "crd",
        "workerjoins.kubeup.dev",
        "clusters.kubeup.dev",
    ]);
    let cluster = c.kubectl_ok(&[
        "get",
        "clusters.kubeup.dev",
        "-o",
        "jsonpath={.items[0].spec.networking.podCidr}",
    ]);
    assert_eq!(cluster, "10.244.0.0/16");
    let explain = c.kubectl_ok(&["explain", "workerjoin.spec.hostKey"]);
    assert!(explain.contains("AcceptNew"), "{explain}");
}

/// The controller's kubelet (port 10250) serves a certificate of the
/// kubelet-serving CA, which the cluster CA (what clients trust for the
/// apiserver) does not vouch for; the apiserver and kube-controller-manager
/// use that CA; and `kubectl logs` of a pod on the controller still works
/// (the apiserver verifies the kubelet against it).
fn step_controller_kubelet_serves_a_kubelet_serving_ca_certificate(c: &Cluster) {
    let pki = c.dir.join("pki");
    let key = pki.join("kubelet-serving-ca.key");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&key).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "{}", key.display());
    let pem = on_host(
        c,
        "198.18.0.11",
        "openssl s_client -connect 127.0.0.1:10250 -showcerts </dev/null 2>/dev/null \
         | sed -n '1,/END CERTIFICATE/{/BEGIN CERTIFICATE/,/END CERTIFICATE/p}'",
    );
    assert!(
        pem.contains("BEGIN CERTIFICATE"),
        "no certificate on :10250: {pem}"
    );
    let cert = c.dir.join("controller-kubelet-serving.crt");
    std::fs::write(&cert, &pem).unwrap();
    let verify = |ca: &str| {
        run(
            "openssl",
            &[
                "verify",
                "-CAfile",
                pki.join(ca).to_str().unwrap(),
                cert.to_str().unwrap(),
            ],
        )
    };
    let o = verify("kubelet-serving-ca.crt");
    assert!(
        o.status.success(),
        "the controller's kubelet does not serve a kubelet-serving CA certificate: {}",
        describe(&o)
    );
    assert!(
        !verify("ca.crt").status.success(),
        "the controller's kubelet serving certificate chains to the cluster CA"
    );
    let o = run(
        "openssl",
        &["x509", "-noout", "-issuer", "-in", cert.to_str().unwrap()],
    );
    let issuer = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(issuer.contains("kubelet-serving-ca"), "{issuer}");
    let units = on_host(
        c,
        "198.18.0.11",
        "cat /etc/systemd/system/kube-apiserver.service /etc/systemd/system/kube-controller-manager.service; \
         stat -c '%a %n' /etc/kubernetes/pki/kubelet-serving-ca.key",
    );
    for want in [
        "--kubelet-certificate-authority=/etc/kubernetes/pki/kubelet-serving-ca.crt",
        "--cluster-signing-kubelet-serving-cert-file=/etc/kubernetes/pki/kubelet-serving-ca.crt",
        "--cluster-signing-kubelet-serving-key-file=/etc/kubernetes/pki/kubelet-serving-ca.key",
        "--cluster-signing-kubelet-client-cert-file=/etc/kubernetes/pki/ca.crt",
        "--cluster-signing-kube-apiserver-client-cert-file=/etc/kubernetes/pki/ca.crt",
        "600 /etc/kubernetes/pki/kubelet-serving-ca.key",
    ] {
        assert!(units.contains(want), "{want} missing: {units}");
    }
    // kube-controller-manager refuses the generic flags next to per-signer ones.
    assert!(!units.contains("--cluster-signing-cert-file"), "{units}");
    // The apiserver → kubelet path on the controller, verified against it.
    let pod = wait_for("a running pod on the controller", 180, || {
        let o = c.kubectl(&[
            "get",
            "pods",
            "-A",
            "--field-selector",
            &format!("spec.nodeName={},status.phase=Running", c.controller),
            "-o",
            "jsonpath={.items[0].metadata.namespace} {.items[0].metadata.name}",
        ]);
        let out = String::from_utf8_lossy(&o.stdout).trim().to_string();
        (o.status.success() && out.contains(' ')).then_some(out)
    });
    let (ns, name) = pod.split_once(' ').unwrap();
    c.kubectl_ok(&["-n", ns, "logs", name, "--tail=1"]);
}

fn step_etcd_accepts_only_etcd_ca_clients(c: &Cluster) {
    let pki = c.dir.join("pki");
    let p = |f: &str| pki.join(f).to_str().unwrap().to_string();
    let curl = |extra: &[&str]| {
        let ca = p("etcd/ca.crt");
        let mut args = vec!["-sS", "--max-time", "5", "--cacert", ca.as_str()];
        args.extend_from_slice(extra);
        args.push("https://198.18.0.11:2379/health");
        run("curl", &args)
    };
    let anonymous = curl(&[]);
    assert!(
        !anonymous.status.success() || !String::from_utf8_lossy(&anonymous.stdout).contains("true"),
        "etcd answered a client without a certificate: {}",
        describe(&anonymous)
    );
    let admin = curl(&["--cert", &p("admin.crt"), "--key", &p("admin.key")]);
    assert!(
        !admin.status.success() || !String::from_utf8_lossy(&admin.stdout).contains("true"),
        "etcd accepted a cluster-CA client certificate: {}",
        describe(&admin)
    );
    // The check can pass: the controller's etcd-CA client is accepted.
    let ok = c.on_controller_ok(
        "curl -sS --max-time 5 --cacert /etc/kubernetes/pki/etcd/ca.crt --cert /etc/kubernetes/pki/etcd/healthcheck-client.crt \
         --key /etc/kubernetes/pki/etcd/healthcheck-client.key https://127.0.0.1:2379/health 2>&1 || \
         ETCDCTL_API=3 /opt/kubeup/bundle/v1.34.10/bin/etcdctl --endpoints=https://127.0.0.1:2379 --cacert=/etc/kubernetes/pki/etcd/ca.crt \
         --cert=/etc/kubernetes/pki/etcd/healthcheck-client.crt --key=/etc/kubernetes/pki/etcd/healthcheck-client.key endpoint health",
    );
    assert!(ok.contains("true") || ok.contains("is healthy"), "{ok}");
}

fn step_secrets_are_encrypted_at_rest(c: &Cluster) {
    c.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "e2e-at-rest",
        "--from-literal=password=plain-text-canary",
    ]);
    let raw = c.on_controller_ok(
        "/opt/kubeup/bundle/v1.34.10/bin/etcdctl --endpoints=https://127.0.0.1:2379 --cacert=/etc/kubernetes/pki/etcd/ca.crt \
         --cert=/etc/kubernetes/pki/etcd/healthcheck-client.crt --key=/etc/kubernetes/pki/etcd/healthcheck-client.key \
         get /registry/secrets/default/e2e-at-rest --print-value-only | head -c 200 | tr -c '[:print:]' '.'",
    );
    assert!(
        raw.contains("k8s:enc:secretbox:v1:key1"),
        "the Secret is not encrypted with secretbox in etcd: {raw}"
    );
    assert!(!raw.contains("plain-text-canary"), "{raw}");
}

/// kube-apiserver's audit log: the Secret created above is there at
/// Metadata level, its value is not.
fn step_audit_log_records_secrets_without_their_data(c: &Cluster) {
    c.kubectl_ok(&["get", "secret", "e2e-at-rest", "-o", "name"]);
    let log = "/var/log/kubernetes/audit.log";
    let mode = c.on_controller_ok("stat -c %a /var/log/kubernetes");
    assert_eq!(mode.trim(), "700", "audit log directory mode");
    // Entries are written when requests complete: give the last one a moment.
    let line = wait_for("the audit entry of the Secret", 30, || {
        let o = c.on_controller_ok(&format!(
            "grep '\"resource\":\"secrets\"' {log} | grep '\"name\":\"e2e-at-rest\"' | tail -n 1"
        ));
        (!o.trim().is_empty()).then_some(o)
    });
    assert!(line.contains("\"level\":\"Metadata\""), "{line}");
    assert!(
        !line.contains("requestObject") && !line.contains("responseObject"),
        "{line}"
    );
    // The value, plain or base64 (as a Secret's data travels).
    let leaked = c.on_controller_ok(&format!(
        "if grep -q -e plain-text-canary -e cGxhaW4tdGV4dC1jYW5hcnk {log}*; then echo leaked; else echo clean; fi"
    ));
    assert_eq!(
        leaked.trim(),
        "clean",
        "the audit log holds the Secret's value"
    );
}

/// admin.kubeconfig is in kubeup:cluster-admins (cluster-admin through a
/// binding), not system:masters; deleting the binding revokes it, and `up`
/// (with the break-glass super-admin.kubeconfig) puts it back.
fn step_admin_is_revocable_and_super_admin_is_break_glass(c: &Cluster) {
    let whoami = c.kubectl_ok(&["auth", "whoami", "-o", "jsonpath={.status.userInfo.groups}"]);
    assert!(whoami.contains("kubeup:cluster-admins"), "{whoami}");
    assert!(!whoami.contains("system:masters"), "{whoami}");
    let super_admin = c.dir.join("super-admin.kubeconfig");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&super_admin).unwrap().permissions(),
    ) & 0o777;
    assert_eq!(mode, 0o600, "super-admin.kubeconfig mode");
    let as_super = |args: &[&str]| {
        let mut all = vec!["--kubeconfig", super_admin.to_str().unwrap()];
        all.extend_from_slice(args);
        run(&bundle_bin("kubectl"), &all)
    };
    let o = as_super(&["auth", "whoami", "-o", "jsonpath={.status.userInfo.groups}"]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("system:masters"),
        "{}",
        describe(&o)
    );

    let o = as_super(&["delete", "clusterrolebinding", "kubeup:cluster-admins"]);
    assert!(o.status.success(), "{}", describe(&o));
    let denied = wait_for("the admin to lose its rights", 30, || {
        let o = c.kubectl(&["get", "nodes"]);
        (!o.status.success()).then(|| describe(&o))
    });
    assert!(
        denied.contains("Forbidden") || denied.contains("forbidden"),
        "{denied}"
    );
    let o = as_super(&["get", "nodes"]);
    assert!(o.status.success(), "break-glass: {}", describe(&o));

    // Restore: `up` applies the binding with the break-glass credential.
    kubeup_ok(&["up", "-f", &c.file]);
    c.kubectl_ok(&["get", "nodes"]);
}

fn unit_starts(c: &Cluster) -> String {
    c.on_controller_ok(&format!(
        "for u in {UNITS}; do systemctl show -p NRestarts -p ActiveEnterTimestampMonotonic $u; done"
    ))
}

fn step_second_up_changes_nothing(c: &Cluster) {
    let before = unit_starts(c);
    let out = kubeup_ok(&["up", "-f", &c.file]);
    assert!(
        out.contains("no changes"),
        "second up changed something: {out}"
    );
    assert_eq!(
        before,
        unit_starts(c),
        "a unit was restarted by the second up"
    );
    let plan = kubeup_ok(&["plan", "-f", &c.file]);
    assert!(plan.contains("no changes"), "{plan}");
}

/// `plan` is `up`'s dry run: the same phases, cluster ones included (each
/// with a line of what it would do), every phase's JSON progress ended.
fn step_plan_walks_the_phases_up_walks(c: &Cluster) {
    let walked = |command: &str| {
        let events = json_events(kubeup_ok(&[command, "-f", &c.file, "-o", "json"]).as_bytes());
        assert_every_start_ends(&events);
        let summary = events.last().unwrap();
        assert_eq!(summary["event"], "summary", "{summary}");
        let phases: Vec<String> = summary["phases"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap().to_string())
            .collect();
        (phases, events)
    };
    let (planned, plan_events) = walked("plan");
    let (applied, _) = walked("up");
    assert_eq!(planned, applied, "plan and up walk different phases");
    for cluster_phase in ["control plane ready", "node ready", "cluster add-ons"] {
        assert!(
            phases_with(&plan_events, "planned")
                .iter()
                .any(|p| p == cluster_phase),
            "plan says nothing of {cluster_phase}: {plan_events:#?}"
        );
    }
}

fn step_reset_then_up_converges(c: &Cluster) {
    let o = kubeup(&["reset", "-f", &c.file]);
    assert!(
        !o.status.success() && describe(&o).contains("--yes"),
        "reset without --yes off a terminal: {}",
        describe(&o)
    );
    kubeup_ok(&["reset", "-f", &c.file, "--yes"]);
    let left = c.on_controller_ok(&format!(
        "ls /etc/kubernetes /opt/kubeup /var/lib/etcd /var/lib/kubelet /etc/systemd/system/kubelet.service 2>/dev/null; \
         for u in {UNITS}; do systemctl is-active $u; done; \
         pgrep -l -x 'etcd|kube-apiserver|kubelet|containerd|kube-proxy|kube-scheduler' ; \
         iptables-save | grep -c KUBE-; true"
    ));
    let active = left.lines().filter(|l| *l == "active").count();
    assert_eq!(active, 0, "units still active after reset: {left}");
    assert!(
        !left.contains("/etc/kubernetes") && !left.contains("kubelet.service"),
        "files left: {left}"
    );
    assert!(
        left.trim_end().ends_with('0'),
        "iptables rules left: {left}"
    );
    kubeup_ok(&["up", "-f", &c.file]);
    let nodes = c.kubectl_ok(&["get", "nodes", "--no-headers"]);
    assert!(nodes.contains(" Ready "), "{nodes}");
}

fn host_name(c: &Cluster, i: usize) -> String {
    let stem = c
        .controller
        .strip_suffix("-1")
        .expect("the controller is host 1");
    format!("{stem}-{i}")
}

/// A command on a sandbox host over OpenSSH with the sandbox's pinned keys.
fn on_host(c: &Cluster, address: &str, script: &str) -> String {
    common::on_host(&c.dir, address, script)
}

fn step_operator_is_running(c: &Cluster) {
    wait_for_operator(&c.dir, 120);
    // The controller's certificates, published by `up`, watched by the
    // operator: the Cluster says they are valid and which expires first.
    let cond = wait_for("the Cluster's CertificatesValid condition", 120, || {
        let o = c.kubectl(&[
            "get",
            "clusters",
            "-o",
            r#"jsonpath={.items[0].status.conditions[?(@.type=="CertificatesValid")].status} {.items[0].status.conditions[?(@.type=="CertificatesValid")].message}"#,
        ]);
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        out.starts_with("True ").then_some(out)
    });
    assert!(cond.contains("the first to expire is"), "{cond}");
    let published = c.kubectl(&[
        "-n",
        "kubeup-system",
        "get",
        "configmap",
        "kubeup-certificates",
        "-o",
        "yaml",
    ]);
    let text = String::from_utf8_lossy(&published.stdout);
    assert!(
        text.contains("apiserver.crt") && text.contains("kubelet-serving.crt"),
        "{text}"
    );
    assert!(
        !text.contains("PRIVATE KEY"),
        "only public certificates are published"
    );
}

fn workerjoin_phase(c: &Cluster, name: &str) -> String {
    let o = c.kubectl(&[
        "-n",
        "kubeup-system",
        "get",
        "workerjoin",
        name,
        "-o",
        "jsonpath={.status.phase}",
    ]);
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// GitOps: `kubectl apply -k examples/gitops` (the sandbox's hosts 2 and 3)
/// after creating the SSH Secret the kustomization refers to.
fn step_workers_join(c: &Cluster) {
    let key = c.dir.join("sandbox/id_ed25519");
    c.kubectl_ok(&[
        "-n",
        "kubeup-system",
        "create",
        "secret",
        "generic",
        "sandbox-ssh",
        "--type=kubernetes.io/ssh-auth",
        &format!("--from-file=ssh-privatekey={}", key.display()),
    ]);
    let gitops = kubeup_testsupport::crate_dir().join("../examples/gitops");
    c.kubectl_ok(&["apply", "-k", gitops.to_str().unwrap()]);
    for name in ["worker-1", "worker-2"] {
        wait_for(&format!("WorkerJoin {name} Ready"), 300, || {
            (workerjoin_phase(c, name) == "Ready").then(String::new)
        });
    }
    let nodes = c.kubectl_ok(&[
        "get",
        "nodes",
        "--no-headers",
        "-l",
        "example.com/pool=gitops",
    ]);
    assert_eq!(
        nodes.lines().filter(|l| l.contains(" Ready ")).count(),
        2,
        "{nodes}"
    );
    let table = c.kubectl_ok(&["-n", "kubeup-system", "get", "workerjoins"]);
    for col in ["ADDRESS", "PHASE", "NODE", "READY", "AGE", "198.18.0.12"] {
        assert!(
            table.contains(col),
            "`kubectl get workerjoins` lacks {col}: {table}"
        );
    }
}

fn step_worker_kubelet_certificate(c: &Cluster) {
    let name = host_name(c, 2);
    let pem = on_host(
        c,
        "198.18.0.12",
        "sed -n '/BEGIN CERTIFICATE/,/END CERTIFICATE/p' /var/lib/kubelet/pki/kubelet-client-current.pem",
    );
    let cert = c.dir.join("worker-kubelet.crt");
    std::fs::write(&cert, pem).unwrap();
    let ca = c.dir.join("pki/ca.crt");
    let o = run(
        "openssl",
        &[
            "verify",
            "-CAfile",
            ca.to_str().unwrap(),
            cert.to_str().unwrap(),
        ],
    );
    assert!(
        o.status.success(),
        "the worker's kubelet certificate is not from the cluster CA: {}",
        describe(&o)
    );
    let o = run(
        "openssl",
        &["x509", "-noout", "-subject", "-in", cert.to_str().unwrap()],
    );
    let subject = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        subject.contains(&format!("CN = system:node:{name}"))
            && subject.contains("O = system:nodes"),
        "{subject}"
    );
}

fn step_pod_runs_on_a_worker(c: &Cluster) {
    let name = host_name(c, 2);
    let manifest = format!(
        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"e2e-on-worker","namespace":"default"}},
        "spec":{{"nodeName":"{name}","containers":[{{"name":"pause","image":"registry.k8s.io/pause:3.10.1","imagePullPolicy":"Never"}}]}}}}"#
    );
    let file = c.dir.join("pod.json");
    std::fs::write(&file, manifest).unwrap();
    c.kubectl_ok(&["apply", "-f", file.to_str().unwrap()]);
    wait_for("the pod on a worker to run", 120, || {
        let o = c.kubectl(&[
            "get",
            "pod",
            "e2e-on-worker",
            "-o",
            "jsonpath={.status.phase}",
        ]);
        (String::from_utf8_lossy(&o.stdout) == "Running").then(String::new)
    });
    // Logs through the apiserver → kubelet path (client certificate auth).
    c.kubectl_ok(&["logs", "e2e-on-worker"]);
    c.kubectl_ok(&["delete", "pod", "e2e-on-worker", "--wait=false"]);
}

fn step_delete_resets_the_host(c: &Cluster) {
    let name = host_name(c, 3);
    c.kubectl_ok(&[
        "-n",
        "kubeup-system",
        "delete",
        "workerjoin",
        "worker-2",
        "--timeout=180s",
    ]);
    let nodes = c.kubectl_ok(&["get", "nodes", "--no-headers"]);
    assert!(
        !nodes.contains(&name),
        "the Node of a deleted WorkerJoin remains: {nodes}"
    );
    let left = on_host(
        c,
        "198.18.0.13",
        "ls /etc/kubernetes /opt/kubeup 2>/dev/null; systemctl is-active kubelet containerd; true",
    );
    assert!(
        !left.contains("kubelet-config") && !left.lines().any(|l| l == "active"),
        "the host was not reset: {left}"
    );
}

fn step_wrong_pin_fails_and_installs_nothing(c: &Cluster) {
    // Host 2's key pinned for host 3's address.
    let wrong =
        std::fs::read_to_string(c.dir.join(format!("workers/{}.yaml", host_name(c, 2)))).unwrap();
    let key = wrong
        .lines()
        .find_map(|l| l.trim().strip_prefix("key: "))
        .expect("a pinned key")
        .trim_matches('"')
        .to_string();
    let manifest = format!(
        "apiVersion: kubeup.dev/v1alpha1\nkind: WorkerJoin\nmetadata: {{name: wrong-pin, namespace: kubeup-system}}\n\
         spec:\n  address: 198.18.0.13\n  sshSecretRef: {{name: sandbox-ssh}}\n  hostKey: {{policy: Pin, key: \"{key}\"}}\n"
    );
    let file = c.dir.join("wrong-pin.yaml");
    std::fs::write(&file, manifest).unwrap();
    c.kubectl_ok(&["apply", "-f", file.to_str().unwrap()]);
    wait_for("the wrong pin to fail", 120, || {
        (workerjoin_phase(c, "wrong-pin") == "Failed").then(String::new)
    });
    let err = c.kubectl_ok(&[
        "-n",
        "kubeup-system",
        "get",
        "workerjoin",
        "wrong-pin",
        "-o",
        "jsonpath={.status.lastError}",
    ]);
    assert!(
        err.matches("SHA256:").count() >= 2,
        "the error does not name both fingerprints: {err}"
    );
    let left = on_host(c, "198.18.0.13", "ls /opt/kubeup 2>&1; true");
    assert!(
        left.contains("No such file"),
        "a refused host got files: {left}"
    );
    c.kubectl_ok(&[
        "-n",
        "kubeup-system",
        "delete",
        "workerjoin",
        "wrong-pin",
        "--timeout=60s",
    ]);
}

fn step_kubectl_kubeup_join_waits_for_ready(c: &Cluster, tmp: &Path) {
    // kubectl's plugin convention: `kubectl-kubeup` on the PATH.
    let plugins = tmp.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::os::unix::fs::symlink(KUBEUP, plugins.join("kubectl-kubeup")).unwrap();
    let path = format!(
        "{}:{}",
        plugins.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let pinned =
        std::fs::read_to_string(c.dir.join(format!("workers/{}.yaml", host_name(c, 3)))).unwrap();
    let key = pinned
        .lines()
        .find_map(|l| l.trim().strip_prefix("key: "))
        .expect("a pinned key")
        .trim_matches('"')
        .to_string();
    let o = Command::new(bundle_bin("kubectl"))
        .args(["kubeup", "join", "root@198.18.0.13", "--key"])
        .arg(c.dir.join("sandbox/id_ed25519"))
        .args([
            "--host-key",
            &key,
            "--name",
            "joined-by-plugin",
            "--wait",
            "--timeout",
            "300",
        ])
        .env("PATH", path)
        .env("KUBECONFIG", c.dir.join("admin.kubeconfig"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "kubectl kubeup join --wait failed: {}",
        describe(&o)
    );
    let nodes = c.kubectl_ok(&["get", "nodes", "--no-headers"]);
    assert_eq!(
        nodes.lines().filter(|l| l.contains(" Ready ")).count(),
        3,
        "{nodes}"
    );
}

/// The units listed under `did restart (N):` in up's report.
fn restarted(report: &str) -> Vec<String> {
    report
        .lines()
        .skip_while(|l| !l.starts_with("did restart"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .map(|l| l.trim().to_string())
        .collect()
}

fn step_one_setting_restarts_only_its_units(c: &Cluster) {
    let original = std::fs::read_to_string(&c.file).unwrap();
    assert!(original.contains("clusterDns: 10.96.0.10"), "{original}");
    std::fs::write(
        &c.file,
        original.replace("clusterDns: 10.96.0.10", "clusterDns: 10.96.0.11"),
    )
    .unwrap();
    let report = kubeup_ok(&["up", "-f", &c.file]);
    assert_eq!(
        restarted(&report),
        ["kubelet"],
        "a cluster DNS change restarted more than the kubelet: {report}"
    );
    std::fs::write(&c.file, original).unwrap();
    let report = kubeup_ok(&["up", "-f", &c.file]);
    assert_eq!(restarted(&report), ["kubelet"], "{report}");
}
