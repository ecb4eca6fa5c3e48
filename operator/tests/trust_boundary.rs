//! A WorkerJoin author gets "join this machine as a worker" and nothing
//! more. Against a real kube-apiserver with the chart's CRDs, RBAC and
//! ValidatingAdmissionPolicy, and the operator running as its own
//! ServiceAccount: each attempt below is refused, with the reason in a
//! condition (or the API's answer), and nothing changes on any Node.
//! No WorkerJoin here gets as far as SSH (every one is refused or waits for
//! its Secret first); their addresses are loopback with a closed port.

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

use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestCondition,
};
use k8s_openapi::api::core::v1::{Node, Secret};
use k8s_openapi::api::events::v1::Event;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use kubeup_crds::WorkerJoin;
use kubeup_crds::workerjoin::WorkerJoinPhase as Phase;
use kubeup_operator::context::Settings;
use kubeup_operator::csr::{self, ClientCert, Expected};
use kubeup_testsupport::apiserver::ApiServer;

use common::{condition, wait_for};

fn workerjoin(ns: &str, name: &str, spec: serde_json::Value) -> WorkerJoin {
    let mut full = serde_json::json!({
        "address": "127.0.0.1",
        "port": 1,
        "sshSecretRef": {"name": "absent"},
        "hostKey": {"policy": "AcceptNew"},
    });
    if let (Some(base), Some(extra)) = (full.as_object_mut(), spec.as_object()) {
        base.extend(extra.clone());
    }
    serde_json::from_value(serde_json::json!({
        "apiVersion": "kubeup.dev/v1alpha1",
        "kind": "WorkerJoin",
        "metadata": {"name": name, "namespace": ns},
        "spec": full,
    }))
    .unwrap()
}

fn node(name: &str, owner: Option<&str>) -> Node {
    let mut n = Node::default();
    n.metadata.name = Some(name.into());
    if let Some(o) = owner {
        n.metadata.annotations =
            Some([("kubeup.dev/workerjoin".to_string(), o.to_string())].into());
        n.metadata.labels = Some([("kubeup.dev/workerjoin".to_string(), o.to_string())].into());
    }
    n
}

fn refused_with(api_result: Result<WorkerJoin, kube::Error>) -> String {
    match api_result {
        Err(kube::Error::Api(e)) if e.code == 422 => e.message,
        other => panic!("expected the API to refuse it (422), got {other:?}"),
    }
}

fn denied<T: std::fmt::Debug>(r: Result<T, kube::Error>) -> String {
    match r {
        Err(kube::Error::Api(e)) if e.code == 403 || e.code == 422 => e.message,
        other => panic!("expected a denial, got {other:?}"),
    }
}

/// Create the WorkerJoin `name` in the served namespace.
async fn create(wjs: &Api<WorkerJoin>, name: &str, spec: serde_json::Value) {
    wjs.create(
        &PostParams::default(),
        &workerjoin(common::NAMESPACE, name, spec),
    )
    .await
    .unwrap();
}

/// Wait until its Ready condition has `reason`.
async fn wait_reason(api: &Api<WorkerJoin>, name: &str, reason: &str) -> WorkerJoin {
    wait_for(api, name, reason, |w| {
        condition(w, "Ready").is_some_and(|c| c.reason == reason)
    })
    .await
}

