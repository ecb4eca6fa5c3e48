//! The phases of `up` on the host: looking at it, then bringing its files,
//! certificates, units and images to the plan. In a dry run each says what
//! it would change (it looks at the host, read-only).

use anyhow::{Context as _, Result, bail};
use futures::FutureExt;
use kubeup_provision::converge::{self, Changes, Role};
use kubeup_provision::hostplan::{Unit, apilb};
use kubeup_provision::phase::{Effect, Live, Phase};
use kubeup_provision::ssh::{Command, Session};

use super::{Plan, Run, UpPhase};
use crate::up::connect::with_causes;
use crate::up::context::Observed;
use crate::up::node;
use crate::up::run::UpRun;

/// What starts with the units phase, in start order: the API and what it
/// needs, once their binaries are there ([`CONTROL_PLANE_FILES`]), while
/// the rest of the bundle streams. The node's runtime starts with the
/// images ([`NODE_RUNTIME`]), the controller-manager and scheduler once the
/// apiserver is ready ([`AFTER_READY`]), the kubelet with its Node (see
/// [`node::ensure_node`]).
const CONTROL_PLANE: [Unit; 3] = [Unit::ApiLb, Unit::Etcd, Unit::KubeApiserver];

/// The bundle's files the control plane runs from (etcdctl for a member
/// joining a running etcd): uploaded first.
const CONTROL_PLANE_FILES: [&str; 3] = ["bin/etcd", "bin/etcdctl", "bin/hyperkube"];

/// Started with the images, once the whole bundle is there.
const NODE_RUNTIME: [Unit; 2] = [Unit::Containerd, Unit::KubeProxy];

/// Started once the local apiserver is ready: their first leader-election
/// attempt then succeeds, where one against an apiserver still starting
/// fails and waits out the retry period (2 s and jitter) before the
/// controllers that create the add-ons' pods begin.
pub(super) const AFTER_READY: [Unit; 2] = [Unit::KubeControllerManager, Unit::KubeScheduler];

/// `units` (without etcd when it runs on dedicated hosts) and, when the
/// cluster has a virtual IP, keepalived (after the apiserver it probes).
pub(super) fn with_vip(run: &UpRun, units: &[Unit]) -> Vec<Unit> {
    let mut units = run.ctx().controller_units(units);
    if run.ctx().virtual_ip().is_some() {
        units.push(Unit::Vip);
    }
    units
}

/// Certificates with fewer days left are re-issued by `up`.
pub(in crate::up) const RENEW_DAYS: i64 = 30;

pub(super) struct Preflight;

impl Phase<UpRun, UpPhase, anyhow::Error> for Preflight {
    fn key(&self) -> UpPhase {
        UpPhase::Preflight
    }
    fn title(&self) -> &'static str {
        "check the host can be a controller"
    }
    fn effect(&self) -> Effect {
        Effect::Observe
    }
    fn plan<'a>(&'a self, _: &'a UpRun) -> Plan<'a> {
        async { Ok(vec!["check the host".to_string()]) }
            .map(with_causes)
            .boxed()
    }
    fn run<'a>(&'a self, run: &'a UpRun, _: &'a Live) -> Run<'a> {
        async move {
            let session = run.session()?;
            let report = converge::preflight(session, Role::Controller).await?;
            let mut problems: Vec<String> = report.error_text().into_iter().collect();
            let vip = run.ctx().virtual_ip();
            if vip.is_some() && !report.missing_for_vip.is_empty() {
                problems.push(format!(
                    "- virtual IP: {} missing: the controllers hold the endpoint with keepalived, probing /readyz with curl (Debian: apt-get install keepalived curl)",
                    report.missing_for_vip.join(" and ")
                ));
            }
            if !problems.is_empty() {
                bail!(
                    "the host is not ready; nothing was changed:\n{}",
                    problems.join("\n")
                );
            }
            let vip_route = match vip {
                Some(_) => Some(interface_of(session, &run.link.controller.address).await?),
                None => None,
            };
            let etcd_data = session
                .output(
                    &Command::shell(format!(
                        "test -d {}/member && echo yes || echo no",
                        kubeup_provision::hostplan::layout::ETCD_DATA
                    ))
                    .privileged(),
                )
                .await?
                .stdout_str()
                .trim()
                == "yes";
            run.set_observed(Observed {
                node_name: run.ctx().node_name(run.link.index, &report.hostname)?,
                vip_route,
                etcd_data,
            });
            let warnings: Vec<String> = report
                .warnings()
                .iter()
                .map(|c| format!("{}: {}", c.name, c.message))
                .collect();
            Ok(warnings.join("; "))
        }
        .map(with_causes)
        .boxed()
    }
}

