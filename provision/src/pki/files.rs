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

/// The admin client certificate's subject.
pub const ADMIN_CN: &str = "kubernetes-admin";
pub const ADMIN_GROUP: &str = "system:masters";

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

    let outcome = match present(&pki, &["admin.crt", "admin.key"])? {
        true => {
            let ca = CertificateAuthority::load(&pki, CaKind::Cluster)?;
            let cert_pem = read_string(&pki.join("admin.crt"))?;
            inspect::check_issued_by(&cert_pem, ca.cert_pem()).map_err(|reason| {
                PkiError::Damaged {
                    path: pki.join("admin.crt"),
                    reason,
                }
            })?;
            let key_pem = read_string(&pki.join("admin.key"))?;
            let key = KeyPair::from_pem(&key_pem).map_err(|e| PkiError::Damaged {
                path: pki.join("admin.key"),
                reason: format!("the key does not parse ({e})"),
            })?;
            inspect::check_key_matches(&cert_pem, &key).map_err(|reason| PkiError::Damaged {
                path: pki.join("admin.key"),
                reason,
            })?;
            InitOutcome::Kept
        }
        false => {
            let ca = CertificateAuthority::load(&pki, CaKind::Cluster)?;
            let issued = ca.issue(&LeafSpec::client(
                ADMIN_CN,
                &[ADMIN_GROUP],
                lifetimes.leaf_days,
            ))?;
            write_public(&pki.join("admin.crt"), &issued.cert_pem)?;
            write_private(&pki.join("admin.key"), &issued.key_pem)?;
            InitOutcome::Created
        }
    };
    report
        .items
        .push(item("admin", &pki, &["admin.crt", "admin.key"], outcome));

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
            getrandom::fill(&mut bytes).expect("the OS random source works");
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
    let exists: Vec<bool> = files.iter().map(|f| pki.join(f).exists()).collect();
    if exists.iter().all(|e| *e) {
        return Ok(true);
    }
    if let Some(i) = exists.iter().position(|e| *e) {
        let missing = files[exists.iter().position(|e| !*e).expect("one is missing")];
        return Err(PkiError::Incomplete {
            path: pki.join(missing),
            other: pki.join(files[i]),
        });
    }
    Ok(false)
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
