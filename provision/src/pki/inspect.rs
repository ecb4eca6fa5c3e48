//! Reading certificates back: subjects, issuers, expiry, and the checks that
//! keep a cluster directory consistent.

use std::path::{Path, PathBuf};

use rcgen::{KeyPair, PublicKeyData};
use x509_parser::pem::parse_x509_pem;
use x509_parser::prelude::*;

use super::{PkiError, Result};

/// What `kubeup certs check` shows for one certificate.
#[derive(Clone, Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CertInfo {
    pub name: String,
    pub path: PathBuf,
    pub subject: String,
    pub issuer: String,
    pub not_after: String,
    pub days_left: i64,
    pub is_ca: bool,
}

/// Every `*.crt` under `pki_dir` (recursively), sorted by name.
pub fn inspect_dir(pki_dir: &Path) -> Result<Vec<CertInfo>> {
    let mut found = vec![];
    collect(pki_dir, pki_dir, &mut found)?;
    found.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(found)
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<CertInfo>) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|source| PkiError::Read {
        path: dir.into(),
        source,
    })?;
    for entry in entries {
        let path = entry
            .map_err(|source| PkiError::Read {
                path: dir.into(),
                source,
            })?
            .path();
        if path.is_dir() {
            collect(root, &path, out)?;
        } else if path.extension().is_some_and(|e| e == "crt") {
            let pem = super::files::read_string(&path)?;
            let name = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .with_extension("")
                .display()
                .to_string();
            let info = inspect_pem(&name, &pem).map_err(|reason| PkiError::Damaged {
                path: path.clone(),
                reason,
            })?;
            out.push(CertInfo { path, ..info });
        }
    }
    Ok(())
}

/// Describe one PEM certificate.
pub fn inspect_pem(name: &str, pem: &str) -> Result<CertInfo, String> {
    with_cert(pem, |cert| {
        let not_after = cert.validity().not_after;
        let days_left = (not_after.timestamp()
            - ::time::OffsetDateTime::now_utc().unix_timestamp())
        .div_euclid(86_400);
        CertInfo {
            name: name.to_string(),
            path: PathBuf::new(),
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            not_after: not_after
                .to_datetime()
                .format(&::time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            days_left,
            is_ca: cert.is_ca(),
        }
    })
}

/// A certificate's notAfter: Unix seconds and RFC 3339 text.
pub fn not_after_unix(pem: &str) -> Result<(i64, String), String> {
    with_cert(pem, |cert| {
        let t = cert.validity().not_after;
        (
            t.timestamp(),
            t.to_datetime()
                .format(&::time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
        )
    })
}

fn with_cert<T>(pem: &str, f: impl FnOnce(&X509Certificate<'_>) -> T) -> Result<T, String> {
    let (_, pem) =
        parse_x509_pem(pem.as_bytes()).map_err(|e| format!("not a PEM certificate ({e})"))?;
    let cert = pem
        .parse_x509()
        .map_err(|e| format!("not an X.509 certificate ({e})"))?;
    Ok(f(&cert))
}

/// The subject's organizations (the groups Kubernetes reads from a client
/// certificate), in order.
pub fn organizations(pem: &str) -> Result<Vec<String>, String> {
    with_cert(pem, |cert| {
        cert.subject()
            .iter_organization()
            .map(|o| o.as_str().map(str::to_string))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("an organization is not text ({e})"))
    })?
}

/// The certificate's public key is `key`'s.
pub(crate) fn check_key_matches(cert_pem: &str, key: &KeyPair) -> Result<(), String> {
    let same = with_cert(cert_pem, |cert| {
        cert.public_key().subject_public_key.data.as_ref() == key.der_bytes()
    })?;
    if same {
        Ok(())
    } else {
        Err("the private key does not belong to the certificate".into())
    }
}

/// `cert_pem` carries a valid signature of `ca_pem`'s key.
pub fn check_issued_by(cert_pem: &str, ca_pem: &str) -> Result<(), String> {
    let (_, ca) = parse_x509_pem(ca_pem.as_bytes()).map_err(|e| format!("CA is not PEM ({e})"))?;
    let ca = ca
        .parse_x509()
        .map_err(|e| format!("CA is not X.509 ({e})"))?;
    with_cert(cert_pem, |cert| {
        cert.verify_signature(Some(ca.public_key()))
    })?
    .map_err(|_| "it was not issued by this cluster's CA (the CA was replaced?)".to_string())
}

/// Is `cert_pem` a current certificate for `spec`: signed by `ca_pem`,
/// same subject, every wanted name present, more than `min_days_left` to
/// live? The error says why not (logged when re-issuing).
pub fn is_current(
    cert_pem: &str,
    ca_pem: &str,
    spec: &super::LeafSpec,
    min_days_left: i64,
) -> Result<(), String> {
    check_issued_by(cert_pem, ca_pem)?;
    let info = inspect_pem("", cert_pem)?;
    if info.days_left < min_days_left {
        return Err(format!("expires in {} days", info.days_left));
    }
    let want_cn = format!("CN={}", spec.common_name);
    if !info.subject.split(", ").any(|p| p == want_cn) {
        return Err(format!("subject {} is not {want_cn}", info.subject));
    }
    for o in &spec.organizations {
        if !info.subject.split(", ").any(|p| p == format!("O={o}")) {
            return Err(format!("subject {} lacks O={o}", info.subject));
        }
    }
    let names = with_cert(cert_pem, |cert| {
        let mut names = vec![];
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for n in &san.value.general_names {
                match n {
                    GeneralName::DNSName(d) => names.push(d.to_string()),
                    GeneralName::IPAddress(ip) => {
                        if let Ok(octets) = <[u8; 4]>::try_from(*ip) {
                            names.push(std::net::Ipv4Addr::from(octets).to_string())
                        }
                    }
                    _ => {}
                }
            }
        }
        names
    })?;
    if let Some(missing) = spec.sans.iter().find(|s| !names.contains(s)) {
        return Err(format!("lacks the name {missing}"));
    }
    Ok(())
}