/// The bundle in three pushes, each phase a share ([`Share`]): the control
/// plane's binaries (phase `binaries`); then, while etcd and the apiserver
/// start, what the controller's own node runs (`artifacts`); then what only
/// the operator hands on to workers (`worker bundle`), while the node
/// starts.
pub(super) struct Artifacts(pub(super) UpPhase);

/// The files only workers use: the controller keeps them (and their
/// compressed copies) for the operator's joins.
const WORKER_ONLY_FILES: [&str; 3] = ["bin/kubenode", "bin/helm", "bin/crictl"];

/// The share of the bundle each of [`Artifacts`]' phases pushes.
enum Share {
    ControlPlane,
    Node,
    Workers,
}

impl Artifacts {
    fn share(&self) -> Share {
        match self.0 {
            UpPhase::Binaries => Share::ControlPlane,
            UpPhase::WorkerBundle => Share::Workers,
            _ => Share::Node,
        }
    }

    async fn converge(&self, run: &UpRun, dry_run: bool) -> Result<Changes> {
        let ctx = run.ctx();
        let share = self.share();
        if matches!(share, Share::ControlPlane) {
            // What goes compressed is kept there for the operator's later uploads.
            node::operator_dirs(run.session()?, dry_run).await?;
        }
        // The images the controller's node imports; the others are kept
        // for workers only.
        let node_images = kubeup_provision::addons::controller_images(
            &ctx.manifest,
            &ctx.loaded.cluster.spec.addons,
        );
        let is_image = |name: &str| {
            ctx.manifest
                .files
                .get(name)
                .is_some_and(|f| f.image.is_some())
        };
        let control_plane = |name: &str| CONTROL_PLANE_FILES.contains(&name);
        let for_workers = |name: &str| {
            WORKER_ONLY_FILES.contains(&name)
                || (is_image(name) && !node_images.files.contains_key(name))
        };
        let node = |name: &str| !control_plane(name) && !for_workers(name);
        let part = match share {
            Share::ControlPlane => converge::Part {
                covers: &control_plane,
                last: false,
            },
            Share::Node => converge::Part {
                covers: &node,
                last: false,
            },
            Share::Workers => converge::Part {
                covers: &for_workers,
                last: true,
            },
        };
        let c = converge::push_bundle_part(
            run.session()?,
            &ctx.bundle_dir,
            &ctx.manifest,
            Some(&ctx.compressed),
            Some(kubeup_provision::hostplan::layout::TRANSFER_CACHE),
            dry_run,
            part,
        )
        .await?;
        run.merge(c.clone());
        Ok(c)
    }
}

impl Phase<UpRun, UpPhase, anyhow::Error> for Artifacts {
    fn key(&self) -> UpPhase {
        self.0
    }
    fn title(&self) -> &'static str {
        match self.share() {
            Share::ControlPlane => "upload the control plane's binaries",
            Share::Node => "upload the binaries and images the controller's node runs",
            Share::Workers => "upload what the operator hands on to workers",
        }
    }
    fn after(&self) -> Option<&'static [UpPhase]> {
        match self.share() {
            Share::ControlPlane => Some(&[UpPhase::Preflight]),
            Share::Node => Some(&[UpPhase::Binaries]),
            Share::Workers => Some(&[UpPhase::Artifacts]),
        }
    }
    fn plan<'a>(&'a self, run: &'a UpRun) -> Plan<'a> {
        async move {
            Ok(would(
                &self.converge(run, true).await?,
                "the bundle is in place",
            ))
        }
        .map(with_causes)
        .boxed()
    }
    fn run<'a>(&'a self, run: &'a UpRun, _: &'a Live) -> Run<'a> {
        async move {
            let c = self.converge(run, false).await?;
            Ok(format!("{} to upload", c.uploaded.len()))
        }
        .map(with_causes)
        .boxed()
    }
}

pub(super) struct Certificates;

impl Certificates {
    async fn converge(&self, run: &UpRun, dry_run: bool) -> Result<Changes> {
        let plan = run.plan()?;
        let cas = &run.ctx().cas;
        let c =
            converge::ensure_certs(run.session()?, &plan.certs, cas, RENEW_DAYS, dry_run).await?;
        run.merge(c.clone());
        Ok(c)
    }
}

