//! Everything `up` needs about the controller, gathered and checked before
//! the first SSH connection: the validated cluster.yaml, the verified
//! bundle, the CAs, and the rendered plan.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use base64::Engine;
use kubeup_crds::cluster::{ControlPlaneEndpoint, ControllerHost, EndpointKind};
use kubeup_provision::artifacts::{self, BundleManifest, CompressedCache, RemoteArtifacts};
use kubeup_provision::config::{self, LoadedCluster};
use kubeup_provision::converge::CaSet;
use kubeup_provision::hostplan::certs::{CertPlan, controller_certs};
use kubeup_provision::hostplan::{
    ControllerInput, EtcdMember, EtcdPlacement, HostFile, NodeInput, Unit, apilb, configs, layout,
    units,
};
use kubeup_provision::pki;
use kubeup_provision::ssh::{Session, SshOptions};
use secrecy::ExposeSecret;

use crate::cmd_ssh;

/// What every controller's converge shares (one per run, loaded once).
pub struct ControllerContext {
    pub loaded: LoadedCluster,
    pub bundle_dir: PathBuf,
    pub manifest: BundleManifest,
    pub cas: CaSet,
    /// The kubelet-serving CA's key, for kube-controller-manager's signer.
    kubelet_serving_key: secrecy::SecretString,
    /// CAs made on the workstation for this run (a cluster directory of an
    /// older kubeup has no kubelet-serving CA yet): "issued" by `up`.
    pub created_cas: Vec<String>,
    /// zstd copies of the bundle's files, sent to hosts that have zstd.
    pub compressed: CompressedCache,
}

/// What `up` found out about a controller by looking at it: its Node name
/// (also its etcd member name) and, with a virtual IP, the interface and
/// source address it reaches the address's network with.
#[derive(Clone, Debug)]
pub struct Observed {
    pub node_name: String,
    pub vip_route: Option<(String, String)>,
    /// The host has etcd data: it is (or was) a member of the running etcd.
    pub etcd_data: bool,
}

/// Whether controller `index` joins a running etcd: it has no data while
/// another controller has.
pub fn joins_running_etcd(all: &[Observed], index: usize) -> bool {
    all.get(index).is_some_and(|me| !me.etcd_data) && all.iter().any(|o| o.etcd_data)
}

/// The rendered plan for the controller.
pub struct ControllerPlan {
    pub node_name: String,
    pub certs: Vec<CertPlan>,
    pub files: Vec<HostFile>,
}

impl ControllerContext {
    /// Load and check everything. `write_missing`: a CA that a cluster
    /// directory of an older kubeup lacks (the kubelet-serving CA) is saved
    /// in `pki/` (`up`); without it, it is made in memory only (`plan`,
    /// `reset`), so nothing on the workstation changes.
    pub fn load(file: &Path, write_missing: bool) -> Result<Self> {
        let loaded = config::load(file)?;
        let failed = || {
            format!(
                "failed to load the CAs from {} (run `kubeup init`)",
                loaded.pki_dir().display()
            )
        };
        let serving = pki::kubelet_serving_ca(
            &loaded.dir,
            loaded.cluster.spec.certificates.ca_days,
            write_missing,
        )
        .with_context(failed)?;
        let mut created_cas = vec![];
        if serving.created {
            created_cas.push(format!(
                "{} (workstation)",
                pki::CaKind::KubeletServing.common_name()
            ));
        }
        let cas = CaSet::load_with(&loaded.pki_dir(), serving.ca).with_context(failed)?;
        let (bundle_dir, manifest) = resolve_bundle(&loaded)?;
        let compressed = CompressedCache::new(artifacts::cache_root().join("compressed"));
        prune_compressed(&compressed, &manifest);
        Ok(Self {
            loaded,
            bundle_dir,
            manifest,
            cas,
            kubelet_serving_key: serving.key_pem,
            created_cas,
            compressed,
        })
    }

    pub fn controllers(&self) -> &[ControllerHost] {
        &self.loaded.cluster.spec.controllers
    }

    /// The API's address for clients: the endpoint, or the first controller.
    pub fn api_server(&self) -> String {
        let spec = &self.loaded.cluster.spec;
        match (&spec.control_plane_endpoint, spec.controllers.first()) {
            (Some(e), _) => format!("https://{}:{}", e.address, e.port),
            (None, Some(c)) => format!("https://{}:6443", c.address),
            (None, None) => String::new(),
        }
    }

