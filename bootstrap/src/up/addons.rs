//! What `up` applies to the running cluster: CRDs, RBAC for nodes and the
//! apiserver's kubelet client, the `Cluster` object (the cluster.yaml
//! itself), and the operator from the chart's manifests. Server-side apply,
//! one field manager, so re-applying changes nothing.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::{ApiCapabilities, ApiResource, Scope};
use kube::{Client, ResourceExt};

use super::ControllerContext;

pub const FIELD_MANAGER: &str = "kubeup";

/// RBAC the cluster needs from the start.
const BOOTSTRAP_RBAC: &str = r#"
# The apiserver reaches kubelets (logs, exec) as this user.
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: kubeup:apiserver-kubelet-client
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:kubelet-api-admin"}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: kube-apiserver-kubelet-client}
---
# Kubelets renew their own client certificates through the CSR API; the
# controller-manager approves these renewals.
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: kubeup:node-autoapprove-certificate-rotation
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient"}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: Group, name: "system:nodes"}
---
# The everyday admin credential (admin.kubeconfig, group
# kubeup:cluster-admins) is cluster-admin through this binding, so deleting
# it revokes that certificate; the break-glass super-admin.kubeconfig
# (system:masters) needs none. Applied with the break-glass credential.
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: kubeup:cluster-admins
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cluster-admin}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: Group, name: "kubeup:cluster-admins"}
---
apiVersion: v1
kind: Namespace
metadata:
  name: kubeup-system
"#;

/// Apply everything; returns how many objects were applied. Only what
/// needs an earlier object waits for it: the Cluster object for its CRD
/// (whose first object costs the apiserver ~1 s of building the kind's
/// handler and compiling its CEL rules), the operator for the CRDs it
/// watches and its Namespace; the pod network and the add-ons for nothing.
pub async fn apply(client: &Client, ctx: &ControllerContext) -> Result<usize> {
    let crds = kubeup_crds::render_crds_yaml().context("failed to render the kubeup CRDs")?;
    let net = &ctx.loaded.cluster.spec.networking;
    let network = kubeup_provision::hostplan::network::addon_manifests(
        net.cni,
        &net.cluster_dns,
        &net.domain,
        ctx.controllers().len(),
    );
    let counts = tokio::try_join!(
        async {
            let (crds, rbac) = tokio::try_join!(
                async {
                    apply_yaml(client, &crds)
                        .await
                        .context("failed to apply the kubeup CRDs")
                },
                async {
                    apply_yaml(client, BOOTSTRAP_RBAC)
                        .await
                        .context("failed to apply the bootstrap RBAC")
                },
            )?;
            wait_established(client).await?;
            let (cluster, operator) =
                tokio::try_join!(apply_cluster(client, ctx), apply_operator(client, ctx))?;
            Ok::<_, anyhow::Error>(crds + rbac + cluster + operator)
        },
        async {
            replace_dns_service_on_new_ip(client, &net.cluster_dns).await?;
            apply_yaml(client, &network)
                .await
                .context("failed to apply the pod network and DNS add-ons")
        },
        super::metrics::apply(client, ctx),
        apply_storage_and_ingress(client, &ctx.loaded.cluster.spec.addons),
    )?;
    Ok(counts.0 + counts.1 + counts.2 + counts.3)
}

/// The `Cluster` object (cluster.yaml itself), then a nudge for the
/// WorkerJoins whose machines list other apiservers.
async fn apply_cluster(client: &Client, ctx: &ControllerContext) -> Result<usize> {
    let mut cluster = ctx.loaded.cluster.clone();
    cluster.status = None;
    cluster.metadata.managed_fields = None;
    let api: Api<kubeup_crds::Cluster> = Api::all(client.clone());
    api.patch(
        &cluster.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&cluster),
    )
    .await
    .context("failed to apply the Cluster object")?;
    nudge_worker_joins(client, ctx).await?;
    Ok(1)
}

/// The operator from the chart's manifests: one replica, or two with
/// standby controllers; on the host's network with no pod network.
async fn apply_operator(client: &Client, ctx: &ControllerContext) -> Result<usize> {
    let net = &ctx.loaded.cluster.spec.networking;
    let host_network = !kubeup_provision::hostplan::network::runs_flannel(net.cni);
    let standby = ctx.controllers().len() > 1;
    let image = ctx
        .manifest
        .files
        .get("images/kubeup-operator.tar")
        .map(|f| f.sha256.as_str());
    let operator = crate::operator_manifests::render(host_network, standby, image);
    apply_yaml(client, &operator)
        .await
        .context("failed to apply the operator manifests")
}

