//! Kubernetes' own syntax for the strings a WorkerJoin carries to a Node or
//! a host (names, label keys and values, taint keys), and the label keys a
//! WorkerJoin author may not set. The CRD schema says the same with
//! patterns and CEL rules; these run again in the operator, because a CRD
//! installed by hand (or an older one) may lack them.
//!
//! Pure functions of their input, no allocation beyond the error text.

use std::net::Ipv4Addr;

/// At most this many labels per WorkerJoin.
pub const MAX_LABELS: usize = 64;
/// At most this many taints per WorkerJoin.
pub const MAX_TAINTS: usize = 32;

/// The label kubeup records ownership with (its own, never a user's).
pub const KUBEUP_PREFIX: &str = "kubeup.dev/";

/// Label keys under `kubernetes.io` / `k8s.io` a WorkerJoin may set: the
/// documented well-known labels that describe a worker, not its identity or
/// its privileges. (`kubernetes.io/hostname`, `…/os`, `…/arch` are the
/// kubelet's; `node-role.kubernetes.io/control-plane` would pull control-
/// plane workloads onto the machine; `node-restriction.kubernetes.io/` is
/// reserved for labels the node itself may not set.)
const ALLOWED_RESERVED_LABELS: [&str; 4] = [
    "node.kubernetes.io/instance-type",
    "topology.kubernetes.io/region",
    "topology.kubernetes.io/zone",
    "node-role.kubernetes.io/worker",
];

/// A DNS-1123 subdomain: lowercase alphanumerics, `-` and `.`, starting and
/// ending alphanumeric, at most 253 characters; every label ≤ 63.
pub fn dns1123_subdomain(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 253 {
        return Err(format!("{:?} must be 1 to 253 characters long", shorten(s)));
    }
    for label in s.split('.') {
        dns1123_label(label)
            .map_err(|why| format!("{:?} is not a DNS-1123 subdomain: {why}", shorten(s)))?;
    }
    Ok(())
}

fn dns1123_label(l: &str) -> Result<(), String> {
    let ok_chars = l
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let ends_ok = l.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && l.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric());
    if l.is_empty() || l.len() > 63 {
        return Err("each dot-separated part must be 1 to 63 characters".into());
    }
    if !ok_chars || !ends_ok {
        return Err(
            "only lowercase letters, digits, '-' and '.', starting and ending with a letter or digit"
                .into(),
        );
    }
    Ok(())
}

/// The name part of a qualified name or a label value: alphanumerics,
/// `-`, `_`, `.`, starting and ending alphanumeric, at most 63.
fn name_part(s: &str) -> bool {
    s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && s.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
}

/// A qualified name (label or taint key): `[prefix/]name`, the prefix a
/// DNS-1123 subdomain.
pub fn qualified_name(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        dns1123_subdomain(p).map_err(|why| format!("key {:?}: prefix {why}", shorten(key)))?;
    }
    if !name_part(name) {
        return Err(format!(
            "key {:?} is not a qualified name: the name part must be 1 to 63 of [A-Za-z0-9-_.], starting and ending alphanumeric",
            shorten(key)
        ));
    }
    Ok(())
}

/// A label value: empty, or a name part (≤ 63).
pub fn label_value(v: &str) -> Result<(), String> {
    if v.is_empty() || name_part(v) {
        Ok(())
    } else {
        Err(format!(
            "value {:?} is not a label value: at most 63 of [A-Za-z0-9-_.], starting and ending alphanumeric",
            shorten(v)
        ))
    }
}

/// Why a WorkerJoin may not set this label key, if it may not.
pub fn reserved_label(key: &str) -> Option<String> {
    if key.starts_with(KUBEUP_PREFIX) {
        return Some(format!(
            "label {key:?}: the {KUBEUP_PREFIX} prefix is kubeup's own (it records which WorkerJoin owns a Node)"
        ));
    }
    if ALLOWED_RESERVED_LABELS.contains(&key) {
        return None;
    }
    let prefix = key.split_once('/').map(|(p, _)| p)?;
    let kube_domain = ["kubernetes.io", "k8s.io"]
        .iter()
        .any(|d| prefix == *d || prefix.ends_with(&format!(".{d}")));
    kube_domain.then(|| {
        format!(
            "label {key:?}: the kubernetes.io and k8s.io prefixes are reserved (allowed: {})",
            ALLOWED_RESERVED_LABELS.join(", ")
        )
    })
}

