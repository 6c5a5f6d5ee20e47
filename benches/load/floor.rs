//! The floor the server is measured against: the smallest webhook server of the same stack (axum,
//! hyper-util's auto HTTP/1.1 + HTTP/2 builder, rustls with the same certificate) that parses the
//! review into a `serde_json::Value` and allows it. It is this bench binary re-executed with
//! `MILO_LOAD_FLOOR=<addr>` and `MILO_LOAD_FLOOR_CERTS=<dir>`, so it runs as its own process,
//! pinned to the same core as the server it is compared with.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use std::net::TcpListener as StdListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use axum::Router;
use axum::body::Bytes;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::post;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

/// Environment variable naming the address the floor listens on.
pub const ADDR_VAR: &str = "MILO_LOAD_FLOOR";
/// Environment variable naming the directory with `tls.crt` and `tls.key`.
pub const CERTS_VAR: &str = "MILO_LOAD_FLOOR_CERTS";

/// Runs the floor forever if this process was started as one; returns otherwise.
pub fn run_if_asked() {
    let (Ok(addr), Ok(certs)) = (std::env::var(ADDR_VAR), std::env::var(CERTS_VAR)) else {
        return;
    };
    let result = (|| -> Result<()> {
        let addr: SocketAddr = addr.parse()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        runtime.block_on(serve(addr, Path::new(&certs)))
    })();
    if let Err(error) = result {
        eprintln!("floor server failed: {error:#}");
        std::process::exit(1);
    }
    std::process::exit(0);
}

async fn allow(body: Bytes) -> impl IntoResponse {
    let review: Value = serde_json::from_slice(&body).unwrap_or_default();
    let uid = review.pointer("/request/uid").cloned().unwrap_or_default();
    let reply = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "response": {"uid": uid, "allowed": true}});
    (
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_vec(&reply).unwrap_or_default(),
    )
}

async fn serve(addr: SocketAddr, certs: &Path) -> Result<()> {
    let chain = CertificateDer::pem_file_iter(certs.join("tls.crt"))?
        .collect::<Result<Vec<_>, _>>()
        .context("tls.crt")?;
    let key = PrivateKeyDer::from_pem_file(certs.join("tls.key")).context("tls.key")?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let app = Router::new().fallback(post(allow));
    let listener = TcpListener::bind(addr).await?;
    loop {
        let (tcp, _) = listener.accept().await?;
        tcp.set_nodelay(true)?;
        let (acceptor, app) = (acceptor.clone(), app.clone());
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let service = TowerToHyperService::new(app);
            let _ = Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}

/// The core the server and the floor run on; the client runs on the others.
pub const SERVER_CPU: usize = 0;

/// The cores this bench may use, read once before `pin_client` narrows the process to the client's
/// share (after which `available_parallelism` would count only those, and the server and the
/// floor would silently be left on the client's cores).
fn machine_cpus() -> usize {
    static CPUS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CPUS.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Whether there are cores to spare for pinning the server apart from the client.
fn pinning() -> bool {
    machine_cpus() >= 2
}

/// Cores the client runs on once pinned (at least one).
pub fn client_cpus() -> usize {
    if pinning() { machine_cpus() - 1 } else { 1 }
}

/// The CPUs in a set, for `sched_setaffinity`.
fn cpu_set(cpus: impl IntoIterator<Item = usize>) -> libc::cpu_set_t {
    // SAFETY: cpu_set_t is a plain bit array; all zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for cpu in cpus {
        // SAFETY: CPU_SET writes one bit of the set it is given.
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    set
}

/// Runs the spawned process (and every thread it starts) on `cpu` alone.
pub fn pin(command: &mut Command, cpu: usize) {
    use std::os::unix::process::CommandExt;
    if !pinning() {
        return;
    }
    let set = cpu_set([cpu]);
    // SAFETY: sched_setaffinity is async-signal-safe and touches only the child being set up.
    unsafe {
        command.pre_exec(move || {
            if libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Fails unless the process `pid` runs on `cpu` alone where the bench pins (the pinning once
/// silently did nothing, and every figure compared processes sharing the client's core).
pub fn check_pinned(pid: u32, cpu: usize) -> Result<()> {
    if !pinning() {
        return Ok(());
    }
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let allowed = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .map(str::trim);
    if allowed != Some(cpu.to_string().as_str()) {
        bail!("process {pid} runs on CPUs {allowed:?}, not on CPU {cpu} alone");
    }
    Ok(())
}

/// Keeps this process (the client) off the server's core; threads started later inherit it.
pub fn pin_client() {
    if !pinning() {
        return;
    }
    let set = cpu_set((0..machine_cpus()).filter(|&c| c != SERVER_CPU));
    // SAFETY: sets the calling thread's own affinity from a valid set.
    unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) };
}

/// The floor server (see `load/floor.rs`); killed on drop.
pub struct Floor {
    /// The floor's process.
    pub child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl Drop for Floor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Floor {
    /// Starts the floor with the server's certificate, on the server's core.
    pub async fn start(certs: &Path) -> Result<Floor> {
        let addr = StdListener::bind("127.0.0.1:0")?.local_addr()?;
        let mut command = Command::new(std::env::current_exe()?);
        pin(&mut command, SERVER_CPU);
        let child = command
            .env(ADDR_VAR, addr.to_string())
            .env(CERTS_VAR, certs)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()?;
        let mut floor = Floor { child, addr };
        check_pinned(floor.child.id(), SERVER_CPU)?;
        let started = Instant::now();
        while TcpStream::connect(addr).await.is_err() {
            if let Some(status) = floor.child.try_wait()? {
                bail!("floor server exited ({status})");
            }
            if started.elapsed() > super::READY_TIMEOUT {
                bail!(
                    "floor server not listening within {:?}",
                    super::READY_TIMEOUT
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(floor)
    }
}