impl Phase<UpRun, UpPhase, anyhow::Error> for Certificates {
    fn key(&self) -> UpPhase {
        UpPhase::Certificates
    }
    fn title(&self) -> &'static str {
        "issue the controller's certificates"
    }
    fn after(&self) -> Option<&'static [UpPhase]> {
        Some(&[UpPhase::Preflight])
    }
    fn plan<'a>(&'a self, run: &'a UpRun) -> Plan<'a> {
        async move {
            Ok(would(
                &self.converge(run, true).await?,
                "certificates are valid",
            ))
        }
        .map(with_causes)
        .boxed()
    }
    fn run<'a>(&'a self, run: &'a UpRun, _: &'a Live) -> Run<'a> {
        async move {
            let c = self.converge(run, false).await?;
            Ok(format!("{} issued", c.issued.len()))
        }
        .map(with_causes)
        .boxed()
    }
}

pub(super) struct Configuration;

impl Configuration {
    async fn converge(&self, run: &UpRun, dry_run: bool) -> Result<Changes> {
        let session = run.session()?;
        let c = converge::write_files(session, &run.plan()?.files, dry_run).await?;
        // The list names the certificates' paths too: reset removes what
        // is listed, whichever phase wrote it.
        converge::record_installed(session, &run.installed_paths()?, dry_run).await?;
        run.merge(c.clone());
        Ok(c)
    }
}

impl Phase<UpRun, UpPhase, anyhow::Error> for Configuration {
    fn key(&self) -> UpPhase {
        UpPhase::Configuration
    }
    fn title(&self) -> &'static str {
        "write the configuration and unit files"
    }
    fn after(&self) -> Option<&'static [UpPhase]> {
        Some(&[UpPhase::Preflight])
    }
    fn plan<'a>(&'a self, run: &'a UpRun) -> Plan<'a> {
        async move { Ok(would(&self.converge(run, true).await?, "files are current")) }
            .map(with_causes)
            .boxed()
    }
    fn run<'a>(&'a self, run: &'a UpRun, _: &'a Live) -> Run<'a> {
        async move {
            let c = self.converge(run, false).await?;
            Ok(format!("{} written", c.written.len()))
        }
        .map(with_causes)
        .boxed()
    }
}

pub(super) struct Units;

impl Phase<UpRun, UpPhase, anyhow::Error> for Units {
    fn key(&self) -> UpPhase {
        UpPhase::Units
    }
    fn title(&self) -> &'static str {
        "start the control plane"
    }
    fn after(&self) -> Option<&'static [UpPhase]> {
        Some(&[
            UpPhase::Binaries,
            UpPhase::Certificates,
            UpPhase::Configuration,
            UpPhase::EtcdJoin,
        ])
    }
    fn plan<'a>(&'a self, run: &'a UpRun) -> Plan<'a> {
        async move {
            let (restart, changed) = run.restart();
            // The plan names the kubelet too: up starts it with its Node.
            let c = converge::ensure_units(
                run.session()?,
                &with_vip(run, &Unit::CONTROLLER),
                &restart,
                changed,
                true,
            )
            .await?;
            run.merge(c.clone());
            Ok(would(&c, "all running"))
        }
        .map(with_causes)
        .boxed()
    }
    fn run<'a>(&'a self, run: &'a UpRun, _: &'a Live) -> Run<'a> {
        async move {
            let session = run.session()?;
            node::apply_sysctls(session, false).await?;
            let (restart, changed) = run.restart();
            let mut c = converge::ensure_units(
                session,
                &with_vip(run, &CONTROL_PLANE),
                &restart,
                changed,
                false,
            )
            .await?;
            if run.ctx().virtual_ip().is_none() {
                c.merge(retire_vip(session).await?);
            }
            let detail = c.units_summary();
            run.merge(c);
            Ok(detail)
        }
        .map(with_causes)
        .boxed()
    }
}

pub(super) struct Images;

