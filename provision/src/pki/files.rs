//! `kubeup init`'s PKI: create what is missing, keep what exists, report
//! what is damaged. Never overwrites a key silently.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine;
use kubeup_crds::cluster::CertificateLifetimes;
use rcgen::KeyPair;
use secrecy::{ExposeSecret, SecretString};

use super::authority::{CaKind, CertificateAuthority, LeafSpec};
use super::inspect;
use super::{PkiError, Result};

/// The everyday admin client certificate's subject, as kubeadm ≥ 1.29
/// issues it: a group that RBAC binds to `cluster-admin` (the binding
/// `kubeup up` applies), so deleting the binding revokes it.
pub const ADMIN_CN: &str = "kubernetes-admin";
pub const ADMIN_GROUP: &str = "kubeup:cluster-admins";
/// The break-glass certificate: `system:masters` bypasses RBAC and cannot be
/// revoked short of replacing the CA. Kept for when RBAC is broken.
pub const SUPER_ADMIN_CN: &str = "kubernetes-super-admin";
pub const SUPER_ADMIN_GROUP: &str = "system:masters";

/// A client certificate kubeup keeps in the cluster directory.
struct ClientCert {
    name: &'static str,
    cn: &'static str,
    group: &'static str,
}

impl ClientCert {
    fn files(&self) -> [String; 2] {
        [format!("{}.crt", self.name), format!("{}.key", self.name)]
    }
}

const ADMIN: ClientCert = ClientCert {
    name: "admin",
    cn: ADMIN_CN,
    group: ADMIN_GROUP,
};
const SUPER_ADMIN: ClientCert = ClientCert {
    name: "super-admin",
    cn: SUPER_ADMIN_CN,
    group: SUPER_ADMIN_GROUP,
};

/// What happened to one item of the PKI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InitOutcome {
    Created,
    Kept,
}

#[derive(Clone, Debug)]
pub struct InitItem {
    pub name: &'static str,
    pub files: Vec<PathBuf>,
    pub outcome: InitOutcome,
}

#[derive(Clone, Debug, Default)]
pub struct InitReport {
    pub items: Vec<InitItem>,
}

/// Create `pki/` under `cluster_dir` with every CA and key the cluster
/// needs. Existing, consistent files are kept; a damaged or mismatched file
/// is an error and nothing is overwritten.
pub fn init(cluster_dir: &Path, lifetimes: &CertificateLifetimes) -> Result<InitReport> {
    let pki = cluster_dir.join("pki");
    make_private_dir(&pki)?;
    make_private_dir(&pki.join("etcd"))?;
    let mut report = InitReport::default();

    for kind in CaKind::ALL {
        let (cert, key) = kind.files();
        let outcome = match present(&pki, &[cert, key])? {
            true => {
                CertificateAuthority::load(&pki, kind)?;
                InitOutcome::Kept
            }
            false => {
                let (ca, key_pem) = CertificateAuthority::generate(kind, lifetimes.ca_days)?;
                write_public(&pki.join(cert), ca.cert_pem())?;
                write_private(&pki.join(key), &key_pem)?;
                InitOutcome::Created
            }
        };
        report
            .items
            .push(item(kind.common_name(), &pki, &[cert, key], outcome));
    }

    let outcome = match present(&pki, &["sa.key", "sa.pub"])? {
        true => {
            check_service_account(&pki)?;
            InitOutcome::Kept
        }
        false => {
            let key = KeyPair::generate().map_err(|source| PkiError::Generate {
                what: "the service-account key".into(),
                source,
            })?;
            write_private(
                &pki.join("sa.key"),
                &SecretString::from(key.serialize_pem()),
            )?;
            write_public(&pki.join("sa.pub"), &key.public_key_pem())?;
            InitOutcome::Created
        }
    };
    report.items.push(item(
        "service-account",
        &pki,
        &["sa.key", "sa.pub"],
        outcome,
    ));

    // An existing admin certificate is kept as it is, even one of an older
    // kubeup in system:masters: `up` replaces that (ensure_admin_credentials)
    // once it can apply the binding its successor needs.
    for cert in [&ADMIN, &SUPER_ADMIN] {
        let outcome = match client_cert_present(&pki, cert)? {
            true => InitOutcome::Kept,
            false => {
                issue_client_cert(&pki, cert, lifetimes.leaf_days)?;
                InitOutcome::Created
            }
        };
        let files = cert.files();
        report.items.push(item(
            cert.name,
            &pki,
            &[files[0].as_str(), files[1].as_str()],
            outcome,
        ));
    }

    let outcome = match present(&pki, &["encryption-key"])? {
        true => {
            let text = read_string(&pki.join("encryption-key"))?;
            let ok = base64::engine::general_purpose::STANDARD
                .decode(text.trim())
                .is_ok_and(|b| b.len() == 32);
            if !ok {
                return Err(PkiError::Damaged {
                    path: pki.join("encryption-key"),
                    reason: "it must hold 32 bytes in base64".into(),
                });
            }
            InitOutcome::Kept
        }
        false => {
            let mut bytes = [0u8; 32];
            getrandom::fill(&mut bytes).map_err(|e| PkiError::Random(e.to_string()))?;
            let text = base64::engine::general_purpose::STANDARD.encode(bytes) + "\n";
            write_private(&pki.join("encryption-key"), &SecretString::from(text))?;
            InitOutcome::Created
        }
    };
    report.items.push(item(
        "secrets-encryption",
        &pki,
        &["encryption-key"],
        outcome,
    ));
    Ok(report)
}