    /// The virtual IP kubeup manages, if the cluster has one.
    pub fn virtual_ip(&self) -> Option<&ControlPlaneEndpoint> {
        self.loaded
            .cluster
            .spec
            .control_plane_endpoint
            .as_ref()
            .filter(|e| e.kind == EndpointKind::VirtualIP)
    }

    pub async fn connect(&self, controller: &ControllerHost) -> Result<Session> {
        let sudo = std::env::var(cmd_ssh::SUDO_PASSWORD_ENV)
            .ok()
            .map(Into::into);
        cmd_ssh::connect(
            &self.loaded,
            controller,
            sudo,
            &SshOptions::default(),
            |label| format!("failed to connect to the controller {label}"),
        )
        .await
    }

    /// The Node (and etcd member) name of controller `index`: the spec's, or
    /// `hostname` as preflight found it.
    pub fn node_name(&self, index: usize, hostname: &str) -> Result<String> {
        let name = self
            .controllers()
            .get(index)
            .and_then(|c| c.name.clone())
            .unwrap_or_else(|| hostname.to_lowercase());
        // A name from the spec was validated with the file; one from the
        // host is checked here, before it reaches a unit file.
        if !config::is_node_name(&name) {
            anyhow::bail!(
                "the controller's hostname {name:?} is not a valid Node name; set spec.controllers[{index}].name (lowercase letters, digits, '-' and '.')"
            );
        }
        Ok(name)
    }

    /// Render the plan of controller `index`, knowing every controller
    /// (`all`, in the spec's order): etcd's members and the load
    /// balancers' backends name them all.
    pub fn plan(&self, index: usize, all: &[Observed]) -> Result<ControllerPlan> {
        let spec = &self.loaded.cluster.spec;
        let net = &spec.networking;
        let controller = self
            .controllers()
            .get(index)
            .context("no such controller")?;
        let me = all.get(index).context("no such controller")?;
        let node_name = me.node_name.clone();
        let addresses: Vec<String> = self
            .controllers()
            .iter()
            .map(|c| c.address.clone())
            .collect();
        let node = NodeInput {
            node_name: node_name.clone(),
            address: controller.address.clone(),
            kubernetes_version: self.manifest.kubernetes_version.clone(),
            api_backends: addresses.clone(),
            cluster_dns: net.cluster_dns.clone(),
            cluster_domain: net.domain.clone(),
            pod_cidr: net.pod_cidr.clone(),
            pause_image: kubeup_provision::hostplan::node::pause_image(&self.manifest),
            register_taints: vec!["node-role.kubernetes.io/control-plane:NoSchedule".into()],
        };
        let vip = match (self.virtual_ip(), &me.vip_route) {
            (Some(e), Some((interface, source))) => Some(apilb::VipInput {
                address: e.address.clone(),
                router_id: e.virtual_router_id,
                interface: interface.clone(),
                peers: addresses
                    .iter()
                    .filter(|a| *a != source && **a != controller.address)
                    .cloned()
                    .collect(),
            }),
            _ => None,
        };
        let input = ControllerInput {
            node,
            cluster_name: self.loaded.name().to_string(),
            service_cidr: net.service_cidr.clone(),
            etcd: self.etcd_placement(index, all),
            endpoint: spec
                .control_plane_endpoint
                .as_ref()
                .map(|e| e.address.clone()),
            vip,
        };
        let svc: ipnet::Ipv4Net = net.service_cidr.parse().context("serviceCidr")?;
        let first_ip: Ipv4Addr = svc
            .hosts()
            .next()
            .context("serviceCidr has no host addresses")?;
        let certs = controller_certs(&input, first_ip, spec.certificates.leaf_days);
        let files = self.files(&input)?;
        Ok(ControllerPlan {
            node_name,
            certs,
            files,
        })
    }

    /// Where controller `index`'s apiserver finds etcd: the dedicated
    /// hosts, or its own member. A fresh cluster's members start together;
    /// a controller joining a running etcd starts with the members that run
    /// and those added before it (one at a time, in the file's order).
    fn etcd_placement(&self, index: usize, all: &[Observed]) -> EtcdPlacement {
        if !self.loaded.cluster.spec.etcd.is_stacked() {
            return EtcdPlacement::External(
                self.etcd_hosts()
                    .iter()
                    .map(|h| h.address.clone())
                    .collect(),
            );
        }
        let joins = joins_running_etcd(all, index);
        let members = all
            .iter()
            .zip(self.controllers())
            .enumerate()
            .filter(|(j, (o, _))| !joins || o.etcd_data || *j <= index)
            .map(|(_, (o, c))| (o.node_name.clone(), c.address.clone()))
            .collect();
        let me = all.get(index);
        EtcdPlacement::Stacked(EtcdMember {
            name: me.map(|o| o.node_name.clone()).unwrap_or_default(),
            address: self
                .controllers()
                .get(index)
                .map(|c| c.address.clone())
                .unwrap_or_default(),
            kubernetes_version: self.manifest.kubernetes_version.clone(),
            cluster_name: self.loaded.name().to_string(),
            members,
            joins_existing: joins,
        })
    }