/// Why a WorkerJoin may not set this taint key, if it may not: the same
/// reserved prefixes (taints there are the node lifecycle controller's or
/// the control plane's).
pub fn reserved_taint(key: &str) -> Option<String> {
    let prefix = key.split_once('/').map(|(p, _)| p)?;
    let reserved = prefix == "kubeup.dev"
        || ["kubernetes.io", "k8s.io"]
            .iter()
            .any(|d| prefix == *d || prefix.ends_with(&format!(".{d}")));
    reserved.then(|| format!("taint {key:?}: the {prefix} prefix is reserved"))
}

/// An IPv4 address in its one canonical dotted-decimal form: four decimal
/// numbers 0–255 without leading zeros (`010.0.0.1` is octal to some
/// resolvers and decimal to others).
pub fn canonical_ipv4(s: &str) -> Option<Ipv4Addr> {
    let ip: Ipv4Addr = s.parse().ok()?;
    (ip.to_string() == s).then_some(ip)
}

/// Whether `s` looks like an attempt at an IPv4 address (digits and dots
/// only): such a string is judged as an address, never as a DNS name.
pub fn looks_numeric(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

/// At most `max` bytes of `s` (for quoting input in an error), cut on a
/// character boundary, with `…` when cut.
fn shorten_to(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = s.get(..end).unwrap_or_default().to_string();
    out.push('…');
    out
}

fn shorten(s: &str) -> String {
    shorten_to(s, 80)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subdomains() {
        assert!(dns1123_subdomain("worker-1").is_ok());
        assert!(dns1123_subdomain("w1.example.com").is_ok());
        for bad in ["", "Worker", "-w", "w-", "a..b", "w_1", "w 1", "w\n1", "é"] {
            assert!(dns1123_subdomain(bad).is_err(), "{bad:?}");
        }
        assert!(dns1123_subdomain(&"a".repeat(254)).is_err());
        assert!(dns1123_subdomain(&"a".repeat(64)).is_err());
    }

    #[test]
    fn qualified_names_and_values() {
        for ok in ["disk", "example.com/disk", "a.b/c_d.e-f", "X"] {
            assert!(qualified_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "/x",
            "x/",
            "Ex.com/x",
            "a/b/c",
            "x y",
            "x\nExecStart=/bin/sh",
            "-x",
        ] {
            assert!(qualified_name(bad).is_err(), "{bad:?}");
        }
        assert!(label_value("").is_ok());
        assert!(label_value("ssd_1.a-b").is_ok());
        for bad in ["a b", "a,b", "a=b", "a:b", "x\n", &"a".repeat(64)] {
            assert!(label_value(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn reserved_prefixes() {
        for bad in [
            "node-role.kubernetes.io/control-plane",
            "node-restriction.kubernetes.io/secure",
            "kubernetes.io/hostname",
            "k8s.io/x",
            "sub.k8s.io/x",
            "kubeup.dev/workerjoin",
        ] {
            assert!(reserved_label(bad).is_some(), "{bad}");
        }
        for ok in [
            "disk",
            "example.com/disk",
            "topology.kubernetes.io/zone",
            "node-role.kubernetes.io/worker",
            "notkubernetes.io/x",
        ] {
            assert_eq!(reserved_label(ok), None, "{ok}");
        }
        assert!(reserved_taint("node.kubernetes.io/unschedulable").is_some());
        assert!(reserved_taint("dedicated").is_none());
    }

    #[test]
    fn canonical_addresses() {
        assert!(canonical_ipv4("198.18.0.11").is_some());
        for bad in ["010.0.0.1", "1.2.3", "256.1.1.1", "1.2.3.4 ", "0x7f.0.0.1"] {
            assert!(canonical_ipv4(bad).is_none(), "{bad}");
        }
        assert!(looks_numeric("010.0.0.1"));
        assert!(!looks_numeric("w1.example"));
    }

    #[test]
    fn shortening_never_splits_a_character() {
        let s = "é".repeat(600);
        let cut = shorten_to(&s, 1001);
        assert!(cut.len() <= 1001 + '…'.len_utf8());
        assert!(cut.ends_with('…'));
        assert_eq!(shorten_to("abc", 10), "abc");
        let emoji = "🦀".repeat(10);
        assert_eq!(shorten_to(&emoji, 5), "🦀…");
    }
}