async fn wait_refused(api: &Api<WorkerJoin>, name: &str, reason: &str) -> String {
    let wj = wait_reason(api, name, reason).await;
    let st = wj.status.clone().unwrap_or_default();
    assert_eq!(st.phase, Phase::Failed, "{name}");
    assert_eq!(st.host_key_fingerprint, None, "{name}: no SSH contact");
    condition(&wj, "Ready")
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_workerjoin_gets_to_join_a_worker_and_nothing_more() {
    let api = ApiServer::start().await.expect("apiserver harness");
    common::install(&api);
    common::kubectl(&api, &["apply", "-f", "-"], Some(common::CLUSTER));
    let kcm = common::ControllerManager::start(&api);
    let sa = common::operator_client(&api).await;
    let settings = Settings {
        namespace: common::NAMESPACE.into(),
        allow_loopback: true,
        ..Settings::default()
    };
    let operator = common::spawn_operator(sa.clone(), settings);
    let wjs: Api<WorkerJoin> = Api::namespaced(api.client.clone(), common::NAMESPACE);
    let nodes: Api<Node> = Api::all(api.client.clone());
    let pp = PostParams::default();

    // 1. The CRD refuses what Kubernetes' own syntax refuses, and the
    // reserved label and taint keys.
    for (spec, want) in [
        (
            serde_json::json!({"labels": {"node-role.kubernetes.io/control-plane": ""}}),
            "reserved",
        ),
        (
            serde_json::json!({"labels": {"kubeup.dev/workerjoin": "kube-system.x"}}),
            "reserved",
        ),
        (
            serde_json::json!({"labels": {"disk": "ssd\nExecStart=/bin/sh"}}),
            "labels",
        ),
        (
            serde_json::json!({"labels": {"bad key": "v"}}),
            "qualified name",
        ),
        (
            serde_json::json!({"taints": [{"key": "a b", "effect": "NoSchedule"}]}),
            "taints",
        ),
        (
            serde_json::json!({"taints": [{"key": "node.kubernetes.io/x", "effect": "NoSchedule"}]}),
            "reserved",
        ),
        (serde_json::json!({"address": "010.0.0.1"}), "canonical"),
        (serde_json::json!({"nodeName": "Bad_Name"}), "nodeName"),
    ] {
        let msg = refused_with(
            wjs.create(&pp, &workerjoin(common::NAMESPACE, "crd", spec.clone()))
                .await,
        );
        assert!(msg.contains(want), "{spec}: {msg}");
    }
    let many: serde_json::Map<String, serde_json::Value> = (0..65)
        .map(|i| (format!("l{i}"), serde_json::json!("v")))
        .collect();
    refused_with(
        wjs.create(
            &pp,
            &workerjoin(
                common::NAMESPACE,
                "crd",
                serde_json::json!({"labels": many}),
            ),
        )
        .await,
    );

    // 2. The operator refuses what only the cluster can tell: a
    // controller's address, the service network, a name of the apiserver.
    for (name, spec, want) in [
        (
            "at-controller",
            serde_json::json!({"address": "127.0.0.2"}),
            "controller's address",
        ),
        (
            "in-services",
            serde_json::json!({"address": "10.96.0.10"}),
            "service network",
        ),
        (
            "link-local",
            serde_json::json!({"address": "169.254.169.254"}),
            "link-local",
        ),
        (
            "as-apiserver",
            serde_json::json!({"address": "127.0.0.3", "nodeName": "kubernetes.default.svc"}),
            "name of the apiserver",
        ),
    ] {
        wjs.create(&pp, &workerjoin(common::NAMESPACE, name, spec))
            .await
            .unwrap();
        let msg = wait_refused(&wjs, name, "InvalidSpec").await;
        assert!(msg.contains(want), "{name}: {msg}");
    }

    // 3. A namespace the operator does not serve: refused, no finalizer,
    // and its SSH Secret there is not readable by the operator at all.
    let other: Api<WorkerJoin> = Api::namespaced(api.client.clone(), "default");
    other
        .create(
            &pp,
            &workerjoin(
                "default",
                "elsewhere",
                serde_json::json!({"address": "127.0.0.4"}),
            ),
        )
        .await
        .unwrap();
    let wj = wait_for(&other, "elsewhere", "NamespaceNotServed", |w| {
        condition(w, "Ready").is_some_and(|c| c.reason == "NamespaceNotServed")
    })
    .await;
    assert!(
        wj.finalizers().is_empty(),
        "no finalizer on a refused namespace"
    );
    let secrets_elsewhere: Api<Secret> = Api::namespaced(sa.clone(), "default");
    denied(secrets_elsewhere.get("anything").await);
    denied(secrets_elsewhere.list(&ListParams::default()).await);
    let own_secrets: Api<Secret> = Api::namespaced(sa.clone(), common::NAMESPACE);
    assert!(own_secrets.list(&ListParams::default()).await.is_ok());

    // 4. Node identity: a Node nobody joined and a Node of another
    // WorkerJoin are never taken over; an earlier claim on a name wins.
    nodes.create(&pp, &node("unowned", None)).await.unwrap();
    nodes
        .create(&pp, &node("owned", Some("other-ns.other")))
        .await
        .unwrap();
    for (name, node_name, addr) in [
        ("take-unowned", "unowned", "127.0.0.5"),
        ("take-owned", "owned", "127.0.0.6"),
    ] {
        wjs.create(
            &pp,
            &workerjoin(
                common::NAMESPACE,
                name,
                serde_json::json!({"address": addr, "nodeName": node_name}),
            ),
        )
        .await
        .unwrap();
        let msg = wait_refused(&wjs, name, "NodeNameTaken").await;
        assert!(msg.contains(node_name), "{msg}");
    }
    create(
        &wjs,
        "a-claims",
        serde_json::json!({"address": "127.0.0.7", "nodeName": "shared"}),
    )
    .await;
    wait_reason(&wjs, "a-claims", "SecretNotFound").await;
    create(
        &wjs,
        "b-claims",
        serde_json::json!({"address": "127.0.0.8", "nodeName": "shared"}),
    )
    .await;
    let msg = wait_refused(&wjs, "b-claims", "NodeNameTaken").await;
    assert!(msg.contains("kubeup-system/a-claims"), "{msg}");

    // 5. One machine, two spellings: a DNS name and the IP it resolves to.
    create(
        &wjs,
        "a-by-name",
        serde_json::json!({"address": "localhost", "port": 2}),
    )
    .await;
    wait_reason(&wjs, "a-by-name", "SecretNotFound").await;
    create(
        &wjs,
        "b-by-ip",
        serde_json::json!({"address": "127.0.0.1", "port": 2}),
    )
    .await;
    let msg = wait_refused(&wjs, "b-by-ip", "DuplicateAddress").await;
    assert!(msg.contains("a-by-name"), "{msg}");

    // Nothing was issued and no Node was touched.
    let csrs: Api<CertificateSigningRequest> = Api::all(api.client.clone());
    assert!(
        csrs.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty(),
        "no CSR for any refused join"
    );
    let unowned = nodes.get("unowned").await.unwrap();
    assert!(
        unowned
            .labels()
            .keys()
            .all(|k| !k.starts_with("kubeup.dev/")),
        "{:?}",
        unowned.labels()
    );
    assert_eq!(
        nodes
            .get("owned")
            .await
            .unwrap()
            .annotations()
            .get("kubeup.dev/workerjoin")
            .map(String::as_str),
        Some("other-ns.other")
    );
    let events: Api<Event> = Api::namespaced(api.client.clone(), common::NAMESPACE);
    let reasons: Vec<String> = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|e| e.reason)
        .collect();
    for r in ["InvalidSpec", "NodeNameTaken", "DuplicateAddress"] {
        assert!(reasons.iter().any(|x| x == r), "an Event {r}: {reasons:?}");
    }
    operator.abort();

    // 6. The operator's known_hosts is the operator's alone: a user who may
    // edit ConfigMaps in its namespace cannot write it.
    known_hosts_guard(&api).await;
    // 7. Client CSR approval checks what cannot be forged.
    csr_approval_checks(&api, &sa).await;
    // 8. The admission policy holds even with the operator's own token.
    admission_policy(&api, &sa).await;
    drop(kcm);
}