    /// The dedicated etcd hosts (empty: etcd runs on the controllers).
    pub fn etcd_hosts(&self) -> &[ControllerHost] {
        &self.loaded.cluster.spec.etcd.external
    }

    /// The units a controller runs, in start order: etcd only when it is
    /// stacked.
    pub fn controller_units(&self, units: &[Unit]) -> Vec<Unit> {
        let stacked = self.etcd_hosts().is_empty();
        units
            .iter()
            .copied()
            .filter(|u| stacked || *u != Unit::Etcd)
            .collect()
    }

    fn files(&self, c: &ControllerInput) -> Result<Vec<HostFile>> {
        let pki = self.loaded.pki_dir();
        let read = |name: &str| {
            std::fs::read(pki.join(name))
                .with_context(|| format!("failed to read {}", pki.join(name).display()))
        };
        let key =
            String::from_utf8(read("encryption-key")?).context("encryption-key is not text")?;
        let mut files = vec![
            // CAs: the cluster and kubelet-serving CA keys stay on the
            // controller for the controller-manager's CSR signers; the
            // others' keys never leave the workstation.
            HostFile::new(
                format!("{}/ca.crt", layout::PKI),
                read("ca.crt")?,
                0o644,
                &Unit::CONTROLLER,
            ),
            HostFile::new(
                format!("{}/ca.key", layout::PKI),
                read("ca.key")?,
                0o600,
                &[Unit::KubeControllerManager],
            ),
            HostFile::new(
                format!("{}/ca.crt", layout::ETCD_PKI),
                read("etcd/ca.crt")?,
                0o644,
                &[Unit::Etcd, Unit::KubeApiserver],
            ),
            HostFile::new(
                format!("{}/front-proxy-ca.crt", layout::PKI),
                read("front-proxy-ca.crt")?,
                0o644,
                &[Unit::KubeApiserver, Unit::KubeControllerManager],
            ),
            HostFile::new(
                format!("{}/kubelet-serving-ca.crt", layout::PKI),
                self.cas.kubelet_serving.cert_pem(),
                0o644,
                &[Unit::KubeApiserver, Unit::KubeControllerManager],
            ),
            HostFile::new(
                format!("{}/kubelet-serving-ca.key", layout::PKI),
                self.kubelet_serving_key.expose_secret(),
                0o600,
                &[Unit::KubeControllerManager],
            ),
            HostFile::new(
                format!("{}/sa.key", layout::PKI),
                read("sa.key")?,
                0o600,
                &[Unit::KubeApiserver, Unit::KubeControllerManager],
            ),
            HostFile::new(
                format!("{}/sa.pub", layout::PKI),
                read("sa.pub")?,
                0o644,
                &[Unit::KubeApiserver],
            ),
            configs::encryption_config(&key),
            configs::audit_policy(),
            configs::authentication_config(),
            configs::kubelet_config(
                &c.node,
                false,
                configs::Eviction::from_spec(&self.loaded.cluster.spec.kubelet),
            ),
            configs::kubelet_resolv_conf(),
            configs::kube_proxy_config(&c.node),
            configs::containerd_config(&c.node),
            units::containerd(&c.node),
            units::kube_apiserver(c),
            units::kube_controller_manager(c),
            units::kube_scheduler(c),
            units::kubelet(&c.node),
            units::kube_proxy(&c.node),
            kubeup_provision::hostplan::node::sysctl_file(),
        ];
        if let Some(member) = c.etcd.local() {
            files.extend([units::etcd(member), units::etcd_bootstrap_env(member)]);
        }
        files.extend(apilb::node_files(&c.node));
        if let Some(vip) = &c.vip {
            files.push(apilb::keepalived_config(
                &c.node.node_name,
                &c.node.address,
                vip,
            ));
            files.push(apilb::keepalived_unit());
        }
        files.extend(configs::controller_kubeconfigs(&c.cluster_name));
        files.extend(configs::node_kubeconfigs(&c.cluster_name, &c.node));
        Ok(files)
    }

