//! The harness's flags (after `--` on the cargo command line).

use std::time::Duration;

use anyhow::{Context as _, bail};

pub const USAGE: &str = "\
cargo bench --bench cluster -- [FLAGS]
  --scenarios LIST        memory,enrollment,signup (default: all)
  --objects LIST          view sizes for the memory scenario (default: 10000,100000)
  --enroll-contacts N     contacts a backfilling policy enrolls (default: 10000)
  --signup-users N        Users created in the signup scenario (default: 10000)
  --signup-rate LIST      Users created per second, one wave per rate (default: 500,2000)
  --latency-ms N          fake API write latency (default: 5)
  --max-writes N          fake API concurrent writes (default: 64)
  --clients N             concurrent clients of the raw-create baseline (default: 16)
  --serve-arg ARG         passed to `milo-webhook serve` (repeatable)
  --quiet-s N             settled = no API requests or reconciles for this long (default: 3)
  --timeout-s N           bound on every wait (default: 600)
  --markdown-out FILE     also write the table to FILE";

#[derive(Clone, Debug)]
pub struct Options {
    pub scenarios: Vec<String>,
    pub objects: Vec<usize>,
    pub enroll_contacts: usize,
    pub signup_users: usize,
    pub signup_rates: Vec<f64>,
    pub latency: Duration,
    pub max_writes: usize,
    pub clients: usize,
    pub serve_args: Vec<String>,
    pub quiet: Duration,
    pub timeout: Duration,
    pub markdown_out: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            scenarios: ["memory", "enrollment", "signup"]
                .map(String::from)
                .to_vec(),
            objects: vec![10_000, 100_000],
            enroll_contacts: 10_000,
            signup_users: 10_000,
            signup_rates: vec![500.0, 2000.0],
            latency: Duration::from_millis(5),
            max_writes: 64,
            clients: 16,
            serve_args: Vec::new(),
            quiet: Duration::from_secs(3),
            timeout: Duration::from_secs(600),
            markdown_out: None,
        }
    }
}

impl Options {
    /// Parses the flags; `cargo bench` adds `--bench`, which is ignored.
    pub fn parse(args: impl IntoIterator<Item = String>) -> anyhow::Result<Self> {
        let mut o = Options::default();
        let mut args = args.into_iter();
        while let Some(flag) = args.next() {
            let (flag, inline) = match flag.split_once('=') {
                Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
                _ => (flag, None),
            };
            if matches!(flag.as_str(), "--bench" | "--nocapture") {
                continue;
            }
            if matches!(flag.as_str(), "-h" | "--help") {
                bail!("{USAGE}");
            }
            let mut value = || -> anyhow::Result<String> {
                match &inline {
                    Some(v) => Ok(v.clone()),
                    None => args.next().with_context(|| format!("{flag} needs a value")),
                }
            };
            match flag.as_str() {
                "--scenarios" => o.scenarios = list(&value()?),
                "--objects" => {
                    o.objects = list(&value()?)
                        .iter()
                        .map(|n| number(n))
                        .collect::<anyhow::Result<_>>()?
                }
                "--enroll-contacts" => o.enroll_contacts = number(&value()?)?,
                "--signup-users" => o.signup_users = number(&value()?)?,
                "--signup-rate" => {
                    o.signup_rates = list(&value()?)
                        .iter()
                        .map(|r| r.parse::<f64>().context("--signup-rate"))
                        .collect::<anyhow::Result<_>>()?
                }
                "--latency-ms" => o.latency = Duration::from_millis(number(&value()?)? as u64),
                "--max-writes" => o.max_writes = number(&value()?)?,
                "--clients" => o.clients = number(&value()?)?.max(1),
                "--serve-arg" => o.serve_args.push(value()?),
                "--quiet-s" => o.quiet = Duration::from_secs(number(&value()?)? as u64),
                "--timeout-s" => o.timeout = Duration::from_secs(number(&value()?)? as u64),
                "--markdown-out" => o.markdown_out = Some(value()?),
                other => bail!("unknown flag {other}\n{USAGE}"),
            }
        }
        for s in &o.scenarios {
            if !matches!(s.as_str(), "memory" | "enrollment" | "signup") {
                bail!("unknown scenario {s}\n{USAGE}");
            }
        }
        if o.signup_rates.iter().any(|r| *r <= 0.0 || !r.is_finite()) {
            bail!("--signup-rate takes positive rates");
        }
        Ok(o)
    }

    pub fn runs(&self, scenario: &str) -> bool {
        self.scenarios.iter().any(|s| s == scenario)
    }
}

fn list(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// `10000`, `10_000`, `10k`.
fn number(text: &str) -> anyhow::Result<usize> {
    let t = text.replace('_', "").to_lowercase();
    let (digits, scale) = match t.strip_suffix('k') {
        Some(d) => (d.to_owned(), 1_000),
        None => (t.clone(), 1),
    };
    Ok(digits
        .parse::<usize>()
        .with_context(|| format!("not a number: {text}"))?
        * scale)
}
