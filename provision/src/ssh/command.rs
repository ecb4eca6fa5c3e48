//! Remote commands: built from escaped arguments, never from string
//! concatenation of untrusted input.

use std::time::Duration;

use super::error::{Result, SshError};
use crate::text::{tail_chars, truncate_chars};

/// Quote one word for the remote POSIX shell.
pub fn quote(word: &str) -> Result<String> {
    shlex::try_quote(word)
        .map(|q| q.into_owned())
        .map_err(|_| SshError::InvalidArgument {
            reason: format!(
                "{:?} contains a NUL byte and cannot be passed to a shell",
                truncate_chars(word, 60)
            ),
        })
}

/// A command to run on a host.
///
/// `Command::new(program).arg(a).arg(b)` quotes every word; `Command::shell`
/// takes a script the caller wrote (quote interpolated values with
/// [`quote`]). `stdin` is sent and then closed; `timeout` overrides
/// [`SshOptions::command_timeout`](super::SshOptions::command_timeout);
/// `privileged` runs it as root (through sudo for other users).
#[derive(Clone, Debug, Default)]
pub struct Command {
    script: String,
    invalid: Option<String>,
    pub(crate) stdin: Option<Vec<u8>>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) privileged: bool,
}

impl Command {
    pub fn new(program: impl AsRef<str>) -> Self {
        Self::default().arg(program)
    }

    /// A shell script, run by the login user's shell (`sh -c` under sudo).
    pub fn shell(script: impl Into<String>) -> Self {
        Self {
            script: script.into(),
            ..Self::default()
        }
    }

    pub fn arg(mut self, arg: impl AsRef<str>) -> Self {
        match quote(arg.as_ref()) {
            Ok(q) => {
                if !self.script.is_empty() {
                    self.script.push(' ');
                }
                self.script.push_str(&q);
            }
            Err(e) => self.invalid = Some(e.to_string()),
        }
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        for a in args {
            self = self.arg(a);
        }
        self
    }

    pub fn stdin(mut self, data: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(data.into());
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Run as root: as is for root, through `sudo` for anyone else.
    pub fn privileged(mut self) -> Self {
        self.privileged = true;
        self
    }

    /// The shell text sent to the host (without any sudo wrapper).
    pub fn script(&self) -> &str {
        &self.script
    }

    pub(crate) fn check(&self) -> Result<()> {
        match &self.invalid {
            Some(reason) => Err(SshError::InvalidArgument {
                reason: reason.clone(),
            }),
            None if self.script.trim().is_empty() => Err(SshError::InvalidArgument {
                reason: "empty command".into(),
            }),
            None => Ok(()),
        }
    }

    /// Short form for logs and errors.
    pub fn display(&self) -> String {
        truncate_chars(&self.script, 300)
    }
}

/// What a command produced.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Output {
    /// Exit status; `None` when the command was killed by a signal.
    pub exit_status: Option<u32>,
    /// Signal name when the command was killed by one.
    pub exit_signal: Option<String>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Output {
    pub fn success(&self) -> bool {
        self.exit_status == Some(0)
    }

    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// The last lines of stderr, at most `STDERR_TAIL` bytes, for errors.
    pub fn stderr_tail(&self) -> String {
        const STDERR_TAIL: usize = 2048;
        let s = String::from_utf8_lossy(&self.stderr);
        tail_chars(s.trim_end(), STDERR_TAIL)
    }

    /// `exit status N` / `signal NAME`.
    pub fn status_text(&self) -> String {
        match (&self.exit_status, &self.exit_signal) {
            (Some(code), _) => format!("exit status {code}"),
            (None, Some(sig)) => format!("signal {sig}"),
            (None, None) => "no exit status".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        let c = Command::new("echo")
            .arg("a b")
            .arg("it's")
            .arg("$HOME")
            .arg("");
        assert_eq!(c.script(), r#"echo 'a b' "it's" '$HOME' ''"#);
        assert!(c.check().is_ok());
        assert!(Command::new("echo").arg("a\0b").check().is_err());
        assert!(Command::shell("  ").check().is_err());
    }

    #[test]
    fn tail() {
        let o = Output {
            stderr: format!("{}\nlast line\n", "x".repeat(5000)).into_bytes(),
            ..Default::default()
        };
        let t = o.stderr_tail();
        assert!(t.ends_with("last line") && t.len() <= 2048, "{t}");
    }

    #[test]
    fn display_cuts_multibyte_text_on_a_char_boundary() {
        // 296 ASCII bytes then "é" (2 bytes) straddles the 297 bytes left
        // before the 3-byte "…"; a byte slice there would panic.
        let script = format!("{}é🦀🦀", "x".repeat(296));
        let shown = Command::shell(script).display();
        assert!(shown.ends_with('…') && shown.len() <= 300, "{shown}");
        let emoji = format!("{}🦀🦀", "x".repeat(295));
        let shown = Command::shell(emoji).display();
        assert!(shown.ends_with("x…") && shown.len() <= 300, "{shown}");
    }

    #[test]
    fn tail_starts_on_a_char_boundary() {
        let o = Output {
            stderr: format!("{}last", "é".repeat(3000)).into_bytes(),
            ..Default::default()
        };
        let t = o.stderr_tail();
        assert!(t.starts_with('…') && t.ends_with("last") && t.len() <= 2048);
    }
}
