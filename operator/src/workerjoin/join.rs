//! Acting on a join: the phases over SSH and the API, each recorded in
//! status before it starts, so a restart resumes at the phase it stopped in.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Node};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use kubeup_crds::cluster::Cni;
use kubeup_crds::conditions::ConditionStatus;
use kubeup_crds::workerjoin::{WorkerJoinPhase as Phase, WorkerJoinStatus};
use kubeup_crds::{Cluster, WorkerJoin};
use kubeup_provision::converge::{self, Changes, Role};
use kubeup_provision::hostplan::node::{self, NodeObject};
use kubeup_provision::hostplan::{NodeInput, Unit, certs, configs, layout, network, worker};
use kubeup_provision::pki;
use kubeup_provision::ssh::{Command, Session, quote};
use secrecy::ExposeSecret;

use crate::error::{Error, Result};
use crate::runtime::context::{Context, FIELD_MANAGER};
use crate::runtime::watch;
use crate::workerjoin::access;
use crate::workerjoin::csr::{self, ClientCert};
use crate::workerjoin::decide::{self, NodeView, owner_ref, runs};
use crate::workerjoin::nodeclaim;
use crate::workerjoin::nodesync;
use crate::workerjoin::nodetoken::{self, BoundNode, Component};
use crate::workerjoin::pending;
use crate::workerjoin::specguard;
use crate::workerjoin::status;

/// Days a certificate on the host must still be valid to be kept.
const CERT_MIN_DAYS: i64 = 7;

/// How long a pre-created Node may wait for its podCIDR before the kubelet
/// starts anyway.
const PODCIDR_WAIT: Duration = Duration::from_secs(10);

/// A Node as the kubelet would register it, owned by the WorkerJoin
/// `owner` (label and annotation; labels and taints follow by
/// [`sync_node`]).
pub fn new_node(name: &str, owner: &str) -> Node {
    NodeObject::worker(
        name,
        crate::workerjoin::decide::NODE_LABEL,
        &crate::workerjoin::decide::owner_label_value(owner),
        owner,
    )
    .build()
}

/// What [`Runner::node_tokens`] did.
struct NodeTokens {
    issued: Vec<&'static str>,
    /// The earliest renewal time of the tokens, unix seconds.
    renew_at: i64,
}

/// How a join pass ended (errors are handled by the caller).
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Ready,
    /// The Node is not there or not Ready yet: look again soon.
    WaitingForNode,
    DryRunComplete,
}

/// One pass over a WorkerJoin: the status being built and how to save it.
pub struct Runner<'a> {
    pub ctx: &'a Context,
    pub wj: &'a WorkerJoin,
    pub api: Api<WorkerJoin>,
    pub status: WorkerJoinStatus,
    pub generation: i64,
    pub owner: String,
    phase_started: Instant,
    /// The phase stored before this pass (events only on transitions).
    stored_phase: Phase,
}

impl<'a> Runner<'a> {
    pub fn new(ctx: &'a Context, wj: &'a WorkerJoin) -> Self {
        let ns = wj.namespace().unwrap_or_default();
        let status = wj.status.clone().unwrap_or_default();
        Self {
            api: Api::namespaced(ctx.client.clone(), &ns),
            owner: owner_ref(&ns, &wj.name_any()),
            generation: wj.metadata.generation.unwrap_or(0),
            stored_phase: status.phase,
            status,
            ctx,
            wj,
            phase_started: Instant::now(),
        }
    }

    pub fn namespace(&self) -> String {
        self.wj.namespace().unwrap_or_default()
    }

    /// Server-side apply of the whole status, one field manager.
    pub async fn save(&mut self) -> Result<()> {
        status::ensure_all(&mut self.status, self.generation);
        self.api
            .patch_status(
                &self.wj.name_any(),
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(status::status_patch(&self.status)),
            )
            .await
            .map_err(Error::kube(format!(
                "update the status of WorkerJoin {}",
                self.owner
            )))?;
        Ok(())
    }

    /// Record `phase` (saved before its work starts) with an Event.
    pub async fn enter(&mut self, phase: Phase) -> Result<()> {
        self.status.phase = phase;
        self.phase_started = Instant::now();
        self.save().await?;
        if phase != self.stored_phase {
            self.stored_phase = phase;
            tracing::info!(phase = ?phase, "phase");
            self.ctx
                .event(
                    self.wj,
                    false,
                    &format!("{phase:?}"),
                    "Join",
                    describe(phase),
                )
                .await;
        }
        Ok(())
    }

