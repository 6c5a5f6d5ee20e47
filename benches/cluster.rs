//! Cluster benchmark: the release `milo-webhook serve` in cluster mode against a local fake
//! Kubernetes API server (`cluster/fake/`), measuring memory with a settled view (as follower
//! and as leader), enrollment and signup throughput, reconciles and API writes, with no real
//! API server.
//!
//! `cargo bench --bench cluster` (flags after `--`; `-- --help` lists them). Everything listens
//! on 127.0.0.1; every wait is bounded by `--timeout-s`; the server is killed on exit.

#[path = "cluster/child.rs"]
mod child;
#[path = "cluster/env.rs"]
mod env;
#[path = "cluster/fake/mod.rs"]
#[allow(dead_code)]
mod fake;
#[path = "cluster/options.rs"]
mod options;
#[path = "cluster/report.rs"]
mod report;
#[path = "cluster/scenarios.rs"]
mod scenarios;
#[path = "cluster/seed.rs"]
mod seed;

use std::time::Instant;

use options::Options;
use report::Report;

fn main() {
    let options = match Options::parse(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(error) => {
            eprintln!("{error}");
            std::process::exit(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let started = Instant::now();
    let report = runtime.block_on(run(&options));
    let table = report.markdown();
    println!("\nmilo-webhook cluster benchmark ({})", describe(&options));
    println!("{table}");
    println!("total {}", report::secs(started.elapsed()));
    if let Some(path) = &options.markdown_out
        && let Err(error) = std::fs::write(path, &table)
    {
        eprintln!("cannot write {path}: {error}");
    }
}

fn describe(o: &Options) -> String {
    let mut text = format!(
        "fake API: {} ms per write, {} concurrent writes; {}",
        o.latency.as_millis(),
        o.max_writes,
        child::BINARY
    );
    if !o.serve_args.is_empty() {
        text.push_str(&format!("; serve {}", o.serve_args.join(" ")));
    }
    text
}

/// Runs the selected scenarios; a failing one is reported as such and the others still run.
async fn run(options: &Options) -> Report {
    let mut report = Report::default();
    let workdir = match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(error) => {
            report.add("setup", "temporary directory", format!("failed: {error}"));
            return report;
        }
    };
    let path = workdir.path();
    if options.runs("memory") {
        eprintln!("memory: empty server (the baseline)");
        match scenarios::memory(options, path, 0, &mut report).await {
            Ok(baseline) => {
                let mut runs = Vec::new();
                for &n in &options.objects {
                    eprintln!("memory: {n} objects");
                    match scenarios::memory(options, path, n, &mut report).await {
                        Ok(run) => runs.push(run),
                        Err(error) => {
                            report.add(&format!("memory {n}"), "run", format!("failed: {error:#}"))
                        }
                    }
                }
                scenarios::per_object(&mut report, &baseline, &runs);
            }
            Err(error) => report.add("memory 0", "run", format!("failed: {error:#}")),
        }
    }
    if options.runs("enrollment") {
        eprintln!("enrollment: {} contacts", options.enroll_contacts);
        if let Err(error) = scenarios::enrollment(options, path, &mut report).await {
            report.add("enrollment", "run", format!("failed: {error:#}"));
        }
    }
    if options.runs("signup") {
        for &signup_rate in &options.signup_rates {
            eprintln!("signup: {} users at {signup_rate}/s", options.signup_users);
            if let Err(error) = scenarios::signup(options, path, signup_rate, &mut report).await {
                report.add("signup", "run", format!("failed: {error:#}"));
            }
        }
    }
    report
}
