//! Hostile-load benchmark of `milo-webhook serve`: the real binary over real TLS on 127.0.0.1 (its
//! generated development CA, as the tests use), sent hostile bodies from many connections at once
//! while valid reviews keep arriving at a fixed rate. Reports the server's peak resident memory
//! (`VmHWM`) and the valid reviews' latency (p50, p99, max) and failures, quiet and under attack.
//!
//! `cargo bench --bench hostile_load -- [--seconds 10] [--rate 200] [--flood 600]`
//!
//! The attack, all at once for `--seconds`:
//! - `huge`: 8 connections, each sending 8 MiB of `[0,0,…]` with its length, again and again;
//! - `huge-chunked`: 4 connections sending the same without a length (chunked);
//! - `near-limit`: 8 connections sending 2.5 MiB of `[0,0,…]` (under any body limit: the decoder
//!   has to refuse it);
//! - `big-object`: 4 connections sending well-formed reviews whose object carries 2.5 MiB of
//!   tiny annotations (the rules decode it: the costliest body a decision reads);
//! - `slow`: 64 connections each announcing 1 MiB and sending 1 KiB every 100 ms;
//! - `flood`: `--flood` connections opened at once a second in, each sending 1 MiB of `[0,0,…]`.
//!
//! A valid review that is not answered 200 with its verdict counts as a failure and is listed;
//! hostile answers are tallied by status. `MILO_HOSTILE_SERVER_BIN=<path>` measures another build
//! (an older commit) under the same client.

#[path = "load/membership.rs"]
mod membership;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use membership::{API, NS};

const PATH: &str = "/validate-notification-miloapis-com-v1alpha1-contactgroupmembership";
const GROUPS: usize = 100;
const CONTACTS: usize = 1000;
const MIB: usize = 1024 * 1024;
/// Bounds every exchange, so a stuck server cannot hang the bench.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(15);

struct Options {
    seconds: u64,
    rate: u64,
    flood: usize,
}

fn options() -> Result<Options> {
    let args: Vec<String> = std::env::args().collect();
    let num = |flag: &str, default: u64| -> Result<u64> {
        match args.iter().position(|a| a == flag) {
            Some(i) => {
                let v = args.get(i + 1).context(format!("{flag} needs a value"))?;
                v.parse().context(format!("{flag}: bad value {v:?}"))
            }
            None => Ok(default),
        }
    };
    let o = Options {
        seconds: num("--seconds", 10)?,
        rate: num("--rate", 200)?,
        flood: num("--flood", 600)? as usize,
    };
    if o.seconds == 0 || o.rate == 0 {
        bail!("--seconds and --rate must be positive");
    }
    Ok(o)
}

fn write_state(path: &Path) -> Result<()> {
    let mut w = std::io::BufWriter::new(File::create(path)?);
    for i in 0..GROUPS {
        writeln!(
            w,
            r#"{{"apiVersion":"{API}","kind":"ContactGroup","metadata":{{"name":"group-{i}","namespace":"{NS}"}},"spec":{{"displayName":"Group {i}","visibility":"public"}}}}"#
        )?;
    }
    for i in 0..CONTACTS {
        writeln!(
            w,
            r#"{{"apiVersion":"{API}","kind":"Contact","metadata":{{"name":"contact-{i}","namespace":"{NS}"}},"spec":{{"email":"contact-{i}@example.com"}}}}"#
        )?;
    }
    Ok(())
}

/// The spawned server; killed on drop so an error path leaves no process behind.
struct Server {
    child: Child,
    addr: SocketAddr,
    ca_pem: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    async fn start(dir: &Path, state: &Path) -> Result<Server> {
        let [a, b] = [(); 2].map(|()| StdListener::bind("127.0.0.1:0"));
        let (a, b) = (a?, b?);
        let (addr, admin) = (a.local_addr()?, b.local_addr()?);
        drop((a, b));
        let bin = std::env::var_os("MILO_HOSTILE_SERVER_BIN")
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_milo-webhook").into());
        let log = dir.join("server.log");
        let child = Command::new(bin)
            .args(["serve", &format!("--listen={addr}")])
            .arg(format!("--admin-listen={admin}"))
            .arg("--shutdown-delay=0s")
            .arg("--state")
            .arg(state)
            .arg("--certs-dir")
            .arg(dir.join("certs"))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log)?)
            .spawn()?;
        let mut server = Server {
            child,
            addr,
            ca_pem: String::new(),
        };
        let started = Instant::now();
        while !ready(admin).await {
            if let Some(status) = server.child.try_wait()? {
                bail!(
                    "server exited ({status}):\n{}",
                    std::fs::read_to_string(&log)?
                );
            }
            if started.elapsed() > Duration::from_secs(60) {
                bail!("server not ready within a minute");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        server.ca_pem = std::fs::read_to_string(dir.join("certs/ca.crt"))?;
        Ok(server)
    }

    /// `(VmRSS, VmHWM)` in MiB: resident now, and the peak since the process started.
    fn memory(&self) -> Result<(f64, f64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let field = |name: &str| -> Result<f64> {
            let line = status.lines().find_map(|l| l.strip_prefix(name));
            let kib = line.context(name.to_owned())?.trim_end_matches("kB").trim();
            Ok(kib.parse::<f64>()? / 1024.0)
        };
        Ok((field("VmRSS:")?, field("VmHWM:")?))
    }
}