impl Images {
    async fn converge(&self, run: &UpRun, dry_run: bool) -> Result<Vec<String>> {
        let ctx = run.ctx();
        if !dry_run {
            // The units phase's plan names these.
            let (restart, changed) = run.restart();
            let c = converge::ensure_units(run.session()?, &NODE_RUNTIME, &restart, changed, false)
                .await?;
            run.merge(c);
        }
        let images = kubeup_provision::addons::controller_images(
            &ctx.manifest,
            &ctx.loaded.cluster.spec.addons,
        );
        let imported = converge::import_images(run.session()?, &images, dry_run).await?;
        run.merge(Changes {
            uploaded: imported.iter().map(|i| format!("image {i}")).collect(),
            ..Changes::default()
        });
        Ok(imported)
    }
}

impl Phase<UpRun, UpPhase, anyhow::Error> for Images {
    fn key(&self) -> UpPhase {
        UpPhase::Images
    }
    fn title(&self) -> &'static str {
        "start containerd and kube-proxy, import the images into containerd"
    }
    fn after(&self) -> Option<&'static [UpPhase]> {
        Some(&[UpPhase::Artifacts, UpPhase::Units])
    }
    fn plan<'a>(&'a self, run: &'a UpRun) -> Plan<'a> {
        async move {
            let imported = self.converge(run, true).await?;
            Ok(if imported.is_empty() {
                vec!["images are present".to_string()]
            } else {
                vec![format!("import {}", imported.join(", "))]
            })
        }
        .map(with_causes)
        .boxed()
    }
    fn run<'a>(&'a self, run: &'a UpRun, _: &'a Live) -> Run<'a> {
        async move {
            let imported = self.converge(run, false).await?;
            Ok(if imported.is_empty() {
                "present".to_string()
            } else {
                imported.join(", ")
            })
        }
        .map(with_causes)
        .boxed()
    }
}

/// A virtual IP taken out of cluster.yaml: keepalived stops (giving the
/// address up) and its files go. Nothing when it never ran here.
async fn retire_vip(session: &Session) -> Result<Changes> {
    let unit = kubeup_provision::hostplan::layout::SYSTEMD.to_string() + "/" + &Unit::Vip.service();
    let script = format!(
        "if [ -e {unit} ]; then systemctl disable --now --quiet {service}; rm -f {unit} {config}; systemctl daemon-reload; echo retired; fi",
        service = Unit::Vip.service(),
        config = apilb::KEEPALIVED_CONFIG,
    );
    let out = session
        .output(&Command::shell(script).privileged())
        .await
        .context("failed to stop keepalived of the removed virtual IP")?;
    let mut c = Changes::default();
    if out.stdout_str().trim() == "retired" {
        c.restarted
            .push(format!("{} (stopped: no virtual IP)", Unit::Vip.name()));
    }
    Ok(c)
}

/// The interface holding the controller's own `address`: where keepalived
/// puts the virtual IP and speaks VRRP from. (Not the route to the virtual
/// IP: on the controller holding it, that route is `lo`.)
async fn interface_of(session: &Session, address: &str) -> Result<(String, String)> {
    let out = session
        .output(&Command::new("ip").args([
            "-o",
            "-4",
            "addr",
            "show",
            "to",
            &format!("{address}/32"),
        ]))
        .await
        .with_context(|| format!("failed to list the host's addresses to find {address}"))?;
    let text = out.stdout_str();
    // "2: eth0    inet 198.18.0.11/24 brd … scope global eth0"
    let interface = text
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .map(|name| name.split('@').next().unwrap_or(name).to_string());
    match interface {
        Some(dev) if apilb::is_interface_name(&dev) => Ok((dev, address.to_string())),
        _ => bail!(
            "no interface of the host holds {address} (`ip -4 addr show to {address}/32` said {:?}): with a virtual IP, each controller's address in cluster.yaml must be one of its own",
            text.trim()
        ),
    }
}

/// A dry run's lines for what a step would change; `none` when nothing.
pub(in crate::up) fn would(c: &Changes, none: &str) -> Vec<String> {
    let mut lines = vec![];
    let mut count = |verb: &str, items: &[String], what: &str| {
        if !items.is_empty() {
            lines.push(format!("{verb} {} {what}", items.len()));
        }
    };
    count("upload", &c.uploaded, "files");
    count("write", &c.written, "files");
    let mut names = |verb: &str, items: &[String]| {
        if !items.is_empty() {
            lines.push(format!("{verb} {}", items.join(", ")));
        }
    };
    names("issue", &c.issued);
    names("start", &c.started);
    names("restart", &c.restarted);
    if lines.is_empty() {
        lines.push(none.to_string());
    }
    lines
}
