//! Tests of the parent module.

use super::*;
use secrecy::ExposeSecret;

#[test]
fn the_kubelet_csr_has_the_node_identity() {
    let cert = ClientCert::kubelet("worker-1");
    let g = generate(&cert).unwrap();
    assert!(g.csr_pem.starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
    assert!(g.key_pem.expose_secret().contains("PRIVATE KEY"));
    assert!(
        !format!("{g:?}").contains("PRIVATE KEY"),
        "Debug hides the key"
    );
    let params = rcgen::CertificateSigningRequestParams::from_pem(&g.csr_pem).unwrap();
    let dn: Vec<String> = params
        .params
        .distinguished_name
        .iter()
        .map(|(t, v)| format!("{t:?}={}", dn_text(v)))
        .collect();
    assert!(
        dn.contains(&"CommonName=system:node:worker-1".to_string()),
        "{dn:?}"
    );
    assert!(
        dn.contains(&"OrganizationName=system:nodes".to_string()),
        "{dn:?}"
    );

    let obj = csr_object("n", &cert, &g.csr_pem, "default.w1", "uid-1");
    assert_eq!(obj.spec.signer_name, KUBELET_SIGNER);
    assert_eq!(
        obj.spec.usages.as_deref().unwrap(),
        ["digital signature", "client auth"]
    );
    assert!(is_ours(&obj, "uid-1"));
    assert!(!is_ours(&obj, "uid-2"));
    let text = serde_json::to_string(&obj).unwrap();
    assert!(!text.contains("PRIVATE"), "no key in the API object");
}

#[test]
fn csr_names_are_unique_per_attempt() {
    let c = ClientCert::kubelet("w1");
    let n = csr_name(&c, "w1");
    assert!(n.starts_with("kubeup-kubelet-w1-"), "{n}");
    assert_ne!(n, csr_name(&c, "w1"));
}

fn dn_text(v: &rcgen::DnValue) -> String {
    match v {
        rcgen::DnValue::Utf8String(s) => s.clone(),
        rcgen::DnValue::PrintableString(s) => s.as_str().to_string(),
        other => format!("{other:?}"),
    }
}
