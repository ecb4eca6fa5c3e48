//! The CSR flow with the operator's own permissions (the chart's RBAC,
//! impersonated), against a real kube-apiserver and the real CSR signers of
//! kube-controller-manager; and requests outside that RBAC are refused.

// Test code: a panic here is a test failure, not a crash of the product.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::string_slice,
    clippy::panic
)]

mod common;

use std::time::Duration;

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kubeup_operator::csr::{self, ClientCert};
use kubeup_operator::join::new_node;
use kubeup_operator::nodetoken::{self, BoundNode, FLANNEL, KUBE_PROXY};
use kubeup_provision::pki;
use kubeup_testsupport::apiserver::ApiServer;
use secrecy::{ExposeSecret, SecretString};

fn forbidden<T: std::fmt::Debug>(r: Result<T, kube::Error>) -> bool {
    matches!(r, Err(kube::Error::Api(ref e)) if e.code == 403)
}

/// The error text of a request the apiserver did not authenticate.
fn unauthorized<T>(r: Result<T, String>) -> bool {
    r.is_err_and(|e| e.contains("401") || e.contains("Unauthorized"))
}

/// The JWT payload (what the operator reads back from a host).
fn payload(token: &SecretString) -> String {
    token
        .expose_secret()
        .split('.')
        .nth(1)
        .expect("a JWT")
        .to_string()
}

/// The node components' tokens (TokenRequest with the operator's RBAC):
/// bound to the Node, a day at most, each no more than its component, and
/// dead once the Node is deleted.
async fn node_tokens(api: &ApiServer, sa: &kube::Client) {
    let admin_nodes: Api<Node> = Api::all(api.client.clone());
    let created = admin_nodes
        .create(&PostParams::default(), &new_node("worker-1", "default.w1"))
        .await
        .unwrap();
    let node = BoundNode::of(&created).unwrap();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();

    // kube-proxy: system:node-proxier, nothing more.
    let proxy = nodetoken::request(sa, &KUBE_PROXY, &node)
        .await
        .expect("the operator may request kube-proxy's token");
    let renew_at = nodetoken::is_current(&payload(&proxy.token), &KUBE_PROXY, &node, now)
        .expect("kube-proxy's, bound to worker-1 (name and uid)");
    assert_eq!(renew_at, proxy.renew_at);
    let claims = claims(&proxy.token);
    assert_eq!(claims["kubernetes.io"]["node"]["name"], "worker-1");
    let (iat, exp) = (
        claims["iat"].as_i64().unwrap(),
        claims["exp"].as_i64().unwrap(),
    );
    assert!(
        exp - iat <= nodetoken::LIFETIME_SECS && exp <= now + nodetoken::LIFETIME_SECS + 60,
        "short-lived: iat {iat}, exp {exp}"
    );
    assert!(renew_at < exp && renew_at > now, "renewed halfway");
    let as_proxy = common::client_with_token(api, proxy.token.expose_secret()).await;
    Api::<Node>::all(as_proxy.clone())
        .list(&ListParams::default())
        .await
        .expect("kube-proxy's token lists Nodes (system:node-proxier)");
    assert!(
        forbidden(
            Api::<Secret>::namespaced(as_proxy.clone(), "kube-system")
                .list(&ListParams::default())
                .await
        ),
        "kube-proxy's token is no more than kube-proxy"
    );

    // flannel: its own ServiceAccount, what flanneld needs and no more.
    let flannel = nodetoken::request(sa, &FLANNEL, &node)
        .await
        .expect("the operator may request flannel's token");
    nodetoken::is_current(&payload(&flannel.token), &FLANNEL, &node, now)
        .expect("flannel's, bound to worker-1");
    let as_flannel = common::client_with_token(api, flannel.token.expose_secret()).await;
    let nodes: Api<Node> = Api::all(as_flannel.clone());
    let listed = nodes
        .list(&ListParams::default())
        .await
        .expect("flannel's token lists every Node");
    assert_eq!(listed.items.len(), 1);
    let status = serde_json::json!({"status": {"conditions": [{
        "type": "NetworkUnavailable", "status": "False",
        "reason": "FlannelIsUp", "message": "flannel is running on this node",
    }]}});
    nodes
        .patch_status(
            "worker-1",
            &PatchParams::default(),
            &Patch::Strategic(&status),
        )
        .await
        .expect("flannel's token patches a Node's status");
    // …its own Node only (the admission policy; RBAC cannot say it).
    admin_nodes
        .create(&PostParams::default(), &new_node("worker-2", "default.w2"))
        .await
        .unwrap();
    // (The policy takes effect a moment after it is applied.)
    common::eventually(
        "flannel's token of worker-1 refused for worker-2",
        Duration::from_secs(30),
        || {
            let (nodes, status) = (nodes.clone(), status.clone());
            async move {
                let r = nodes
                    .patch_status(
                        "worker-2",
                        &PatchParams::default(),
                        &Patch::Strategic(&status),
                    )
                    .await;
                match r {
                    Err(kube::Error::Api(e)) if e.code == 403 || e.code == 422 => Ok(()),
                    other => Err(format!("{:?}", other.map(|_| "patched"))),
                }
            }
        },
    )
    .await;
    nodes
        .patch_status(
            "worker-1",
            &PatchParams::default(),
            &Patch::Strategic(&status),
        )
        .await
        .expect("its own Node still");
    assert!(forbidden(
        Api::<Secret>::namespaced(as_flannel.clone(), "kube-system")
            .get("anything")
            .await
    ));
    assert!(forbidden(
        Api::<Secret>::all(as_flannel.clone())
            .list(&ListParams::default())
            .await
    ));
    assert!(
        forbidden(nodes.delete("worker-1", &Default::default()).await),
        "flannel cannot delete Nodes"
    );

    // Bound to the Node: deleting it revokes both (the apiserver caches a
    // successful authentication for up to 10 s).
    admin_nodes
        .delete("worker-1", &Default::default())
        .await
        .unwrap();
    for (what, client) in [("kube-proxy", as_proxy), ("flannel", as_flannel)] {
        common::eventually(
            &format!("{what}'s token rejected once its Node is gone"),
            Duration::from_secs(30),
            || {
                let nodes: Api<Node> = Api::all(client.clone());
                async move {
                    let r = nodes
                        .list(&ListParams::default())
                        .await
                        .map(|l| l.items.len());
                    if unauthorized(r.as_ref().map_err(|e| e.to_string())) {
                        Ok(())
                    } else {
                        Err(format!("still answered: {r:?}"))
                    }
                }
            },
        )
        .await;
    }
}

