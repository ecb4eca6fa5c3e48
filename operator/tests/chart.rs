//! The chart lints and renders with the bundle's helm, the rendered
//! manifests are exactly deploy/kubeup-operator.yaml (what `kubeup up`
//! applies), and they say what the operator needs: least-privilege RBAC,
//! a hostNetwork Deployment on the controller with the bundle mounted
//! read-only and the side-loaded image.

// Test code: a panic here is a test failure, not a crash of the product.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::string_slice,
    clippy::panic
)]

use std::path::PathBuf;
use std::process::Command;

use kubeup_crds::cluster::DEFAULT_KUBERNETES_VERSION;
use serde_yaml_ng::Value;

fn repo() -> PathBuf {
    kubeup_testsupport::crate_dir().join("..")
}

fn helm(args: &[&str]) -> String {
    let helm = kubeup_provision::artifacts::default_bundle_dir(DEFAULT_KUBERNETES_VERSION)
        .join("bin/helm");
    assert!(
        helm.exists(),
        "{} is missing: build the bundle with `cargo xtask bundle`",
        helm.display()
    );
    let out = Command::new(&helm).args(args).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "helm {args:?}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

fn docs(yaml: &str) -> Vec<Value> {
    use serde::Deserialize;
    serde_yaml_ng::Deserializer::from_str(yaml)
        .map(|d| Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

fn find<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"].as_str() == Some(kind))
        .unwrap_or_else(|| panic!("no {kind}"))
}

#[test]
fn chart_lints_renders_and_matches_deploy() {
    let chart = repo().join("charts/kubeup");
    let chart = chart.to_str().unwrap();
    helm(&["lint", "--strict", chart]);
    let rendered = helm(&[
        "template",
        "kubeup",
        chart,
        "--namespace",
        "kubeup-system",
        "--skip-crds",
    ]);
    let deploy = std::fs::read_to_string(repo().join("deploy/kubeup-operator.yaml")).unwrap();
    assert!(
        deploy.ends_with(&rendered),
        "deploy/kubeup-operator.yaml is out of date: run `cargo xtask chart`"
    );

    let d = docs(&rendered);
    let dep = find(&d, "Deployment");
    let pod = &dep["spec"]["template"]["spec"];
    // Pod network by default (two replicas fit on one controller); with
    // hostNetwork=true (what `kubeup up` renders for `cni: none`) exactly
    // these lines are added to the pod spec.
    assert_eq!(pod["hostNetwork"], Value::Null);
    let host_net = helm(&[
        "template",
        "kubeup",
        chart,
        "--namespace",
        "kubeup-system",
        "--skip-crds",
        "--set",
        "hostNetwork=true",
    ]);
    let after = "      serviceAccountName: kubeup-operator\n";
    let inserted = "      # SSH goes out from the controller's own network (no pod network yet).\n      hostNetwork: true\n      dnsPolicy: Default\n";
    assert_eq!(
        host_net,
        rendered.replacen(after, &format!("{after}{inserted}"), 1),
        "bootstrap/src/operator_manifests.rs inserts the same lines"
    );
    assert_eq!(
        pod["nodeSelector"]["node-role.kubernetes.io/control-plane"],
        Value::String(String::new())
    );
    assert_eq!(
        pod["tolerations"][0]["key"].as_str(),
        Some("node-role.kubernetes.io/control-plane")
    );
    let c = &pod["containers"][0];
    assert_eq!(
        c["image"].as_str(),
        Some(format!("kubeup.dev/kubeup-operator:{}", env!("CARGO_PKG_VERSION")).as_str())
    );
    assert_eq!(c["imagePullPolicy"].as_str(), Some("Never"));
    assert_eq!(c["volumeMounts"][0]["readOnly"], Value::Bool(true));
    assert_eq!(
        pod["volumes"][0]["hostPath"]["path"].as_str(),
        Some("/opt/kubeup/bundle")
    );
    // The transfer cache: the controller directory `up` makes the
    // operator's, writable, where the operator looks for it.
    assert_eq!(
        pod["volumes"][1]["hostPath"]["path"].as_str(),
        Some(kubeup_provision::hostplan::layout::TRANSFER_CACHE)
    );
    assert_eq!(
        c["volumeMounts"][1]["mountPath"].as_str(),
        Some("/var/cache/kubeup")
    );
    assert_eq!(c["volumeMounts"][1]["readOnly"], Value::Null);
    assert!(
        c["args"]
            .as_sequence()
            .unwrap()
            .contains(&Value::String("--transfer-cache=/var/cache/kubeup".into()))
    );
    assert_eq!(
        pod["securityContext"]["runAsUser"].as_u64(),
        Some(u64::from(kubeup_provision::hostplan::layout::OPERATOR_UID))
    );
    assert_eq!(
        c["readinessProbe"]["httpGet"]["path"].as_str(),
        Some("/readyz")
    );
    assert_eq!(
        c["livenessProbe"]["httpGet"]["path"].as_str(),
        Some("/healthz")
    );
    assert_eq!(
        dep["spec"]["template"]["metadata"]["annotations"]["prometheus.io/scrape"].as_str(),
        Some("true")
    );
    // Everything namespaced lives in the release namespace, except kube-proxy's
    // ServiceAccount and the right to request tokens for it (kube-system).
    for doc in &d {
        let kind = doc["kind"].as_str().unwrap();
        let name = doc["metadata"]["name"].as_str().unwrap();
        let ns = doc["metadata"]["namespace"].as_str();
        if kind.starts_with("Cluster") || kind.starts_with("ValidatingAdmissionPolicy") {
            assert_eq!(ns, None, "{kind} {name}");
        } else if name.contains("kube-proxy") {
            assert_eq!(ns, Some("kube-system"), "{kind} {name}");
        } else {
            assert_eq!(ns, Some("kubeup-system"), "{kind} {name}");
        }
    }
    let token_role = d
        .iter()
        .find(|doc| {
            doc["kind"] == "Role" && doc["metadata"]["name"] == "kubeup-operator:kube-proxy-token"
        })
        .expect("the kube-proxy token Role");
    assert_eq!(
        serde_yaml_ng::to_string(&token_role["rules"]).unwrap(),
        "- apiGroups:\n  - ''\n  resources:\n  - serviceaccounts/token\n  resourceNames:\n  - kube-proxy\n  - flannel\n  verbs:\n  - create\n",
        "tokens for kube-proxy's and flannel's ServiceAccounts only"
    );

    // Least privilege: no wildcards, CSR approval only for three signers.
    let role = find(&d, "ClusterRole");
    let rules = role["rules"].as_sequence().unwrap();
    for r in rules {
        for field in ["apiGroups", "resources", "verbs"] {
            for v in r[field].as_sequence().unwrap() {
                assert_ne!(v.as_str(), Some("*"), "wildcard in {r:?}");
            }
        }
    }
    let signers = rules
        .iter()
        .find(|r| r["resources"][0].as_str() == Some("signers"))
        .unwrap();
    let names: Vec<&str> = signers["resourceNames"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "kubernetes.io/kube-apiserver-client-kubelet",
            "kubernetes.io/kubelet-serving"
        ],
        "never the plain kube-apiserver-client signer: approving for it mints any identity"
    );
    assert_eq!(signers["verbs"][0].as_str(), Some("approve"));
    // Secrets: never cluster-wide; read (never written) in the served
    // namespaces only, by default the release namespace.
    assert!(
        rules
            .iter()
            .all(|r| r["resources"][0].as_str() != Some("secrets")),
        "no Secret access through the ClusterRole"
    );
    let secret_roles = |docs: &[Value]| -> Vec<(String, String)> {
        docs.iter()
            .filter(|d| d["kind"] == "Role" && d["metadata"]["name"] == "kubeup-operator-secrets")
            .map(|d| {
                (
                    d["metadata"]["namespace"].as_str().unwrap().to_string(),
                    serde_yaml_ng::to_string(&d["rules"]).unwrap(),
                )
            })
            .collect()
    };
    let read_only =
        "- apiGroups:\n  - ''\n  resources:\n  - secrets\n  verbs:\n  - get\n  - list\n  - watch\n";
    assert_eq!(
        secret_roles(&d),
        [("kubeup-system".to_string(), read_only.to_string())]
    );
    assert_eq!(
        c["args"]
            .as_sequence()
            .unwrap()
            .iter()
            .filter(|a| a.as_str() == Some("--watch-namespaces=kubeup-system"))
            .count(),
        1
    );
    let more = helm(&[
        "template",
        "kubeup",
        chart,
        "--namespace",
        "kubeup-system",
        "--skip-crds",
        "--set",
        "watchNamespaces={team-a,team-b}",
    ]);
    let more = docs(&more);
    let namespaces: Vec<String> = secret_roles(&more).into_iter().map(|(ns, _)| ns).collect();
    assert_eq!(namespaces, ["team-a", "team-b"]);
    let args =
        find(&more, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"].clone();
    assert!(
        args.as_sequence()
            .unwrap()
            .iter()
            .any(|a| a.as_str() == Some("--watch-namespaces=team-a,team-b")),
        "{args:?}"
    );
    // The admission policy narrowing the operator's token is shipped.
    let vap = find(&d, "ValidatingAdmissionPolicy");
    assert_eq!(
        vap["spec"]["matchConditions"][0]["expression"]
            .as_str()
            .map(str::trim),
        Some(
            "request.userInfo.username == \"system:serviceaccount:kubeup-system:kubeup-operator\""
        )
    );
    assert_eq!(
        find(&d, "ValidatingAdmissionPolicyBinding")["spec"]["validationActions"][0].as_str(),
        Some("Deny")
    );
}

#[test]
fn values_schema_rejects_bad_values() {
    let chart = repo().join("charts/kubeup");
    let helm_bin = kubeup_provision::artifacts::default_bundle_dir(DEFAULT_KUBERNETES_VERSION)
        .join("bin/helm");
    let out = Command::new(helm_bin)
        .args(["template", "kubeup"])
        .arg(&chart)
        .args(["--set", "concurrency=0"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "concurrency=0 must fail the schema");
    assert!(String::from_utf8_lossy(&out.stderr).contains("concurrency"));
}
