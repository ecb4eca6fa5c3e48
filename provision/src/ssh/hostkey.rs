//! Host-key trust: pins, `accept-new` and the stores that remember keys.
//!
//! There is no "accept anything" path: a key is accepted only when it equals
//! the pin, equals a key already recorded for `host:port`, or — with
//! `AcceptNew` and nothing recorded yet — after it has been recorded.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use base64::Engine as _;
use hmac::{KeyInit, Mac};
use kubeup_crds::host::{HostKeyPolicy, HostKeyTrust};
use russh::keys::{Algorithm, HashAlg, PublicKey};

use super::error::{Result, SshError};

/// Where `AcceptNew` remembers the first key seen for a host.
///
/// Implementations: [`KnownHostsFile`] (the CLI: the cluster directory's
/// `known_hosts`, OpenSSH format) and [`MemoryHostKeyStore`] (the operator:
/// seeded from and written back to the WorkerJoin status).
pub trait HostKeyStore: Send + Sync {
    /// Keys recorded for `host:port` (empty when the host is new).
    fn known_keys(&self, host: &str, port: u16) -> io::Result<Vec<PublicKey>>;
    /// Record `key` as the trusted key of `host:port`.
    fn record(&self, host: &str, port: u16, key: &PublicKey) -> io::Result<()>;
    /// What a user does to re-trust a host whose key legitimately changed.
    fn retrust_hint(&self, host: &str, port: u16) -> String;
}

/// The name OpenSSH uses for a host in known_hosts: `host`, or `[host]:port`
/// when the port is not 22.
pub fn known_hosts_name(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_owned()
    } else {
        format!("[{host}]:{port}")
    }
}

/// `SHA256:…` as printed by `ssh-keygen -lf`.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

fn describe(key: &PublicKey) -> String {
    format!("{} ({})", fingerprint(key), key.algorithm())
}

/// An OpenSSH `known_hosts` file. Reads plain and hashed (`|1|…`) host
/// entries, comma-separated patterns with `*`/`?` and `!` negation, and
/// `@revoked` lines; `@cert-authority` lines are ignored (host certificates
/// are not accepted). New keys are appended as `[host]:port key` lines.
#[derive(Debug, Clone)]
pub struct KnownHostsFile {
    path: PathBuf,
}

impl KnownHostsFile {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn entries(&self, host: &str, port: u16) -> io::Result<(Vec<PublicKey>, Vec<PublicKey>)> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((vec![], vec![])),
            Err(e) => return Err(e),
        };
        let name = known_hosts_name(host, port);
        let (mut keys, mut revoked) = (vec![], vec![]);
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut fields = line.split_whitespace();
            let mut first = fields.next().unwrap_or_default();
            let mut is_revoked = false;
            if let Some(marker) = first.strip_prefix('@') {
                match marker {
                    "revoked" => is_revoked = true,
                    // @cert-authority and unknown markers: not a host key line.
                    _ => continue,
                }
                first = fields.next().unwrap_or_default();
            }
            if !hosts_match(first, &name) {
                continue;
            }
            // A line for this host that we cannot read is an error, not
            // "never seen": skipping it would let accept-new record
            // whatever key the host presents now. (Lines for other hosts
            // were skipped above: they do not make this one unreachable.)
            let key = parse_key(fields.next(), fields.next())
                .map_err(|reason| self.unreadable_line(index + 1, &name, &reason))?;
            if is_revoked {
                revoked.push(key);
            } else {
                keys.push(key);
            }
        }
        Ok((keys, revoked))
    }
}

/// The key of a known_hosts line from its algorithm and base64 fields.
fn parse_key(alg: Option<&str>, b64: Option<&str>) -> std::result::Result<PublicKey, String> {
    let (Some(alg), Some(b64)) = (alg, b64) else {
        return Err("it has no key".into());
    };
    PublicKey::from_openssh(&format!("{alg} {b64}")).map_err(|e| e.to_string())
}

impl KnownHostsFile {
    fn unreadable_line(&self, line: usize, name: &str, reason: &str) -> io::Error {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{path}:{line} is an entry for {name} whose key cannot be read ({reason}): \
                 fix or remove that line (ssh-keygen -R '{name}' -f {path}) and connect again",
                path = self.path.display()
            ),
        )
    }
}

