//! End to end, the pod network: `kubeup up` with `networking.cni: flannel`
//! on a 3-host sandbox (1 controller, 2 workers joined by the operator),
//! then a pod on worker A reaches a pod on worker B by pod IP over TCP, a
//! ClusterIP Service backed by a pod on the other worker answers, and a
//! NodePort answers on every node's address, and CoreDNS (applied by `up`)
//! resolves `kubernetes.default.svc.cluster.local` for a pod; `kubectl logs`
//! over verified kubelet TLS; `kubectl top nodes` (metrics-server); and on a
//! fourth host a single-node `cni: none` cluster whose Node waits for a CNI
//! with nothing of flannel (nor of `addons: none`'s storage and ingress)
//! installed. On the same cluster, the add-ons of bootstrap/tests/addons/:
//! local-path volumes and the Traefik ingress. One sandbox for the whole test; a
//! guard tears it down even on panic.
//!
//! Needs root, the sandbox prerequisites (hack/apt/sandbox.txt), the bundle
//! (`cargo xtask bundle`: flanneld and the busybox test image) and the
//! operator image (`cargo xtask image`).

// An integration test, not product code: a panic here is a test failure.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::string_slice,
    clippy::panic
)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Output;
use std::time::{Duration, Instant};

use serde::Deserialize;

mod addons;
mod common;
use common::*;
const NS: &str = "e2e-network";
const TEST_IMAGE: &str = "kubeup.dev/busybox:test";

struct Cluster {
    dir: PathBuf,
    file: String,
}

impl Cluster {
    fn kubectl(&self, args: &[&str]) -> Output {
        kubectl(&self.dir, args)
    }

    fn kubectl_ok(&self, args: &[&str]) -> String {
        kubectl_ok(&self.dir, args)
    }

    fn apply(&self, name: &str, yaml: &str) {
        let file = self.dir.join(name);
        std::fs::write(&file, yaml).unwrap();
        self.kubectl_ok(&["apply", "-f", file.to_str().unwrap()]);
    }

    /// A shell script on a sandbox host over OpenSSH with its pinned keys.
    fn on_host(&self, address: &str, script: &str) -> String {
        on_host(&self.dir, address, script)
    }

    fn jsonpath(&self, args: &[&str], path: &str) -> String {
        let mut all = args.to_vec();
        let p = format!("jsonpath={path}");
        all.extend_from_slice(&["-o", &p]);
        self.kubectl_ok(&all)
    }
}

#[test]
fn pod_network_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cluster");
    let dir_s = dir.to_str().unwrap().to_string();
    let _guard = SandboxGuard(dir.clone());
    sandbox_up(&dir_s, 4);
    let c = Cluster {
        file: dir.join("cluster.yaml").to_str().unwrap().to_string(),
        dir,
    };

    let t = Instant::now();
    kubeup_ok(&["up", "-f", &c.file]);
    eprintln!("up: {:.1}s", t.elapsed().as_secs_f64());
    step_flannel_runs_on_the_controller(&c);
    step_workers_join(&c);
    let pods = step_pods_on_two_workers(&c);
    step_pod_to_pod_across_nodes(&c, &pods);
    step_cluster_ip_service(&c, &pods);
    step_node_port_on_every_node(&c, &pods);
    step_cluster_dns(&c);
    step_logs_over_verified_kubelet_tls(&c);
    step_top_nodes(&c);
    // spec.addons (bootstrap/tests/addons): storage, ingress, and last a
    // worker's removal (the cluster has one worker fewer after it).
    addons::storage_and_ingress(&c.dir);
    addons::step_worker_removal_keeps_only_retained_volumes(&c.dir);
    step_cni_none_installs_no_network(&c);
}

/// The fourth sandbox host: not part of the main cluster (it gets a
/// single-node `cni: none` cluster of its own at the end).
const SPARE_HOST: &str = "198.18.0.14";

