//! End-to-end steps for `spec.addons`, run on the pod-network test's shared
//! cluster (bootstrap/tests/e2e_network.rs: a controller and two workers
//! joined by the operator): local-path volumes that outlive their pod and
//! go with their PVC (and with the worker's removal, except the retained
//! ones), Traefik on every worker's host ports answering Ingresses by host
//! name and path, over TLS with an Ingress's own certificate, and a
//! cluster with `addons: {storage: none, ingress: none}` that has neither.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use super::common::*;

const NS: &str = "e2e-addons";
const TEST_IMAGE: &str = "kubeup.dev/busybox:test";
const CONTROLLER: &str = "198.18.0.11";

fn jsonpath(dir: &Path, args: &[&str], path: &str) -> String {
    let mut all = args.to_vec();
    let p = format!("jsonpath={path}");
    all.extend_from_slice(&["-o", &p]);
    kubectl_ok(dir, &all)
}

fn apply(dir: &Path, name: &str, yaml: &str) {
    let file = dir.join(name);
    std::fs::write(&file, yaml).unwrap();
    kubectl_ok(dir, &["apply", "-f", file.to_str().unwrap()]);
}

/// The workers: (name, InternalIP) each, sorted by name.
pub fn workers(dir: &Path) -> Vec<(String, String)> {
    let out = jsonpath(
        dir,
        &[
            "get",
            "nodes",
            "-l",
            "!node-role.kubernetes.io/control-plane",
        ],
        r#"{range .items[*]}{.metadata.name} {.status.addresses[?(@.type=="InternalIP")].address}{"\n"}{end}"#,
    );
    let mut w: Vec<(String, String)> = out
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(n, a)| (n.to_string(), a.to_string()))
        .collect();
    w.sort();
    w
}

fn wait_pod_running(dir: &Path, pod: &str, timeout_s: u64) {
    wait_for(&format!("pod {pod} Running"), timeout_s, || {
        let o = kubectl(
            dir,
            &[
                "-n",
                NS,
                "get",
                "pod",
                pod,
                "-o",
                "jsonpath={.status.phase}",
            ],
        );
        (String::from_utf8_lossy(&o.stdout) == "Running").then_some(())
    });
}

/// Everything of the add-ons on the shared cluster.
pub fn storage_and_ingress(dir: &Path) {
    let w = workers(dir);
    assert_eq!(w.len(), 2, "{w:?}");
    kubectl_ok(dir, &["create", "namespace", NS]);
    step_storage_class(dir);
    step_volume_outlives_its_pod(dir, &w[0]);
    step_ingress_by_host_and_path(dir, &w);
    step_ingress_tls(dir, &w);
}

/// local-path is the only default StorageClass, binds on first consumer,
/// deletes with its claim; its provisioner runs.
fn step_storage_class(dir: &Path) {
    let classes = jsonpath(
        dir,
        &["get", "storageclass"],
        r#"{range .items[*]}{.metadata.name} {.volumeBindingMode} {.reclaimPolicy} {.metadata.annotations.storageclass\.kubernetes\.io/is-default-class}{"\n"}{end}"#,
    );
    assert!(
        classes.contains("local-path WaitForFirstConsumer Delete true\n"),
        "{classes}"
    );
    assert!(
        classes.contains("local-path-retain WaitForFirstConsumer Retain \n"),
        "{classes}"
    );
    wait_for("local-path-provisioner available", 120, || {
        let o = kubectl(
            dir,
            &[
                "-n",
                "kube-system",
                "get",
                "deployment",
                "local-path-provisioner",
                "-o",
                "jsonpath={.status.availableReplicas}",
            ],
        );
        (String::from_utf8_lossy(&o.stdout) == "1").then_some(())
    });
}

fn statefulset(node: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: data, namespace: {NS}}}
spec:
  serviceName: data
  replicas: 1
  selector: {{matchLabels: {{app: data}}}}
  template:
    metadata: {{labels: {{app: data}}}}
    spec:
      nodeSelector: {{kubernetes.io/hostname: {node}}}
      terminationGracePeriodSeconds: 1
      containers:
      - name: main
        image: {TEST_IMAGE}
        imagePullPolicy: Never
        command: [/bin/busybox, sh, -c, '[ -f /data/stamp ] || /bin/busybox cat /proc/sys/kernel/random/uuid > /data/stamp; exec /bin/busybox sleep 3600']
        volumeMounts: [{{name: data, mountPath: /data}}]
  volumeClaimTemplates:
  - metadata: {{name: data}}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {{requests: {{storage: 64Mi}}}}
"#
    )
}