    /// Close the current phase: its duration in status and metrics.
    fn done(&mut self, phase: Phase) {
        let secs = self.phase_started.elapsed().as_secs_f64();
        let secs = (secs * 1000.0).round() / 1000.0;
        self.status
            .phase_durations
            .insert(format!("{phase:?}"), secs);
        self.ctx.metrics.observe_phase(&format!("{phase:?}"), secs);
    }

    fn set(&mut self, t: &str, v: ConditionStatus, reason: &str, msg: impl Into<String>) {
        status::set(&mut self.status, t, v, reason, msg, self.generation);
    }

    /// The join (or dry run) from `from` on.
    pub async fn run(&mut self, from: Phase, dry_run: bool) -> Result<Outcome> {
        if self.status.observed_generation != Some(self.generation) {
            self.status.observed_generation = Some(self.generation);
            self.status.attempts = 0;
            self.status.planned_actions.clear();
        }
        // ---- Connecting (a resumed join keeps its recorded phase meanwhile)
        if from == Phase::Connecting {
            self.enter(Phase::Connecting).await?;
        }
        let conn = match access::connect(
            &self.ctx.client,
            &self.namespace(),
            self.wj,
            &self.ctx.settings.ssh,
            &self.ctx.settings.namespace,
        )
        .await
        {
            Ok(c) => c,
            Err(e) => {
                if e.is_host_key() {
                    self.set(
                        status::HOST_KEY_VERIFIED,
                        ConditionStatus::False,
                        "HostKeyMismatch",
                        e.to_string(),
                    );
                }
                return Err(e);
            }
        };
        let session = conn.session;
        let fp = conn.fingerprint.unwrap_or_default();
        self.status.host_key_fingerprint = Some(fp.clone());
        if conn.recorded_key.is_some() {
            self.status.host_key = conn.recorded_key;
        }
        let policy = format!("{:?}", self.wj.spec.host_key.policy);
        self.set(
            status::HOST_KEY_VERIFIED,
            ConditionStatus::True,
            "Verified",
            format!("host key {fp} verified (policy {policy})"),
        );
        if from == Phase::Connecting {
            self.done(Phase::Connecting);
        }
        let result = self.after_connect(&session, from, dry_run).await;
        session.close().await;
        result
    }