/// For `up` on a cluster directory of any age: the break-glass certificate
/// exists, and the everyday admin certificate is in [`ADMIN_GROUP`] (one
/// in `system:masters`, from an older kubeup, is replaced with a new key).
/// Call it only where the `kubeup:cluster-admins` binding is applied with
/// the break-glass credential. Returns the names of the certificates issued.
pub fn ensure_admin_credentials(cluster_dir: &Path, leaf_days: u32) -> Result<Vec<&'static str>> {
    let pki = cluster_dir.join("pki");
    let mut issued = vec![];
    if !client_cert_present(&pki, &SUPER_ADMIN)? {
        issue_client_cert(&pki, &SUPER_ADMIN, leaf_days)?;
        issued.push(SUPER_ADMIN.name);
    }
    let current = client_cert_present(&pki, &ADMIN)? && has_only_group(&pki, &ADMIN)?;
    if !current {
        issue_client_cert(&pki, &ADMIN, leaf_days)?;
        issued.push(ADMIN.name);
    }
    Ok(issued)
}

/// The kubelet-serving CA of a cluster directory, for `up` on a directory of
/// any age: loaded when both files exist; otherwise made fresh (a directory
/// from a kubeup before this CA existed) and, with `write`, saved (key 0600).
/// `kubeup plan` passes `write: false` and gets a CA that exists only in
/// memory, so it can say what `up` would issue without changing anything.
pub struct KubeletServingCa {
    pub ca: CertificateAuthority,
    /// The CA key, for kube-controller-manager's kubelet-serving signer.
    pub key_pem: SecretString,
    /// True when it did not exist before this call.
    pub created: bool,
}

impl std::fmt::Debug for KubeletServingCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeletServingCa")
            .field("created", &self.created)
            .finish_non_exhaustive()
    }
}

pub fn kubelet_serving_ca(
    cluster_dir: &Path,
    ca_days: u32,
    write: bool,
) -> Result<KubeletServingCa> {
    let pki = cluster_dir.join("pki");
    let kind = CaKind::KubeletServing;
    let (cert, key) = kind.files();
    if present(&pki, &[cert, key])? {
        let ca = CertificateAuthority::load(&pki, kind)?;
        let key_pem = SecretString::from(read_string(&pki.join(key))?);
        return Ok(KubeletServingCa {
            ca,
            key_pem,
            created: false,
        });
    }
    let (ca, key_pem) = CertificateAuthority::generate(kind, ca_days)?;
    if write {
        write_public(&pki.join(cert), ca.cert_pem())?;
        write_private(&pki.join(key), &key_pem)?;
    }
    Ok(KubeletServingCa {
        ca,
        key_pem,
        created: true,
    })
}

/// Both files of `cert` exist and belong together and to the cluster CA
/// (true), or neither exists (false); anything else is an error.
fn client_cert_present(pki: &Path, cert: &ClientCert) -> Result<bool> {
    let [crt, key] = cert.files();
    if !present(pki, &[crt.as_str(), key.as_str()])? {
        return Ok(false);
    }
    let ca = CertificateAuthority::load(pki, CaKind::Cluster)?;
    let cert_pem = read_string(&pki.join(&crt))?;
    let damaged = |file: &str| {
        let path = pki.join(file);
        move |reason| PkiError::Damaged { path, reason }
    };
    inspect::check_issued_by(&cert_pem, ca.cert_pem()).map_err(damaged(&crt))?;
    let key_pem = read_string(&pki.join(&key))?;
    let key_pair = KeyPair::from_pem(&key_pem)
        .map_err(|e| format!("the key does not parse ({e})"))
        .map_err(damaged(&key))?;
    inspect::check_key_matches(&cert_pem, &key_pair).map_err(damaged(&key))?;
    Ok(true)
}

