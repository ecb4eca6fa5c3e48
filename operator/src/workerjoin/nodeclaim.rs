//! A WorkerJoin's claim on a node name. The certificate the operator
//! obtains is `system:node:<name>`: whoever gets it speaks for that Node.
//! So before any certificate, and before a Node is created, labelled,
//! drained or deleted, the name must be this WorkerJoin's: no Node of that
//! name owned by anything else, and no earlier WorkerJoin claiming it.

use k8s_openapi::api::core::v1::Node;
use kube::{Api, ResourceExt};
use kubeup_crds::WorkerJoin;

use crate::error::{Error, Result};
use crate::runtime::context::Context;
use crate::workerjoin::decide::{NODE_LABEL, conflicting_owner, owner_ref};

/// Who owns an existing Node, as recorded on it (the annotation carries
/// the full `<ns>.<name>`); `None` when nobody is recorded.
pub fn recorded_owner(node: &Node) -> Option<&str> {
    node.annotations().get(NODE_LABEL).map(String::as_str)
}

/// Why `wj` may not use the node name `name`, if it may not. `node` is the
/// Node of that name when one exists; `claims` are the other WorkerJoins
/// naming it (`(created, ns/name)`).
pub fn conflict(
    name: &str,
    owner: &str,
    me: (&str, &str),
    node: Option<&Node>,
    claims: &[(String, String)],
) -> Option<String> {
    if let Some(node) = node {
        return match recorded_owner(node) {
            Some(o) if o == owner => None,
            Some(o) => Some(format!(
                "Node {name} belongs to WorkerJoin {o}; a WorkerJoin never takes over another's Node: set spec.nodeName to a free name"
            )),
            None => Some(format!(
                "Node {name} exists and was not joined by a WorkerJoin; kubeup will not issue its identity or touch it: set spec.nodeName to a free name, or delete that Node first if the machine is really this one"
            )),
        };
    }
    conflicting_owner(me, claims).map(|other| {
        format!(
            "WorkerJoin {other} already claims node name {name}: set spec.nodeName to a free name"
        )
    })
}

/// The other WorkerJoins naming `name` as their node (spec or status).
fn claims(ctx: &Context, wj: &WorkerJoin, name: &str) -> Vec<(String, String)> {
    let me = wj.uid();
    ctx.store
        .state()
        .iter()
        .filter(|o| o.uid() != me && o.metadata.deletion_timestamp.is_none())
        .filter(|o| {
            o.spec.node_name.as_deref() == Some(name)
                || o.status.as_ref().and_then(|s| s.node_name.as_deref()) == Some(name)
        })
        .map(|o| {
            (
                created(o),
                format!("{}/{}", o.namespace().unwrap_or_default(), o.name_any()),
            )
        })
        .collect()
}

pub fn created(o: &WorkerJoin) -> String {
    o.metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.to_string())
        .unwrap_or_default()
}

/// Why `wj` may not use `name`, reading the Node from the API.
pub fn check(ctx: &Context, wj: &WorkerJoin, name: &str, node: Option<&Node>) -> Option<String> {
    let ns = wj.namespace().unwrap_or_default();
    let owner = owner_ref(&ns, &wj.name_any());
    let me = (created(wj), format!("{ns}/{}", wj.name_any()));
    conflict(name, &owner, (&me.0, &me.1), node, &claims(ctx, wj, name))
}

/// [`check`] with a fresh read of the Node: an error when taken.
pub async fn ensure(ctx: &Context, wj: &WorkerJoin, name: &str) -> Result<()> {
    let node = Api::<Node>::all(ctx.client.clone())
        .get_opt(name)
        .await
        .map_err(Error::kube(format!("read Node {name}")))?;
    match check(ctx, wj, name, node.as_ref()) {
        Some(why) => Err(Error::NodeNameTaken(why)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(owner: Option<&str>) -> Node {
        let mut n = Node::default();
        n.metadata.name = Some("w1".into());
        n.metadata.annotations = owner.map(|o| [(NODE_LABEL.to_string(), o.to_string())].into());
        n
    }

    #[test]
    fn only_a_free_name_or_an_own_node_may_be_used() {
        let me = ("2026-01-02T00:00:00Z", "ns/me");
        assert_eq!(conflict("w1", "ns.me", me, None, &[]), None);
        assert_eq!(
            conflict("w1", "ns.me", me, Some(&node(Some("ns.me"))), &[]),
            None
        );
        let theirs = conflict("w1", "ns.me", me, Some(&node(Some("ns.other"))), &[]);
        assert!(theirs.is_some_and(|m| m.contains("belongs to WorkerJoin ns.other")));
        let unowned = conflict("w1", "ns.me", me, Some(&node(None)), &[]);
        assert!(unowned.is_some_and(|m| m.contains("was not joined by a WorkerJoin")));
        let earlier = [("2026-01-01T00:00:00Z".to_string(), "ns/first".to_string())];
        let claimed = conflict("w1", "ns.me", me, None, &earlier);
        assert!(claimed.is_some_and(|m| m.contains("ns/first already claims")));
        let later = [("2026-01-03T00:00:00Z".to_string(), "ns/later".to_string())];
        assert_eq!(conflict("w1", "ns.me", me, None, &later), None);
    }
}