    async fn after_connect(
        &mut self,
        session: &Session,
        from: Phase,
        dry_run: bool,
    ) -> Result<Outcome> {
        let cluster = read_cluster(&self.ctx.client).await?;
        let version = cluster.spec.kubernetes_version.clone();

        // ---- Preflight (also when resuming without a known node name)
        let need_name = decide::node_name(&self.wj.spec, &self.status, None).is_none();
        if runs(Phase::Preflight, from) || need_name || dry_run {
            self.enter(Phase::Preflight).await?;
            let report = converge::preflight(session, Role::Worker).await?;
            if let Some(failures) = report.error_text() {
                self.set(
                    status::PREFLIGHT_PASSED,
                    ConditionStatus::False,
                    "PreflightFailed",
                    failures.clone(),
                );
                return Err(Error::Preflight {
                    host: session.host().to_string(),
                    failures,
                });
            }
            let warnings: Vec<String> = report
                .warnings()
                .iter()
                .map(|c| format!("{}: {}", c.name, c.message))
                .collect();
            self.set(
                status::PREFLIGHT_PASSED,
                ConditionStatus::True,
                "Passed",
                if warnings.is_empty() {
                    "all checks passed".to_string()
                } else {
                    format!("passed with warnings: {}", warnings.join("; "))
                },
            );
            let named = decide::node_name(&self.wj.spec, &self.status, Some(&report.hostname));
            if let Some(name) = &named {
                self.claim_node_name(name, &cluster).await?;
            }
            self.status.node_name = named;
            self.done(Phase::Preflight);
        }
        let node_name = decide::node_name(&self.wj.spec, &self.status, None).ok_or_else(|| {
            Error::InvalidSpec("the host reports no hostname: set spec.nodeName".into())
        })?;

        let bundle = self.ctx.bundles.get(&version).await?;
        let (bundle_dir, manifest) = (&bundle.0, &bundle.1);
        let compressed = self.ctx.bundles.compressed();
        let input = node_input(&cluster, &self.wj.spec, &node_name, manifest);
        let cluster_name = cluster.name_any();
        // Upstream eviction thresholds unless the cluster asks for relaxed
        // ones (the sandbox's small disks).
        let eviction = configs::Eviction::from_spec(&cluster.spec.kubelet);

        if dry_run {
            let mut planned = vec![];
            let c = push_bundle_blocking(session, bundle_dir, manifest, compressed, true)?;
            planned.extend(c.uploaded.iter().map(|p| format!("upload {p}")));
            let files = worker::worker_files_with(&input, &cluster_name, eviction);
            let c = converge::write_files(session, &files, true).await?;
            planned.extend(c.written.iter().map(|p| format!("write {p}")));
            planned.push(format!(
                "issue a client certificate for {} through the CSR API and Node-bound ServiceAccount tokens for kube-proxy and flannel (unless current)",
                input.node_name
            ));
            planned.push("start containerd, kubelet, kube-proxy".into());
            planned.push(format!("wait for Node {node_name} to be Ready"));
            self.status.planned_actions = planned;
            self.status.phase = Phase::DryRunComplete;
            self.status.last_error = None;
            self.save().await?;
            self.ctx
                .event(
                    self.wj,
                    false,
                    "DryRunComplete",
                    "DryRun",
                    format!(
                        "checks passed on {}; {} actions planned, nothing changed",
                        session.host(),
                        self.status.planned_actions.len()
                    ),
                )
                .await;
            return Ok(Outcome::DryRunComplete);
        }

        let mut changes = Changes::default();
        // ---- Installing
        if runs(Phase::Installing, from) {
            self.enter(Phase::Installing).await?;
            changes.merge(push_bundle_blocking(
                session, bundle_dir, manifest, compressed, false,
            )?);
            // Owed restarts survive an operator restart before Starting.
            pending::record(session, &changes.restart).await?;
            tracing::info!(uploaded = changes.uploaded.len(), "artifacts in place");
            self.status
                .versions
                .insert("kubernetes".into(), version.clone());
            for (name, f) in &manifest.files {
                if let Some(bin) = name.strip_prefix("bin/")
                    && ["containerd", "runc"].contains(&bin)
                    && !f.version.is_empty()
                {
                    self.status.versions.insert(bin.into(), f.version.clone());
                }
            }
            self.done(Phase::Installing);
        }

        // ---- Certificates
        let ca_pem = cluster_ca(&self.ctx.client, &self.ctx.settings.namespace).await?;
        if runs(Phase::Certificates, from) {
            self.enter(Phase::Certificates).await?;
            // The name is checked again right before its identity is issued.
            self.claim_node_name(&node_name, &cluster).await?;
            let issued = self.certificates(session, &node_name, &ca_pem).await?;
            if issued.contains(&"kubelet") {
                changes.restart.insert(Unit::Kubelet);
            }
            if issued.contains(&"kube-proxy") {
                changes.restart.insert(Unit::KubeProxy);
            }
            pending::record(session, &changes.restart).await?;
            let msg = if issued.is_empty() {
                "the credentials on the host are current".to_string()
            } else {
                format!(
                    "issued for {}: {} (kubelet: CSR API; kube-proxy: TokenRequest API)",
                    input.node_name,
                    issued.join(", ")
                )
            };
            self.set(
                status::CERTIFICATE_ISSUED,
                ConditionStatus::True,
                "Issued",
                msg,
            );
            self.done(Phase::Certificates);
        }

        // ---- Starting
        if runs(Phase::Starting, from) {
            self.enter(Phase::Starting).await?;
            let mut files = worker::worker_files_with(&input, &cluster_name, eviction);
            files.push(worker::cluster_ca(&ca_pem));
            files.extend(network::node_files(cluster.spec.networking.cni, &input));
            let mut installed: Vec<String> = files.iter().map(|f| f.path.clone()).collect();
            installed.extend(worker::worker_cert_paths());
            // Independent steps at once, each a round trip or more: the
            // files, the list `reset` works from, forwarding, the restarts
            // owed by Installing/Certificates of an earlier pass, and the
            // Node before the kubelet (the controller-manager gives it a
            // podCIDR at once, the CNI config is there when the kubelet
            // starts, and its labels and taints hold from the first moment).
            let (written, _, (), cidr, owed) = tokio::try_join!(
                async { Ok::<_, Error>(converge::write_files(session, &files, false).await?) },
                async { Ok(converge::record_installed(session, &installed, false).await?) },
                run(session, node::FORWARDING_NOW),
                self.precreate_node(&node_name),
                pending::take(session),
            )?;
            changes.merge(written);
            changes.restart.extend(owed);
            let cni = cluster.spec.networking.cni;
            let mut units = Unit::WORKER.to_vec();
            if let Some(cidr) = cidr {
                let conflist: Vec<_> = network::cni_conflist(cni, &cidr).into_iter().collect();
                changes.merge(converge::write_files(session, &conflist, false).await?);
                // The pod network starts with the kubelet (it needs the podCIDR).
                units.extend_from_slice(network::units(cni));
            }
            let restart: BTreeSet<Unit> = changes.restart.clone();
            converge::ensure_units(session, &units, &restart, changes.units_changed, false).await?;
            pending::clear(session).await?;
            self.done(Phase::Starting);
        }

        // ---- WaitingForNode
        self.enter(Phase::WaitingForNode).await?;
        let cni = cluster.spec.networking.cni;
        // The images (pause, …) go into containerd while the kubelet
        // registers and turns Ready, which needs none of them; the import
        // waits for containerd's socket and is skipped once done.
        let import = async {
            let imported = converge::import_images(session, manifest, false).await?;
            tracing::info!(imported = imported.len(), "images in place");
            Ok(())
        };
        let ((), ready) = tokio::try_join!(import, self.wait_for_node(session, &node_name, cni))?;
        if !ready {
            return Ok(Outcome::WaitingForNode);
        }
        self.done(Phase::WaitingForNode);
        Ok(Outcome::Ready)
    }

