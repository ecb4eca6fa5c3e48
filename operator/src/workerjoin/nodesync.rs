//! Keeping the Node's labels and taints in line with the WorkerJoin's spec.
//! Pure: (Node as seen, spec) → a JSON merge patch, or nothing when in sync.
//! What kubeup set before is remembered in annotations on the Node, so a
//! label or taint dropped from the spec is removed, and nobody else's is.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Node, Taint};
use kubeup_crds::workerjoin::{NodeTaint, TaintEffect};
use serde_json::{Value, json};

use crate::workerjoin::decide::{NODE_LABEL, owner_label_value};

pub const MANAGED_LABELS: &str = "kubeup.dev/managed-labels";
pub const MANAGED_TAINTS: &str = "kubeup.dev/managed-taints";

fn effect(e: TaintEffect) -> &'static str {
    match e {
        TaintEffect::NoSchedule => "NoSchedule",
        TaintEffect::PreferNoSchedule => "PreferNoSchedule",
        TaintEffect::NoExecute => "NoExecute",
    }
}

/// `key=value:Effect` strings for the kubelet's `--register-with-taints`.
pub fn register_taints(taints: &[NodeTaint]) -> Vec<String> {
    taints
        .iter()
        .map(|t| {
            format!(
                "{}{}:{}",
                t.key,
                t.value
                    .as_deref()
                    .map(|v| format!("={v}"))
                    .unwrap_or_default(),
                effect(t.effect)
            )
        })
        .collect()
}

