//! A ✓/✗ checklist, printed like the seed's, or as JSON.

use std::io::Write;

use serde::Serialize;

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mark {
    /// Passed.
    Pass,
    /// Failed: the command exits non-zero.
    Fail,
    /// Worth a look; does not fail the command.
    Warn,
    /// Information only.
    Info,
}

impl Mark {
    fn symbol(self) -> &'static str {
        match self {
            Self::Pass => "✓",
            Self::Fail => "✗",
            Self::Warn => "!",
            Self::Info => "-",
        }
    }
}

/// One line of a checklist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Stable identifier (for JSON consumers and tests).
    pub id: String,
    /// Outcome.
    pub mark: Mark,
    /// What was checked and what was found.
    pub message: String,
    /// How to fix it, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

/// An ordered list of checks.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Checklist {
    /// The checks, in the order run.
    pub checks: Vec<Check>,
}

impl Checklist {
    /// Adds a check.
    pub fn add(&mut self, id: &str, mark: Mark, message: impl Into<String>) {
        self.checks.push(Check {
            id: id.to_string(),
            mark,
            message: message.into(),
            fix: None,
        });
    }

    /// Adds a check with a fix line.
    pub fn add_fix(&mut self, id: &str, mark: Mark, message: impl Into<String>, fix: String) {
        self.checks.push(Check {
            id: id.to_string(),
            mark,
            message: message.into(),
            fix: Some(fix),
        });
    }

    /// The first check with `id`.
    pub fn get(&self, id: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.id == id)
    }

    /// Whether any check failed.
    pub fn failed(&self) -> bool {
        self.checks.iter().any(|c| c.mark == Mark::Fail)
    }

    /// Prints the list (`--json`: one JSON object).
    pub fn print(&self, json: bool, out: &mut dyn Write) {
        if json {
            let v = serde_json::json!({ "ok": !self.failed(), "checks": self.checks });
            writeln!(
                out,
                "{}",
                serde_json::to_string_pretty(&v).unwrap_or_default()
            )
            .ok();
            return;
        }
        for c in &self.checks {
            writeln!(out, "{} {}", c.mark.symbol(), c.message).ok();
            if let Some(f) = &c.fix {
                writeln!(out, "    fix: {f}").ok();
            }
        }
    }
}
