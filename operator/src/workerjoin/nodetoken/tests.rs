//! Tests of the parent module.

use super::*;

const NOW: i64 = 1_800_000_000;

fn node() -> BoundNode {
    BoundNode {
        name: "worker-1".into(),
        uid: "uid-1".into(),
    }
}

fn payload(sub: &str, node: Option<(&str, &str)>, iat: i64, exp: i64) -> String {
    let mut claims = serde_json::json!({
        "aud": ["https://kubernetes.default.svc"],
        "sub": sub,
        "iat": iat,
        "exp": exp,
    });
    if let Some((name, uid)) = node {
        claims["kubernetes.io"] = serde_json::json!({"node": {"name": name, "uid": uid}, "serviceaccount": {"name": "x", "uid": "y"}});
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims.to_string())
}

fn proxy(node: Option<(&str, &str)>, iat: i64, exp: i64) -> String {
    payload(&KUBE_PROXY.subject(), node, iat, exp)
}

#[test]
fn a_fresh_token_of_this_node_is_current_until_halfway() {
    let p = proxy(
        Some(("worker-1", "uid-1")),
        NOW - 3600,
        NOW - 3600 + LIFETIME_SECS,
    );
    let renew_at = is_current(&p, &KUBE_PROXY, &node(), NOW).unwrap();
    assert_eq!(renew_at, NOW - 3600 + LIFETIME_SECS / 2);
}

#[test]
fn a_token_near_renewal_or_expired_is_replaced() {
    let iat = NOW - 13 * 3600;
    let p = proxy(Some(("worker-1", "uid-1")), iat, iat + LIFETIME_SECS);
    let why = is_current(&p, &KUBE_PROXY, &node(), NOW).unwrap_err();
    assert!(why.contains("expires in 660 minute"), "{why}");
    let p = proxy(
        Some(("worker-1", "uid-1")),
        NOW - 2 * LIFETIME_SECS,
        NOW - LIFETIME_SECS,
    );
    let why = is_current(&p, &KUBE_PROXY, &node(), NOW).unwrap_err();
    assert!(why.contains("expired"), "{why}");
}

#[test]
fn a_token_of_another_node_or_none_is_replaced() {
    let exp = NOW + LIFETIME_SECS;
    let other = proxy(Some(("worker-2", "uid-1")), NOW, exp);
    let why = is_current(&other, &KUBE_PROXY, &node(), NOW).unwrap_err();
    assert!(why.contains("bound to Node \"worker-2\""), "{why}");
    let earlier = proxy(Some(("worker-1", "uid-0")), NOW, exp);
    let why = is_current(&earlier, &KUBE_PROXY, &node(), NOW).unwrap_err();
    assert!(why.contains("earlier Node"), "{why}");
    // The 365-day, unbound tokens of older kubeups are replaced too.
    let unbound = proxy(None, NOW, NOW + 365 * 86_400);
    let why = is_current(&unbound, &KUBE_PROXY, &node(), NOW).unwrap_err();
    assert!(why.contains("not bound"), "{why}");
}

#[test]
fn a_token_of_another_service_account_is_replaced() {
    let p = proxy(Some(("worker-1", "uid-1")), NOW, NOW + LIFETIME_SECS);
    let why = is_current(&p, &FLANNEL, &node(), NOW).unwrap_err();
    assert!(
        why.contains("not system:serviceaccount:kube-system:flannel"),
        "{why}"
    );
    assert!(is_current("", &KUBE_PROXY, &node(), NOW).is_err());
    assert!(is_current("not base64 !", &KUBE_PROXY, &node(), NOW).is_err());
}

#[test]
fn flannel_gets_a_token_only_when_kubeup_runs_it() {
    assert_eq!(components(Cni::Flannel), vec![KUBE_PROXY, FLANNEL]);
    assert_eq!(components(Cni::None), vec![KUBE_PROXY]);
}

#[test]
fn renewal_waits_for_the_recorded_time() {
    let now = OffsetDateTime::from_unix_timestamp(NOW).unwrap();
    let later = rfc3339(NOW + 600);
    assert_eq!(
        time_left(later.as_deref(), now),
        Some(Duration::from_secs(600))
    );
    assert_eq!(time_left(rfc3339(NOW - 1).as_deref(), now), None);
    assert_eq!(time_left(None, now), None);
    assert_eq!(time_left(Some("yesterday"), now), None);
}
