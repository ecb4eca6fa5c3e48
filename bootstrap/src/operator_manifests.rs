//! The operator's manifests: exactly `deploy/kubeup-operator.yaml`, which
//! `cargo xtask chart` renders from `charts/kubeup` (drift-tested), so `up`
//! and Helm users deploy the same objects.

/// Rendered chart, CRDs excluded (`up` applies those from the types).
const MANIFESTS: &str = include_str!("../../deploy/kubeup-operator.yaml");

/// The manifests for a Kubernetes version (the bundle path is versioned).
pub fn render(_kubernetes_version: &str) -> String {
    MANIFESTS.to_string()
}