    /// The admin certificates on the workstation: the break-glass one made
    /// if missing, the everyday one re-issued if it is still in
    /// `system:masters` (a cluster directory of an older kubeup). Returns
    /// what was issued.
    pub fn ensure_admin_credentials(&self) -> Result<Vec<String>> {
        let days = self.loaded.cluster.spec.certificates.leaf_days;
        let issued = pki::ensure_admin_credentials(&self.loaded.dir, days).with_context(|| {
            format!(
                "failed to check the admin certificates in {}",
                self.loaded.pki_dir().display()
            )
        })?;
        Ok(issued
            .into_iter()
            .map(|n| format!("{n} (workstation)"))
            .collect())
    }

    /// `DIR/admin.kubeconfig` (everyday) and `DIR/super-admin.kubeconfig`
    /// (break-glass), 0600, each with its certificate inline.
    pub fn write_admin_kubeconfigs(&self) -> Result<()> {
        self.write_kubeconfig("admin", pki::ADMIN_CN, &self.loaded.admin_kubeconfig())?;
        self.write_kubeconfig(
            "super-admin",
            pki::SUPER_ADMIN_CN,
            &self.loaded.super_admin_kubeconfig(),
        )
    }

    fn write_kubeconfig(&self, cert: &str, user: &str, path: &Path) -> Result<()> {
        let pki = self.loaded.pki_dir();
        let read = |n: &str| {
            std::fs::read_to_string(pki.join(n))
                .with_context(|| format!("failed to read {}", pki.join(n).display()))
        };
        let text = configs::kubeconfig_inline(
            self.loaded.name(),
            &self.api_server(),
            &read("ca.crt")?,
            user,
            &read(&format!("{cert}.crt"))?,
            &read(&format!("{cert}.key"))?,
        );
        let secret = secrecy::SecretString::from(text);
        pki::write_private(path, &secret)
            .with_context(|| format!("failed to write {}", path.display()))?;
        Ok(())
    }
}

/// The bundle to ship: a local directory (default: the cache), or files
/// fetched from `artifacts.baseUrl` and verified against their pins.
fn resolve_bundle(loaded: &LoadedCluster) -> Result<(PathBuf, BundleManifest)> {
    let spec = &loaded.cluster.spec;
    let dir = if let Some(remote) = RemoteArtifacts::from_spec(&spec.artifacts)? {
        let url = spec.artifacts.base_url.clone().unwrap_or_default();
        let digest = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(url.as_bytes().get(..48).unwrap_or(url.as_bytes()));
        let cache = artifacts::cache_root().join("remote").join(digest);
        let rt = tokio::runtime::Handle::current();
        for file in remote.files().map(str::to_string).collect::<Vec<_>>() {
            tokio::task::block_in_place(|| rt.block_on(remote.fetch(&file, &cache)))?;
        }
        cache
    } else if let Some(b) = &spec.artifacts.bundle_dir {
        loaded.resolve(b)
    } else {
        artifacts::default_bundle_dir(&spec.kubernetes_version)
    };
    let manifest = kubeup_provision::converge::load_verified_cached(&dir).with_context(|| {
        format!(
            "the artifact bundle in {} is not usable (build it with `cargo xtask bundle`)",
            dir.display()
        )
    })?;
    // Images of add-ons turned off are neither sent nor imported, so they
    // are not on the controller for the operator to pass on to workers.
    let manifest = kubeup_provision::addons::images_for(&manifest, &spec.addons);
    Ok((dir, manifest))
}

/// Drop the compressed copies this bundle does not list (a cache: a failure
/// costs disk, never the run).
fn prune_compressed(cache: &CompressedCache, manifest: &BundleManifest) {
    let pruned = cache.prune_unlisted([manifest]);
    tracing::debug!(?pruned, dir = %cache.dir().display(), "pruned compressed copies");
}

/// A client for the cluster from a kubeconfig file.
pub async fn admin_client(path: &Path) -> Result<kube::Client> {
    admin_client_at(path, None).await
}

/// [`admin_client`] talking to `server` instead of the file's server (one
/// controller's own apiserver; its certificate names every controller's
/// address).
pub async fn admin_client_at(path: &Path, server: Option<&str>) -> Result<kube::Client> {
    let kubeconfig = kube::config::Kubeconfig::read_from(path)
        .with_context(|| format!("failed to read {}", path.display()))?;
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
    if let Some(server) = server {
        config.cluster_url = server.parse().context("the apiserver's URL")?;
    }
    Ok(kube::Client::try_from(config)?)
}