impl HostKeyStore for KnownHostsFile {
    fn known_keys(&self, host: &str, port: u16) -> io::Result<Vec<PublicKey>> {
        let (keys, revoked) = self.entries(host, port)?;
        Ok(keys
            .into_iter()
            .filter(|k| !revoked.iter().any(|r| r.key_data() == k.key_data()))
            .collect())
    }

    fn record(&self, host: &str, port: u16, key: &PublicKey) -> io::Result<()> {
        if let Some(dir) = self.path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir)?;
        }
        let mut opts = OpenOptions::new();
        opts.create(true).append(true).read(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut file = opts.open(&self.path)?;
        let needs_newline = {
            let text = std::fs::read(&self.path)?;
            !text.is_empty() && !text.ends_with(b"\n")
        };
        let key_line = PublicKey::new(key.key_data().clone(), "")
            .to_openssh()
            .map_err(io::Error::other)?;
        let line = format!(
            "{}{} {}\n",
            if needs_newline { "\n" } else { "" },
            known_hosts_name(host, port),
            key_line.trim_end()
        );
        // One write on an O_APPEND file: concurrent recorders cannot
        // interleave within a line.
        file.write_all(line.as_bytes())?;
        file.sync_all()
    }

    fn retrust_hint(&self, host: &str, port: u16) -> String {
        let name = known_hosts_name(host, port);
        format!(
            "remove the line for {name} from {path} (ssh-keygen -R '{name}' -f {path}) and connect again",
            path = self.path.display()
        )
    }
}

/// Does a known_hosts host field (`a,b,[c]:2222,|1|salt|hash,!d,*.e`) match
/// `name` (already in `[host]:port` form)? OpenSSH semantics: any negated
/// match vetoes the line.
fn hosts_match(field: &str, name: &str) -> bool {
    if let Some(hashed) = field.strip_prefix("|1|") {
        return hashed_match(hashed, name);
    }
    let mut matched = false;
    for pattern in field.split(',') {
        if let Some(neg) = pattern.strip_prefix('!') {
            if glob(neg, name) {
                return false;
            }
        } else if glob(pattern, name) {
            matched = true;
        }
    }
    matched
}

fn hashed_match(hashed: &str, name: &str) -> bool {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut parts = hashed.splitn(2, '|');
    let (Some(salt), Some(hash)) = (parts.next(), parts.next()) else {
        return false;
    };
    let (Ok(salt), Ok(hash)) = (b64.decode(salt), b64.decode(hash)) else {
        return false;
    };
    let Ok(mut mac) = hmac::Hmac::<sha1::Sha1>::new_from_slice(&salt) else {
        return false;
    };
    mac.update(name.as_bytes());
    mac.verify_slice(&hash).is_ok()
}

/// `*` and `?` wildcards, case-insensitive like OpenSSH's host matching.
fn glob(pattern: &str, name: &str) -> bool {
    fn rec(p: &[u8], n: &[u8]) -> bool {
        match (p.split_first(), n.split_first()) {
            (None, None) => true,
            (Some((b'*', p_rest)), _) => {
                rec(p_rest, n) || n.split_first().is_some_and(|(_, n_rest)| rec(p, n_rest))
            }
            (Some((b'?', p_rest)), Some((_, n_rest))) => rec(p_rest, n_rest),
            (Some((a, p_rest)), Some((b, n_rest))) if a.eq_ignore_ascii_case(b) => {
                rec(p_rest, n_rest)
            }
            _ => false,
        }
    }
    rec(pattern.as_bytes(), name.as_bytes())
}

/// An in-memory store, for the operator: seed it with the key recorded in a
/// WorkerJoin's status, connect, then read [`MemoryHostKeyStore::recorded`]
/// back into the status. Thread-safe; one store can serve many hosts.
#[derive(Debug, Default)]
pub struct MemoryHostKeyStore {
    keys: Mutex<HashMap<(String, u16), Vec<PublicKey>>>,
    hint: Option<String>,
}