/// `spec.addons`: local-path storage and the Traefik ingress, each applied
/// when on and its objects deleted when turned off (`none`), so the cluster
/// follows the file both ways.
async fn apply_storage_and_ingress(
    client: &Client,
    addons: &kubeup_crds::cluster::Addons,
) -> Result<usize> {
    use kubeup_crds::cluster::{Addons, Ingress, Storage};
    use kubeup_provision::addons;
    let n = apply_yaml(client, &addons::manifests(addons))
        .await
        .context("failed to apply the storage and ingress add-ons")?;
    let off = Addons {
        storage: if addons.storage == Storage::None {
            Storage::LocalPath
        } else {
            Storage::None
        },
        ingress: if addons.ingress == Ingress::None {
            Ingress::Traefik
        } else {
            Ingress::None
        },
        ..addons.clone()
    };
    delete_yaml(client, &addons::manifests(&off))
        .await
        .context("failed to remove an add-on turned off")?;
    Ok(n)
}

/// Delete every object of a multi-document YAML that exists (what
/// [`apply_yaml`] made); absent ones and unserved kinds are skipped.
async fn delete_yaml(client: &Client, yaml: &str) -> Result<()> {
    for obj in objects(yaml)? {
        let Some(tm) = obj.types.clone() else {
            continue;
        };
        let Ok((ar, caps)) = kube::discovery::pinned_kind(client, &gvk_of(&tm)).await else {
            continue;
        };
        match api_for(client, &ar, &caps, &obj)
            .delete(&obj.name_any(), &Default::default())
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("failed to delete {} {}", tm.kind, obj.name_any()));
            }
        }
    }
    Ok(())
}

/// The objects of a multi-document YAML (empty documents skipped). Parsed
/// up front: the parser may not be held across an await in a future that
/// must be `Send` (the phase engine's).
fn objects(yaml: &str) -> Result<Vec<DynamicObject>> {
    let docs = serde_yaml_ng::Deserializer::from_str(yaml)
        .map(serde_yaml_ng::Value::deserialize)
        .collect::<Result<Vec<_>, _>>()?;
    docs.into_iter()
        .filter(|v| !v.is_null())
        .map(|v| {
            serde_yaml_ng::from_value(v).context("a manifest document is not a Kubernetes object")
        })
        .collect()
}

fn gvk_of(tm: &kube::core::TypeMeta) -> GroupVersionKind {
    let (group, version) = tm
        .api_version
        .split_once('/')
        .unwrap_or(("", tm.api_version.as_str()));
    GroupVersionKind::gvk(group, version, &tm.kind)
}

/// The API of `obj`'s kind, in its namespace when the kind has one.
fn api_for(
    client: &Client,
    ar: &ApiResource,
    caps: &ApiCapabilities,
    obj: &DynamicObject,
) -> Api<DynamicObject> {
    match caps.scope {
        Scope::Namespaced => Api::namespaced_with(
            client.clone(),
            obj.namespace().as_deref().unwrap_or("default"),
            ar,
        ),
        Scope::Cluster => Api::all_with(client.clone(), ar),
    }
}

/// WorkerJoins whose machine's load balancer lists other apiservers than
/// the Cluster's controllers get an annotation naming the controllers: a
/// change of their own object wakes the operator for each at once (beside
/// its watch on the Cluster), and it writes the new list to the machine.
async fn nudge_worker_joins(client: &Client, ctx: &ControllerContext) -> Result<()> {
    let want: Vec<String> = ctx
        .controllers()
        .iter()
        .map(|c| c.address.clone())
        .collect();
    let api: Api<kubeup_crds::WorkerJoin> = Api::all(client.clone());
    let list = match api.list(&Default::default()).await {
        Ok(list) => list,
        // No CRD served yet on a first `up`: nothing to nudge.
        Err(kube::Error::Api(e)) if e.code == 404 => return Ok(()),
        Err(e) => return Err(e).context("failed to list WorkerJoins"),
    };
    let annotation = serde_json::json!({"metadata": {"annotations": {
        "kubeup.dev/controllers": want.join(",")
    }}});
    for wj in list.items {
        let written = wj
            .status
            .as_ref()
            .map(|s| s.api_backends.clone())
            .unwrap_or_default();
        if written.is_empty() || written == want {
            continue;
        }
        let (Some(ns), Some(name)) = (wj.metadata.namespace.clone(), wj.metadata.name.clone())
        else {
            continue;
        };
        let api: Api<kubeup_crds::WorkerJoin> = Api::namespaced(client.clone(), &ns);
        api.patch(&name, &PatchParams::default(), &Patch::Merge(&annotation))
            .await
            .with_context(|| format!("failed to annotate WorkerJoin {ns}/{name}"))?;
    }
    Ok(())
}

