//! The apiserver harness against the real thing: kubeup's CRDs served by a
//! real kube-apiserver, their schema enforced, and etcd's client TLS locked
//! to its own CA. Needs the bundle (`cargo xtask bundle`).

// An integration test, not product code: a panic here is a test failure.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::string_slice,
    clippy::panic
)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use kube::Api;
use kube::api::PostParams;
use kubeup_crds::{HostKeyPolicy, HostKeyTrust, SshSecretRef, WorkerJoin, WorkerJoinSpec};
use kubeup_testsupport::apiserver::ApiServer;

fn crds_yaml() -> PathBuf {
    kubeup_testsupport::crate_dir().join("../charts/kubeup/crds/kubeup.dev.yaml")
}

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

/// Apply the CRDs with the bundle's kubectl and wait until they are served.
fn install_crds(api: &ApiServer) {
    let out = run(api.kubectl().arg("apply").arg("-f").arg(crds_yaml()), None);
    assert!(out.status.success(), "kubectl apply: {}", text(&out));
    let out = run(
        api.kubectl().args([
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/workerjoins.kubeup.dev",
            "crd/clusters.kubeup.dev",
        ]),
        None,
    );
    assert!(out.status.success(), "kubectl wait: {}", text(&out));
}

#[tokio::test]
async fn crds_apply_and_explain_their_fields() {
    let api = ApiServer::start().await.unwrap();
    eprintln!("harness start→ready: {:?}", api.startup);
    install_crds(&api);
    // The OpenAPI document is published a moment after the CRD is
    // Established; explain fails until then.
    let deadline = Instant::now() + Duration::from_secs(60);
    let explained = loop {
        let out = run(api.kubectl().args(["explain", "workerjoin.spec"]), None);
        if out.status.success() {
            break text(&out);
        }
        assert!(Instant::now() < deadline, "kubectl explain: {}", text(&out));
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    for expected in [
        "address",
        "IPv4 address or DNS name the operator connects to over SSH",
        "sshSecretRef",
        "hostKey",
    ] {
        assert!(
            explained.contains(expected),
            "explain lacks {expected:?}:\n{explained}"
        );
    }
}

#[tokio::test]
async fn schema_accepts_a_valid_workerjoin_and_rejects_invalid_ones() {
    let api = ApiServer::start().await.unwrap();
    install_crds(&api);
    // Typed, through kube: what the operator and CLI will send.
    let joins: Api<WorkerJoin> = Api::namespaced(api.client.clone(), "default");
    let valid = WorkerJoin::new(
        "worker-1",
        WorkerJoinSpec {
            address: "198.18.0.11".into(),
            port: 22,
            user: "root".into(),
            ssh_secret_ref: SshSecretRef {
                name: "worker-1-ssh".into(),
                sudo_password_key: None,
            },
            host_key: HostKeyTrust {
                policy: HostKeyPolicy::AcceptNew,
                key: None,
            },
            ..Default::default()
        },
    );
    let created = joins.create(&PostParams::default(), &valid).await.unwrap();
    assert_eq!(created.spec.address, "198.18.0.11");

    // Untyped, through kubectl: values the Rust types cannot even express.
    let invalid = |name: &str, address: &str, host_key: &str| {
        format!(
            "apiVersion: kubeup.dev/v1alpha1\nkind: WorkerJoin\nmetadata:\n  name: {name}\n  namespace: default\n\
             spec:\n  address: {address:?}\n  sshSecretRef:\n    name: s\n  hostKey: {host_key}\n"
        )
    };
    let cases = [
        (
            invalid("bad-address", "not an address!", "{policy: AcceptNew}"),
            "spec.address",
        ),
        (
            invalid("bad-policy", "198.18.0.12", "{policy: TrustEverything}"),
            "Unsupported value: \"TrustEverything\"",
        ),
        (
            invalid("pin-without-key", "198.18.0.13", "{policy: Pin}"),
            "hostKey.key is required when policy is Pin",
        ),
    ];
    for (manifest, expected) in cases {
        let out = run(api.kubectl().args(["apply", "-f", "-"]), Some(&manifest));
        let msg = text(&out);
        assert!(
            !out.status.success(),
            "accepted an invalid WorkerJoin:\n{manifest}"
        );
        assert!(
            msg.contains(expected),
            "rejection of\n{manifest}does not mention {expected:?}: {msg}"
        );
    }
    let names: Vec<String> = joins
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|j| j.metadata.name)
        .collect();
    assert_eq!(names, ["worker-1"]);
}

#[tokio::test]
async fn etcd_accepts_only_clients_of_its_own_ca() {
    let api = ApiServer::start().await.unwrap();
    let pki = api.pki.clone();
    let get = ["get", "--prefix", "--keys-only", "--limit=1", "/registry"];

    // The apiserver's client certificate (etcd CA) opens etcd.
    let out = run(
        api.etcdctl()
            .arg(format!(
                "--cert={}",
                pki.join("apiserver-etcd-client.crt").display()
            ))
            .arg(format!(
                "--key={}",
                pki.join("apiserver-etcd-client.key").display()
            ))
            .args(get),
        None,
    );
    assert!(
        out.status.success(),
        "etcd-CA client refused: {}",
        text(&out)
    );
    assert!(text(&out).contains("/registry/"), "{}", text(&out));

    // No client certificate at all.
    let out = run(api.etcdctl().args(get), None);
    assert!(
        !out.status.success(),
        "etcd served a client without a certificate: {}",
        text(&out)
    );

    // A valid client certificate of the cluster CA (the admin's, which the
    // apiserver trusts for everything) is still a stranger to etcd.
    let out = run(
        api.etcdctl()
            .arg(format!("--cert={}", pki.join("admin.crt").display()))
            .arg(format!("--key={}", pki.join("admin.key").display()))
            .args(get),
        None,
    );
    assert!(
        !out.status.success(),
        "etcd served a client of the cluster CA: {}",
        text(&out)
    );
    let msg = text(&out);
    assert!(
        msg.contains("certificate") || msg.contains("context deadline exceeded"),
        "unexpected failure: {msg}"
    );
    assert!(
        api.log_tail("etcd").contains("bad certificate")
            || api.log_tail("etcd").contains("certificate"),
        "etcd did not log the rejected handshake:\n{}",
        api.log_tail("etcd")
    );
}

#[test]
fn harness_stops_everything_when_a_test_panics() {
    let (tx, rx) = std::sync::mpsc::channel();
    let result = std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let api = ApiServer::start().await.unwrap();
            tx.send((api.pids(), api.work_dir().to_owned())).unwrap();
            panic!("deliberate panic with the harness running");
        })
    })
    .join();
    assert!(result.is_err(), "the test thread should have panicked");
    let (pids, dir) = rx.recv().unwrap();
    for pid in pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "process {pid} outlived the harness"
        );
    }
    assert!(!dir.exists(), "{} was not removed", dir.display());
}