    /// The kubelet's client certificate and the node components' tokens:
    /// kept while current, else issued (CSR API / TokenRequest API).
    /// Records when the tokens are due for renewal in status; returns what
    /// was issued. Also the steady-state renewal ([`nodetoken::renew_if_due`]).
    pub(crate) async fn certificates(
        &mut self,
        session: &Session,
        node_name: &str,
        ca_pem: &str,
    ) -> Result<Vec<&'static str>> {
        let kubelet = ClientCert::kubelet(node_name);
        // Where the kubelet's client certificate lives (the lifetime in the
        // plan does not matter for reading it).
        let on_host = certs::kubelet_client(node_name, 365);
        let current = converge::remote_certs(session, std::slice::from_ref(&on_host)).await?;
        let mut issued = vec![];
        let fresh = current
            .first()
            .and_then(|c| c.as_deref())
            .map(|p| pki::is_current(p, ca_pem, &kubelet.leaf_spec(), CERT_MIN_DAYS));
        if !matches!(fresh, Some(Ok(()))) {
            tracing::info!(cert = kubelet.component, why = ?fresh.map(|r| r.err()), "issuing through the CSR API");
            self.kubelet_client_cert(session, &kubelet, node_name, ca_pem)
                .await?;
            issued.push(kubelet.component);
        }
        if self.status.pending_csr.take().is_some() {
            self.status.pending_csr_key_sha256 = None;
            self.save().await?;
        }

