//! Running `systemctl` and `journalctl` through an injectable runner.
//!
//! With `--root`, a [`RecordingRunner`] stands in: it records the command lines that would have run
//! against the live system and answers from canned replies (empty by default), so a staged-root run
//! never touches the machine's service manager.

use std::collections::HashMap;
use std::process::Command;

use crate::error::Error;

/// What a command printed and how it ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandOutput {
    /// Exit status (0 = success).
    pub status: i32,
    /// Standard output, lossily decoded.
    pub stdout: String,
    /// Standard error, lossily decoded.
    pub stderr: String,
}

/// Runs external commands; the seam tests and `--root` runs replace.
pub trait CommandRunner {
    /// Runs `program` with `args`.
    ///
    /// # Errors
    /// [`Error::Command`] when the program cannot be started.
    fn run(&mut self, program: &str, args: &[&str]) -> Result<CommandOutput, Error>;

    /// Whether commands really run (false for a recorder).
    fn is_live(&self) -> bool;

    /// Command lines recorded instead of run (empty for a live runner).
    fn recorded(&self) -> &[String] {
        &[]
    }
}

/// Runs commands on this machine.
#[derive(Debug, Default)]
pub struct LiveRunner;

impl CommandRunner for LiveRunner {
    fn run(&mut self, program: &str, args: &[&str]) -> Result<CommandOutput, Error> {
        let out = Command::new(program)
            .args(args)
            .output()
            .map_err(|e| Error::Command {
                command: command_line(program, args),
                source: e,
            })?;
        Ok(CommandOutput {
            status: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    fn is_live(&self) -> bool {
        true
    }
}

/// Records command lines instead of running them; answers from `replies` (keyed by the full
/// command line), or with empty success.
#[derive(Debug, Default)]
pub struct RecordingRunner {
    /// Every command line asked for, in order.
    pub log: Vec<String>,
    /// Canned replies keyed by the full command line.
    pub replies: HashMap<String, CommandOutput>,
}

impl RecordingRunner {
    /// A recorder with no canned replies.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a canned reply (stdout, status 0) for `command_line`.
    pub fn reply(&mut self, command_line: &str, stdout: &str) {
        self.replies.insert(
            command_line.to_string(),
            CommandOutput {
                status: 0,
                stdout: stdout.to_string(),
                stderr: String::new(),
            },
        );
    }
}

impl CommandRunner for RecordingRunner {
    fn run(&mut self, program: &str, args: &[&str]) -> Result<CommandOutput, Error> {
        let line = command_line(program, args);
        self.log.push(line.clone());
        Ok(self.replies.get(&line).cloned().unwrap_or_default())
    }

    fn is_live(&self) -> bool {
        false
    }

    fn recorded(&self) -> &[String] {
        &self.log
    }
}

/// `program arg1 arg2` (arguments with spaces are single-quoted), for logs and replies.
pub fn command_line(program: &str, args: &[&str]) -> String {
    let mut s = program.to_string();
    for a in args {
        s.push(' ');
        if a.is_empty() || a.contains(char::is_whitespace) {
            s.push('\'');
            s.push_str(a);
            s.push('\'');
        } else {
            s.push_str(a);
        }
    }
    s
}

/// `systemctl daemon-reload`.
///
/// # Errors
/// When the command cannot start or fails.
pub fn daemon_reload(runner: &mut dyn CommandRunner) -> Result<(), Error> {
    checked(runner, "systemctl", &["daemon-reload"])
}

/// `systemctl restart <unit>`.
///
/// # Errors
/// When the command cannot start or fails.
pub fn restart(runner: &mut dyn CommandRunner, unit: &str) -> Result<(), Error> {
    checked(runner, "systemctl", &["restart", unit])
}

/// `systemctl show -p <property> --value <unit>`, trimmed.
///
/// # Errors
/// When the command cannot start or fails.
pub fn show_property(
    runner: &mut dyn CommandRunner,
    unit: &str,
    property: &str,
) -> Result<String, Error> {
    let out = runner.run("systemctl", &["show", "-p", property, "--value", unit])?;
    if out.status != 0 {
        return Err(Error::CommandFailed {
            command: command_line("systemctl", &["show", "-p", property, "--value", unit]),
            stderr: out.stderr.trim().to_string(),
        });
    }
    Ok(out.stdout.trim().to_string())
}

/// `journalctl -u <unit> --since <since> --no-pager -o cat`.
///
/// # Errors
/// When the command cannot start or fails.
pub fn journal_since(
    runner: &mut dyn CommandRunner,
    unit: &str,
    since: &str,
) -> Result<String, Error> {
    let args = ["-u", unit, "--since", since, "--no-pager", "-o", "cat"];
    let out = runner.run("journalctl", &args)?;
    if out.status != 0 {
        return Err(Error::CommandFailed {
            command: command_line("journalctl", &args),
            stderr: out.stderr.trim().to_string(),
        });
    }
    Ok(out.stdout)
}

fn checked(runner: &mut dyn CommandRunner, program: &str, args: &[&str]) -> Result<(), Error> {
    let out = runner.run(program, args)?;
    if out.status != 0 {
        return Err(Error::CommandFailed {
            command: command_line(program, args),
            stderr: out.stderr.trim().to_string(),
        });
    }
    Ok(())
}