async fn ready(admin: SocketAddr) -> bool {
    let attempt = async {
        let stream = TcpStream::connect(admin).await.ok()?;
        let (mut sender, conn) = http1::handshake(TokioIo::new(stream)).await.ok()?;
        tokio::spawn(conn);
        let request = Request::get("/readyz").header("host", "localhost");
        let response = sender
            .send_request(request.body(Full::<Bytes>::default()).ok()?)
            .await;
        Some(response.ok()?.status() == 200)
    };
    tokio::time::timeout(Duration::from_secs(2), attempt)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

fn connector(ca_pem: &str) -> Result<TlsConnector> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}

async fn tls(addr: SocketAddr, connector: &TlsConnector) -> Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    Ok(connector
        .connect(ServerName::try_from("localhost")?, tcp)
        .await?)
}

/// Latencies of valid reviews and what went wrong with them.
#[derive(Default)]
struct Valid {
    latencies: Vec<u64>,
    failures: Vec<String>,
}

impl Valid {
    fn percentiles(&mut self) -> (f64, f64, f64) {
        self.latencies.sort_unstable();
        let at = |q: f64| {
            let len = self.latencies.len();
            let i = ((q * len as f64).ceil() as usize).clamp(1, len.max(1)) - 1;
            self.latencies
                .get(i)
                .map_or(f64::NAN, |ns| *ns as f64 / 1e6)
        };
        (at(0.5), at(0.99), at(1.0))
    }
}

type Sender = SendRequest<Full<Bytes>>;

async fn valid_sender(addr: SocketAddr, connector: &TlsConnector) -> Result<Sender> {
    let (sender, conn) = http1::handshake(TokioIo::new(tls(addr, connector).await?)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

/// One valid review (a membership of a contact in a public group: allowed).
async fn one_review(
    sender: &mut Option<Sender>,
    addr: SocketAddr,
    connector: &TlsConnector,
    k: usize,
) -> Result<(), String> {
    let uid = format!("valid-{k}");
    let body = serde_json::to_vec(&membership::review(&uid, k % CONTACTS, k % GROUPS)).unwrap();
    let exchange = async {
        if sender.as_ref().is_none_or(|s| s.is_closed()) {
            *sender = Some(valid_sender(addr, connector).await?);
        }
        let s = sender.as_mut().unwrap();
        s.ready().await?;
        let request = Request::post(PATH)
            .header("host", "localhost")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))?;
        let response = s.send_request(request).await?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        anyhow::Ok((status, body))
    };
    let (status, body) = match tokio::time::timeout(EXCHANGE_TIMEOUT, exchange).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(error)) => {
            *sender = None;
            return Err(format!("{uid}: {error}"));
        }
        Err(_) => {
            *sender = None;
            return Err(format!("{uid}: no answer within {EXCHANGE_TIMEOUT:?}"));
        }
    };
    let reply: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let ok = status == 200
        && reply["response"]["uid"] == uid.as_str()
        && reply["response"]["allowed"] == true;
    if ok {
        Ok(())
    } else {
        let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
        Err(format!("{uid}: {status} {text}"))
    }
}

