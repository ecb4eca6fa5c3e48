//! Certificate authorities and the leaf certificates they issue.

use std::net::IpAddr;
use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use secrecy::SecretString;
use time::{Duration, OffsetDateTime};

use super::{PkiError, Result, files};

/// The four CAs of a cluster. They are separate so that a certificate of
/// one trust domain is never accepted in another (an apiserver client cert
/// does not open etcd; a kubelet's serving certificate never passes as the
/// apiserver's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CaKind {
    Cluster,
    Etcd,
    FrontProxy,
    /// Signs only kubelet serving certificates (kube-controller-manager's
    /// `kubernetes.io/kubelet-serving` signer, and the controller's own);
    /// the apiserver and metrics-server verify kubelets against it.
    KubeletServing,
}

impl CaKind {
    pub const ALL: [CaKind; 4] = [
        CaKind::Cluster,
        CaKind::Etcd,
        CaKind::FrontProxy,
        CaKind::KubeletServing,
    ];

    /// Certificate and key file, relative to `pki/`.
    pub fn files(self) -> (&'static str, &'static str) {
        match self {
            CaKind::Cluster => ("ca.crt", "ca.key"),
            CaKind::Etcd => ("etcd/ca.crt", "etcd/ca.key"),
            CaKind::FrontProxy => ("front-proxy-ca.crt", "front-proxy-ca.key"),
            CaKind::KubeletServing => ("kubelet-serving-ca.crt", "kubelet-serving-ca.key"),
        }
    }

    pub fn common_name(self) -> &'static str {
        match self {
            CaKind::Cluster => "kubernetes",
            CaKind::Etcd => "etcd-ca",
            CaKind::FrontProxy => "front-proxy-ca",
            CaKind::KubeletServing => "kubelet-serving-ca",
        }
    }
}

/// What a leaf certificate is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Usage {
    Server,
    Client,
    /// etcd peers present one certificate both ways.
    ServerAndClient,
}

/// A leaf certificate to issue.
#[derive(Clone, Debug)]
pub struct LeafSpec {
    pub common_name: String,
    pub organizations: Vec<String>,
    /// DNS names and IP addresses (IPs are recognised by parsing).
    pub sans: Vec<String>,
    pub usage: Usage,
    pub days: u32,
}

impl LeafSpec {
    pub fn client(cn: &str, orgs: &[&str], days: u32) -> Self {
        Self {
            common_name: cn.into(),
            organizations: orgs.iter().map(|o| o.to_string()).collect(),
            sans: vec![],
            usage: Usage::Client,
            days,
        }
    }

    pub fn server(cn: &str, sans: Vec<String>, days: u32) -> Self {
        Self {
            common_name: cn.into(),
            organizations: vec![],
            sans,
            usage: Usage::Server,
            days,
        }
    }
}

/// A freshly issued certificate and its private key. The key is a
/// `SecretString`: its Debug output is redacted.
pub struct IssuedCert {
    pub cert_pem: String,
    pub key_pem: SecretString,
}