/// A CSR carrying the WorkerJoin's annotation is not enough: requester,
/// subject, usages and public key must all be the operator's own.
async fn csr_approval_checks(api: &ApiServer, sa: &kube::Client) {
    let me = csr::whoami(sa).await.unwrap();
    assert_eq!(me, common::SA_USER);
    let kubelet = ClientCert::kubelet("w9");
    let made = csr::generate(&kubelet).unwrap();
    let want = Expected {
        cert: &kubelet,
        username: &me,
        public_key_sha256: &made.public_key_sha256,
    };
    let admin_csrs: Api<CertificateSigningRequest> = Api::all(api.client.clone());

    // (a) Created by someone else (the admin), annotation copied.
    admin_csrs
        .create(
            &PostParams::default(),
            &csr::csr_object(
                "by-admin",
                &kubelet,
                &made.csr_pem,
                "kubeup-system.w9",
                "uid-9",
            ),
        )
        .await
        .unwrap();
    // (b) Created by the operator's identity, but with another key.
    let other_key = csr::generate(&kubelet).unwrap();
    csr::create(
        sa,
        "other-key",
        &kubelet,
        &other_key.csr_pem,
        "kubeup-system.w9",
        "uid-9",
    )
    .await
    .unwrap();
    // (c) Another node's subject with the recorded key is impossible to
    // make without the key, so: another subject, another key.
    let other_node = ClientCert::kubelet("someone-else");
    let g = csr::generate(&other_node).unwrap();
    csr::create(
        sa,
        "other-subject",
        &other_node,
        &g.csr_pem,
        "kubeup-system.w9",
        "uid-9",
    )
    .await
    .unwrap();
    // (d) Extra usages.
    let mut extra = csr::csr_object(
        "extra-usage",
        &kubelet,
        &made.csr_pem,
        "kubeup-system.w9",
        "uid-9",
    );
    extra.spec.usages = Some(vec![
        "digital signature".into(),
        "client auth".into(),
        "server auth".into(),
    ]);
    Api::<CertificateSigningRequest>::all(sa.clone())
        .create(&PostParams::default(), &extra)
        .await
        .unwrap();

    for (name, why) in [
        ("by-admin", "not by the operator"),
        ("other-key", "public key"),
        ("other-subject", "subject"),
        ("extra-usage", "usages"),
    ] {
        let r = csr::approve_and_wait(
            sa,
            name,
            &want,
            "kubeup-system.w9",
            "uid-9",
            Duration::from_secs(5),
        )
        .await;
        match r {
            Err(csr::CsrError::Refused { reason, .. }) => {
                assert!(reason.contains(why), "{name}: {reason}")
            }
            other => panic!("{name}: expected a refusal, got {other:?}"),
        }
        let c = admin_csrs.get(name).await.unwrap();
        let approved = c
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Approved");
        assert!(!approved, "{name} stays unapproved");
    }
    // The genuine one: made by the operator with the recorded key.
    csr::create(
        sa,
        "genuine",
        &kubelet,
        &made.csr_pem,
        "kubeup-system.w9",
        "uid-9",
    )
    .await
    .unwrap();
    csr::approve_and_wait(
        sa,
        "genuine",
        &want,
        "kubeup-system.w9",
        "uid-9",
        Duration::from_secs(60),
    )
    .await
    .expect("the operator's own CSR with the recorded key is approved and signed");
}