/// Valid reviews at `rate` per second for `seconds`, spread over 8 keep-alive connections.
async fn valid_load(addr: SocketAddr, connector: TlsConnector, rate: u64, seconds: u64) -> Valid {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<(usize, Instant)>();
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let total = (rate * seconds) as usize;
    let pacing = tokio::spawn(async move {
        let start = Instant::now();
        for k in 0..total {
            let at = start + Duration::from_secs_f64(k as f64 / rate as f64);
            tokio::time::sleep_until(at.into()).await;
            let _ = tx.send((k, at));
        }
    });
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let (rx, connector) = (rx.clone(), connector.clone());
            tokio::spawn(async move {
                let mut tally = Valid::default();
                let mut sender = None;
                loop {
                    let Some((k, scheduled)) = rx.lock().await.recv().await else {
                        break;
                    };
                    match one_review(&mut sender, addr, &connector, k).await {
                        Ok(()) => tally.latencies.push(scheduled.elapsed().as_nanos() as u64),
                        Err(failure) => tally.failures.push(failure),
                    }
                }
                tally
            })
        })
        .collect();
    let _ = pacing.await;
    let mut all = Valid::default();
    for worker in workers {
        if let Ok(tally) = worker.await {
            all.latencies.extend(tally.latencies);
            all.failures.extend(tally.failures);
        }
    }
    all
}

/// Hostile answers by attacker and outcome (`413`, `400`, `reset`, ...).
type Outcomes = Arc<Mutex<BTreeMap<(&'static str, String), u64>>>;

fn count(outcomes: &Outcomes, who: &'static str, what: String) {
    *outcomes.lock().unwrap().entry((who, what)).or_default() += 1;
}

/// The status of the answer on `stream`, or what happened instead.
async fn status_of(stream: &mut TlsStream<TcpStream>) -> String {
    let mut head = vec![0; 64];
    match tokio::time::timeout(EXCHANGE_TIMEOUT, stream.read(&mut head)).await {
        Ok(Ok(n)) if n >= 12 => String::from_utf8_lossy(&head[9..12]).into_owned(),
        Ok(Ok(_)) => "closed".into(),
        Ok(Err(_)) => "reset".into(),
        Err(_) => "no answer".into(),
    }
}

/// Sends `body` on a fresh connection (with its length, or chunked), `pace` between 1 KiB
/// pieces when given; returns how it was answered.
async fn attack_once(
    addr: SocketAddr,
    connector: &TlsConnector,
    body: &Bytes,
    chunked: bool,
    pace: Option<Duration>,
) -> String {
    let Ok(mut stream) = tls(addr, connector).await else {
        return "refused".into();
    };
    let framing = if chunked {
        "transfer-encoding: chunked".to_owned()
    } else {
        format!("content-length: {}", body.len())
    };
    let head = format!("POST {PATH} HTTP/1.1\r\nhost: localhost\r\n{framing}\r\n\r\n");
    if stream.write_all(head.as_bytes()).await.is_err() {
        return "reset".into();
    }
    let piece = if pace.is_some() { 1024 } else { 256 * 1024 };
    let sending = async {
        for part in body.chunks(piece) {
            if chunked {
                stream
                    .write_all(format!("{:x}\r\n", part.len()).as_bytes())
                    .await?;
            }
            stream.write_all(part).await?;
            if chunked {
                stream.write_all(b"\r\n").await?;
            }
            if let Some(pace) = pace {
                stream.flush().await?;
                tokio::time::sleep(pace).await;
            }
        }
        if chunked {
            stream.write_all(b"0\r\n\r\n").await?;
        }
        stream.flush().await
    };
    // An early answer (413) closes the connection while we are still sending: read it anyway.
    let _ = tokio::time::timeout(EXCHANGE_TIMEOUT, sending).await;
    status_of(&mut stream).await
}

/// `connections` loops sending `body` until `stop`.
fn attackers(
    who: &'static str,
    connections: usize,
    body: Bytes,
    chunked: bool,
    pace: Option<Duration>,
    target: (SocketAddr, TlsConnector, Outcomes, Arc<AtomicBool>),
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..connections)
        .map(|_| {
            let (addr, connector, outcomes, stop) = target.clone();
            let body = body.clone();
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let outcome = attack_once(addr, &connector, &body, chunked, pace).await;
                    count(&outcomes, who, outcome);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        })
        .collect()
}

fn zeros(bytes: usize) -> Bytes {
    let mut text = Vec::with_capacity(bytes);
    text.push(b'[');
    while text.len() + 3 < bytes {
        text.extend_from_slice(b"0,");
    }
    text.extend_from_slice(b"0]");
    Bytes::from(text)
}

/// A well-formed membership review whose object has `bytes` of annotations `"aN":""`.
fn big_object(bytes: usize) -> Bytes {
    let mut review = membership::review("big-object", 1, 2);
    let mut annotations = serde_json::Map::new();
    let mut size = 0;
    for i in 0.. {
        if size >= bytes {
            break;
        }
        let key = format!("a{i}");
        size += key.len() + 6;
        annotations.insert(key, serde_json::Value::String(String::new()));
    }
    review["request"]["object"]["metadata"]["annotations"] = annotations.into();
    Bytes::from(serde_json::to_vec(&review).unwrap())
}

