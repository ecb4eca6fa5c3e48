//! Progress for long commands: a live display on a terminal (indicatif, one
//! spinner per running phase, since phases may overlap), plain timestamped
//! lines otherwise, JSON event lines for machines (`-o json`).
//!
//! The phase engine reports through [`phase::Progress`]; the command ends
//! the stream with [`Progress::summary`] or [`Progress::failed`] on every
//! exit path, so a JSON reader always sees how the run ended.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::BoxFuture;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use kubeup_provision::phase::{self, Event, PhaseKey, Step};

use crate::Output;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Tty,
    Plain,
    Json,
}

pub struct Progress {
    mode: Mode,
    started: Instant,
    bars: MultiProgress,
    /// The engine's running phases by (host, phase): when each started and
    /// its spinner.
    running: Mutex<HashMap<(String, &'static str), Running>>,
}

struct Running {
    since: Instant,
    bar: Option<ProgressBar>,
}

/// One running phase on one host (for flows the engine does not walk, such
/// as following a join); finish it with `done` or `fail`.
pub struct Phase<'a> {
    progress: &'a Progress,
    host: String,
    name: &'static str,
    started: Instant,
    bar: Option<ProgressBar>,
}

impl Progress {
    pub fn new(output: Output) -> Self {
        let mode = match output {
            Output::Json => Mode::Json,
            Output::Text if std::io::stderr().is_terminal() => Mode::Tty,
            Output::Text => Mode::Plain,
        };
        Self {
            mode,
            started: Instant::now(),
            bars: MultiProgress::new(),
            running: Mutex::new(HashMap::new()),
        }
    }

    pub fn phase(&self, host: &str, name: &'static str) -> Phase<'_> {
        let bar = match self.mode {
            Mode::Tty => Some(self.spinner(&format!("[{host}] {name}"))),
            Mode::Plain => {
                self.line(host, name, "started", "");
                None
            }
            Mode::Json => {
                self.json(host, name, "started", "", None);
                None
            }
        };
        Phase {
            progress: self,
            host: host.into(),
            name,
            started: Instant::now(),
            bar,
        }
    }

    /// A one-off message not tied to a phase.
    pub fn info(&self, host: &str, message: &str) {
        match self.mode {
            Mode::Tty => self.print(&format!("  [{host}] {message}")),
            Mode::Plain => self.line(host, "info", message, ""),
            Mode::Json => self.json(host, "info", "info", message, None),
        }
    }

    /// The run succeeded: in JSON its last event, `summary` with `fields`
    /// (text output prints its own report).
    pub fn summary(&self, fields: serde_json::Value) {
        if self.mode != Mode::Json {
            return;
        }
        let mut event = serde_json::json!({
            "time": now(), "event": "summary",
            "elapsedSeconds": self.total().as_secs_f64(),
        });
        if let (Some(e), serde_json::Value::Object(f)) = (event.as_object_mut(), fields) {
            e.extend(f);
        }
        emit(&event);
    }

    /// The run failed: in JSON its last event, `failed` for the whole
    /// command, naming the phase and host when one failed (the phase's own
    /// `failed` event came before). Text output leaves the error to `main`.
    pub fn failed(&self, command: &str, at: Option<(&str, &str)>, error: &anyhow::Error) {
        if self.mode != Mode::Json {
            return;
        }
        let v = serde_json::json!({
            "time": now(), "event": "failed", "command": command,
            "phase": serde_json::Value::Null,
            "failedPhase": at.map(|(phase, _)| phase),
            "host": at.map(|(_, host)| host),
            "detail": format!("{error:#}"),
            "elapsedSeconds": self.total().as_secs_f64(),
        });
        emit(&v);
    }

    pub fn total(&self) -> Duration {
        self.started.elapsed()
    }

    fn spinner(&self, message: &str) -> ProgressBar {
        let bar = self.bars.add(ProgressBar::new_spinner());
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg} {elapsed}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_message(message.to_string());
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    }

    /// A line on stderr above the spinners.
    fn print(&self, text: &str) {
        self.bars.suspend(|| eprintln!("{text}"));
    }

    fn line(&self, host: &str, phase: &str, event: &str, detail: &str) {
        let sep = if detail.is_empty() { "" } else { ": " };
        eprintln!("{} [{host}] {phase} {event}{sep}{detail}", now());
    }

    fn json(&self, host: &str, phase: &str, event: &str, detail: &str, elapsed: Option<Duration>) {
        let v = serde_json::json!({
            "time": now(),
            "host": host, "phase": phase, "event": event, "detail": detail,
            "elapsedSeconds": elapsed.map(|e| e.as_secs_f64()),
        });
        emit(&v);
    }

