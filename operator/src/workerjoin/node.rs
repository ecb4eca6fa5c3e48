//! The worker's Node: made before the kubelet starts (owned, labelled and
//! tainted from the first moment), waited for until Ready, and kept in sync
//! with the spec's labels and taints.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use kubeup_crds::WorkerJoin;
use kubeup_crds::cluster::Cni;
use kubeup_provision::converge;
use kubeup_provision::hostplan::network;
use kubeup_provision::hostplan::node::NodeObject;
use kubeup_provision::ssh::Session;

use crate::error::{Error, Result};
use crate::runtime::watch;
use crate::workerjoin::decide::{self, NodeView};
use crate::workerjoin::join::Join;
use crate::workerjoin::{nodeclaim, nodesync, status};

/// How long a pre-created Node may wait for its podCIDR before the kubelet
/// starts anyway.
const PODCIDR_WAIT: Duration = Duration::from_secs(10);

/// A Node as the kubelet would register it, owned by the WorkerJoin
/// `owner` (label and annotation; labels and taints follow by
/// [`sync_node`]).
pub fn new_node(name: &str, owner: &str) -> Node {
    NodeObject::worker(
        name,
        decide::NODE_LABEL,
        &decide::owner_label_value(owner),
        owner,
    )
    .build()
}

impl Join<'_> {
    /// Create the Node (labelled and annotated as this WorkerJoin's, with
    /// the spec's labels and taints) when it does not exist, and wait
    /// briefly for the podCIDR the controller-manager allocates. `None`
    /// when none came (no `--allocate-node-cidrs`): the CNI config is then
    /// written once the Node has one.
    pub(crate) async fn precreate_node(&self, node_name: &str) -> Result<Option<String>> {
        let nodes: Api<Node> = Api::all(self.ctx.client.clone());
        let read = |e| Error::kube(format!("read Node {node_name}"))(e);
        if nodes.get_opt(node_name).await.map_err(read)?.is_none() {
            let node = new_node(node_name, &self.owner);
            match nodes.create(&PostParams::default(), &node).await {
                Ok(_) => tracing::info!(node = node_name, "Node created before the kubelet"),
                // Someone was faster: it must be ours (an earlier pass), which
                // sync_node checks below before it changes anything.
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => return Err(Error::kube(format!("create Node {node_name}"))(e)),
            }
        }
        let deadline = tokio::time::Instant::now() + PODCIDR_WAIT;
        let mut changes = std::pin::pin!(watch::changes(nodes, node_name, deadline));
        while let Some(node) = changes.next().await {
            let Some(node) = node else { continue };
            sync_node(&self.ctx.client, &node, &self.owner, self.wj).await?;
            if let Some(cidr) = node.spec.as_ref().and_then(|s| s.pod_cidr.clone()) {
                return Ok(Some(cidr));
            }
        }
        tracing::info!(
            node = node_name,
            "no podCIDR yet; the CNI config follows later"
        );
        Ok(None)
    }

    /// Wait (up to `node_wait`) for the Node: CNI config from its podCIDR,
    /// labels and taints, then Ready. `false` when not Ready yet.
    pub(crate) async fn wait_for_node(
        &self,
        session: &Session,
        node_name: &str,
        cni: Cni,
    ) -> Result<bool> {
        let nodes: Api<Node> = Api::all(self.ctx.client.clone());
        let deadline = tokio::time::Instant::now() + self.ctx.settings.node_wait;
        let mut changes = std::pin::pin!(watch::changes(nodes, node_name, deadline));
        let mut cni_written = false;
        while let Some(node) = changes.next().await {
            let Some(node) = node else {
                let generation = self.generation;
                self.with_status(|s| status::apply_node_conditions(s, None, generation))
                    .await;
                continue;
            };
            let view = node_view(&node);
            if !cni_written && let Some(cidr) = &view.pod_cidr {
                // flannel starts once the Node has its podCIDR (it
                // exits without one); `cni: none` writes nothing.
                let conflist: Vec<_> = network::cni_conflist(cni, cidr).into_iter().collect();
                converge::write_files(session, &conflist, false).await?;
                let units = network::units(cni);
                if !units.is_empty() {
                    // Their unit files were written and loaded in Starting:
                    // only start what is not running.
                    converge::ensure_units(session, units, &BTreeSet::new(), false, false).await?;
                }
                cni_written = true;
            }
            sync_node(&self.ctx.client, &node, &self.owner, self.wj).await?;
            let generation = self.generation;
            self.with_status(|s| status::apply_node_conditions(s, Some(&view), generation))
                .await;
            if view.ready && cni_written {
                return Ok(true);
            }
        }
        self.save().await?;
        Ok(false)
    }
}

pub fn node_view(node: &Node) -> NodeView {
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"));
    NodeView {
        ready: ready.is_some_and(|c| c.status == "True"),
        ready_message: ready
            .and_then(|c| c.message.clone())
            .unwrap_or_else(|| "the kubelet has not reported yet".into()),
        pod_cidr: node.spec.as_ref().and_then(|s| s.pod_cidr.clone()),
        labels: node.metadata.labels.clone().unwrap_or_default(),
    }
}

/// Bring the Node's labels and taints to the spec (a no-op when in sync).
pub async fn sync_node(
    client: &kube::Client,
    node: &Node,
    owner: &str,
    wj: &WorkerJoin,
) -> Result<()> {
    // Ownership recorded on a Node is never overwritten or taken over.
    if nodeclaim::recorded_owner(node) != Some(owner) {
        return Err(Error::NodeNameTaken(format!(
            "Node {} is not recorded as WorkerJoin {owner}'s; its labels and taints are left alone",
            node.name_any()
        )));
    }
    let Some(patch) = nodesync::node_patch(node, owner, &wj.spec.labels, &wj.spec.taints) else {
        return Ok(());
    };
    let nodes: Api<Node> = Api::all(client.clone());
    let name = node.name_any();
    match nodes
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        // A concurrent change to the taints: the next pass recomputes.
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(Error::kube(format!("label Node {name}"))(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_precreated_node_names_its_workerjoin() {
        let n = new_node("worker-1", "default.w1");
        assert_eq!(n.metadata.name.as_deref(), Some("worker-1"));
        let labels = n.metadata.labels.unwrap();
        assert_eq!(labels[decide::NODE_LABEL], "default.w1");
        assert_eq!(labels["kubernetes.io/hostname"], "worker-1");
        assert_eq!(
            n.metadata.annotations.unwrap()[decide::NODE_LABEL],
            "default.w1"
        );
        assert!(
            n.spec.is_none(),
            "the controller-manager assigns the podCIDR"
        );
    }
}
