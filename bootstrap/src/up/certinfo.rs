//! The controller's certificates (public parts only) published in the
//! ConfigMap `kubeup-system/kubeup-certificates`, so the operator can watch
//! their expiry (the `CertificatesValid` condition on the Cluster and a
//! metric) without access to the host's key directory.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Client;
use kube::api::{Api, ObjectMeta, Patch, PatchParams};
use kubeup_provision::converge::{self, CaSet};
use kubeup_provision::hostplan::certs::CertPlan;
use kubeup_provision::pki::CaKind;
use kubeup_provision::ssh::Session;

use super::addons::FIELD_MANAGER;

pub const CONFIGMAP: &str = "kubeup-certificates";
pub const NAMESPACE: &str = "kubeup-system";

/// Read the certificates as they are on the controller now (after `up`
/// issued or kept them) and publish them with the four CAs.
pub async fn publish(
    client: &Client,
    session: &Session,
    plans: &[CertPlan],
    cas: &CaSet,
) -> Result<()> {
    let on_host = converge::remote_certs(session, plans)
        .await
        .context("failed to read the controller's certificates")?;
    let mut data: BTreeMap<String, String> = BTreeMap::new();
    for (kind, name) in [
        (CaKind::Cluster, "ca"),
        (CaKind::Etcd, "etcd-ca"),
        (CaKind::FrontProxy, "front-proxy-ca"),
        (CaKind::KubeletServing, "kubelet-serving-ca"),
    ] {
        data.insert(format!("{name}.crt"), cas.get(kind).cert_pem().to_string());
    }
    for (plan, pem) in plans.iter().zip(on_host) {
        if let Some(pem) = pem {
            data.insert(format!("{}.crt", plan.name), pem);
        }
    }
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some(CONFIGMAP.into()),
            namespace: Some(NAMESPACE.into()),
            ..Default::default()
        },
        data: Some(data),
        ..Default::default()
    };
    Api::<ConfigMap>::namespaced(client.clone(), NAMESPACE)
        .patch(
            CONFIGMAP,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&cm),
        )
        .await
        .context("failed to publish ConfigMap kubeup-system/kubeup-certificates")?;
    Ok(())
}