/// What the ValidatingAdmissionPolicy allows the operator's token.
async fn admission_policy(api: &ApiServer, sa: &kube::Client) {
    let approve = |c: &mut CertificateSigningRequest| {
        c.status.get_or_insert_with(Default::default).conditions =
            Some(vec![CertificateSigningRequestCondition {
                type_: "Approved".into(),
                status: "True".into(),
                reason: Some("Test".into()),
                ..Default::default()
            }]);
    };
    // A kubelet client CSR someone else made: the operator may not approve
    // it, even straight through the approval subresource.
    let kubelet = ClientCert::kubelet("w10");
    let g = csr::generate(&kubelet).unwrap();
    let admin_csrs: Api<CertificateSigningRequest> = Api::all(api.client.clone());
    let mut c = admin_csrs
        .create(
            &PostParams::default(),
            &csr::csr_object("admin-made", &kubelet, &g.csr_pem, "x.y", "u"),
        )
        .await
        .unwrap();
    approve(&mut c);
    let sa_csrs: Api<CertificateSigningRequest> = Api::all(sa.clone());
    let msg = denied(
        sa_csrs
            .replace_subresource("approval", "admin-made", &PostParams::default(), &c)
            .await,
    );
    assert!(msg.contains("kubeup operator approves only"), "{msg}");

    // Nodes: none without the kubeup label may be made, changed or deleted.
    let admin_nodes: Api<Node> = Api::all(api.client.clone());
    admin_nodes
        .create(&PostParams::default(), &node("foreign", None))
        .await
        .unwrap();
    let sa_nodes: Api<Node> = Api::all(sa.clone());
    let cordon = Patch::Merge(serde_json::json!({"spec": {"unschedulable": true}}));
    denied(
        sa_nodes
            .patch("foreign", &PatchParams::default(), &cordon)
            .await,
    );
    denied(sa_nodes.delete("foreign", &Default::default()).await);
    denied(
        sa_nodes
            .create(&PostParams::default(), &node("made-bare", None))
            .await,
    );
    // …nor may the label be taken off a Node of its own.
    sa_nodes
        .create(
            &PostParams::default(),
            &node("its-own", Some("kubeup-system.w1")),
        )
        .await
        .unwrap();
    sa_nodes
        .patch("its-own", &PatchParams::default(), &cordon)
        .await
        .expect("its own Node");
    let strip =
        Patch::Merge(serde_json::json!({"metadata": {"labels": {"kubeup.dev/workerjoin": null}}}));
    denied(
        sa_nodes
            .patch("its-own", &PatchParams::default(), &strip)
            .await,
    );
    sa_nodes
        .delete("its-own", &Default::default())
        .await
        .expect("its own Node");
    assert!(
        admin_nodes
            .get("foreign")
            .await
            .unwrap()
            .spec
            .and_then(|s| s.unschedulable)
            != Some(true)
    );
}

