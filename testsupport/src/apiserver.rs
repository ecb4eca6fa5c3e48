//! A real etcd + kube-apiserver for tests, from the Kubernetes bundle.
//!
//! Both run on random loopback ports with TLS everywhere, using a cluster
//! directory made by [`kubeup_provision::pki::init`] (cluster CA, the
//! separate etcd CA, front-proxy CA, service-account keys, admin cert) plus
//! the leaf certificates the two servers need, issued the way `kubeup up`
//! issues them. [`ApiServer::start`] returns once `/readyz` answers `ok`;
//! dropping the value kills both processes by PID (apiserver first: with
//! etcd gone it takes a minute to stop) and removes every temp file, also
//! when the test panics.
//!
//! Needs the bundle (`cargo xtask bundle`); without it `start` fails with the
//! command to run, so a test can never pass silently.

use std::fs;
use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use kubeup_crds::cluster::{CertificateLifetimes, DEFAULT_KUBERNETES_VERSION};
use kubeup_provision::artifacts;
use kubeup_provision::pki::{self, CaKind, CertificateAuthority, LeafSpec, Usage};
use secrecy::ExposeSecret;

/// How long etcd + apiserver may take to become ready (≈4 s measured on 2
/// cores; generous because CI machines are busy).
const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// The service CIDR the apiserver allocates ClusterIPs from.
const SERVICE_CIDR: &str = "10.96.0.0/12";

/// A running etcd + kube-apiserver pair.
pub struct ApiServer {
    /// A client authenticated with the break-glass super-admin certificate
    /// (`system:masters`).
    pub client: kube::Client,
    /// Kubeconfig for the admin, usable by the bundle's kubectl.
    pub kubeconfig: PathBuf,
    /// `https://127.0.0.1:<port>`.
    pub url: String,
    /// etcd's client URL, `https://127.0.0.1:<port>`.
    pub etcd_url: String,
    /// The cluster directory's `pki/`: CAs plus the leaves issued here
    /// (`etcd/server.*`, `apiserver-etcd-client.*`, `apiserver.*`, …).
    pub pki: PathBuf,
    /// The bundle the binaries came from.
    pub bundle: PathBuf,
    /// From the first process start to `/readyz` answering `ok`.
    pub startup: Duration,
    // Declared in kill order; `Drop for ApiServer` does the ordering
    // explicitly, these only hold the handles.
    apiserver: Process,
    etcd: Process,
    dir: tempfile::TempDir,
}

impl ApiServer {
    /// Start etcd and kube-apiserver and wait until the apiserver is ready.
    pub async fn start() -> Result<Self> {
        let bundle = artifacts::default_bundle_dir(DEFAULT_KUBERNETES_VERSION);
        artifacts::load_verified(&bundle).with_context(|| {
            format!(
                "the apiserver harness needs the Kubernetes bundle in {}; \
                 build it with `cargo xtask bundle`",
                bundle.display()
            )
        })?;
        let dir = tempfile::Builder::new()
            .prefix("kubeup-apiserver-")
            .tempdir()
            .context("failed to create the harness temp dir")?;
        let pki = issue_certificates(dir.path())?;
        let ports = Ports::pick()?;
        let started = Instant::now();

        let etcd = Process::spawn(
            "etcd",
            Command::new(bundle.join("bin/etcd")).args(etcd_args(dir.path(), &pki, &ports)),
            &dir.path().join("etcd.log"),
        )?;
        // Started at once: the apiserver retries etcd itself, and starting
        // both together is what makes start→ready ≈ etcd's own start time.
        let apiserver = Process::spawn(
            "kube-apiserver",
            Command::new(bundle.join("bin/kube-apiserver")).args(apiserver_args(
                dir.path(),
                &pki,
                &ports,
            )),
            &dir.path().join("kube-apiserver.log"),
        )?;
        let url = format!("https://127.0.0.1:{}", ports.apiserver);
        let kubeconfig = dir.path().join("admin.kubeconfig");
        fs::write(&kubeconfig, admin_kubeconfig(&url, &pki))?;
        let mut me = Self {
            client: client(&kubeconfig).await?,
            kubeconfig,
            url,
            etcd_url: format!("https://127.0.0.1:{}", ports.etcd_client),
            pki,
            bundle,
            startup: Duration::ZERO,
            apiserver,
            etcd,
            dir,
        };
        me.wait_ready(started).await?;
        me.startup = started.elapsed();
        Ok(me)
    }

    /// The bundle's kubectl, pointed at this apiserver as admin.
    pub fn kubectl(&self) -> Command {
        let mut cmd = Command::new(self.bundle.join("bin/kubectl"));
        cmd.arg("--kubeconfig").arg(&self.kubeconfig);
        cmd
    }

    /// The bundle's etcdctl against this etcd, trusting the etcd CA and
    /// presenting no client certificate: add `--cert`/`--key` as needed.
    pub fn etcdctl(&self) -> Command {
        let mut cmd = Command::new(self.bundle.join("bin/etcdctl"));
        cmd.arg(format!("--endpoints={}", self.etcd_url))
            .arg(format!(
                "--cacert={}",
                self.pki.join("etcd/ca.crt").display()
            ))
            .args(["--dial-timeout=3s", "--command-timeout=5s"]);
        cmd
    }

