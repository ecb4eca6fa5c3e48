//! The operator's manifests: exactly `deploy/kubeup-operator.yaml`, which
//! `cargo xtask chart` renders from `charts/kubeup` (drift-tested), so `up`
//! and Helm users deploy the same objects.

/// Rendered chart, CRDs excluded (`up` applies those from the types).
const MANIFESTS: &str = include_str!("../../deploy/kubeup-operator.yaml");

/// What `helm template --set hostNetwork=true` adds to the pod spec.
const HOST_NETWORK: &str = "      # SSH goes out from the controller's own network (no pod network yet).\n      hostNetwork: true\n      dnsPolicy: Default\n";
const AFTER: &str = "      serviceAccountName: kubeup-operator\n";

/// The chart's `replicas` line as rendered.
const ONE_REPLICA: &str = "\n  replicas: 1\n";

/// The chart's anti-affinity as rendered: preferred, so Helm users may run
/// two replicas on one node.
const PREFERRED_SPREAD: &str = "          preferredDuringSchedulingIgnoredDuringExecution:
            - weight: 100
              podAffinityTerm:
                topologyKey: kubernetes.io/hostname
                labelSelector:
                  matchLabels:
                    app.kubernetes.io/name: kubeup-operator
";
/// What `up` makes of it with a standby: required.
const REQUIRED_SPREAD: &str = "          requiredDuringSchedulingIgnoredDuringExecution:
            - topologyKey: kubernetes.io/hostname
              labelSelector:
                matchLabels:
                  app.kubernetes.io/name: kubeup-operator
";

/// The manifests for a cluster. `host_network` (with `cni: none`, where no
/// pod network exists) is the chart's `hostNetwork=true`; `standby` (a
/// cluster with several controllers) is `replicas=2`: a second operator
/// on another controller takes the Lease over when the first one's machine
/// is lost. "Another" is required, not preferred: while `up` converges,
/// the first controller is often the only Ready node when the pods are
/// scheduled, and a preferred spread put both replicas on it (seen in
/// e2e_ha: that controller stopped, no operator ran until its pods were
/// evicted minutes later). The second replica now waits for a second
/// controller; with 3 or 5 of them a rolling update's extra pod has a
/// free one too.
///
/// `image_sha256` stamps the pod template with the operator image's digest:
/// a new image (same tag, imported from the bundle) rolls the pods in the
/// same apply that creates or updates the Deployment. (A patch after the
/// apply rolled a fresh Deployment twice, and a pod of the first rollout
/// could take the Lease with it as it went.)
pub fn render(host_network: bool, standby: bool, image_sha256: Option<&str>) -> String {
    let mut text = if host_network {
        MANIFESTS.replacen(AFTER, &format!("{AFTER}{HOST_NETWORK}"), 1)
    } else {
        MANIFESTS.to_string()
    };
    if standby {
        text = text.replacen(ONE_REPLICA, "\n  replicas: 2\n", 1).replacen(
            PREFERRED_SPREAD,
            REQUIRED_SPREAD,
            1,
        );
    }
    if let Some(sha) = image_sha256 {
        text = text.replacen(
            POD_ANNOTATIONS,
            &format!("{POD_ANNOTATIONS}        kubeup.dev/image-sha256: \"{sha}\"\n"),
            1,
        );
    }
    text
}

/// Where the pod template's annotations begin.
const POD_ANNOTATIONS: &str = "      annotations:\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_network_is_one_insertion_in_the_pod_spec() {
        assert!(MANIFESTS.contains(AFTER));
        assert!(!render(false, false, None).contains("hostNetwork"));
        let on = render(true, false, None);
        assert_eq!(on.matches("hostNetwork: true").count(), 1);
        assert_eq!(on.len(), MANIFESTS.len() + HOST_NETWORK.len());
    }

    #[test]
    fn the_image_digest_stamps_the_pod_template_once() {
        assert_eq!(MANIFESTS.matches(POD_ANNOTATIONS).count(), 1);
        let text = render(false, false, Some("abc"));
        assert_eq!(text.matches("kubeup.dev/image-sha256: \"abc\"").count(), 1);
    }

    #[test]
    fn several_controllers_get_a_standby_operator() {
        assert_eq!(MANIFESTS.matches(ONE_REPLICA).count(), 1);
        let two = render(false, true, None);
        assert!(two.contains("\n  replicas: 2\n") && !two.contains(ONE_REPLICA));
        assert_eq!(MANIFESTS.matches(PREFERRED_SPREAD).count(), 1);
        assert!(two.contains(REQUIRED_SPREAD) && !two.contains(PREFERRED_SPREAD));
        assert!(render(false, false, None).contains(PREFERRED_SPREAD));
    }
}