fn claims(token: &SecretString) -> serde_json::Value {
    use base64::Engine;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload(token))
        .unwrap();
    serde_json::from_slice(&raw).unwrap()
}

/// flannel's RBAC as `kubeup up` applies it (server-side, field manager
/// kubeup), over the binding an older kubeup made for all nodes.
fn apply_flannel_rbac(api: &ApiServer) {
    let ssa = [
        "apply",
        "--server-side",
        "--field-manager=kubeup",
        "-f",
        "-",
    ];
    let old = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: kubeup:flannel
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "kubeup:flannel"}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: Group, name: "system:nodes"}
"#;
    common::kubectl(api, &ssa, Some(old));
    let rbac =
        std::fs::read_to_string(common::repo().join("deploy/addons/flannel-rbac.yaml")).unwrap();
    common::kubectl(api, &ssa, Some(&rbac));
}

/// `kubectl auth can-i WHAT…` as someone else: "yes" or "no".
fn can_i(api: &ApiServer, what: &[&str], user: &str, group: Option<&str>) -> bool {
    let mut args = vec!["auth", "can-i"];
    args.extend(what);
    args.extend(["--as", user]);
    if let Some(g) = group {
        args.extend(["--as-group", g]);
    }
    let out = api.kubectl().args(&args).output().expect("kubectl");
    String::from_utf8_lossy(&out.stdout).trim() == "yes"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flannel_is_its_own_identity_and_nodes_do_not_widen() {
    let api = ApiServer::start().await.expect("apiserver harness");
    common::install(&api);
    apply_flannel_rbac(&api);
    let bindings: Api<ClusterRoleBinding> = Api::all(api.client.clone());
    let subjects = bindings
        .get("kubeup:flannel")
        .await
        .unwrap()
        .subjects
        .unwrap();
    let names: Vec<(&str, &str)> = subjects
        .iter()
        .map(|s| (s.kind.as_str(), s.name.as_str()))
        .collect();
    assert_eq!(
        names,
        [("ServiceAccount", "flannel"), ("User", "kubeup:flannel")],
        "the system:nodes subject of an older kubeup is gone"
    );
    let sa = "system:serviceaccount:kube-system:flannel";
    assert!(can_i(&api, &["list", "nodes"], sa, None));
    assert!(can_i(&api, &["watch", "nodes"], sa, None));
    assert!(can_i(
        &api,
        &["patch", "nodes", "--subresource=status"],
        sa,
        None
    ));
    assert!(!can_i(&api, &["get", "secrets"], sa, None));
    assert!(!can_i(&api, &["patch", "nodes"], sa, None));
    // The controller's flanneld (client certificate kubeup:flannel).
    assert!(can_i(&api, &["list", "nodes"], "kubeup:flannel", None));
    // A node lists no Nodes: not through flannel's binding, and the Node
    // authorizer lets it read only its own.
    let node = "system:node:worker-1";
    assert!(!can_i(&api, &["list", "nodes"], node, Some("system:nodes")));
    assert!(!can_i(
        &api,
        &["get", "nodes/worker-2"],
        node,
        Some("system:nodes")
    ));
    assert!(can_i(
        &api,
        &["get", "nodes/worker-1"],
        node,
        Some("system:nodes")
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csr_issue_with_the_operators_rbac_and_nothing_more() {
    let api = ApiServer::start().await.expect("apiserver harness");
    common::install(&api);
    let kcm = common::ControllerManager::start(&api);
    let sa = common::operator_client(&api).await;
    let ca = std::fs::read_to_string(api.pki.join("ca.crt")).unwrap();

    // kubelet: signer kube-apiserver-client-kubelet, system:node:<name>.
    let kubelet = ClientCert::kubelet("worker-1");
    let (cert, key) = csr::issue(
        &sa,
        &kubelet,
        "worker-1",
        "default.w1",
        "uid-1",
        Duration::from_secs(60),
    )
    .await
    .unwrap_or_else(|e| panic!("kubelet CSR: {e}\nkube-controller-manager:\n{}", kcm.log()));
    pki::is_current(&cert, &ca, &kubelet.leaf_spec(), 300)
        .expect("signed by the cluster CA with CN system:node:worker-1, O system:nodes");
    assert!(key.expose_secret().contains("PRIVATE KEY"));

    apply_flannel_rbac(&api);
    node_tokens(&api, &sa).await;
    // …and only for those ServiceAccounts.
    let other: Api<ServiceAccount> = Api::namespaced(sa.clone(), "kube-system");
    let req = k8s_openapi::api::authentication::v1::TokenRequest::default();
    assert!(
        forbidden(
            other
                .create_token_request("default", &PostParams::default(), &req)
                .await
        ),
        "tokens for any other ServiceAccount are refused"
    );

    // No private key in the API: the CSRs carry only requests and certs.
    let admin_csrs: Api<CertificateSigningRequest> = Api::all(api.client.clone());
    let all = admin_csrs.list(&ListParams::default()).await.unwrap();
    assert_eq!(all.items.len(), 1);
    let text = serde_json::to_string(&all.items).unwrap();
    assert!(!text.contains("PRIVATE KEY"));
    for c in &all.items {
        assert!(
            csr::is_ours(c, "uid-1"),
            "labelled and annotated with the WorkerJoin"
        );
    }

    // Outside the RBAC: approving for a signer it does not approve for…
    let sa_csrs: Api<CertificateSigningRequest> = Api::all(sa.clone());
    let g = csr::generate(&kubelet).unwrap();
    let mut serving = csr::csr_object("serving-1", &kubelet, &g.csr_pem, "default.w1", "uid-1");
    // The plain client signer above all: approving for it would mint any
    // identity, system:masters included.
    serving.spec.signer_name = "kubernetes.io/kube-apiserver-client".into();
    serving.spec.usages = Some(vec!["digital signature".into(), "client auth".into()]);
    let mut created = sa_csrs
        .create(&PostParams::default(), &serving)
        .await
        .unwrap();
    created.status = Some(Default::default());
    created.status.as_mut().unwrap().conditions = Some(vec![
        k8s_openapi::api::certificates::v1::CertificateSigningRequestCondition {
            type_: "Approved".into(),
            status: "True".into(),
            reason: Some("Test".into()),
            ..Default::default()
        },
    ]);
    assert!(
        forbidden(
            sa_csrs
                .replace_subresource("approval", "serving-1", &PostParams::default(), &created)
                .await
        ),
        "approving a CSR for the plain client signer must be refused"
    );
    // …reading ConfigMaps other than kube-root-ca.crt, deleting CSRs,
    // deleting Secrets.
    let cms: Api<ConfigMap> = Api::namespaced(sa.clone(), "default");
    assert!(forbidden(cms.list(&ListParams::default()).await));
    assert!(forbidden(
        sa_csrs.delete("serving-1", &Default::default()).await
    ));
    // Listing CSRs is allowed: the kubelet-serving ones are watched.
    assert!(sa_csrs.list(&ListParams::default()).await.is_ok());
    let secrets: Api<Secret> = Api::namespaced(sa.clone(), "default");
    assert!(forbidden(secrets.delete("x", &Default::default()).await));
    // What it needs is allowed: the cluster CA in its own namespace.
    let own: Api<ConfigMap> = Api::namespaced(sa.clone(), common::NAMESPACE);
    let ca_cm = common::eventually("kube-root-ca.crt", Duration::from_secs(30), || {
        let own = own.clone();
        async move {
            own.get_opt("kube-root-ca.crt")
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| "not yet published".to_string())
        }
    })
    .await;
    assert_eq!(ca_cm.data.unwrap()["ca.crt"].trim(), ca.trim());
    drop(kcm);
}