impl MemoryHostKeyStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Replace the default re-trust advice (e.g. name the WorkerJoin field).
    pub fn with_retrust_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Seed a previously recorded key (OpenSSH public key line).
    pub fn insert_openssh(&self, host: &str, port: u16, key_line: &str) -> Result<()> {
        let key = PublicKey::from_openssh(key_line.trim()).map_err(|e| SshError::InvalidPin {
            addr: format!("{host}:{port}"),
            pin: key_line.to_owned(),
            reason: format!("recorded host key is not an OpenSSH public key: {e}"),
        })?;
        self.remember(host, port, &key);
        Ok(())
    }

    /// Add `key` to those of `host:port` (in memory: cannot fail).
    fn remember(&self, host: &str, port: u16, key: &PublicKey) {
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        let entry = keys.entry((host.to_owned(), port)).or_default();
        if !entry.iter().any(|k| k.key_data() == key.key_data()) {
            entry.push(key.clone());
        }
    }

    /// The key recorded for `host:port` as an OpenSSH public key line.
    pub fn recorded(&self, host: &str, port: u16) -> Option<String> {
        let keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        keys.get(&(host.to_owned(), port))
            .and_then(|k| k.first())
            .and_then(|k| PublicKey::new(k.key_data().clone(), "").to_openssh().ok())
    }
}

impl HostKeyStore for MemoryHostKeyStore {
    fn known_keys(&self, host: &str, port: u16) -> io::Result<Vec<PublicKey>> {
        let keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        Ok(keys
            .get(&(host.to_owned(), port))
            .cloned()
            .unwrap_or_default())
    }

    fn record(&self, host: &str, port: u16, key: &PublicKey) -> io::Result<()> {
        self.remember(host, port, key);
        Ok(())
    }

    fn retrust_hint(&self, host: &str, port: u16) -> String {
        self.hint.clone().unwrap_or_else(|| {
            format!("clear the host key recorded for {host}:{port} (status.hostKey of the WorkerJoin) or pin the new key in spec.hostKey")
        })
    }
}

/// A parsed `hostKey.key` pin.
#[derive(Debug, Clone)]
pub enum Pin {
    Key(PublicKey),
    /// `SHA256:` + unpadded base64, as `ssh-keygen -lf` prints it.
    Fingerprint(String),
}

impl Pin {
    pub fn parse(addr: &str, pin: &str) -> Result<Pin> {
        let pin = pin.trim();
        let invalid = |reason: String| SshError::InvalidPin {
            addr: addr.to_owned(),
            pin: pin.to_owned(),
            reason,
        };
        if let Some(b64) = pin.strip_prefix("SHA256:") {
            let b64 = b64.trim_end_matches('=');
            let raw = base64::engine::general_purpose::STANDARD_NO_PAD
                .decode(b64)
                .map_err(|e| invalid(format!("fingerprint is not base64: {e}")))?;
            if raw.len() != 32 {
                return Err(invalid("a SHA256 fingerprint has 32 bytes".into()));
            }
            return Ok(Pin::Fingerprint(format!("SHA256:{b64}")));
        }
        PublicKey::from_openssh(pin).map(Pin::Key).map_err(|e| {
            invalid(format!(
                "not an OpenSSH public key line or SHA256: fingerprint: {e}"
            ))
        })
    }

    fn matches(&self, key: &PublicKey) -> bool {
        match self {
            Pin::Key(pinned) => pinned.key_data() == key.key_data(),
            Pin::Fingerprint(fp) => *fp == fingerprint(key),
        }
    }

    fn describe(&self) -> String {
        match self {
            Pin::Key(k) => describe(k),
            Pin::Fingerprint(fp) => fp.clone(),
        }
    }
}

/// Applies one host's [`HostKeyTrust`] to the key the host presents.
pub(crate) struct Verifier {
    pub host: String,
    pub port: u16,
    pub trust: HostKeyTrust,
    pub store: std::sync::Arc<dyn HostKeyStore>,
}