fn stamp(dir: &Path) -> String {
    wait_for("/data/stamp in data-0", 60, || {
        let o = kubectl(
            dir,
            &[
                "-n",
                NS,
                "exec",
                "data-0",
                "--",
                "/bin/busybox",
                "cat",
                "/data/stamp",
            ],
        );
        let s = String::from_utf8_lossy(&o.stdout).trim().to_string();
        (o.status.success() && !s.is_empty()).then_some(s)
    })
}

/// A StatefulSet's volume keeps its file across the StatefulSet's deletion
/// and re-creation; deleting the PVC removes the directory on the node.
fn step_volume_outlives_its_pod(dir: &Path, (node, address): &(String, String)) {
    let t = Instant::now();
    apply(dir, "addons-sts.yaml", &statefulset(node));
    wait_pod_running(dir, "data-0", 180);
    let first = stamp(dir);
    eprintln!(
        "local-path volume bound and written in {:.1}s",
        t.elapsed().as_secs_f64()
    );
    let pv = jsonpath(
        dir,
        &["-n", NS, "get", "pvc", "data-data-0"],
        "{.spec.volumeName}",
    );
    let path = jsonpath(dir, &["get", "pv", &pv], "{.spec.hostPath.path}");
    assert!(
        path.starts_with("/var/lib/local-path-provisioner/pvc-"),
        "{path}"
    );
    let on_node = on_host(dir, address, &format!("cat {path}/stamp"));
    assert_eq!(on_node.trim(), first);
    let record = on_host(dir, address, "cat /var/lib/kubeup/local-path-volumes/*");
    assert!(record.contains(&path), "{record}");

    kubectl_ok(dir, &["-n", NS, "delete", "statefulset", "data", "--wait"]);
    wait_for("data-0 gone", 60, || {
        let o = kubectl(dir, &["-n", NS, "get", "pod", "data-0"]);
        (!o.status.success()).then_some(())
    });
    apply(dir, "addons-sts.yaml", &statefulset(node));
    wait_pod_running(dir, "data-0", 120);
    assert_eq!(stamp(dir), first, "the file survived the pod's re-creation");

    kubectl_ok(dir, &["-n", NS, "delete", "statefulset", "data", "--wait"]);
    kubectl_ok(dir, &["-n", NS, "delete", "pvc", "data-data-0", "--wait"]);
    wait_for("the PV deleted", 120, || {
        let o = kubectl(dir, &["get", "pv", &pv]);
        (!o.status.success()).then_some(())
    });
    let left = on_host(
        dir,
        address,
        &format!("ls -d {path} /var/lib/kubeup/local-path-volumes/$(basename {path}) 2>&1; true"),
    );
    assert!(
        left.matches("No such file").count() == 2,
        "the volume's directory and record stayed: {left}"
    );
    eprintln!("PVC deleted: {path} removed from {node}");
}

fn web(name: &str, node: &str, text: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {NS}, labels: {{app: {name}}}}}
spec:
  nodeName: {node}
  containers:
  - name: http
    image: {TEST_IMAGE}
    imagePullPolicy: Never
    command: [/bin/nettest, http, ":8080", "{text}"]
    ports: [{{containerPort: 8080}}]
---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {NS}}}
spec:
  selector: {{app: {name}}}
  ports: [{{port: 80, targetPort: 8080}}]
"#
    )
}

