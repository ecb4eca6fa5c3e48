//! Progress for long commands: a live display on a terminal (indicatif),
//! plain timestamped lines otherwise, JSON event lines for machines.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

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
}

/// One running phase on one host; finish it with `done` or `fail`.
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
        }
    }

    pub fn phase(&self, host: &str, name: &'static str) -> Phase<'_> {
        let bar = match self.mode {
            Mode::Tty => {
                let bar = ProgressBar::new_spinner();
                bar.set_style(
                    ProgressStyle::with_template("{spinner} {msg} {elapsed}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                bar.set_message(format!("[{host}] {name}"));
                bar.enable_steady_tick(Duration::from_millis(120));
                Some(bar)
            }
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
            Mode::Tty => eprintln!("  [{host}] {message}"),
            Mode::Plain => self.line(host, "info", message, ""),
            Mode::Json => self.json(host, "info", "info", message, None),
        }
    }

    fn line(&self, host: &str, phase: &str, event: &str, detail: &str) {
        let ts = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let sep = if detail.is_empty() { "" } else { ": " };
        eprintln!("{ts} [{host}] {phase} {event}{sep}{detail}");
    }

    fn json(&self, host: &str, phase: &str, event: &str, detail: &str, elapsed: Option<Duration>) {
        let v = serde_json::json!({
            "time": time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
            "host": host, "phase": phase, "event": event, "detail": detail,
            "elapsedSeconds": elapsed.map(|e| e.as_secs_f64()),
        });
        println!("{v}");
    }

    pub fn total(&self) -> Duration {
        self.started.elapsed()
    }
}

impl Phase<'_> {
    pub fn done(self, detail: &str) {
        let elapsed = self.started.elapsed();
        match (self.progress.mode, &self.bar) {
            (Mode::Tty, Some(bar)) => {
                let sep = if detail.is_empty() { "" } else { " — " };
                bar.finish_and_clear();
                eprintln!(
                    "✓ [{}] {} ({:.1}s){sep}{detail}",
                    self.host,
                    self.name,
                    elapsed.as_secs_f64()
                );
            }
            (Mode::Json, _) => {
                self.progress
                    .json(&self.host, self.name, "done", detail, Some(elapsed))
            }
            _ => self.progress.line(
                &self.host,
                self.name,
                &format!("done in {:.1}s", elapsed.as_secs_f64()),
                detail,
            ),
        }
    }

    pub fn fail(self, error: &str) {
        let elapsed = self.started.elapsed();
        match (self.progress.mode, &self.bar) {
            (Mode::Tty, Some(bar)) => {
                bar.finish_and_clear();
                eprintln!(
                    "✗ [{}] {} ({:.1}s)",
                    self.host,
                    self.name,
                    elapsed.as_secs_f64()
                );
            }
            (Mode::Json, _) => {
                self.progress
                    .json(&self.host, self.name, "failed", error, Some(elapsed))
            }
            _ => self.progress.line(&self.host, self.name, "failed", error),
        }
    }
}