/// The apiserver verifies kubelets against the kubelet-serving CA
/// (--kubelet-certificate-authority): `kubectl logs` works for a pod on a
/// worker (serving certificate from the CSR API, approved by the operator)
/// and on the controller (issued by kubeup).
fn step_logs_over_verified_kubelet_tls(c: &Cluster) {
    let flags = c.on_host(
        "198.18.0.11",
        "cat /etc/systemd/system/kube-apiserver.service",
    );
    assert!(
        flags
            .contains("--kubelet-certificate-authority=/etc/kubernetes/pki/kubelet-serving-ca.crt"),
        "{flags}"
    );
    c.kubectl_ok(&["-n", NS, "logs", "server"]);
    let coredns = c.jsonpath(
        &["-n", "kube-system", "get", "pods", "-l", "k8s-app=kube-dns"],
        "{.items[0].metadata.name}",
    );
    c.kubectl_ok(&["-n", "kube-system", "logs", &coredns]);
    // The operator runs on the controller (its bundle is a hostPath there).
    let operator = c.jsonpath(
        &OPERATOR_PODS,
        "{.items[0].metadata.name} {.items[0].spec.nodeName}",
    );
    let (pod, node) = operator.split_once(' ').unwrap();
    let ctl = c.jsonpath(
        &[
            "get",
            "nodes",
            "-l",
            "node-role.kubernetes.io/control-plane",
        ],
        "{.items[0].metadata.name}",
    );
    assert_eq!(node, ctl, "the operator runs on the controller");
    c.kubectl_ok(&["-n", "kubeup-system", "logs", pod, "--tail=1"]);
}

/// metrics-server (built locally, verifying kubelets against the
/// kubelet-serving CA) answers `kubectl top nodes` with figures for every
/// node, the workers' serving certificates coming from kube-controller-manager's
/// kubelet-serving signer.
fn step_top_nodes(c: &Cluster) {
    let args = c.jsonpath(
        &["-n", "kube-system", "get", "deployment", "metrics-server"],
        "{.spec.template.spec.containers[0].args}",
    );
    assert!(!args.contains("insecure"), "{args}");
    assert!(
        args.contains("--kubelet-certificate-authority=/etc/kubelet-serving-ca/ca.crt"),
        "{args}"
    );
    let t = Instant::now();
    let out = wait_for("kubectl top nodes", 240, || {
        let o = c.kubectl(&["top", "nodes", "--no-headers"]);
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        let figures = out
            .lines()
            .filter(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() >= 5 && f[1].ends_with('m') && f[3].ends_with("Mi")
            })
            .count();
        (o.status.success() && figures == 3).then_some(out)
    });
    eprintln!(
        "kubectl top nodes after {:.1}s:\n{out}",
        t.elapsed().as_secs_f64()
    );
}