        let tokens = self.node_tokens(session, node_name).await?;
        issued.extend(tokens.issued);
        self.status.credentials_renew_at = nodetoken::rfc3339(tokens.renew_at);
        Ok(issued)
    }

    /// Each node component's token bound to this WorkerJoin's Node (made
    /// here when the kubelet has not registered it yet: a token needs the
    /// Node's uid): kept while current, else requested and written.
    async fn node_tokens(&self, session: &Session, node_name: &str) -> Result<NodeTokens> {
        let cni = read_cluster(&self.ctx.client).await?.spec.networking.cni;
        let node = BoundNode::of(&self.own_node(node_name).await?)?;
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let mut out = NodeTokens {
            issued: vec![],
            renew_at: i64::MAX,
        };
        for component in nodetoken::components(cni) {
            let renew_at = match self.kept_token(session, &component, &node, now).await? {
                Some(at) => at,
                None => {
                    out.issued.push(component.name);
                    self.new_token(session, &component, &node).await?
                }
            };
            out.renew_at = out.renew_at.min(renew_at);
        }
        Ok(out)
    }

    /// When the token on the host is due for renewal, `None` when it must
    /// be replaced now.
    async fn kept_token(
        &self,
        session: &Session,
        component: &Component,
        node: &BoundNode,
        now: i64,
    ) -> Result<Option<i64>> {
        let payload = remote_token_payload(session, component.path).await?;
        match nodetoken::is_current(&payload, component, node, now) {
            Ok(at) => Ok(Some(at)),
            Err(why) => {
                tracing::info!(
                    credential = component.name,
                    why,
                    "requesting a ServiceAccount token"
                );
                Ok(None)
            }
        }
    }

    /// A fresh token on the host; when it is due for renewal. client-go
    /// re-reads a kubeconfig's token file, so no restart is needed.
    async fn new_token(
        &self,
        session: &Session,
        component: &Component,
        node: &BoundNode,
    ) -> Result<i64> {
        let fresh = nodetoken::request(&self.ctx.client, component, node).await?;
        let token = fresh.token.expose_secret().as_bytes().to_vec();
        write(session, token, component.path, 0o600).await?;
        Ok(fresh.renew_at)
    }

    /// This WorkerJoin's Node, created as the kubelet would register it when
    /// it is not there yet; refused when it is recorded as another's.
    async fn own_node(&self, node_name: &str) -> Result<Node> {
        let nodes: Api<Node> = Api::all(self.ctx.client.clone());
        let read = |e| Error::kube(format!("read Node {node_name}"))(e);
        let node = match nodes.get_opt(node_name).await.map_err(read)? {
            Some(n) => n,
            None => match nodes
                .create(&PostParams::default(), &new_node(node_name, &self.owner))
                .await
            {
                Ok(n) => n,
                // Someone was faster: whose it is is checked below.
                Err(kube::Error::Api(e)) if e.code == 409 => {
                    nodes.get(node_name).await.map_err(read)?
                }
                Err(e) => return Err(Error::kube(format!("create Node {node_name}"))(e)),
            },
        };
        if nodeclaim::recorded_owner(&node) != Some(self.owner.as_str()) {
            return Err(Error::NodeNameTaken(format!(
                "Node {node_name} is not recorded as WorkerJoin {}'s; no token is bound to it",
                self.owner
            )));
        }
        Ok(node)
    }

    /// The kubelet's client certificate through the CSR API, resumable:
    /// the key is generated here and written to the host first, the CSR's
    /// name is recorded in status before it is approved, and the key and
    /// certificate are combined on the host. An operator that dies at any
    /// point resumes the recorded CSR (its key is still on the host), so at
    /// most one CSR per join is ever approved; a CSR created but not yet
    /// recorded stays unapproved (kube-controller-manager removes it).
    async fn kubelet_client_cert(
        &mut self,
        session: &Session,
        kubelet: &ClientCert,
        node_name: &str,
        ca_pem: &str,
    ) -> Result<()> {
        let uid = self.wj.uid().unwrap_or_default();
        // Only a CSR whose key fingerprint was recorded with it resumes; an
        // older status without one starts afresh.
        let resumable = match (
            self.status.pending_csr.clone(),
            self.status.pending_csr_key_sha256.clone(),
        ) {
            (Some(name), Some(key)) if remote_exists(session, &pending_key(&name)).await? => {
                Some((name, key))
            }
            _ => None,
        };
        let (name, key_sha256) = match resumable {
            Some(pending) => {
                tracing::info!(csr = %pending.0, "resuming the CSR of an earlier attempt");
                pending
            }
            None => {
                let generated = csr::generate(kubelet)?;
                let name = csr::csr_name(kubelet, node_name);
                // Keys of attempts that never got as far as a recorded CSR.
                run(
                    session,
                    &format!("rm -f {}/kubeup-pending-*", layout::KUBELET_PKI_DIR),
                )
                .await?;
                write(
                    session,
                    generated.key_pem.expose_secret().as_bytes().to_vec(),
                    &pending_key(&name),
                    0o600,
                )
                .await?;
                csr::create(
                    &self.ctx.client,
                    &name,
                    kubelet,
                    &generated.csr_pem,
                    &self.owner,
                    &uid,
                )
                .await?;
                self.status.pending_csr = Some(name.clone());
                self.status.pending_csr_key_sha256 = Some(generated.public_key_sha256.clone());
                self.save().await?;
                (name, generated.public_key_sha256)
            }
        };
        let username = self.ctx.username().await?;
        let want = csr::Expected {
            cert: kubelet,
            username: &username,
            public_key_sha256: &key_sha256,
        };
        let signed = csr::approve_and_wait(
            &self.ctx.client,
            &name,
            &want,
            &self.owner,
            &uid,
            self.ctx.settings.csr_timeout,
        )
        .await;
        let cert_pem = match signed {
            Ok(pem) => pem,
            Err(e @ Error::CsrRefused { .. }) => {
                // Never this one again: the next attempt makes a new key
                // and CSR.
                self.status.pending_csr = None;
                self.status.pending_csr_key_sha256 = None;
                self.save().await?;
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        pki::is_current(&cert_pem, ca_pem, &kubelet.leaf_spec(), 0).map_err(|reason| {
            Error::Certificate {
                name: kubelet.common_name.clone(),
                reason: format!("the signed certificate is not usable: {reason}"),
            }
        })?;
        let cert_path = format!("{}/kubeup-pending-{name}.crt", layout::KUBELET_PKI_DIR);
        write(session, cert_pem.into_bytes(), &cert_path, 0o644).await?;
        let q = |p: &str| quote(p).map_err(Error::ssh(session.host()));
        let (crt, key, pem) = (
            q(&cert_path)?,
            q(&pending_key(&name))?,
            q(layout::KUBELET_CLIENT_PEM)?,
        );
        // Certificate and key meet on the host only; the rename is atomic.
        run(
            session,
            &format!(
                "set -e; t=$(mktemp {pem}.XXXXXX); cat {crt} {key} > \"$t\"; chmod 600 \"$t\"; mv -f \"$t\" {pem}; rm -f {crt} {key}"
            ),
        )
        .await
    }

    /// Refuse a node name that is not valid, names the apiserver, or is
    /// another's (a Node or an earlier WorkerJoin): before it is recorded,
    /// and before any certificate for it.
    async fn claim_node_name(&self, name: &str, cluster: &Cluster) -> Result<()> {
        let facts =
            specguard::ClusterFacts::from_cluster(cluster, self.ctx.settings.allow_loopback);
        specguard::node_name(name, &facts).map_err(|why| {
            Error::InvalidSpec(format!(
                "node name {name:?} (spec.nodeName, else the host's hostname): {why}; set spec.nodeName"
            ))
        })?;
        nodeclaim::ensure(self.ctx, self.wj, name).await
    }

    /// Create the Node (labelled and annotated as this WorkerJoin's, with
    /// the spec's labels and taints) when it does not exist, and wait
    /// briefly for the podCIDR the controller-manager allocates. `None`
    /// when none came (no `--allocate-node-cidrs`): the CNI config is then
    /// written once the Node has one.
    async fn precreate_node(&self, node_name: &str) -> Result<Option<String>> {
        let nodes: Api<Node> = Api::all(self.ctx.client.clone());
        let read = |e| Error::kube(format!("read Node {node_name}"))(e);
        if nodes.get_opt(node_name).await.map_err(read)?.is_none() {
            let node = new_node(node_name, &self.owner);
            match nodes.create(&PostParams::default(), &node).await {
                Ok(_) => tracing::info!(node = node_name, "Node created before the kubelet"),
                // Someone was faster: it must be ours (an earlier pass), which
                // sync_node checks below before it changes anything.
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => return Err(Error::kube(format!("create Node {node_name}"))(e)),
            }
        }
        let deadline = tokio::time::Instant::now() + PODCIDR_WAIT;
        let mut changes = std::pin::pin!(watch::changes(nodes, node_name, deadline));
        while let Some(node) = changes.next().await {
            let Some(node) = node else { continue };
            sync_node(&self.ctx.client, &node, &self.owner, self.wj).await?;
            if let Some(cidr) = node.spec.as_ref().and_then(|s| s.pod_cidr.clone()) {
                return Ok(Some(cidr));
            }
        }
        tracing::info!(
            node = node_name,
            "no podCIDR yet; the CNI config follows later"
        );
        Ok(None)
    }

    /// Wait (up to `node_wait`) for the Node: CNI config from its podCIDR,
    /// labels and taints, then Ready. `false` when not Ready yet.
    async fn wait_for_node(
        &mut self,
        session: &Session,
        node_name: &str,
        cni: Cni,
    ) -> Result<bool> {
        let nodes: Api<Node> = Api::all(self.ctx.client.clone());
        let deadline = tokio::time::Instant::now() + self.ctx.settings.node_wait;
        let mut changes = std::pin::pin!(watch::changes(nodes, node_name, deadline));
        let mut cni_written = false;
        while let Some(node) = changes.next().await {
            let Some(node) = node else {
                status::apply_node_conditions(&mut self.status, None, self.generation);
                continue;
            };
            let view = node_view(&node);
            if !cni_written && let Some(cidr) = &view.pod_cidr {
                // flannel starts once the Node has its podCIDR (it
                // exits without one); `cni: none` writes nothing.
                let conflist: Vec<_> = network::cni_conflist(cni, cidr).into_iter().collect();
                converge::write_files(session, &conflist, false).await?;
                let units = network::units(cni);
                if !units.is_empty() {
                    // Their unit files were written and loaded in Starting:
                    // only start what is not running.
                    converge::ensure_units(session, units, &BTreeSet::new(), false, false).await?;
                }
                cni_written = true;
            }
            sync_node(&self.ctx.client, &node, &self.owner, self.wj).await?;
            status::apply_node_conditions(&mut self.status, Some(&view), self.generation);
            if view.ready && cni_written {
                return Ok(true);
            }
        }
        self.save().await?;
        Ok(false)
    }
}

async fn write(session: &Session, data: Vec<u8>, path: &str, mode: u32) -> Result<()> {
    session
        .write_file(&data, path, mode, Some("root:root"))
        .await
        .map(|_| ())
        .map_err(Error::ssh(session.host()))
}

/// Run `push_bundle` on this thread: its future (a `join_all` over
/// closures) is not provably `Send` for every lifetime, which the
/// controller's spawned reconcile needs. Needs the multi-thread runtime.
fn push_bundle_blocking(
    session: &Session,
    dir: &std::path::Path,
    manifest: &kubeup_provision::artifacts::BundleManifest,
    compressed: Option<&kubeup_provision::artifacts::CompressedCache>,
    dry_run: bool,
) -> Result<Changes> {
    tokio::task::block_in_place(|| {
        tokio::runtime::Handle::current().block_on(converge::push_bundle(
            session, dir, manifest, compressed, None, dry_run,
        ))
    })
    .map_err(Error::from)
}

fn describe(phase: Phase) -> String {
    match phase {
        Phase::Connecting => "reading the SSH Secret, connecting, verifying the host key",
        Phase::Preflight => "checking the machine can run a node",
        Phase::Installing => "uploading binaries and images (skipped where checksums match)",
        Phase::Certificates => "issuing client certificates through the CSR API",
        Phase::Starting => "writing configuration, starting containerd, kubelet, kube-proxy",
        Phase::WaitingForNode => "importing images while the Node registers and becomes Ready",
        Phase::Ready => "the Node is Ready",
        Phase::Failed => "the join failed and waits for a change",
        Phase::Deleting => "draining the Node and resetting the machine",
        Phase::DryRunComplete => "dry run complete",
        Phase::Pending => "pending",
    }
    .to_string()
}

/// The one `Cluster` object.
pub async fn read_cluster(client: &kube::Client) -> Result<Cluster> {
    let api: Api<Cluster> = Api::all(client.clone());
    let list = api
        .list(&Default::default())
        .await
        .map_err(Error::kube("list Cluster objects"))?;
    list.items.into_iter().next().ok_or(Error::NoCluster)
}

/// The cluster CA from the `kube-root-ca.crt` ConfigMap.
pub async fn cluster_ca(client: &kube::Client, namespace: &str) -> Result<String> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let cm = api
        .get_opt("kube-root-ca.crt")
        .await
        .map_err(Error::kube(format!(
            "read ConfigMap {namespace}/kube-root-ca.crt"
        )))?;
    cm.and_then(|c| c.data)
        .and_then(|mut d| d.remove("ca.crt"))
        .ok_or_else(|| Error::Certificate {
            name: "cluster CA".into(),
            reason: format!(
                "ConfigMap {namespace}/kube-root-ca.crt has no ca.crt (is kube-controller-manager running with --root-ca-file?)"
            ),
        })
}