impl Verifier {
    fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// Host-key algorithms to offer, most wanted first: those of the keys we
    /// already trust come first (as OpenSSH does), so a host with several
    /// keys presents the one we know instead of a "changed" one.
    pub fn preferred_algorithms(&self) -> Vec<Algorithm> {
        let mut known: Vec<Algorithm> = match self.trust.policy {
            HostKeyPolicy::Pin => match self.trust.key.as_deref().map(|k| Pin::parse("", k)) {
                Some(Ok(Pin::Key(k))) => vec![k.algorithm()],
                _ => vec![],
            },
            HostKeyPolicy::AcceptNew => self
                .store
                .known_keys(&self.host, self.port)
                .unwrap_or_default()
                .iter()
                .map(|k| k.algorithm())
                .collect(),
        };
        // An RSA host key is negotiated as rsa-sha2-512/256; the key itself
        // reports plain `ssh-rsa`.
        if known.iter().any(|a| matches!(a, Algorithm::Rsa { .. })) {
            known.retain(|a| !matches!(a, Algorithm::Rsa { .. }));
            known.push(Algorithm::Rsa {
                hash: Some(HashAlg::Sha512),
            });
            known.push(Algorithm::Rsa {
                hash: Some(HashAlg::Sha256),
            });
        }
        let mut all = known;
        for a in russh::Preferred::DEFAULT.key.iter() {
            if !all.contains(a) {
                all.push(a.clone());
            }
        }
        all
    }