/// A second, single-node cluster on the spare host with `cni: none`: its
/// Node stays NotReady (no CNI config), and nothing of flannel is on it.
fn step_cni_none_installs_no_network(c: &Cluster) {
    let dir2 = c.dir.parent().unwrap().join("nocni");
    std::fs::create_dir_all(&dir2).unwrap();
    // Relative paths in cluster.yaml (the SSH key) resolve as in the sandbox dir.
    std::os::unix::fs::symlink(c.dir.join("sandbox"), dir2.join("sandbox")).unwrap();
    let mut doc: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(&c.file).unwrap()).unwrap();
    let spare = std::fs::read_dir(c.dir.join("workers"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .flat_map(|text| {
            serde_yaml_ng::Deserializer::from_str(&text)
                .map(|d| serde_yaml_ng::Value::deserialize(d).unwrap())
                .collect::<Vec<_>>()
        })
        .find(|d| d["kind"] == "WorkerJoin" && d["spec"]["address"] == SPARE_HOST)
        .expect("the spare host's WorkerJoin");
    doc["metadata"]["name"] = "nocni".into();
    let ctl = &mut doc["spec"]["controllers"][0];
    ctl["address"] = SPARE_HOST.into();
    ctl["hostKey"] = spare["spec"]["hostKey"].clone();
    if let Some(m) = ctl.as_mapping_mut() {
        m.remove("name");
    }
    doc["spec"]["networking"]["cni"] = "none".into();
    // Neither storage nor ingress either (checked below).
    doc["spec"]["addons"] = serde_yaml_ng::from_str("{storage: none, ingress: none}").unwrap();
    let file2 = dir2.join("cluster.yaml");
    std::fs::write(&file2, serde_yaml_ng::to_string(&doc).unwrap()).unwrap();
    // `init` completes the directory: keeps cluster.yaml, creates pki/.
    kubeup_ok(&["init", dir2.to_str().unwrap()]);
    kubeup_ok(&["up", "-f", file2.to_str().unwrap()]);

    let kubeconfig = dir2.join("admin.kubeconfig");
    let kubectl2 = |args: &[&str]| {
        let mut all = vec!["--kubeconfig", kubeconfig.to_str().unwrap()];
        all.extend_from_slice(args);
        run(&bundle_bin("kubectl"), &all)
    };
    // Give the kubelet time to report; Ready must not come.
    std::thread::sleep(Duration::from_secs(10));
    let o = kubectl2(&[
        "get",
        "nodes",
        "-o",
        r#"jsonpath={range .items[*]}{.status.conditions[?(@.type=="Ready")].status} {.status.conditions[?(@.type=="Ready")].message}{"\n"}{end}"#,
    ]);
    let nodes = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{}", describe(&o));
    assert_eq!(nodes.lines().count(), 1, "{nodes}");
    assert!(
        nodes.starts_with("False "),
        "the Node must wait for a CNI: {nodes}"
    );
    assert!(nodes.to_lowercase().contains("cni"), "{nodes}");
    let found = c.on_host(
        SPARE_HOST,
        "ls /etc/cni/net.d/ /run/flannel /etc/kube-flannel /etc/systemd/system/flanneld.service 2>/dev/null; \
         systemctl is-active flanneld 2>/dev/null; ip link show flannel.1 2>/dev/null; true",
    );
    assert!(
        !found.contains("flannel") && !found.contains("conflist") && !found.starts_with("active"),
        "cni: none installed network pieces: {found}"
    );
    addons::check_none_installs_neither(&kubeconfig, &c.dir, SPARE_HOST);
    eprintln!("cni: none: Node {}", nodes.trim());
}

fn step_flannel_runs_on_the_controller(c: &Cluster) {
    // flanneld was just started: give it a moment to make its device and
    // then write its subnet file (in that order).
    let out = wait_for("flannel.1 and subnet.env on the controller", 60, || {
        let out = c.on_host(
            "198.18.0.11",
            "systemctl is-active flanneld; ip -d link show flannel.1 2>&1; cat /run/flannel/subnet.env 2>&1; true",
        );
        (out.contains("vxlan id 1") && out.contains("FLANNEL_MTU=")).then_some(out)
    });
    assert!(out.starts_with("active\n"), "{out}");
    assert!(out.contains("FLANNEL_MTU=1450"), "{out}");
    let conflist = c.on_host("198.18.0.11", "cat /etc/cni/net.d/10-kubeup.conflist");
    assert!(conflist.contains("\"mtu\": 1450"), "{conflist}");
}

fn step_workers_join(c: &Cluster) {
    let t = Instant::now();
    // Every worker but the spare host (it gets a cluster of its own later).
    for e in std::fs::read_dir(c.dir.join("workers")).unwrap() {
        let path = e.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        if !text.contains(&format!("address: {SPARE_HOST}\n")) {
            c.kubectl_ok(&["apply", "-f", path.to_str().unwrap()]);
        }
    }
    wait_for("3 Nodes Ready", 300, || {
        let o = c.kubectl(&["get", "nodes", "--no-headers"]);
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        (out.lines().filter(|l| l.contains(" Ready ")).count() == 3).then_some(())
    });
    eprintln!("workers Ready: {:.1}s", t.elapsed().as_secs_f64());
    // flannel on each node records its VXLAN endpoint on its Node (a Node
    // is Ready from its CNI config, so flanneld may still be starting).
    let ips = wait_for("flannel's public-ip on every Node", 60, || {
        let ips = c.jsonpath(
            &["get", "nodes"],
            r#"{range .items[*]}{.metadata.annotations.flannel\.alpha\.coreos\.com/public-ip}{" "}{end}"#,
        );
        (ips.split_whitespace().count() == 3).then_some(ips)
    });
    let mut ips: Vec<&str> = ips.split_whitespace().collect();
    ips.sort();
    assert_eq!(ips, ["198.18.0.11", "198.18.0.12", "198.18.0.13"]);
    step_node_credentials(c);
}

/// flanneld runs on its own identity (never the kubelet's), workers' node
/// components on Node-bound day-long tokens, and no node group widens.
fn step_node_credentials(c: &Cluster) {
    let subjects = c.jsonpath(
        &["get", "clusterrolebinding", "kubeup:flannel"],
        r#"{range .subjects[*]}{.kind}/{.name}{" "}{end}"#,
    );
    assert_eq!(
        subjects.trim(),
        "ServiceAccount/flannel User/kubeup:flannel"
    );
    let controller = c.on_host("198.18.0.11", "grep -h 'kubeconfig-file\\|client-certificate' /etc/systemd/system/flanneld.service /etc/kubernetes/flannel.kubeconfig");
    assert!(
        controller.contains("/etc/kubernetes/flannel.kubeconfig"),
        "{controller}"
    );
    assert!(
        controller.contains("/etc/kubernetes/pki/flannel.crt"),
        "{controller}"
    );
    for worker in ["198.18.0.12", "198.18.0.13"] {
        // Only the payload of each token leaves the host.
        let out = c.on_host(
            worker,
            "grep -h tokenFile /etc/kubernetes/flannel.kubeconfig /etc/kubernetes/kube-proxy.kubeconfig; \
             for t in flannel kube-proxy; do cut -d. -f2 /etc/kubernetes/pki/$t.token; done; \
             systemctl is-active flanneld kube-proxy",
        );
        assert!(
            out.contains("tokenFile: /etc/kubernetes/pki/flannel.token"),
            "{out}"
        );
        assert!(
            out.contains("tokenFile: /etc/kubernetes/pki/kube-proxy.token"),
            "{out}"
        );
        assert!(out.contains("active\nactive"), "{out}");
        let claims: Vec<serde_json::Value> = out
            .lines()
            .filter(|l| !l.contains(':') && !l.starts_with("active"))
            .map(|p| {
                use base64::Engine;
                let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(p.trim_end_matches('='))
                    .unwrap_or_else(|e| panic!("{p}: {e}"));
                serde_json::from_slice(&raw).unwrap()
            })
            .collect();
        assert_eq!(claims.len(), 2, "{out}");
        for (sa, cl) in ["flannel", "kube-proxy"].iter().zip(&claims) {
            assert_eq!(cl["sub"], format!("system:serviceaccount:kube-system:{sa}"));
            assert!(
                cl["kubernetes.io"]["node"]["name"].is_string(),
                "Node-bound: {cl}"
            );
            let life = cl["exp"].as_i64().unwrap() - cl["iat"].as_i64().unwrap();
            assert!(life <= 24 * 3600, "a day at most: {cl}");
        }
    }
    // The operator records when it renews them.
    let renew = c.jsonpath(
        &["get", "workerjoins", "-A"],
        r#"{range .items[*]}{.status.credentialsRenewAt}{" "}{end}"#,
    );
    assert_eq!(
        renew.split_whitespace().count(),
        2,
        "credentialsRenewAt: {renew}"
    );
}

struct Pods {
    /// Worker names: the server runs on `a`, the client on `b`.
    a: String,
    b: String,
    server_ip: String,
}

fn step_pods_on_two_workers(c: &Cluster) -> Pods {
    let workers = c.jsonpath(
        &[
            "get",
            "nodes",
            "-l",
            "!node-role.kubernetes.io/control-plane",
        ],
        "{.items[*].metadata.name}",
    );
    let workers: Vec<&str> = workers.split_whitespace().collect();
    assert_eq!(workers.len(), 2, "{workers:?}");
    let (a, b) = (workers[0].to_string(), workers[1].to_string());
    c.kubectl_ok(&["create", "namespace", NS]);
    c.apply(
        "network-pods.yaml",
        &format!(
            r#"apiVersion: v1
kind: Pod
metadata: {{name: server, namespace: {NS}, labels: {{app: server}}}}
spec:
  nodeName: {a}
  containers:
  - name: httpd
    image: {TEST_IMAGE}
    imagePullPolicy: Never
    command: [/bin/busybox, sh, -c, 'mkdir -p /www && echo "hello from $(hostname)" > /www/index.html && exec httpd -f -p 8080 -h /www']
    ports: [{{containerPort: 8080}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: client, namespace: {NS}}}
spec:
  nodeName: {b}
  containers:
  - name: client
    image: {TEST_IMAGE}
    imagePullPolicy: Never
    command: [/bin/busybox, sleep, "3600"]
---
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: {NS}}}
spec:
  selector: {{app: server}}
  ports: [{{port: 80, targetPort: 8080}}]
---
apiVersion: v1
kind: Service
metadata: {{name: web-nodeport, namespace: {NS}}}
spec:
  type: NodePort
  selector: {{app: server}}
  ports: [{{port: 80, targetPort: 8080}}]
"#
        ),
    );
    for pod in ["server", "client"] {
        wait_for(&format!("pod {pod} Running"), 120, || {
            let o = c.kubectl(&[
                "-n",
                NS,
                "get",
                "pod",
                pod,
                "-o",
                "jsonpath={.status.phase}",
            ]);
            (String::from_utf8_lossy(&o.stdout) == "Running").then_some(())
        });
    }
    let server_ip = c.jsonpath(&["-n", NS, "get", "pod", "server"], "{.status.podIP}");
    let client_ip = c.jsonpath(&["-n", NS, "get", "pod", "client"], "{.status.podIP}");
    let subnet = |ip: &str| ip.rsplit_once('.').unwrap().0.to_string();
    assert_ne!(
        subnet(&server_ip),
        subnet(&client_ip),
        "the pods should be in two nodes' podCIDRs"
    );
    Pods { a, b, server_ip }
}

