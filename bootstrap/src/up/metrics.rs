//! metrics-server for `kubectl top`: its serving certificate comes from the
//! cluster CA (kubeup holds it), so the aggregated API is verified by the
//! apiserver through the APIService's caBundle; metrics-server in turn
//! verifies every kubelet against the kubelet-serving CA (a ConfigMap in
//! the manifest), which signs nothing else.

use anyhow::{Context, Result};
use base64::Engine;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, ObjectMeta, Patch, PatchParams};
use kubeup_provision::hostplan::network::{
    METRICS_SERVER_DNS_NAME, METRICS_SERVER_IMAGE, METRICS_SERVER_TLS_SECRET,
    metrics_server_manifest,
};
use kubeup_provision::pki::{self, LeafSpec};
use secrecy::ExposeSecret;

use super::ControllerContext;
use super::addons::{FIELD_MANAGER, apply_yaml};

/// Renewed by `up` when fewer days than this are left.
const MIN_DAYS_LEFT: i64 = 30;

/// The serving certificate's names: the Service's DNS names.
fn serving_spec(days: u32) -> LeafSpec {
    let sans = [
        "metrics-server",
        "metrics-server.kube-system",
        METRICS_SERVER_DNS_NAME,
    ]
    .map(String::from)
    .to_vec();
    LeafSpec::server(METRICS_SERVER_DNS_NAME, sans, days)
}

/// Apply the TLS Secret (kept while current) and the add-on; returns how
/// many objects were applied.
pub async fn apply(client: &Client, ctx: &ControllerContext) -> Result<usize> {
    let ca = &ctx.cas.cluster;
    let days = ctx.loaded.cluster.spec.certificates.leaf_days;
    let spec = serving_spec(days);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "kube-system");
    let existing = secrets
        .get_opt(METRICS_SERVER_TLS_SECRET)
        .await
        .context("failed to read Secret kube-system/metrics-server-tls")?;
    let current = existing
        .as_ref()
        .and_then(|s| s.data.as_ref()?.get("tls.crt"))
        .and_then(|c| String::from_utf8(c.0.clone()).ok())
        .is_some_and(|pem| pki::is_current(&pem, ca.cert_pem(), &spec, MIN_DAYS_LEFT).is_ok());
    if !current {
        let issued = ca
            .issue(&spec)
            .context("failed to issue the metrics-server serving certificate")?;
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(METRICS_SERVER_TLS_SECRET.into()),
                namespace: Some("kube-system".into()),
                ..Default::default()
            },
            type_: Some("kubernetes.io/tls".into()),
            data: Some(
                [
                    (
                        "tls.crt".to_string(),
                        ByteString(issued.cert_pem.into_bytes()),
                    ),
                    (
                        "tls.key".to_string(),
                        ByteString(issued.key_pem.expose_secret().as_bytes().to_vec()),
                    ),
                ]
                .into(),
            ),
            ..Default::default()
        };
        secrets
            .patch(
                METRICS_SERVER_TLS_SECRET,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&secret),
            )
            .await
            .context("failed to apply Secret kube-system/metrics-server-tls")?;
    }
    let b64 = |pem: &str| base64::engine::general_purpose::STANDARD.encode(pem);
    let n = apply_yaml(
        client,
        &metrics_server_manifest(
            METRICS_SERVER_IMAGE,
            &b64(ca.cert_pem()),
            &b64(ctx.cas.kubelet_serving.cert_pem()),
            ctx.controllers().len(),
        ),
    )
    .await
    .context("failed to apply the metrics-server add-on")?;
    Ok(n + 1)
}