/// The certificate's only organization is the one `cert` should carry.
fn has_only_group(pki: &Path, cert: &ClientCert) -> Result<bool> {
    let crt = pki.join(format!("{}.crt", cert.name));
    let orgs = inspect::organizations(&read_string(&crt)?)
        .map_err(|reason| PkiError::Damaged { path: crt, reason })?;
    Ok(orgs == [cert.group])
}

fn issue_client_cert(pki: &Path, cert: &ClientCert, days: u32) -> Result<()> {
    let ca = CertificateAuthority::load(pki, CaKind::Cluster)?;
    let issued = ca.issue(&LeafSpec::client(cert.cn, &[cert.group], days))?;
    let [crt, key] = cert.files();
    write_private(&pki.join(key), &issued.key_pem)?;
    write_public(&pki.join(crt), &issued.cert_pem)
}

fn item(name: &'static str, pki: &Path, files: &[&str], outcome: InitOutcome) -> InitItem {
    InitItem {
        name,
        files: files.iter().map(|f| pki.join(f)).collect(),
        outcome,
    }
}

/// All of `files` exist (true), none do (false), or some do: an error,
/// because generating the missing half would silently break a pair.
fn present(pki: &Path, files: &[&str]) -> Result<bool> {
    let (present, missing): (Vec<&str>, Vec<&str>) =
        files.iter().copied().partition(|f| pki.join(f).exists());
    match (present.first(), missing.first()) {
        (Some(other), Some(missing)) => Err(PkiError::Incomplete {
            path: pki.join(missing),
            other: pki.join(other),
        }),
        (_, None) => Ok(true),
        (None, Some(_)) => Ok(false),
    }
}

fn check_service_account(pki: &Path) -> Result<()> {
    let key_pem = read_string(&pki.join("sa.key"))?;
    let key = KeyPair::from_pem(&key_pem).map_err(|e| PkiError::Damaged {
        path: pki.join("sa.key"),
        reason: format!("the key does not parse ({e})"),
    })?;
    let pub_pem = read_string(&pki.join("sa.pub"))?;
    if pub_pem.trim() != key.public_key_pem().trim() {
        return Err(PkiError::Damaged {
            path: pki.join("sa.pub"),
            reason: "it is not the public half of sa.key".into(),
        });
    }
    Ok(())
}

pub(crate) fn read_string(path: &Path) -> Result<String> {
    fs::read_to_string(path).map_err(|source| PkiError::Read {
        path: path.into(),
        source,
    })
}

fn make_private_dir(dir: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .and_then(|_| fs::set_permissions(dir, fs::Permissions::from_mode(0o700)))
        .map_err(|source| PkiError::Write {
            path: dir.into(),
            source,
        })
}

/// Write a private key: created 0600 from the start (never world-readable
/// for an instant), via a temp file and rename so a crash leaves no half key.
pub fn write_private(path: &Path, content: &SecretString) -> Result<()> {
    write_atomic(path, content.expose_secret().as_bytes(), 0o600)
}

pub fn write_public(path: &Path, content: &str) -> Result<()> {
    write_atomic(path, content.as_bytes(), 0o644)
}

fn write_atomic(path: &Path, content: &[u8], mode: u32) -> Result<()> {
    let err = |source| PkiError::Write {
        path: path.into(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(err)?;
    f.write_all(content)
        .and_then(|_| f.sync_all())
        .map_err(err)?;
    fs::rename(&tmp, path).map_err(err)
}

#[cfg(test)]
mod present_tests {
    use super::*;

    #[test]
    fn all_none_or_some_of_a_pair() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!present(dir.path(), &["a", "b"]).unwrap());
        assert!(present(dir.path(), &[]).unwrap());
        std::fs::write(dir.path().join("b"), "").unwrap();
        match present(dir.path(), &["a", "b"]) {
            Err(PkiError::Incomplete { path, other }) => {
                assert_eq!(path, dir.path().join("a"));
                assert_eq!(other, dir.path().join("b"));
            }
            other => panic!("{other:?}"),
        }
        std::fs::write(dir.path().join("a"), "").unwrap();
        assert!(present(dir.path(), &["a", "b"]).unwrap());
    }
}