/// An HTTP GET (`nettest get`; busybox-static's wget crashes) from the
/// client pod on worker B, retried briefly while routes and endpoints settle.
fn fetch_from_client(c: &Cluster, url: &str) -> String {
    wait_for(&format!("{url} from the client pod"), 60, || {
        let o = c.kubectl(&["-n", NS, "exec", "client", "--", "/bin/nettest", "get", url]);
        let body = String::from_utf8_lossy(&o.stdout).into_owned();
        (o.status.success() && body.contains("hello from server")).then_some(body)
    })
}

fn step_pod_to_pod_across_nodes(c: &Cluster, pods: &Pods) {
    let t = Instant::now();
    let body = fetch_from_client(c, &format!("{}:8080", pods.server_ip));
    eprintln!(
        "pod on {} -> pod on {} ({}): {body:?} in {:.1}s",
        pods.b,
        pods.a,
        pods.server_ip,
        t.elapsed().as_secs_f64()
    );
}

fn step_cluster_ip_service(c: &Cluster, pods: &Pods) {
    let ip = c.jsonpath(&["-n", NS, "get", "service", "web"], "{.spec.clusterIP}");
    let body = fetch_from_client(c, &format!("{ip}:80"));
    eprintln!("ClusterIP {ip} (backend on {}): {body:?}", pods.a);
}