/// A CA that can issue leaves: its certificate and private key.
pub struct CertificateAuthority {
    kind: CaKind,
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// A new self-signed CA valid for `days`. Returns the CA and its key PEM
    /// (to be written 0600 by the caller).
    pub fn generate(kind: CaKind, days: u32) -> Result<(Self, SecretString)> {
        let what = || format!("the {} CA", kind.common_name());
        let key = KeyPair::generate().map_err(|source| PkiError::Generate {
            what: what(),
            source,
        })?;
        let mut params = CertificateParams::default();
        params.distinguished_name = name(kind.common_name(), &[]);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
        ];
        params.serial_number = Some(random_serial()?);
        set_validity(&mut params, &what(), days)?;
        let cert = params
            .self_signed(&key)
            .map_err(|source| PkiError::Generate {
                what: what(),
                source,
            })?;
        let key_pem = SecretString::from(key.serialize_pem());
        Ok((
            Self {
                kind,
                cert_pem: cert.pem(),
                issuer: Issuer::new(params, key),
            },
            key_pem,
        ))
    }

    /// Load a CA from `pki_dir`.
    pub fn load(pki_dir: &Path, kind: CaKind) -> Result<Self> {
        let (cert_file, key_file) = kind.files();
        let cert_pem = files::read_string(&pki_dir.join(cert_file))?;
        let key_pem = files::read_string(&pki_dir.join(key_file))?;
        Self::from_pem(kind, &cert_pem, &key_pem).map_err(|reason| PkiError::Damaged {
            path: pki_dir.join(cert_file),
            reason,
        })
    }

    /// Build from PEM text; the error says what does not fit.
    pub fn from_pem(kind: CaKind, cert_pem: &str, key_pem: &str) -> Result<Self, String> {
        let key =
            KeyPair::from_pem(key_pem).map_err(|e| format!("the CA key does not parse ({e})"))?;
        super::inspect::check_key_matches(cert_pem, &key)?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key)
            .map_err(|e| format!("the CA certificate does not parse ({e})"))?;
        Ok(Self {
            kind,
            cert_pem: cert_pem.to_string(),
            issuer,
        })
    }

    pub fn kind(&self) -> CaKind {
        self.kind
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Issue a leaf certificate with a fresh key pair.
    pub fn issue(&self, spec: &LeafSpec) -> Result<IssuedCert> {
        let key = KeyPair::generate().map_err(|source| PkiError::Generate {
            what: format!("a key for {}", spec.common_name),
            source,
        })?;
        let cert_pem = self.sign(spec, &key)?;
        Ok(IssuedCert {
            cert_pem,
            key_pem: SecretString::from(key.serialize_pem()),
        })
    }

    /// Sign a certificate for an existing public key (e.g. re-issuing a
    /// server certificate with new SANs while keeping its key).
    pub fn sign(&self, spec: &LeafSpec, key: &KeyPair) -> Result<String> {
        let generate_err = |source| PkiError::Generate {
            what: format!("the certificate {}", spec.common_name),
            source,
        };
        let mut params = CertificateParams::default();
        params.distinguished_name = name(
            &spec.common_name,
            &spec
                .organizations
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
        );
        params.subject_alt_names = spec
            .sans
            .iter()
            .map(|s| match s.parse::<IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => s.clone().try_into().map(SanType::DnsName),
            })
            .collect::<Result<_, _>>()
            .map_err(generate_err)?;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = match spec.usage {
            Usage::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
            Usage::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
            Usage::ServerAndClient => {
                vec![
                    ExtendedKeyUsagePurpose::ServerAuth,
                    ExtendedKeyUsagePurpose::ClientAuth,
                ]
            }
        };
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial()?);
        set_validity(&mut params, &spec.common_name, spec.days)?;
        let cert = params.signed_by(key, &self.issuer).map_err(generate_err)?;
        Ok(cert.pem())
    }
}

fn name(cn: &str, orgs: &[&str]) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    for o in orgs {
        dn.push(DnType::OrganizationName, *o);
    }
    dn.push(DnType::CommonName, cn);
    dn
}

/// 16 random bytes, top bit cleared so the DER integer stays positive.
fn random_serial() -> Result<rcgen::SerialNumber> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| PkiError::Random(e.to_string()))?;
    bytes[0] &= 0x7f;
    Ok(rcgen::SerialNumber::from_slice(&bytes))
}

/// Backdate a little so a host whose clock is slightly behind accepts it.
/// `days` comes from cluster.yaml (validated to at most a hundred years);
/// the sum is still checked so no input can overflow the date.
fn set_validity(params: &mut CertificateParams, what: &str, days: u32) -> Result<()> {
    let now = OffsetDateTime::now_utc();
    let too_long = || PkiError::Lifetime {
        what: what.to_string(),
        days,
    };
    params.not_before = now.checked_sub(Duration::minutes(5)).ok_or_else(too_long)?;
    params.not_after = now
        .checked_add(Duration::days(i64::from(days)))
        .filter(|t| t.year() <= MAX_YEAR)
        .ok_or_else(too_long)?;
    Ok(())
}

/// X.509 GeneralizedTime ends at 9999; stay well inside it.
const MAX_YEAR: i32 = 9000;
