//! kube-controller-manager with the CSR-signing flags kubeup renders for the
//! controller, against a real kube-apiserver: a `kubernetes.io/kubelet-serving`
//! CSR is signed by the kubelet-serving CA (never the cluster CA clients
//! trust for the apiserver), while kubelet client and apiserver client CSRs
//! are still signed by the cluster CA. (kube-controller-manager refuses to
//! start with the generic `--cluster-signing-{cert,key}-file` next to a
//! per-signer flag: this is where that shows.) Needs the bundle (`cargo
//! xtask bundle`) and openssl.

// An integration test, not product code: a panic here is a test failure.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::string_slice,
    clippy::panic
)]

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use kubeup_provision::hostplan::{
    ControllerInput, EtcdMember, EtcdPlacement, NodeInput, layout, units,
};
use kubeup_testsupport::apiserver::ApiServer;

fn run(cmd: &mut Command, stdin: Option<&str>) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("failed to start {cmd:?}: {e}"));
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The `--cluster-signing-*` flags of the kube-controller-manager unit kubeup
/// renders, with the controller's PKI directory replaced by `pki`.
fn rendered_signing_flags(pki: &Path) -> Vec<String> {
    let c = ControllerInput {
        node: NodeInput {
            node_name: "ctl-1".into(),
            address: "192.0.2.10".into(),
            kubernetes_version: "v1.34.10".into(),
            api_backends: vec!["192.0.2.10".into()],
            cluster_dns: "10.96.0.10".into(),
            cluster_domain: "cluster.local".into(),
            pod_cidr: "10.244.0.0/16".into(),
            pause_image: "registry.k8s.io/pause:3.10.1".into(),
            register_taints: vec![],
        },
        cluster_name: "demo".into(),
        service_cidr: "10.96.0.0/12".into(),
        etcd: EtcdPlacement::Stacked(EtcdMember {
            name: "ctl-1".into(),
            address: "192.0.2.10".into(),
            kubernetes_version: "v1.34.10".into(),
            cluster_name: "demo".into(),
            members: vec![("ctl-1".into(), "192.0.2.10".into())],
            joins_existing: false,
        }),
        endpoint: None,
        vip: None,
    };
    let unit = units::kube_controller_manager(&c);
    let text = String::from_utf8(unit.content).unwrap();
    let flags: Vec<String> = text
        .lines()
        .map(|l| l.trim().trim_end_matches('\\').trim())
        .filter(|l| l.starts_with("--cluster-signing-"))
        .map(|l| l.replace(layout::PKI, &pki.display().to_string()))
        .collect();
    // kube-controller-manager refuses the generic flags next to per-signer ones.
    assert!(
        !flags
            .iter()
            .any(|f| f.starts_with("--cluster-signing-cert-file")
                || f.starts_with("--cluster-signing-key-file")),
        "{flags:?}"
    );
    for want in [
        "--cluster-signing-kubelet-serving-cert-file=",
        "--cluster-signing-kubelet-serving-key-file=",
        "--cluster-signing-kubelet-client-cert-file=",
        "--cluster-signing-kubelet-client-key-file=",
        "--cluster-signing-kube-apiserver-client-cert-file=",
        "--cluster-signing-kube-apiserver-client-key-file=",
    ] {
        assert!(
            flags.iter().any(|f| f.starts_with(want)),
            "{want} missing from the rendered unit:\n{text}"
        );
    }
    flags
}

struct Kcm(Child);

