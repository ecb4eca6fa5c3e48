//! `kubeup init` and `kubeup certs check` as a user runs them (the built
//! binary, no hosts): the kubelet-serving CA is made with the other CAs and
//! listed with its expiry.

// An integration test, not product code: a panic here is a test failure.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::string_slice,
    clippy::panic
)]

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};

fn kubeup(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kubeup"))
        .args(args)
        .output()
        .expect("run kubeup")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn init_makes_the_kubelet_serving_ca_and_certs_check_lists_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    let dir_s = dir.to_str().unwrap();
    let o = kubeup(&["init", dir_s]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("kubelet-serving-ca"), "{}", text(&o));
    let key = dir.join("pki/kubelet-serving-ca.key");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let file = dir.join("cluster.yaml");
    let o = kubeup(&["certs", "check", "-f", file.to_str().unwrap(), "-o", "json"]);
    assert!(o.status.success(), "{}", text(&o));
    let certs: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let ca = certs
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "kubelet-serving-ca")
        .unwrap_or_else(|| panic!("kubelet-serving-ca not listed: {certs}"));
    assert_eq!(ca["isCa"], true);
    assert!(
        ca["issuer"]
            .as_str()
            .unwrap()
            .contains("kubelet-serving-ca")
    );
    assert!(ca["daysLeft"].as_i64().unwrap() > 3000, "{ca}");
    let cluster_ca = certs
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "ca")
        .unwrap();
    assert_ne!(ca["subject"], cluster_ca["subject"]);

    let o = kubeup(&["certs", "check", "-f", file.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o)
            .lines()
            .any(|l| l.trim_start().starts_with("kubelet-serving-ca ")),
        "{}",
        text(&o)
    );
}
