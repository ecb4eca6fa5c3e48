//! Shared by the operator's integration tests: a real kube-apiserver (from
//! the harness) with kubeup's CRDs, the operator's RBAC from the rendered
//! chart, and a real kube-controller-manager running the CSR signers.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kube::config::{KubeConfigOptions, Kubeconfig};
use kubeup_testsupport::apiserver::ApiServer;

pub const NAMESPACE: &str = "kubeup-system";
pub const SA_USER: &str = "system:serviceaccount:kubeup-system:kubeup-operator";

pub fn repo() -> PathBuf {
    kubeup_testsupport::crate_dir().join("..")
}

pub fn kubectl(api: &ApiServer, args: &[&str], stdin: Option<&str>) -> String {
    use std::io::Write;
    let mut child = api
        .kubectl()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start kubectl");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.unwrap_or("").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "kubectl {args:?}: {text}");
    text
}

/// CRDs, the operator's namespace, and everything in
/// deploy/kubeup-operator.yaml (its Deployment stays Pending: no nodes).
pub fn install(api: &ApiServer) {
    let crds = repo().join("charts/kubeup/crds/kubeup.dev.yaml");
    kubectl(api, &["apply", "-f", crds.to_str().unwrap()], None);
    kubectl(
        api,
        &[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/workerjoins.kubeup.dev",
            "crd/clusters.kubeup.dev",
        ],
        None,
    );
    kubectl(api, &["create", "namespace", NAMESPACE], None);
    let deploy = repo().join("deploy/kubeup-operator.yaml");
    kubectl(api, &["apply", "-f", deploy.to_str().unwrap()], None);
}

/// A minimal Cluster object (one controller on loopback, at another
/// address than the test sshd's 127.0.0.1: a WorkerJoin may not name a
/// controller).
pub const CLUSTER: &str = r#"
apiVersion: kubeup.dev/v1alpha1
kind: Cluster
metadata: {name: test}
spec:
  kubernetesVersion: v1.34.10
  controllers: [{address: 127.0.0.2}]
"#;

/// Make `address` the one controller of [`CLUSTER`].
pub async fn set_cluster_controller(api: &ApiServer, address: &str) {
    let clusters: kube::Api<kubeup_crds::Cluster> = kube::Api::all(api.client.clone());
    let patch = serde_json::json!({"spec": {"controllers": [{"address": address}]}});
    clusters
        .patch(
            "test",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .unwrap();
}

/// A client that acts as the operator's ServiceAccount (impersonation by
/// the admin), so every request is checked against the chart's RBAC.
pub async fn operator_client(api: &ApiServer) -> kube::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kc = Kubeconfig::read_from(&api.kubeconfig).unwrap();
    let mut config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap();
    config.auth_info.impersonate = Some(SA_USER.into());
    config.auth_info.impersonate_groups = Some(vec![
        "system:serviceaccounts".into(),
        format!("system:serviceaccounts:{NAMESPACE}"),
        "system:authenticated".into(),
    ]);
    kube::Client::try_from(config).unwrap()
}

/// A client impersonating `user` (with `groups` and system:authenticated).
pub async fn client_as(api: &ApiServer, user: &str, groups: &[&str]) -> kube::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kc = Kubeconfig::read_from(&api.kubeconfig).unwrap();
    let mut config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap();
    config.auth_info.impersonate = Some(user.into());
    let mut all: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
    all.push("system:authenticated".into());
    config.auth_info.impersonate_groups = Some(all);
    kube::Client::try_from(config).unwrap()
}

/// A client that authenticates with a bearer token (and trusts the
/// harness CA), nothing else.
pub async fn client_with_token(api: &ApiServer, token: &str) -> kube::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kc = Kubeconfig::read_from(&api.kubeconfig).unwrap();
    let mut config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap();
    config.auth_info = kube::config::AuthInfo {
        token: Some(token.to_string().into()),
        ..Default::default()
    };
    kube::Client::try_from(config).unwrap()
}