/// What the worker's files are rendered from.
pub fn node_input(
    cluster: &Cluster,
    spec: &kubeup_crds::WorkerJoinSpec,
    node_name: &str,
    manifest: &kubeup_provision::artifacts::BundleManifest,
) -> NodeInput {
    let net = &cluster.spec.networking;
    let controller = cluster
        .spec
        .controllers
        .first()
        .map(|c| c.address.clone())
        .unwrap_or_default();
    NodeInput {
        node_name: node_name.to_string(),
        address: spec.address.clone(),
        kubernetes_version: manifest.kubernetes_version.clone(),
        api_server: format!("https://{controller}:6443"),
        cluster_dns: net.cluster_dns.clone(),
        cluster_domain: net.domain.clone(),
        pod_cidr: net.pod_cidr.clone(),
        pause_image: node::pause_image(manifest),
        register_taints: nodesync::register_taints(&spec.taints),
    }
}

/// Certificate parts of `(cert, key)` files on the host (only when the key
/// is there too), one round trip; never reads a key back.
/// Where the key of the pending CSR `name` waits on the host.
fn pending_key(csr_name: &str) -> String {
    format!("{}/kubeup-pending-{csr_name}.key", layout::KUBELET_PKI_DIR)
}

/// A privileged shell script on the host; its stdout.
async fn shell(session: &Session, script: &str) -> Result<String> {
    let out = session
        .run(&Command::shell(script).privileged())
        .await
        .map_err(Error::ssh(session.host()))?;
    Ok(out.stdout_str())
}