/// A raw HTTP/1.1 request to `addr` with a `Host:` header, from the test
/// process (the machine running the tests, on the sandbox bridge): the
/// response, or `None` on any failure.
pub fn get_with_host(addr: &str, host: &str, path: &str) -> Option<String> {
    let sock = addr.parse().ok()?;
    let mut s = TcpStream::connect_timeout(&sock, Duration::from_secs(3)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.starts_with("HTTP/1.1 200").then_some(out)
}

/// Traefik runs on both workers (not on the controller); an Ingress
/// without a class gets `traefik`; it answers by host name on every
/// worker's port 80 from the test machine and from the controller, and a
/// second path routes to a second Service.
fn step_ingress_by_host_and_path(dir: &Path, w: &[(String, String)]) {
    let t = Instant::now();
    wait_for("Traefik ready on both workers", 180, || {
        let o = kubectl(
            dir,
            &[
                "-n",
                "kube-system",
                "get",
                "daemonset",
                "traefik",
                "-o",
                "jsonpath={.status.desiredNumberScheduled} {.status.numberReady}",
            ],
        );
        (String::from_utf8_lossy(&o.stdout) == "2 2").then_some(())
    });
    let nodes = jsonpath(
        dir,
        &[
            "-n",
            "kube-system",
            "get",
            "pods",
            "-l",
            "app.kubernetes.io/name=traefik",
        ],
        "{.items[*].spec.nodeName}",
    );
    let mut nodes: Vec<&str> = nodes.split_whitespace().collect();
    nodes.sort();
    assert_eq!(nodes, [w[0].0.as_str(), w[1].0.as_str()], "workers only");
    eprintln!("Traefik ready in {:.1}s", t.elapsed().as_secs_f64());

    let a = &w[0].0;
    apply(dir, "addons-web1.yaml", &web("web1", a, "hello from web1"));
    apply(dir, "addons-web2.yaml", &web("web2", a, "hello from web2"));
    apply(
        dir,
        "addons-ingress.yaml",
        &format!(
            r#"apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: web, namespace: {NS}}}
spec:
  rules:
  - host: web.e2e.test
    http:
      paths:
      - {{path: /, pathType: Prefix, backend: {{service: {{name: web1, port: {{number: 80}}}}}}}}
      - {{path: /two, pathType: Prefix, backend: {{service: {{name: web2, port: {{number: 80}}}}}}}}
"#
        ),
    );
    let class = jsonpath(
        dir,
        &["-n", NS, "get", "ingress", "web"],
        "{.spec.ingressClassName}",
    );
    assert_eq!(class, "traefik", "the default IngressClass");
    wait_pod_running(dir, "web1", 120);
    wait_pod_running(dir, "web2", 120);
    for (_, address) in w {
        let addr = format!("{address}:80");
        let one = wait_for(&format!("web.e2e.test/ on {addr}"), 90, || {
            get_with_host(&addr, "web.e2e.test", "/").filter(|r| r.contains("hello from web1 /"))
        });
        assert!(one.contains("hello from web1 /\n"), "{one}");
        // Traefik routes a path only once its Service has endpoints; until
        // web2's are published, /two falls through to the `/` rule (web1).
        let two = wait_for(&format!("web.e2e.test/two on {addr}"), 60, || {
            get_with_host(&addr, "web.e2e.test", "/two").filter(|r| r.contains("hello from web2"))
        });
        assert!(two.contains("hello from web2 /two\n"), "{two}");
        // An unknown host is no route.
        assert!(get_with_host(&addr, "other.e2e.test", "/").is_none());
    }
    // From another node: the controller (no Traefik there) to worker B.
    let b = &w[1].1;
    let from_controller = on_host(
        dir,
        CONTROLLER,
        &format!(
            "exec 3<>/dev/tcp/{b}/80; printf 'GET /two HTTP/1.0\\r\\nHost: web.e2e.test\\r\\n\\r\\n' >&3; cat <&3"
        ),
    );
    assert!(
        from_controller.contains("hello from web2 /two"),
        "{from_controller}"
    );
    // Nothing listens on the controller's port 80.
    assert!(get_with_host(&format!("{CONTROLLER}:80"), "web.e2e.test", "/").is_none());
    eprintln!("Ingress by host and path: ok on both workers and from the controller");
}

/// A TLS Ingress with a Secret: port 443 serves that certificate for its
/// host (verified by curl against it as the only trusted CA).
fn step_ingress_tls(dir: &Path, w: &[(String, String)]) {
    let host = "secure.e2e.test";
    let key = dir.join("addons-tls.key");
    let crt = dir.join("addons-tls.crt");
    let o = run(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            &format!("/CN={host}"),
            "-addext",
            &format!("subjectAltName=DNS:{host}"),
            "-keyout",
            key.to_str().unwrap(),
            "-out",
            crt.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", describe(&o));
    kubectl_ok(
        dir,
        &[
            "-n",
            NS,
            "create",
            "secret",
            "tls",
            "secure-tls",
            "--cert",
            crt.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ],
    );
    apply(
        dir,
        "addons-ingress-tls.yaml",
        &format!(
            r#"apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: secure, namespace: {NS}}}
spec:
  ingressClassName: traefik
  tls:
  - {{hosts: [{host}], secretName: secure-tls}}
  rules:
  - host: {host}
    http:
      paths:
      - {{path: /, pathType: Prefix, backend: {{service: {{name: web2, port: {{number: 80}}}}}}}}
"#
        ),
    );
    for (_, address) in w {
        let resolve = format!("{host}:443:{address}");
        let url = format!("https://{host}/tls");
        let body = wait_for(&format!("{url} on {address}"), 90, || {
            let o = run(
                "curl",
                &[
                    "-sS",
                    "--max-time",
                    "5",
                    "--cacert",
                    crt.to_str().unwrap(),
                    "--resolve",
                    &resolve,
                    &url,
                ],
            );
            let body = String::from_utf8_lossy(&o.stdout).into_owned();
            (o.status.success() && body.contains("hello from web2 /tls")).then_some(body)
        });
        eprintln!("TLS Ingress on {address}: {body:?}");
    }
}

/// A WorkerJoin's removal resets its host: the Delete-class volume on it
/// goes, the retained one (StorageClass local-path-retain) stays.
pub fn step_worker_removal_keeps_only_retained_volumes(dir: &Path) {
    let w = workers(dir);
    let (node, address) = w.last().unwrap().clone();
    let joins = jsonpath(
        dir,
        &["-n", "kubeup-system", "get", "workerjoins"],
        r#"{range .items[*]}{.metadata.name} {.spec.address}{"\n"}{end}"#,
    );
    let join = joins
        .lines()
        .find_map(|l| l.strip_suffix(&format!(" {address}")))
        .unwrap_or_else(|| panic!("no WorkerJoin for {address}: {joins}"))
        .to_string();
    let claim = |name: &str, class: &str| {
        format!(
            r#"apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: {name}, namespace: {NS}}}
spec:
  storageClassName: {class}
  accessModes: [ReadWriteOnce]
  resources: {{requests: {{storage: 16Mi}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {NS}}}
spec:
  # Through the scheduler (not nodeName): WaitForFirstConsumer provisions
  # on the node it picks.
  nodeSelector: {{kubernetes.io/hostname: {node}}}
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {TEST_IMAGE}
    imagePullPolicy: Never
    command: [/bin/busybox, sh, -c, 'echo kept > /data/file; exec /bin/busybox sleep 3600']
    volumeMounts: [{{name: data, mountPath: /data}}]
  volumes:
  - {{name: data, persistentVolumeClaim: {{claimName: {name}}}}}
"#
        )
    };
    apply(dir, "addons-gone.yaml", &claim("gone", "local-path"));
    apply(dir, "addons-kept.yaml", &claim("kept", "local-path-retain"));
    let mut paths = vec![];
    for name in ["gone", "kept"] {
        wait_pod_running(dir, name, 180);
        let pv = jsonpath(dir, &["-n", NS, "get", "pvc", name], "{.spec.volumeName}");
        paths.push(jsonpath(dir, &["get", "pv", &pv], "{.spec.hostPath.path}"));
    }
    assert!(paths[1].contains("/retained/pvc-"), "{paths:?}");
    wait_for("both files written", 30, || {
        let o = on_host(
            dir,
            &address,
            &format!("cat {}/file {}/file 2>/dev/null; true", paths[0], paths[1]),
        );
        (o == "kept\nkept\n").then_some(())
    });
    let t = Instant::now();
    // The WorkerJoin alone: the operator needs its SSH Secret to reset the host.
    kubectl_ok(
        dir,
        &[
            "-n",
            "kubeup-system",
            "delete",
            "workerjoin",
            &join,
            "--wait",
        ],
    );
    wait_for(&format!("Node {node} gone"), 300, || {
        let o = kubectl(dir, &["get", "node", &node]);
        (!o.status.success()).then_some(())
    });
    eprintln!(
        "WorkerJoin of {node} deleted in {:.1}s",
        t.elapsed().as_secs_f64()
    );
    let left = on_host(
        dir,
        &address,
        &format!(
            "cat {}/file 2>&1; cat {}/file 2>&1; true",
            paths[0], paths[1]
        ),
    );
    assert!(left.contains("No such file"), "{left}");
    assert!(
        left.ends_with("kept\n"),
        "the retained volume stays: {left}"
    );
}

/// `addons: {storage: none, ingress: none}` on a cluster of its own
/// (kubeconfig `kubeconfig`): no StorageClass, IngressClass, provisioner or
/// Traefik, and neither image on its host.
pub fn check_none_installs_neither(kubeconfig: &Path, dir: &Path, host: &str) {
    let k = |args: &[&str]| {
        let mut all = vec!["--kubeconfig", kubeconfig.to_str().unwrap()];
        all.extend_from_slice(args);
        let o = run(&bundle_bin("kubectl"), &all);
        assert!(o.status.success(), "{}", describe(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    assert_eq!(k(&["get", "storageclass", "-o", "name"]), "");
    assert_eq!(k(&["get", "ingressclass", "-o", "name"]), "");
    let kube_system = k(&["-n", "kube-system", "get", "deploy,daemonset", "-o", "name"]);
    assert!(
        !kube_system.contains("traefik") && !kube_system.contains("local-path"),
        "{kube_system}"
    );
    let images = on_host(
        dir,
        host,
        "ls /opt/kubeup/bundle/*/images/; /opt/kubeup/bundle/*/bin/ctr -n k8s.io images ls -q",
    );
    assert!(
        !images.contains("traefik") && !images.contains("local-path"),
        "{images}"
    );
}
