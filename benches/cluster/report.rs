//! The table the harness prints at the end.

use std::fmt::Write as _;
use std::time::Duration;

pub struct Row {
    pub scenario: String,
    pub figure: String,
    pub value: String,
}

#[derive(Default)]
pub struct Report {
    pub rows: Vec<Row>,
}

impl Report {
    pub fn add(&mut self, scenario: &str, figure: &str, value: impl Into<String>) {
        let row = Row {
            scenario: scenario.into(),
            figure: figure.into(),
            value: value.into(),
        };
        eprintln!("  {:<22} {:<58} {}", row.scenario, row.figure, row.value);
        self.rows.push(row);
    }

    /// A Markdown table, aligned for the terminal too.
    pub fn markdown(&self) -> String {
        let header = ["scenario", "figure", "value"];
        let width = |i: usize| {
            self.rows
                .iter()
                .map(|r| [&r.scenario, &r.figure, &r.value][i].chars().count())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        };
        let widths = [width(0), width(1), width(2)];
        let mut out = String::new();
        let line = |out: &mut String, cells: [&str; 3]| {
            let _ = writeln!(
                out,
                "| {:<w0$} | {:<w1$} | {:>w2$} |",
                cells[0],
                cells[1],
                cells[2],
                w0 = widths[0],
                w1 = widths[1],
                w2 = widths[2]
            );
        };
        line(&mut out, header);
        let _ = writeln!(
            out,
            "|{}|{}|{}:|",
            "-".repeat(widths[0] + 2),
            "-".repeat(widths[1] + 2),
            "-".repeat(widths[2] + 1)
        );
        for r in &self.rows {
            line(&mut out, [&r.scenario, &r.figure, &r.value]);
        }
        out
    }
}

pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

pub fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

pub fn millis(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

pub fn rate(count: f64, d: Duration) -> String {
    if d.is_zero() {
        return "n/a".into();
    }
    format!("{:.0} /s", count / d.as_secs_f64())
}