    fn started(&self, host: &str, name: &'static str, title: &str) {
        let bar = match self.mode {
            Mode::Tty => Some(self.spinner(&format!("[{host}] {name}: {title}"))),
            Mode::Plain => {
                self.line(host, name, "started", "");
                None
            }
            Mode::Json => {
                self.json(host, name, "started", "", None);
                None
            }
        };
        let running = Running {
            since: Instant::now(),
            bar,
        };
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert((host.to_string(), name), running);
    }

    /// The phase's end: its spinner gone, how long it ran.
    fn ended(&self, host: &str, name: &'static str) -> Option<Duration> {
        let running = self
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&(host.to_string(), name))?;
        if let Some(bar) = running.bar {
            bar.finish_and_clear();
        }
        Some(running.since.elapsed())
    }

    fn planned(&self, host: &str, name: &'static str, actions: &[String]) {
        let elapsed = self.ended(host, name);
        match self.mode {
            Mode::Json => {
                let v = serde_json::json!({
                    "time": now(), "host": host, "phase": name, "event": "planned",
                    "detail": actions.join("; "), "actions": actions,
                    "elapsedSeconds": elapsed.map(|e| e.as_secs_f64()),
                });
                emit(&v);
            }
            Mode::Tty => {
                let lines: Vec<String> = actions.iter().map(|a| format!("    {a}")).collect();
                self.print(&format!("• [{host}] {name}\n{}", lines.join("\n")));
            }
            Mode::Plain => self.line(host, name, "planned", &actions.join("; ")),
        }
    }
}

impl<K: PhaseKey, E: Send> phase::Progress<K, E> for Progress {
    fn event<'a>(&'a self, event: Event<'a, K>) -> BoxFuture<'a, Result<(), E>> {
        let (host, name) = (event.host, event.phase.name());
        match event.step {
            Step::Started => self.started(host, name, event.title),
            Step::Done { detail, elapsed } => {
                self.ended(host, name);
                self.finish(host, name, Finish::Done(detail), elapsed);
            }
            Step::Failed { error, elapsed } => {
                self.ended(host, name);
                self.finish(host, name, Finish::Failed(error), elapsed);
            }
            Step::Skipped => match self.mode {
                Mode::Json => self.json(host, name, "skipped", "", None),
                Mode::Tty => self.print(&format!("– [{host}] {name}: not needed")),
                Mode::Plain => self.line(host, name, "skipped", ""),
            },
            Step::Planned { actions } => self.planned(host, name, actions),
        }
        async { Ok(()) }.boxed()
    }
}

enum Finish<'a> {
    Done(&'a str),
    Failed(&'a str),
}

impl Progress {
    /// A phase's last line: ✓ or ✗ on a terminal, a line or a JSON event.
    fn finish(&self, host: &str, name: &str, how: Finish<'_>, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        match (self.mode, how) {
            (Mode::Json, Finish::Done(detail)) => {
                self.json(host, name, "done", detail, Some(elapsed))
            }
            (Mode::Json, Finish::Failed(error)) => {
                self.json(host, name, "failed", error, Some(elapsed))
            }
            (Mode::Tty, Finish::Done(detail)) => {
                let sep = if detail.is_empty() { "" } else { " — " };
                self.print(&format!("✓ [{host}] {name} ({secs:.1}s){sep}{detail}"));
            }
            (Mode::Tty, Finish::Failed(_)) => {
                self.print(&format!("✗ [{host}] {name} ({secs:.1}s)"))
            }
            (Mode::Plain, Finish::Done(detail)) => {
                self.line(host, name, &format!("done in {secs:.1}s"), detail)
            }
            // The whole error follows from `main`; its first line says which.
            (Mode::Plain, Finish::Failed(error)) => self.line(
                host,
                name,
                "failed",
                error.lines().next().unwrap_or_default(),
            ),
        }
    }
}

impl Phase<'_> {
    pub fn done(self, detail: &str) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        let elapsed = self.started.elapsed();
        self.progress
            .finish(&self.host, self.name, Finish::Done(detail), elapsed);
    }

    pub fn fail(self, error: &str) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        let elapsed = self.started.elapsed();
        self.progress
            .finish(&self.host, self.name, Finish::Failed(error), elapsed);
    }
}

fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// One JSON event line on stdout. A reader that went away (`| head`) is
/// no reason to fail the command.
fn emit(event: &serde_json::Value) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout().lock(), "{event}");
}