async fn run(session: &Session, script: &str) -> Result<()> {
    shell(session, script).await.map(|_| ())
}

async fn remote_exists(session: &Session, path: &str) -> Result<bool> {
    let q = quote(path).map_err(Error::ssh(session.host()))?;
    Ok(shell(session, &format!("[ -s {q} ] && echo yes; true"))
        .await?
        .trim()
        == "yes")
}

/// The payload (middle part) of the JWT in `path` on the host, or "" when
/// there is none. Only that part is read: the stdout of a command may be
/// logged, and the payload without its signature is no credential.
async fn remote_token_payload(session: &Session, path: &str) -> Result<String> {
    let q = quote(path).map_err(Error::ssh(session.host()))?;
    let out = shell(session, &format!("[ -s {q} ] && cut -d. -f2 {q}; true")).await?;
    Ok(out.trim().to_string())
}

pub fn node_view(node: &Node) -> NodeView {
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"));
    NodeView {
        ready: ready.is_some_and(|c| c.status == "True"),
        ready_message: ready
            .and_then(|c| c.message.clone())
            .unwrap_or_else(|| "the kubelet has not reported yet".into()),
        pod_cidr: node.spec.as_ref().and_then(|s| s.pod_cidr.clone()),
        labels: node.metadata.labels.clone().unwrap_or_default(),
    }
}