impl Drop for Kcm {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A CSR (PEM) with a fresh P-256 key, made by openssl.
fn csr_pem(dir: &Path, name: &str, subject: &str, san: Option<&str>) -> String {
    let mut cmd = Command::new("openssl");
    cmd.args(["req", "-new", "-newkey", "ec", "-pkeyopt"])
        .arg("ec_paramgen_curve:P-256")
        .arg("-nodes")
        .arg("-keyout")
        .arg(dir.join(format!("{name}.key")))
        .args(["-subj", subject]);
    if let Some(san) = san {
        cmd.args(["-addext", &format!("subjectAltName={san}")]);
    }
    let out = run(&mut cmd, None);
    assert!(out.status.success(), "openssl req: {}", text(&out));
    String::from_utf8(out.stdout).unwrap()
}

fn b64(data: &[u8]) -> String {
    let out = run(
        Command::new("openssl").args(["base64", "-A"]),
        Some(std::str::from_utf8(data).unwrap()),
    );
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

/// Create, approve and wait for the certificate of one CSR; returns its PEM.
fn signed(
    api: &ApiServer,
    kcm_log: &Path,
    name: &str,
    signer: &str,
    usages: &[&str],
    csr: &str,
) -> String {
    let usages = usages
        .iter()
        .map(|u| format!("\"{u}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let manifest = format!(
        "apiVersion: certificates.k8s.io/v1\nkind: CertificateSigningRequest\nmetadata:\n  name: {name}\nspec:\n  signerName: {signer}\n  usages: [{usages}]\n  request: {}\n",
        b64(csr.as_bytes())
    );
    let out = run(api.kubectl().args(["create", "-f", "-"]), Some(&manifest));
    assert!(out.status.success(), "create {name}: {}", text(&out));
    let out = run(api.kubectl().args(["certificate", "approve", name]), None);
    assert!(out.status.success(), "approve {name}: {}", text(&out));
    let started = Instant::now();
    loop {
        let out = run(
            api.kubectl()
                .args(["get", "csr", name, "-o", "jsonpath={.status.certificate}"]),
            None,
        );
        let b = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if out.status.success() && !b.is_empty() {
            let decoded = run(
                Command::new("openssl").args(["base64", "-d", "-A"]),
                Some(&b),
            );
            assert!(decoded.status.success());
            return String::from_utf8(decoded.stdout).unwrap();
        }
        if started.elapsed() > Duration::from_secs(60) {
            let all = run(api.kubectl().args(["get", "csr", name, "-o", "yaml"]), None);
            panic!(
                "CSR {name} was not signed within 60 s:\n{}\nkube-controller-manager:\n{}",
                text(&all),
                std::fs::read_to_string(kcm_log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn verifies(ca: &Path, leaf: &Path) -> bool {
    Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(ca)
        .arg(leaf)
        .output()
        .unwrap()
        .status
        .success()
}

#[tokio::test]
async fn kubelet_serving_csrs_are_signed_by_the_kubelet_serving_ca() {
    let api = ApiServer::start().await.expect("apiserver harness");
    let pki = api.pki.clone();
    assert!(pki.join("kubelet-serving-ca.crt").exists());
    assert!(pki.join("kubelet-serving-ca.key").exists());
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("kcm.log");
    let _kcm = Kcm(Command::new(api.bundle.join("bin/kube-controller-manager"))
        .arg(format!("--kubeconfig={}", api.kubeconfig.display()))
        .arg("--controllers=csrsigning")
        .args(rendered_signing_flags(&pki))
        .args([
            "--leader-elect=false",
            "--secure-port=0",
            "--use-service-account-credentials=false",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start kube-controller-manager from the bundle"));

    let serving = csr_pem(
        dir.path(),
        "serving",
        "/O=system:nodes/CN=system:node:worker-1",
        Some("DNS:worker-1,IP:192.0.2.21"),
    );
    let cert = signed(
        &api,
        &log,
        "kubelet-serving-worker-1",
        "kubernetes.io/kubelet-serving",
        &["digital signature", "key encipherment", "server auth"],
        &serving,
    );
    let serving_crt = dir.path().join("serving.crt");
    std::fs::write(&serving_crt, &cert).unwrap();
    assert!(
        verifies(&pki.join("kubelet-serving-ca.crt"), &serving_crt),
        "the kubelet serving certificate does not chain to the kubelet-serving CA:\n{cert}\nkcm:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(
        !verifies(&pki.join("ca.crt"), &serving_crt),
        "a kubelet serving certificate chains to the cluster CA"
    );

    // The generic flags still sign the other signers with the cluster CA.
    let client = csr_pem(
        dir.path(),
        "client",
        "/O=system:nodes/CN=system:node:worker-1",
        None,
    );
    let cert = signed(
        &api,
        &log,
        "kubelet-client-worker-1",
        "kubernetes.io/kube-apiserver-client-kubelet",
        &["digital signature", "client auth"],
        &client,
    );
    let client_crt = dir.path().join("client.crt");
    std::fs::write(&client_crt, &cert).unwrap();
    assert!(verifies(&pki.join("ca.crt"), &client_crt));
    assert!(!verifies(&pki.join("kubelet-serving-ca.crt"), &client_crt));

    let other = csr_pem(dir.path(), "other", "/O=team-a/CN=alice", None);
    let cert = signed(
        &api,
        &log,
        "apiserver-client-alice",
        "kubernetes.io/kube-apiserver-client",
        &["digital signature", "client auth"],
        &other,
    );
    let other_crt = dir.path().join("other.crt");
    std::fs::write(&other_crt, &cert).unwrap();
    assert!(verifies(&pki.join("ca.crt"), &other_crt));
    assert!(!verifies(&pki.join("kubelet-serving-ca.crt"), &other_crt));
}
