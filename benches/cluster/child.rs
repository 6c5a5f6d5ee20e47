//! The milo-webhook process under test: started in cluster mode against the fake, killed when
//! dropped (also when the harness panics or dies: the child gets SIGKILL with its parent), and
//! read from outside: RSS from /proc, /readyz and /metrics from its admin port.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// The release binary `cargo bench` built next to this bench.
pub const BINARY: &str = env!("CARGO_BIN_EXE_milo-webhook");

/// How to start the server.
pub struct Launch<'a> {
    pub kubeconfig: &'a Path,
    pub identity: &'a str,
    pub lease_namespace: &'a str,
    /// Passed through to `serve` after the harness's own flags.
    pub extra: &'a [String],
    pub workdir: &'a Path,
}

pub struct Server {
    child: Child,
    pub admin: SocketAddr,
    pub log: PathBuf,
    pub started: Instant,
}

/// A loopback port nothing listens on right now.
fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port())
}

impl Server {
    pub fn start(launch: &Launch) -> anyhow::Result<Self> {
        let admin: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
        let listen: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
        let log = launch.workdir.join(format!("{}.log", launch.identity));
        let stderr = std::fs::File::create(&log)?;
        let mut command = Command::new(BINARY);
        command
            .arg("serve")
            .arg("--kubeconfig")
            .arg(launch.kubeconfig)
            .arg("--listen")
            .arg(listen.to_string())
            .arg("--admin-listen")
            .arg(admin.to_string())
            .arg("--certs-dir")
            .arg(launch.workdir.join("certs"))
            .arg("--leader-election-namespace")
            .arg(launch.lease_namespace)
            .arg("--leader-election-identity")
            .arg(launch.identity)
            .arg("--shutdown-delay")
            .arg("0s")
            .args(launch.extra)
            .env_remove("KUBECONFIG")
            .env(
                "RUST_LOG",
                std::env::var("BENCH_RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        // SAFETY: prctl is async-signal-safe and touches only this (forked) process.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {BINARY}"))?;
        Ok(Self {
            child,
            admin,
            log,
            started: Instant::now(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails if the process has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "milo-webhook exited ({status}); last log lines:\n{}",
                self.log_tail(20)
            );
        }
        Ok(())
    }

    /// `VmRSS` and `VmHWM` (peak) in bytes.
    pub fn memory(&self) -> anyhow::Result<(u64, u64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        let field = |name: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                .map_or(0, |kib| kib * 1024)
        };
        Ok((field("VmRSS:"), field("VmHWM:")))
    }

    /// GET on the admin port: the status code and body.
    pub fn admin_get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        let mut stream = TcpStream::connect_timeout(&self.admin, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        let code = response
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .context("no HTTP status line")?;
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        Ok((code, body))
    }

    pub fn ready(&self) -> bool {
        matches!(self.admin_get("/readyz"), Ok((200, _)))
    }

    /// The server's metrics, parsed into a [`Scrape`].
    pub fn scrape(&self) -> anyhow::Result<Scrape> {
        let (code, body) = self.admin_get("/metrics")?;
        if code != 200 {
            bail!("/metrics answered {code}");
        }
        Ok(Scrape(body))
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Log lines at WARN or ERROR.
    pub fn warnings(&self) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
            .count()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One /metrics text.
pub struct Scrape(pub String);

impl Scrape {
    /// The sum of every sample of `name` (all label sets).
    pub fn sum(&self, name: &str) -> f64 {
        self.samples(name).map(|(_, v)| v).sum()
    }

    /// `(labels, value)` of every sample of `name`.
    pub fn samples<'a>(&'a self, name: &'a str) -> impl Iterator<Item = (&'a str, f64)> + 'a {
        self.0.lines().filter_map(move |line| {
            let rest = line.strip_prefix(name)?;
            let (labels, value) = match rest.strip_prefix('{') {
                Some(r) => r.split_once("} ")?,
                None => ("", rest.strip_prefix(' ')?),
            };
            Some((labels, value.trim().parse().ok()?))
        })
    }

    /// Reconciles run so far, all controllers.
    pub fn reconciles(&self) -> f64 {
        self.sum("milo_webhook_controller_reconciles_total")
    }

    pub fn leader(&self) -> bool {
        self.sum("milo_webhook_controller_leader") >= 1.0
    }
}