    /// Ok only when the key is trusted under the policy (recording it first
    /// for `AcceptNew` when the host is new).
    pub fn verify(&self, key: &PublicKey) -> Result<()> {
        match self.trust.policy {
            HostKeyPolicy::Pin => {
                let Some(pin) = self.trust.key.as_deref() else {
                    return Err(SshError::InvalidPin {
                        addr: self.addr(),
                        pin: String::new(),
                        reason: "policy Pin needs hostKey.key".into(),
                    });
                };
                let pin = Pin::parse(&self.addr(), pin)?;
                if pin.matches(key) {
                    return Ok(());
                }
                Err(SshError::HostKeyMismatch {
                    addr: self.addr(),
                    expected: format!("{} (pinned)", pin.describe()),
                    presented: describe(key),
                    retrust: "update the pin (hostKey.key) to the new key".into(),
                })
            }
            HostKeyPolicy::AcceptNew => {
                let store_err = |source| SshError::HostKeyStore {
                    addr: self.addr(),
                    source,
                };
                let known = self
                    .store
                    .known_keys(&self.host, self.port)
                    .map_err(store_err)?;
                if known.iter().any(|k| k.key_data() == key.key_data()) {
                    return Ok(());
                }
                if known.is_empty() {
                    self.store
                        .record(&self.host, self.port, key)
                        .map_err(store_err)?;
                    tracing::info!(
                        host = %self.addr(),
                        fingerprint = %fingerprint(key),
                        algorithm = %key.algorithm(),
                        "new host: recorded its host key (accept-new)"
                    );
                    return Ok(());
                }
                Err(SshError::HostKeyMismatch {
                    addr: self.addr(),
                    expected: known.iter().map(describe).collect::<Vec<_>>().join(", "),
                    presented: describe(key),
                    retrust: self.store.retrust_hint(&self.host, self.port),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matches_like_openssh() {
        assert!(glob("*", ""));
        assert!(glob("*.example.com", "Node1.EXAMPLE.com"));
        assert!(glob("node?", "node7"));
        assert!(!glob("node?", "node"));
        assert!(!glob("node?", "node77"));
        assert!(glob("n*d*", "nodé"));
        assert!(!glob("", "x"));
        assert!(glob("10.0.*.?", "10.0.12.3"));
    }

    const ED: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ";
    const ED2: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA6rWI3G2sz07DnfFlrouTcysQlj2P+jpNSOEWD9OJ3X";

    #[test]
    fn glob_and_negation() {
        assert!(hosts_match("a,b,[c]:2222", "[c]:2222"));
        assert!(hosts_match("*.example.com", "x.example.com"));
        assert!(!hosts_match(
            "*.example.com,!bad.example.com",
            "bad.example.com"
        ));
        assert!(!hosts_match("c", "[c]:2222"));
        assert!(hosts_match("10.0.0.?", "10.0.0.7"));
    }

    #[test]
    fn hashed_entry() {
        // From OpenSSH's own test data (host "localhost" via ssh-keygen -H):
        // build one ourselves instead to stay self-contained.
        let salt = [7u8; 20];
        let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(&salt).unwrap();
        mac.update(b"[h]:2200");
        let hash = mac.finalize().into_bytes();
        let b64 = base64::engine::general_purpose::STANDARD;
        let field = format!("|1|{}|{}", b64.encode(salt), b64.encode(hash));
        assert!(hosts_match(&field, "[h]:2200"));
        assert!(!hosts_match(&field, "h"));
    }

    #[test]
    fn file_store_roundtrip_and_revoked() {
        let dir = tempfile::tempdir().unwrap();
        let store = KnownHostsFile::new(dir.path().join("sub/known_hosts"));
        let k1 = PublicKey::from_openssh(ED).unwrap();
        let k2 = PublicKey::from_openssh(ED2).unwrap();
        assert!(store.known_keys("h", 2200).unwrap().is_empty());
        store.record("h", 2200, &k1).unwrap();
        store.record("h", 22, &k2).unwrap();
        let text = std::fs::read_to_string(store.path()).unwrap();
        assert!(text.starts_with("[h]:2200 ssh-ed25519 "), "{text}");
        assert!(text.contains("\nh ssh-ed25519 "), "{text}");
        assert_eq!(store.known_keys("h", 2200).unwrap(), vec![k1.clone()]);
        assert_eq!(store.known_keys("h", 22).unwrap(), vec![k2]);
        std::fs::write(
            store.path(),
            format!("{text}@revoked [h]:2200 {ED}\ngarbage line\n"),
        )
        .unwrap();
        assert!(store.known_keys("h", 2200).unwrap().is_empty());
    }

    #[test]
    fn an_unreadable_line_for_the_host_is_an_error_naming_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let store = KnownHostsFile::new(dir.path().join("known_hosts"));
        std::fs::write(
            store.path(),
            format!("other {ED}\n[h]:2200 ssh-ed25519 AAAA-not-base64\nh2 ssh-ed25519\n"),
        )
        .unwrap();
        let err = store.known_keys("h", 2200).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let msg = err.to_string();
        let at = format!("{}:2 ", store.path().display());
        assert!(msg.contains(&at) && msg.contains("[h]:2200"), "{msg}");
        assert!(msg.contains("fix or remove that line"), "{msg}");
        // A line with no key at all, too.
        let err = store.known_keys("h2", 22).unwrap_err();
        assert!(err.to_string().contains(":3 "), "{err}");
        // Other hosts are not affected by a broken line that is not theirs.
        assert_eq!(store.known_keys("other", 22).unwrap().len(), 1);
        assert!(store.known_keys("h3", 22).unwrap().is_empty());
        // accept-new does not record over it.
        let v = Verifier {
            host: "h".into(),
            port: 2200,
            trust: HostKeyTrust::default(),
            store: std::sync::Arc::new(store.clone()),
        };
        let err = v
            .verify(&PublicKey::from_openssh(ED2).unwrap())
            .unwrap_err();
        assert!(err.is_permanent(), "{err}");
        assert!(!std::fs::read_to_string(store.path()).unwrap().contains(ED2));
    }

    #[test]
    fn verifier_accept_new_then_refuse() {
        let store = std::sync::Arc::new(MemoryHostKeyStore::new());
        let v = Verifier {
            host: "h".into(),
            port: 22,
            trust: HostKeyTrust::default(),
            store: store.clone(),
        };
        let k1 = PublicKey::from_openssh(ED).unwrap();
        let k2 = PublicKey::from_openssh(ED2).unwrap();
        v.verify(&k1).unwrap();
        v.verify(&k1).unwrap();
        let err = v.verify(&k2).unwrap_err();
        assert!(err.is_permanent());
        let msg = err.to_string();
        assert!(
            msg.contains(&fingerprint(&k1)) && msg.contains(&fingerprint(&k2)),
            "{msg}"
        );
        assert!(
            store
                .recorded("h", 22)
                .unwrap()
                .starts_with("ssh-ed25519 AAAA")
        );
    }

    #[test]
    fn pins() {
        let k1 = PublicKey::from_openssh(ED).unwrap();
        let fp = fingerprint(&k1);
        assert!(Pin::parse("h:22", &fp).unwrap().matches(&k1));
        assert!(Pin::parse("h:22", &format!("{fp}=")).unwrap().matches(&k1));
        assert!(
            Pin::parse("h:22", &format!("{ED} comment here"))
                .unwrap()
                .matches(&k1)
        );
        assert!(!Pin::parse("h:22", ED2).unwrap().matches(&k1));
        assert!(Pin::parse("h:22", "SHA256:short").is_err());
        assert!(Pin::parse("h:22", "nonsense").is_err());
    }
}