fn step_node_port_on_every_node(c: &Cluster, pods: &Pods) {
    let port = c.jsonpath(
        &["-n", NS, "get", "service", "web-nodeport"],
        "{.spec.ports[0].nodePort}",
    );
    let addresses = c.jsonpath(
        &["get", "nodes"],
        r#"{range .items[*]}{.status.addresses[?(@.type=="InternalIP")].address}{" "}{end}"#,
    );
    let addresses: Vec<&str> = addresses.split_whitespace().collect();
    assert_eq!(addresses.len(), 3, "{addresses:?}");
    for addr in addresses {
        let body = wait_for(&format!("NodePort {addr}:{port}"), 60, || {
            http_get(&format!("{addr}:{port}"))
        });
        assert!(body.contains("hello from server"), "{addr}:{port}: {body}");
        eprintln!("NodePort {addr}:{port} (backend on {}): ok", pods.a);
    }
}

/// A plain HTTP/1.0 GET from the test process; `None` on any failure.
fn http_get(addr: &str) -> Option<String> {
    let sock = addr.parse().ok()?;
    let mut s = TcpStream::connect_timeout(&sock, Duration::from_secs(3)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.starts_with("HTTP/1.").then_some(out)
}

fn step_cluster_dns(c: &Cluster) {
    let t = Instant::now();
    wait_for("CoreDNS available", 120, || {
        let o = c.kubectl(&[
            "-n",
            "kube-system",
            "get",
            "deployment",
            "coredns",
            "-o",
            "jsonpath={.status.availableReplicas}",
        ]);
        (String::from_utf8_lossy(&o.stdout) == "2").then_some(())
    });
    let answer = wait_for("nslookup from the client pod", 60, || {
        let o = c.kubectl(&[
            "-n",
            NS,
            "exec",
            "client",
            "--",
            "busybox",
            "nslookup",
            "kubernetes.default.svc.cluster.local",
        ]);
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        (o.status.success() && out.contains("Address: 10.96.0.1")).then_some(out)
    });
    assert!(
        answer.contains("10.96.0.10"),
        "not asked at the cluster DNS IP: {answer}"
    );
    eprintln!(
        "nslookup kubernetes.default.svc.cluster.local from a pod ({:.1}s):\n{answer}",
        t.elapsed().as_secs_f64()
    );
}