/// The merge patch that brings `node` to the wanted labels and taints;
/// `None` when nothing differs. `owner` is `<ns>.<name>`.
pub fn node_patch(
    node: &Node,
    owner: &str,
    labels: &BTreeMap<String, String>,
    taints: &[NodeTaint],
) -> Option<Value> {
    let meta = &node.metadata;
    let current_labels = meta.labels.clone().unwrap_or_default();
    let annotations = meta.annotations.clone().unwrap_or_default();
    let split = |key: &str| -> BTreeSet<String> {
        annotations
            .get(key)
            .map(|v| {
                v.split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    };

    let mut want = labels.clone();
    want.insert(NODE_LABEL.into(), owner_label_value(owner));
    let mut label_patch = serde_json::Map::new();
    for (k, v) in &want {
        if current_labels.get(k) != Some(v) {
            label_patch.insert(k.clone(), json!(v));
        }
    }
    for k in split(MANAGED_LABELS) {
        if !want.contains_key(&k) && current_labels.contains_key(&k) {
            label_patch.insert(k, Value::Null);
        }
    }
    let managed_labels = want
        .keys()
        .filter(|k| *k != NODE_LABEL)
        .cloned()
        .collect::<Vec<_>>()
        .join(",");

    let taint_id = |key: &str, eff: &str| format!("{key}:{eff}");
    let wanted: Vec<Taint> = taints
        .iter()
        .map(|t| Taint {
            key: t.key.clone(),
            value: t.value.clone(),
            effect: effect(t.effect).into(),
            time_added: None,
        })
        .collect();
    let wanted_ids: BTreeSet<String> = wanted.iter().map(|t| taint_id(&t.key, &t.effect)).collect();
    let previously = split(MANAGED_TAINTS);
    let current_taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let mut next: Vec<Taint> = current_taints
        .iter()
        .filter(|t| {
            let id = taint_id(&t.key, &t.effect);
            !wanted_ids.contains(&id) && !previously.contains(&id)
        })
        .cloned()
        .collect();
    for w in &wanted {
        // Keep the existing entry (and its timeAdded) when it is the same.
        let existing = current_taints
            .iter()
            .find(|t| t.key == w.key && t.effect == w.effect && t.value == w.value);
        next.push(existing.cloned().unwrap_or_else(|| w.clone()));
    }
    let managed_taints = wanted_ids.iter().cloned().collect::<Vec<_>>().join(",");

    let mut patch = serde_json::Map::new();
    let mut metadata = serde_json::Map::new();
    if !label_patch.is_empty() {
        metadata.insert("labels".into(), Value::Object(label_patch));
    }
    let mut ann = serde_json::Map::new();
    if annotations
        .get(MANAGED_LABELS)
        .map(String::as_str)
        .unwrap_or("")
        != managed_labels
    {
        ann.insert(MANAGED_LABELS.into(), json!(managed_labels));
    }
    if annotations
        .get(MANAGED_TAINTS)
        .map(String::as_str)
        .unwrap_or("")
        != managed_taints
    {
        ann.insert(MANAGED_TAINTS.into(), json!(managed_taints));
    }
    if annotations.get(NODE_LABEL).map(String::as_str) != Some(owner) {
        ann.insert(NODE_LABEL.into(), json!(owner));
    }
    if !ann.is_empty() {
        metadata.insert("annotations".into(), Value::Object(ann));
    }
    let same_taints =
        next.len() == current_taints.len() && next.iter().all(|t| current_taints.contains(t));
    if !same_taints {
        patch.insert("spec".into(), json!({ "taints": next }));
    }
    if metadata.is_empty() && patch.is_empty() {
        return None;
    }
    if !metadata.is_empty() {
        patch.insert("metadata".into(), Value::Object(metadata));
    }
    if !same_taints {
        // Optimistic concurrency for the taint list (a merge patch replaces
        // it whole): a concurrent change by the node controller makes this
        // patch fail with a conflict and the next pass recomputes it.
        if let Some(rv) = &meta.resource_version
            && let Some(m) = patch
                .entry("metadata")
                .or_insert_with(|| json!({}))
                .as_object_mut()
        {
            m.insert("resourceVersion".into(), json!(rv));
        }
    }
    Some(Value::Object(patch))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::NodeSpec;
    use kube::api::ObjectMeta;

    fn node(labels: &[(&str, &str)], annotations: &[(&str, &str)], taints: Vec<Taint>) -> Node {
        let map = |kv: &[(&str, &str)]| {
            Some(
                kv.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            )
        };
        Node {
            metadata: ObjectMeta {
                name: Some("w1".into()),
                labels: map(labels),
                annotations: map(annotations),
                resource_version: Some("7".into()),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                taints: Some(taints),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn taint(key: &str, eff: &str) -> Taint {
        Taint {
            key: key.into(),
            value: None,
            effect: eff.into(),
            time_added: None,
        }
    }

    #[test]
    fn a_fresh_node_gets_labels_taints_and_the_owner() {
        let n = node(
            &[("kubernetes.io/hostname", "w1")],
            &[],
            vec![taint("node.kubernetes.io/not-ready", "NoSchedule")],
        );
        let labels = BTreeMap::from([("tier".to_string(), "gpu".to_string())]);
        let taints = vec![NodeTaint {
            key: "dedicated".into(),
            value: Some("gpu".into()),
            effect: TaintEffect::NoExecute,
        }];
        let p = node_patch(&n, "default.w1", &labels, &taints).unwrap();
        assert_eq!(p["metadata"]["labels"]["tier"], "gpu");
        assert_eq!(p["metadata"]["labels"][NODE_LABEL], "default.w1");
        assert_eq!(p["metadata"]["annotations"][NODE_LABEL], "default.w1");
        assert_eq!(
            p["metadata"]["annotations"][MANAGED_TAINTS],
            "dedicated:NoExecute"
        );
        let t = p["spec"]["taints"].as_array().unwrap();
        assert_eq!(t.len(), 2, "the node controller's taint is kept: {t:?}");
        assert_eq!(p["metadata"]["resourceVersion"], "7");
    }

    #[test]
    fn in_sync_gives_no_patch_and_dropped_entries_are_removed() {
        let n = node(
            &[(NODE_LABEL, "default.w1"), ("tier", "gpu"), ("other", "x")],
            &[
                (NODE_LABEL, "default.w1"),
                (MANAGED_LABELS, "tier"),
                (MANAGED_TAINTS, "dedicated:NoExecute"),
            ],
            vec![Taint {
                value: Some("gpu".into()),
                ..taint("dedicated", "NoExecute")
            }],
        );
        let labels = BTreeMap::from([("tier".to_string(), "gpu".to_string())]);
        let taints = vec![NodeTaint {
            key: "dedicated".into(),
            value: Some("gpu".into()),
            effect: TaintEffect::NoExecute,
        }];
        assert_eq!(node_patch(&n, "default.w1", &labels, &taints), None);

        let p = node_patch(&n, "default.w1", &BTreeMap::new(), &[]).unwrap();
        assert_eq!(p["metadata"]["labels"]["tier"], Value::Null);
        assert!(p["metadata"]["labels"].get("other").is_none(), "not ours");
        assert_eq!(p["spec"]["taints"], json!([]));
    }

    #[test]
    fn register_taints_format() {
        let taints = vec![
            NodeTaint {
                key: "a".into(),
                value: Some("b".into()),
                effect: TaintEffect::NoSchedule,
            },
            NodeTaint {
                key: "c".into(),
                value: None,
                effect: TaintEffect::PreferNoSchedule,
            },
        ];
        assert_eq!(
            register_taints(&taints),
            vec!["a=b:NoSchedule", "c:PreferNoSchedule"]
        );
    }
}