    /// PIDs of etcd and kube-apiserver (to check they are gone after drop).
    pub fn pids(&self) -> [u32; 2] {
        [self.etcd.child.id(), self.apiserver.child.id()]
    }

    /// The temp directory holding the PKI, data and logs; removed on drop.
    pub fn work_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The last lines of a component's log (`etcd` or `kube-apiserver`),
    /// for assertion messages.
    pub fn log_tail(&self, component: &str) -> String {
        tail(&self.dir.path().join(format!("{component}.log")))
    }

    async fn wait_ready(&mut self, started: Instant) -> Result<()> {
        loop {
            for p in [&mut self.etcd, &mut self.apiserver] {
                if let Some(status) = p.child.try_wait()? {
                    bail!("{} exited early ({status}):\n{}", p.name, tail(&p.log));
                }
            }
            let request = http::Request::get("/readyz")
                .body(Vec::new())
                .expect("static request");
            let last = match self.client.request_text(request).await {
                Ok(body) if body.trim() == "ok" => return Ok(()),
                Ok(body) => body,
                Err(e) => e.to_string(),
            };
            if started.elapsed() > READY_TIMEOUT {
                bail!(
                    "kube-apiserver not ready after {READY_TIMEOUT:?} (last answer: {last})\n\
                     kube-apiserver log:\n{}\netcd log:\n{}",
                    self.log_tail("kube-apiserver"),
                    self.log_tail("etcd")
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        // apiserver before etcd; the TempDir field is dropped after this.
        self.apiserver.kill();
        self.etcd.kill();
    }
}

/// A child process with its log file, killed by PID on drop.
struct Process {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Process {
    fn spawn(name: &'static str, cmd: &mut Command, log: &Path) -> Result<Self> {
        let file = fs::File::create(log)?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("failed to start {name} ({:?})", cmd.get_program()))?;
        Ok(Self {
            name,
            child,
            log: log.to_owned(),
        })
    }

    fn kill(&mut self) {
        // SIGKILL to exactly this PID, then reap it: a test's throwaway data
        // needs no graceful shutdown, and waiting keeps no zombie around.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Free loopback ports, found by binding to port 0. Another process could
/// take one before etcd binds it; rare enough for tests, and the harness
/// then fails with etcd's log rather than hanging.
struct Ports {
    etcd_client: u16,
    etcd_peer: u16,
    apiserver: u16,
}

impl Ports {
    fn pick() -> Result<Self> {
        // Held together so the three are distinct.
        let listeners: Vec<TcpListener> = (0..3)
            .map(|_| TcpListener::bind("127.0.0.1:0"))
            .collect::<std::io::Result<_>>()?;
        let port = |i: usize| listeners[i].local_addr().map(|a| a.port());
        Ok(Self {
            etcd_client: port(0)?,
            etcd_peer: port(1)?,
            apiserver: port(2)?,
        })
    }
}

/// `kubeup init`'s PKI in `dir/pki`, plus the server and client leaves of
/// etcd and the apiserver.
fn issue_certificates(dir: &Path) -> Result<PathBuf> {
    let lifetimes = CertificateLifetimes::default();
    pki::init(dir, &lifetimes).context("failed to create the PKI")?;
    let pki = dir.join("pki");
    let days = lifetimes.leaf_days;
    let loopback = || vec!["127.0.0.1".to_owned(), "localhost".to_owned()];

    let etcd_ca = CertificateAuthority::load(&pki, CaKind::Etcd)?;
    let etcd_server = LeafSpec {
        usage: Usage::ServerAndClient,
        ..LeafSpec::server("etcd", loopback(), days)
    };
    write_leaf(&pki, "etcd/server", &etcd_ca, &etcd_server)?;
    let etcd_client = LeafSpec::client("kube-apiserver-etcd-client", &[], days);
    write_leaf(&pki, "apiserver-etcd-client", &etcd_ca, &etcd_client)?;

    let ca = CertificateAuthority::load(&pki, CaKind::Cluster)?;
    let mut sans = loopback();
    sans.extend(
        [
            "10.96.0.1",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ]
        .map(String::from),
    );
    write_leaf(
        &pki,
        "apiserver",
        &ca,
        &LeafSpec::server("kube-apiserver", sans, days),
    )?;
    let front_proxy = CertificateAuthority::load(&pki, CaKind::FrontProxy)?;
    write_leaf(
        &pki,
        "front-proxy-client",
        &front_proxy,
        &LeafSpec::client("front-proxy-client", &[], days),
    )?;
    Ok(pki)
}

fn write_leaf(pki: &Path, name: &str, ca: &CertificateAuthority, spec: &LeafSpec) -> Result<()> {
    let issued = ca
        .issue(spec)
        .with_context(|| format!("failed to issue {name}"))?;
    fs::write(pki.join(format!("{name}.crt")), &issued.cert_pem)?;
    // 0600 from the start: the key is never readable by others, not even
    // between create and chmod.
    let mut key = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(pki.join(format!("{name}.key")))?;
    key.write_all(issued.key_pem.expose_secret().as_bytes())?;
    Ok(())
}

fn path(pki: &Path, name: &str) -> String {
    pki.join(name).display().to_string()
}

fn etcd_args(dir: &Path, pki: &Path, ports: &Ports) -> Vec<String> {
    let client = format!("https://127.0.0.1:{}", ports.etcd_client);
    let peer = format!("https://127.0.0.1:{}", ports.etcd_peer);
    vec![
        "--name=harness".into(),
        format!("--data-dir={}", dir.join("etcd-data").display()),
        format!("--listen-client-urls={client}"),
        format!("--advertise-client-urls={client}"),
        format!("--listen-peer-urls={peer}"),
        format!("--initial-advertise-peer-urls={peer}"),
        format!("--initial-cluster=harness={peer}"),
        // Clients must present a certificate of the etcd CA: the cluster CA
        // (which signs every kubelet and admin) opens nothing here.
        "--client-cert-auth=true".into(),
        format!("--trusted-ca-file={}", path(pki, "etcd/ca.crt")),
        format!("--cert-file={}", path(pki, "etcd/server.crt")),
        format!("--key-file={}", path(pki, "etcd/server.key")),
        "--peer-client-cert-auth=true".into(),
        format!("--peer-trusted-ca-file={}", path(pki, "etcd/ca.crt")),
        format!("--peer-cert-file={}", path(pki, "etcd/server.crt")),
        format!("--peer-key-file={}", path(pki, "etcd/server.key")),
        // Test data is thrown away: skipping fsync keeps a busy CI disk out
        // of every write's latency.
        "--unsafe-no-fsync".into(),
        "--log-level=warn".into(),
    ]
}

fn apiserver_args(dir: &Path, pki: &Path, ports: &Ports) -> Vec<String> {
    vec![
        "--bind-address=127.0.0.1".into(),
        "--advertise-address=127.0.0.1".into(),
        format!("--secure-port={}", ports.apiserver),
        format!("--cert-dir={}", dir.join("apiserver-certs").display()),
        format!("--etcd-servers=https://127.0.0.1:{}", ports.etcd_client),
        format!("--etcd-cafile={}", path(pki, "etcd/ca.crt")),
        format!("--etcd-certfile={}", path(pki, "apiserver-etcd-client.crt")),
        format!("--etcd-keyfile={}", path(pki, "apiserver-etcd-client.key")),
        format!("--tls-cert-file={}", path(pki, "apiserver.crt")),
        format!("--tls-private-key-file={}", path(pki, "apiserver.key")),
        format!("--client-ca-file={}", path(pki, "ca.crt")),
        format!("--service-account-key-file={}", path(pki, "sa.pub")),
        format!("--service-account-signing-key-file={}", path(pki, "sa.key")),
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
        format!("--service-cluster-ip-range={SERVICE_CIDR}"),
        "--authorization-mode=Node,RBAC".into(),
        "--allow-privileged=true".into(),
        format!(
            "--requestheader-client-ca-file={}",
            path(pki, "front-proxy-ca.crt")
        ),
        "--requestheader-allowed-names=front-proxy-client".into(),
        "--requestheader-username-headers=X-Remote-User".into(),
        "--requestheader-group-headers=X-Remote-Group".into(),
        "--requestheader-extra-headers-prefix=X-Remote-Extra-".into(),
        format!(
            "--proxy-client-cert-file={}",
            path(pki, "front-proxy-client.crt")
        ),
        format!(
            "--proxy-client-key-file={}",
            path(pki, "front-proxy-client.key")
        ),
        // The `kubernetes` Service's endpoint would be 127.0.0.1, which the
        // endpoint reconciler rejects in a loop; nothing here needs it.
        "--endpoint-reconciler-type=none".into(),
        "--profiling=false".into(),
    ]
}

/// A kubeconfig naming the PKI files by path (nothing secret is copied).
fn admin_kubeconfig(url: &str, pki: &Path) -> String {
    format!(
        "apiVersion: v1\n\
         kind: Config\n\
         clusters:\n\
         - name: harness\n  cluster:\n    server: {url}\n    certificate-authority: {ca}\n\
         users:\n\
         - name: admin\n  user:\n    client-certificate: {crt}\n    client-key: {key}\n\
         contexts:\n\
         - name: admin@harness\n  context:\n    cluster: harness\n    user: admin\n\
         current-context: admin@harness\n",
        ca = path(pki, "ca.crt"),
        crt = path(pki, "super-admin.crt"),
        key = path(pki, "super-admin.key"),
    )
}

async fn client(kubeconfig: &Path) -> Result<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)?;
    let config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await?;
    Ok(kube::Client::try_from(config)?)
}

/// The last 40 lines of a log file.
fn tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}
