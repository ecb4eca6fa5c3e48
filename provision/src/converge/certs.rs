//! Leaf certificates on the host: kept while they are current, issued
//! fresh (new key pair) when missing, wrongly named, foreign or expiring.

use secrecy::ExposeSecret;

use super::{Changes, ConvergeError, ssh_err};
use crate::hostplan::HostFile;
use crate::hostplan::certs::CertPlan;
use crate::pki::{self, CaKind, CertificateAuthority};
use crate::ssh::{Command, Session, quote};

/// The CAs that sign a host's certificates.
pub struct CaSet {
    pub cluster: CertificateAuthority,
    pub etcd: CertificateAuthority,
    pub front_proxy: CertificateAuthority,
    pub kubelet_serving: CertificateAuthority,
}

impl CaSet {
    /// All four CAs from `pki_dir`; each must exist.
    pub fn load(pki_dir: &std::path::Path) -> Result<Self, pki::PkiError> {
        let kubelet_serving = CertificateAuthority::load(pki_dir, CaKind::KubeletServing)?;
        Self::load_with(pki_dir, kubelet_serving)
    }

    /// The cluster, etcd and front-proxy CAs from `pki_dir`, with a
    /// kubelet-serving CA the caller has (see [`pki::kubelet_serving_ca`]).
    pub fn load_with(
        pki_dir: &std::path::Path,
        kubelet_serving: CertificateAuthority,
    ) -> Result<Self, pki::PkiError> {
        Ok(Self {
            cluster: CertificateAuthority::load(pki_dir, CaKind::Cluster)?,
            etcd: CertificateAuthority::load(pki_dir, CaKind::Etcd)?,
            front_proxy: CertificateAuthority::load(pki_dir, CaKind::FrontProxy)?,
            kubelet_serving,
        })
    }

    pub fn get(&self, kind: CaKind) -> &CertificateAuthority {
        match kind {
            CaKind::Cluster => &self.cluster,
            CaKind::Etcd => &self.etcd,
            CaKind::FrontProxy => &self.front_proxy,
            CaKind::KubeletServing => &self.kubelet_serving,
        }
    }
}

/// Read the certificate part of each planned file (never the key) in one
/// round trip.
pub async fn remote_certs(
    session: &Session,
    plans: &[CertPlan],
) -> Result<Vec<Option<String>>, ConvergeError> {
    let mut script = String::new();
    for p in plans {
        let q = quote(&p.cert_path).map_err(ssh_err(session.host(), "certificates"))?;
        // Both key and certificate must be there; print only the certificate.
        let kq = quote(&p.key_path).map_err(ssh_err(session.host(), "certificates"))?;
        script.push_str(&format!(
            "echo '>>>'; [ -s {kq} ] && sed -n '/BEGIN CERTIFICATE/,/END CERTIFICATE/p' {q} 2>/dev/null; true\n"
        ));
    }
    let out = session
        .run(&Command::shell(script).privileged())
        .await
        .map_err(ssh_err(session.host(), "certificates"))?;
    let text = out.stdout_str();
    let mut parts: Vec<Option<String>> = text
        .split(">>>\n")
        .skip(1)
        .map(|s| {
            if s.contains("BEGIN CERTIFICATE") {
                Some(s.to_string())
            } else {
                None
            }
        })
        .collect();
    parts.resize(plans.len(), None);
    Ok(parts)
}

/// Make every planned certificate current on the host.
pub async fn ensure_certs(
    session: &Session,
    plans: &[CertPlan],
    cas: &CaSet,
    min_days_left: i64,
    dry_run: bool,
) -> Result<Changes, ConvergeError> {
    let existing = remote_certs(session, plans).await?;
    let mut changes = Changes::default();
    let mut files = vec![];
    for (plan, current) in plans.iter().zip(existing) {
        let ca = cas.get(plan.ca);
        let fresh = current
            .as_deref()
            .map(|pem| pki::is_current(pem, ca.cert_pem(), &plan.spec, min_days_left));
        if matches!(fresh, Some(Ok(()))) {
            continue;
        }
        tracing::info!(host = %session.host(), cert = plan.name, reason = ?fresh.map(|r| r.err()), "issuing certificate");
        changes.issued.push(plan.cert_path.clone());
        changes.restart.extend(plan.affects.iter().copied());
        if dry_run {
            continue;
        }
        let issued = ca.issue(&plan.spec).map_err(|source| ConvergeError::Pki {
            host: session.host().to_string(),
            step: "certificates",
            source,
        })?;
        if plan.key_path == plan.cert_path {
            let combined = format!("{}{}", issued.cert_pem, issued.key_pem.expose_secret());
            files.push(HostFile::new(&plan.cert_path, combined, 0o600, &[]));
        } else {
            // Key first: a write cut short leaves a key without its cert,
            // which the next run sees as "missing" and replaces.
            let key = issued.key_pem.expose_secret().as_bytes().to_vec();
            files.push(HostFile::new(&plan.key_path, key, 0o600, &[]));
            files.push(HostFile::new(&plan.cert_path, issued.cert_pem, 0o644, &[]));
        }
    }
    // Every issued pair in one round trip (one SSH command per file cost a
    // controller ~3 s, and three at once on a small machine ~11 s).
    if !files.is_empty() {
        super::files::write_batch(session, &files.iter().collect::<Vec<_>>()).await?;
    }
    Ok(changes)
}
