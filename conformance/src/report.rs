//! What the suite found: one line per rule, and a summary.

use std::fmt::Write;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    /// A MUST the server broke, and how.
    Fail(String),
    /// A SHOULD the server did not meet.
    Warn(String),
    /// Not checked, and why (no payment hook, an earlier step failed).
    Skip(String),
}

impl Outcome {
    /// Its kind, lower case, and what was found (nothing for a pass).
    fn parts(&self) -> (&'static str, Option<&str>) {
        match self {
            Outcome::Pass => ("pass", None),
            Outcome::Fail(w) => ("fail", Some(w)),
            Outcome::Warn(w) => ("warn", Some(w)),
            Outcome::Skip(w) => ("skip", Some(w)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// Stable identifier, the one PROTOCOL.md gives beside the rule.
    pub id: &'static str,
    pub rule: &'static str,
    pub outcome: Outcome,
}

#[derive(Debug, Default, Clone)]
pub struct Report {
    pub lines: Vec<Line>,
}

impl Report {
    pub fn add(&mut self, id: &'static str, rule: &'static str, outcome: Outcome) {
        self.lines.push(Line { id, rule, outcome });
    }

    pub fn count(&self, f: impl Fn(&Outcome) -> bool) -> usize {
        self.lines.iter().filter(|l| f(&l.outcome)).count()
    }

    pub fn failed(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Fail(_)))
    }

    /// The outcome of rule `id` (the first, if checked more than once).
    pub fn outcome(&self, id: &str) -> Option<&Outcome> {
        self.lines.iter().find(|l| l.id == id).map(|l| &l.outcome)
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        for l in &self.lines {
            let (kind, why) = l.outcome.parts();
            let _ = writeln!(
                out,
                "{}  {:<28} {}",
                kind.to_ascii_uppercase(),
                l.id,
                l.rule
            );
            if let Some(w) = why {
                let w: String = w.chars().take(600).collect();
                let _ = writeln!(out, "      {:<28} -> {w}", "");
            }
        }
        let _ = writeln!(
            out,
            "\n{} rules: {} passed, {} failed, {} warnings, {} skipped",
            self.lines.len(),
            self.count(|o| *o == Outcome::Pass),
            self.failed(),
            self.count(|o| matches!(o, Outcome::Warn(_))),
            self.count(|o| matches!(o, Outcome::Skip(_))),
        );
        out
    }

    pub fn to_json(&self) -> serde_json::Value {
        let lines: Vec<serde_json::Value> = self
            .lines
            .iter()
            .map(|l| {
                let (outcome, detail) = l.outcome.parts();
                serde_json::json!({"id": l.id, "rule": l.rule, "outcome": outcome, "detail": detail})
            })
            .collect();
        serde_json::json!({"rules": lines, "failed": self.failed()})
    }
}