fn report(phase: &str, valid: &mut Valid, memory: (f64, f64)) {
    let (p50, p99, max) = valid.percentiles();
    println!(
        "{phase:<13} valid reviews: {:>6} answered, {:>4} failed; latency p50 {p50:>7.2} ms, p99 {p99:>8.2} ms, max {max:>8.2} ms; server RSS now {:.1} MiB, peak {:.1} MiB",
        valid.latencies.len(),
        valid.failures.len(),
        memory.0,
        memory.1
    );
    for failure in valid.failures.iter().take(5) {
        println!("    failed: {failure}");
    }
}

async fn bench(o: &Options) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let state = dir.path().join("state.json");
    write_state(&state)?;
    let server = Server::start(dir.path(), &state).await?;
    let connector = connector(&server.ca_pem)?;
    let idle = server.memory()?;
    println!(
        "server {} idle: RSS {:.1} MiB",
        std::env::var("MILO_HOSTILE_SERVER_BIN").unwrap_or_else(|_| "(this build)".into()),
        idle.0
    );

    let mut quiet = valid_load(server.addr, connector.clone(), o.rate, 3).await;
    report("quiet", &mut quiet, server.memory()?);

    let stop = Arc::new(AtomicBool::new(false));
    let outcomes: Outcomes = Arc::default();
    let target = (
        server.addr,
        connector.clone(),
        outcomes.clone(),
        stop.clone(),
    );
    let huge = zeros(8 * MIB);
    let mut tasks = attackers("huge", 8, huge.clone(), false, None, target.clone());
    tasks.extend(attackers(
        "huge-chunked",
        4,
        huge,
        true,
        None,
        target.clone(),
    ));
    let near = zeros(5 * MIB / 2);
    tasks.extend(attackers(
        "near-limit",
        8,
        near,
        false,
        None,
        target.clone(),
    ));
    tasks.extend(attackers(
        "big-object",
        4,
        big_object(5 * MIB / 2),
        false,
        None,
        target.clone(),
    ));
    let slow = zeros(MIB);
    let pace = Some(Duration::from_millis(100));
    tasks.extend(attackers("slow", 64, slow, false, pace, target.clone()));
    // The flood: many connections at once, a second in.
    let flood = {
        let (addr, connector, outcomes) = (server.addr, connector.clone(), outcomes.clone());
        let flood = o.flood;
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let body = zeros(MIB);
            let all: Vec<_> = (0..flood)
                .map(|_| {
                    let (connector, outcomes, body) =
                        (connector.clone(), outcomes.clone(), body.clone());
                    tokio::spawn(async move {
                        let outcome = attack_once(addr, &connector, &body, false, None).await;
                        count(&outcomes, "flood", outcome);
                    })
                })
                .collect();
            for task in all {
                let _ = task.await;
            }
        })
    };
    // Resident memory sampled every 10 ms, beside the peak the kernel keeps.
    let sampled = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (pid, sampled, stop) = (server.child.id(), sampled.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status"))
                    && let Some(kib) = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))
                    && let Ok(kib) = kib.trim_end_matches("kB").trim().parse::<u64>()
                {
                    sampled.fetch_max(kib, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let mut attacked = valid_load(server.addr, connector.clone(), o.rate, o.seconds).await;
    let during = server.memory()?;
    stop.store(true, Ordering::Relaxed);
    report("under attack", &mut attacked, during);
    let _ = sampler.await;
    for task in tasks {
        task.abort();
    }
    flood.abort();
    println!(
        "  peak RSS sampled every 10 ms: {:.1} MiB",
        sampled.load(Ordering::Relaxed) as f64 / 1024.0
    );
    println!("  hostile requests answered:");
    for ((who, what), n) in outcomes.lock().unwrap().iter() {
        println!("    {who:<13} {what:<10} {n}");
    }
    // And after: the process still answers.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut after = valid_load(server.addr, connector, o.rate, 2).await;
    report("after", &mut after, server.memory()?);
    if !after.failures.is_empty() || after.latencies.is_empty() {
        bail!("the server stopped answering valid reviews after the attack");
    }
    Ok(())
}

fn main() {
    let result = options().and_then(|o| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        runtime.block_on(bench(&o))
    });
    if let Err(error) = result {
        eprintln!("hostile_load: {error:#}");
        std::process::exit(1);
    }
}