/// A Service's cluster IP cannot change in place: when `clusterDns` was
/// changed, delete the DNS Service so the add-ons recreate it at the new
/// address (kubelets already point there after their restart).
async fn replace_dns_service_on_new_ip(client: &Client, cluster_dns: &str) -> Result<()> {
    let api: Api<k8s_openapi::api::core::v1::Service> =
        Api::namespaced(client.clone(), "kube-system");
    let Some(svc) = api.get_opt("kube-dns").await? else {
        return Ok(());
    };
    let current = svc.spec.and_then(|s| s.cluster_ip).unwrap_or_default();
    if current.is_empty() || current == cluster_dns {
        return Ok(());
    }
    api.delete("kube-dns", &Default::default())
        .await
        .context("failed to delete the DNS Service to move it to the new clusterDns")?;
    let started = Instant::now();
    while api.get_opt("kube-dns").await?.is_some() {
        if started.elapsed() > Duration::from_secs(30) {
            bail!("the DNS Service kube-system/kube-dns was not deleted within 30s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

async fn wait_established(client: &Client) -> Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let started = Instant::now();
    for crd in kubeup_crds::all_crds() {
        let name = crd.name_any();
        loop {
            let established = api
                .get(&name)
                .await?
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            if established {
                break;
            }
            if started.elapsed() > Duration::from_secs(30) {
                bail!("CRD {name} was not established within 30s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

/// Server-side apply of a multi-document YAML of any kinds, in waves: what
/// others live in or are of (Namespaces, CRDs), then what workloads read
/// (accounts, RBAC, configuration, Services), then the workloads, so a pod
/// never starts before its ConfigMap and waits out a kubelet's retry
/// backoff. Within a wave the objects go at once: one after another, the
/// add-ons' 61 objects took ~2 s of `up`.
pub async fn apply_yaml(client: &Client, yaml: &str) -> Result<usize> {
    let mut waves: BTreeMap<Wave, Vec<(GroupVersionKind, DynamicObject)>> = BTreeMap::new();
    for obj in objects(yaml)? {
        let gvk = gvk_of(
            obj.types
                .as_ref()
                .context("a manifest document lacks apiVersion/kind")?,
        );
        waves
            .entry(Wave::of(&gvk.kind))
            .or_default()
            .push((gvk, obj));
    }
    let mut count = 0;
    for wave in waves.into_values() {
        count += apply_wave(client, wave).await?;
    }
    Ok(count)
}

/// The waves of [`apply_yaml`], in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Wave {
    Containers,
    Inputs,
    Workloads,
}

impl Wave {
    fn of(kind: &str) -> Self {
        match kind {
            "Namespace" | "CustomResourceDefinition" => Wave::Containers,
            "Deployment"
            | "DaemonSet"
            | "StatefulSet"
            | "Job"
            | "CronJob"
            | "APIService"
            | "ValidatingWebhookConfiguration"
            | "MutatingWebhookConfiguration" => Wave::Workloads,
            _ => Wave::Inputs,
        }
    }
}

/// Objects that need nothing of each other, applied at once.
async fn apply_wave(
    client: &Client,
    objs: Vec<(GroupVersionKind, DynamicObject)>,
) -> Result<usize> {
    use futures::{StreamExt, TryStreamExt};
    // Kinds resolved one group-version at a time: a full discovery would
    // also ask aggregated APIs (metrics.k8s.io), which stall while their
    // server starts.
    let gvks: HashSet<GroupVersionKind> = objs.iter().map(|(gvk, _)| gvk.clone()).collect();
    let kinds: HashMap<GroupVersionKind, (ApiResource, ApiCapabilities)> =
        futures::future::try_join_all(gvks.into_iter().map(|gvk| async move {
            let found = kube::discovery::pinned_kind(client, &gvk)
                .await
                .with_context(|| {
                    format!(
                        "the cluster does not serve {}/{}",
                        gvk.api_version(),
                        gvk.kind
                    )
                })?;
            Ok::<_, anyhow::Error>((gvk, found))
        }))
        .await?
        .into_iter()
        .collect();
    let kinds = &kinds;
    let count = objs.len();
    futures::stream::iter(objs)
        .map(|(gvk, obj)| async move {
            let (ar, caps) = kinds.get(&gvk).context("a kind resolved above")?;
            let name = obj.name_any();
            api_for(client, ar, caps, &obj)
                .patch(
                    &name,
                    &PatchParams::apply(FIELD_MANAGER).force(),
                    &Patch::Apply(&obj),
                )
                .await
                .with_context(|| format!("failed to apply {} {name}", gvk.kind))?;
            Ok::<_, anyhow::Error>(())
        })
        .buffer_unordered(16)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(count)
}

use serde::Deserialize as _;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_others_live_in_goes_first_and_workloads_last() {
        assert!(Wave::of("Namespace") < Wave::of("ServiceAccount"));
        assert!(Wave::of("CustomResourceDefinition") < Wave::of("ClusterRoleBinding"));
        for input in ["ConfigMap", "Secret", "Service", "ServiceAccount", "Role"] {
            for workload in ["Deployment", "DaemonSet", "APIService"] {
                assert!(Wave::of(input) < Wave::of(workload), "{input} {workload}");
            }
        }
    }

    #[test]
    fn the_admin_group_is_bound_to_cluster_admin() {
        let group = kubeup_provision::pki::ADMIN_GROUP;
        let binding = BOOTSTRAP_RBAC
            .split("\n---\n")
            .find(|doc| doc.contains(&format!("name: {group}\n")))
            .expect("a ClusterRoleBinding named after the admin group");
        assert!(binding.contains("kind: ClusterRoleBinding"), "{binding}");
        assert!(binding.contains("name: cluster-admin}"), "{binding}");
        assert!(
            binding.contains(&format!("kind: Group, name: \"{group}\"")),
            "{binding}"
        );
    }
}