/// A namespace editor may write ConfigMaps in the operator's namespace, but
/// not the operator's record of trusted host keys.
async fn known_hosts_guard(api: &ApiServer) {
    // (The harness runs no role aggregation, so a Role of its own rather
    // than the built-in `edit`.)
    let ns = common::NAMESPACE;
    let role = [
        "-n",
        ns,
        "create",
        "role",
        "cm-editor",
        "--verb=create,update,patch,delete",
        "--resource=configmaps",
    ];
    common::kubectl(api, &role, None);
    let binding = [
        "-n",
        ns,
        "create",
        "rolebinding",
        "alice-edit",
        "--role=cm-editor",
        "--user=alice",
    ];
    common::kubectl(api, &binding, None);
    let alice = common::client_as(api, "alice", &[]).await;
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(alice, common::NAMESPACE);
    let cm = |name: &str| -> k8s_openapi::api::core::v1::ConfigMap {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "data": {"x": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAttackersKey"}
        }))
        .unwrap()
    };
    // (The RBAC authorizer sees the new binding within a moment.)
    common::eventually(
        "alice may edit ConfigMaps here",
        Duration::from_secs(20),
        || {
            let (cms, c) = (cms.clone(), cm("ordinary"));
            async move {
                cms.create(&PostParams::default(), &c)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
        },
    )
    .await;
    let msg = denied(
        cms.create(&PostParams::default(), &cm("kubeup-known-hosts"))
            .await,
    );
    assert!(msg.contains("only the operator writes it"), "{msg}");
}