/// kube-controller-manager with only the CSR signers and the root CA
/// publisher: the CA key stays with it, as in a real cluster.
pub struct ControllerManager {
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl ControllerManager {
    pub fn start(api: &ApiServer) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("kcm.log");
        let pki = |n: &str| api.pki.join(n).display().to_string();
        let child = Command::new(api.bundle.join("bin/kube-controller-manager"))
            .args([
                format!("--kubeconfig={}", api.kubeconfig.display()),
                "--controllers=csrsigning,root-ca-cert-publisher".into(),
                format!("--cluster-signing-cert-file={}", pki("ca.crt")),
                format!("--cluster-signing-key-file={}", pki("ca.key")),
                format!("--root-ca-file={}", pki("ca.crt")),
                "--leader-elect=false".into(),
                "--secure-port=0".into(),
                "--use-service-account-credentials=false".into(),
            ])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(dir.path().join("kcm.err")).unwrap())
            .spawn()
            .expect("start kube-controller-manager from the bundle");
        Self {
            child,
            log,
            _dir: dir,
        }
    }

    pub fn log(&self) -> String {
        let err = self.log.with_file_name("kcm.err");
        format!(
            "{}{}",
            std::fs::read_to_string(&self.log).unwrap_or_default(),
            std::fs::read_to_string(err).unwrap_or_default()
        )
    }
}

impl Drop for ControllerManager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `kubernetes.io/ssh-auth` Secret `worker-ssh` in the operator's
/// namespace, holding `private_pem`.
pub async fn create_ssh_secret(api: &ApiServer, private_pem: &str) {
    use k8s_openapi::api::core::v1::Secret;
    let secrets: kube::Api<Secret> = kube::Api::namespaced(api.client.clone(), NAMESPACE);
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "worker-ssh"},
        "type": "kubernetes.io/ssh-auth",
        "stringData": {"ssh-privatekey": private_pem}
    }))
    .unwrap();
    secrets
        .create(&kube::api::PostParams::default(), &secret)
        .await
        .unwrap();
}

/// Poll `check` until it returns Some or `timeout` passes.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let started = Instant::now();
    loop {
        match check().await {
            Ok(v) => return v,
            Err(last) if started.elapsed() > timeout => {
                panic!("timed out after {timeout:?} waiting for {what}; last seen: {last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// A condition of a WorkerJoin's status.
pub fn condition<'a>(
    wj: &'a kubeup_crds::WorkerJoin,
    t: &str,
) -> Option<&'a kubeup_crds::conditions::Condition> {
    wj.status
        .as_ref()
        .and_then(|s| kubeup_crds::conditions::find(&s.conditions, t))
}

/// Wait (60 s) until the WorkerJoin `name` satisfies `pred`.
pub async fn wait_for(
    api: &kube::Api<kubeup_crds::WorkerJoin>,
    name: &str,
    what: &str,
    pred: impl Fn(&kubeup_crds::WorkerJoin) -> bool,
) -> kubeup_crds::WorkerJoin {
    eventually(what, Duration::from_secs(60), || {
        let api = api.clone();
        let pred = &pred;
        async move {
            let wj = api.get(name).await.map_err(|e| e.to_string())?;
            if pred(&wj) {
                Ok(wj)
            } else {
                Err(serde_json::to_string_pretty(&wj.status).unwrap_or_default())
            }
        }
    })
    .await
}

/// A bundle root laid out as on a controller (`<root>/<version>`, like
/// /opt/kubeup/bundle/v1.34.10) whose version links to the bundle
/// `cargo xtask bundle` built: the cache keys that directory by
/// hack/bundle/parts too, so it is not `<cache>/bundle/<version>`.
pub fn bundle_root() -> std::path::PathBuf {
    use kubeup_crds::cluster::DEFAULT_KUBERNETES_VERSION as VERSION;
    let root = kubeup_provision::artifacts::cache_root().join("operator-test-bundles");
    let link = root.join(VERSION);
    let built = kubeup_provision::artifacts::default_bundle_dir(VERSION);
    if std::fs::read_link(&link).ok().as_deref() != Some(built.as_path()) {
        std::fs::create_dir_all(&root).expect("create the test bundle root");
        // Test binaries run at once: each makes its own link and renames
        // it into place, so none ever sees a half-made one.
        let tmp = root.join(format!(".{VERSION}.{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&built, &tmp).expect("link the test bundle");
        std::fs::rename(&tmp, &link).expect("put the test bundle link in place");
    }
    root
}

/// The operator's controller (as `client`), joining from the bundle cache.
pub fn spawn_operator(
    client: kube::Client,
    settings: kubeup_operator::context::Settings,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(kubeup_operator::controller::run(
        client,
        kubeup_operator::bundle::Bundles::new(bundle_root()),
        settings,
        4,
        std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false)),
        std::sync::Arc::new(std::sync::OnceLock::new()),
    ))
}
