//! The phases of `up` on the host: looking at it, then bringing its files,
//! certificates, units and images to the plan. In a dry run each says what
//! it would change (it looks at the host, read-only).

use anyhow::{Result, bail};
use futures::FutureExt;
use kubeup_provision::converge::{self, Changes, Role};
use kubeup_provision::hostplan::Unit;
use kubeup_provision::phase::{Effect, Live, Phase};

use super::{Plan, Run, UpPhase};
use crate::up::connect::with_causes;
use crate::up::node;
use crate::up::run::UpRun;

/// Everything but the kubelet, in start order: the kubelet starts with its
/// Node (see [`node::ensure_node`]).
const CONTROL_PLANE: [Unit; 6] = [
    Unit::Containerd,
    Unit::Etcd,
    Unit::KubeApiserver,
    Unit::KubeControllerManager,
    Unit::KubeScheduler,
    Unit::KubeProxy,
];

/// Certificates with fewer days left are re-issued by `up`.
const RENEW_DAYS: i64 = 30;

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
            let report = converge::preflight(run.session()?, Role::Controller).await?;
            if let Some(text) = report.error_text() {
                bail!("the host is not ready; nothing was changed:\n{text}");
            }
            run.render_plan(&report.hostname)?;
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

pub(super) struct Artifacts;

impl Artifacts {
    async fn converge(&self, run: &UpRun, dry_run: bool) -> Result<Changes> {
        let ctx = run.ctx();
        // What goes compressed is kept there for the operator's later uploads.
        node::operator_dirs(run.session()?, dry_run).await?;
        let c = converge::push_bundle(
            run.session()?,
            &ctx.bundle_dir,
            &ctx.manifest,
            Some(&ctx.compressed),
            Some(kubeup_provision::hostplan::layout::TRANSFER_CACHE),
            dry_run,
        )
        .await?;
        run.merge(c.clone());
        Ok(c)
    }
}

impl Phase<UpRun, UpPhase, anyhow::Error> for Artifacts {
    fn key(&self) -> UpPhase {
        UpPhase::Artifacts
    }
    fn title(&self) -> &'static str {
        "upload the bundle's binaries and images"
    }
    fn after(&self) -> Option<&'static [UpPhase]> {
        Some(&[UpPhase::Preflight])
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
            UpPhase::Artifacts,
            UpPhase::Certificates,
            UpPhase::Configuration,
        ])
    }
    fn plan<'a>(&'a self, run: &'a UpRun) -> Plan<'a> {
        async move {
            let (restart, changed) = run.restart();
            // The plan names the kubelet too: up starts it with its Node.
            let c =
                converge::ensure_units(run.session()?, &Unit::CONTROLLER, &restart, changed, true)
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
            let c =
                converge::ensure_units(session, &CONTROL_PLANE, &restart, changed, false).await?;
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
        let imported =
            converge::import_images(run.session()?, &run.ctx().manifest, dry_run).await?;
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
        "import the images into containerd"
    }
    fn after(&self) -> Option<&'static [UpPhase]> {
        Some(&[UpPhase::Units])
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

/// A dry run's lines for what a step would change; `none` when nothing.
pub(super) fn would(c: &Changes, none: &str) -> Vec<String> {
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