/// Bring the Node's labels and taints to the spec (a no-op when in sync).
pub async fn sync_node(
    client: &kube::Client,
    node: &Node,
    owner: &str,
    wj: &WorkerJoin,
) -> Result<()> {
    // Ownership recorded on a Node is never overwritten or taken over.
    if nodeclaim::recorded_owner(node) != Some(owner) {
        return Err(Error::NodeNameTaken(format!(
            "Node {} is not recorded as WorkerJoin {owner}'s; its labels and taints are left alone",
            node.name_any()
        )));
    }
    let Some(patch) = nodesync::node_patch(node, owner, &wj.spec.labels, &wj.spec.taints) else {
        return Ok(());
    };
    let nodes: Api<Node> = Api::all(client.clone());
    let name = node.name_any();
    match nodes
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        // A concurrent change to the taints: the next pass recomputes.
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(Error::kube(format!("label Node {name}"))(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_precreated_node_names_its_workerjoin() {
        let n = new_node("worker-1", "default.w1");
        assert_eq!(n.metadata.name.as_deref(), Some("worker-1"));
        let labels = n.metadata.labels.unwrap();
        assert_eq!(labels[crate::workerjoin::decide::NODE_LABEL], "default.w1");
        assert_eq!(labels["kubernetes.io/hostname"], "worker-1");
        assert_eq!(
            n.metadata.annotations.unwrap()[crate::workerjoin::decide::NODE_LABEL],
            "default.w1"
        );
        assert!(
            n.spec.is_none(),
            "the controller-manager assigns the podCIDR"
        );
    }
}
