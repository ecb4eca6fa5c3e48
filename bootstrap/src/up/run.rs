//! What the phases of `up` hand on to each other: the session (in the
//! [`Link`]), the rendered plan (from preflight), the admin client (once the
//! apiserver is ready) and the changes so far. Phases may run at once, so
//! each is a cell or a lock.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use anyhow::{Result, anyhow};
use kubeup_provision::converge::Changes;
use kubeup_provision::converge::reset_phases::OnHost;
use kubeup_provision::hostplan::{Unit, layout, network};
use kubeup_provision::ssh::Session;

use super::connect::Link;
use super::context::{ControllerContext, ControllerPlan, Observed};

pub struct UpRun {
    pub link: Link,
    /// What preflight found (the Node name, the virtual IP's route).
    observed: OnceLock<Observed>,
    /// What preflight found on every controller, in the file's order.
    all: OnceLock<Vec<Observed>>,
    plan: OnceLock<ControllerPlan>,
    client: OnceLock<kube::Client>,
    changes: Mutex<Changes>,
}

impl AsRef<Link> for UpRun {
    fn as_ref(&self) -> &Link {
        &self.link
    }
}

impl UpRun {
    /// The run of controller `index`. CAs made on the workstation for this
    /// run count as issued by the first controller's.
    pub fn new(ctx: Arc<ControllerContext>, index: usize) -> Result<Self> {
        let changes = Changes {
            issued: if index == 0 {
                ctx.created_cas.clone()
            } else {
                vec![]
            },
            ..Changes::default()
        };
        Ok(Self {
            link: Link::new(ctx, index)?,
            observed: OnceLock::new(),
            all: OnceLock::new(),
            plan: OnceLock::new(),
            client: OnceLock::new(),
            changes: Mutex::new(changes),
        })
    }

    pub fn ctx(&self) -> &ControllerContext {
        &self.link.ctx
    }

    pub fn session(&self) -> Result<&Session> {
        Ok(self.link.session()?)
    }

    pub fn plan(&self) -> Result<&ControllerPlan> {
        self.plan.get().ok_or_else(|| not_yet("the plan"))
    }

    pub fn observed(&self) -> Result<&Observed> {
        self.observed
            .get()
            .ok_or_else(|| not_yet("what preflight found"))
    }

    /// This controller has no etcd data while another one has: it joins
    /// the running etcd as a learner.
    pub fn joins_running_etcd(&self) -> bool {
        self.all
            .get()
            .is_some_and(|all| super::context::joins_running_etcd(all, self.link.index))
    }

    /// The client URLs of the controllers whose etcd runs (has data).
    pub fn running_members(&self) -> Result<Vec<String>> {
        let all = self
            .all
            .get()
            .ok_or_else(|| not_yet("every controller's state"))?;
        Ok(all
            .iter()
            .zip(self.ctx().controllers())
            .filter(|(o, _)| o.etcd_data)
            .map(|(_, c)| super::etcdctl::client_url(&c.address))
            .collect())
    }

    pub fn set_observed(&self, o: Observed) {
        // Preflight runs once per walk; a second value could only be the same.
        let _ = self.observed.set(o);
    }

    /// The plan for this controller, once every controller was looked at
    /// (`all`): its files and certificates, with the pod network's
    /// (flanneld's own client certificate, never the kubelet's identity).
    pub fn render_plan(&self, all: &[Observed]) -> Result<()> {
        let _ = self.all.set(all.to_vec());
        let ctx = self.ctx();
        let mut plan = ctx.plan(self.link.index, all)?;
        let net = &ctx.loaded.cluster.spec.networking;
        plan.files.extend(network::files_for(
            net.cni,
            &network::FlannelNode {
                node_name: &plan.node_name,
                address: &self.link.controller.address,
                kubernetes_version: &ctx.manifest.kubernetes_version,
                cluster_pod_cidr: &net.pod_cidr,
                credential: network::FlannelCredential::ClientCertificate,
            },
        ));
        plan.certs.extend(network::controller_certs(
            net.cni,
            ctx.loaded.cluster.spec.certificates.leaf_days,
        ));
        // Preflight runs once per walk; a second value could only be the same.
        let _ = self.plan.set(plan);
        Ok(())
    }

    /// Every path `reset` is to remove: the plan's files and certificates
    /// and the CNI config the kubelet's start writes.
    pub fn installed_paths(&self) -> Result<Vec<String>> {
        let plan = self.plan()?;
        let mut paths: Vec<String> = plan.files.iter().map(|f| f.path.clone()).collect();
        paths.extend(
            plan.certs
                .iter()
                .flat_map(|c| [c.cert_path.clone(), c.key_path.clone()]),
        );
        paths.push(layout::CNI_CONFLIST.into());
        Ok(paths)
    }

    pub fn client(&self) -> Result<&kube::Client> {
        self.client.get().ok_or_else(|| not_yet("the admin client"))
    }

    pub fn set_client(&self, client: kube::Client) {
        let _ = self.client.set(client);
    }

    pub fn merge(&self, c: Changes) {
        self.lock().merge(c);
    }

    /// The units whose inputs changed so far, and whether unit files did.
    pub fn restart(&self) -> (BTreeSet<Unit>, bool) {
        let changes = self.lock();
        (changes.restart.clone(), changes.units_changed)
    }

    pub fn changes(&self) -> Changes {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Changes> {
        self.changes.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Only a phase listed before the one that provides `what` sees this.
fn not_yet(what: &str) -> anyhow::Error {
    anyhow!("{what} is not known yet: a phase runs before the one that provides it")
}
