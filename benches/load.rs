//! Load benchmark of `milo-webhook serve`: the real binary over generated state files of growing
//! size, measured for resident memory, closed-loop throughput and open-loop latency at a fixed
//! rate, over TLS on 127.0.0.1 only. A wrong verdict or a transport error fails the run; a missed
//! target is only reported.
//!
//! `cargo bench --bench load -- [--objects 10000,1000000] [--concurrency 32] [--seconds 10] [--rate 1000]
//! [--format-objects 200000]`
//!
//! The server and the floor (`load/floor.rs`: the same stack parsing the review into a `Value`
//! and allowing it) run pinned to one core, the client on the others, in alternating one-second
//! closed-loop rounds (`--seconds` each); every run reports the server's closed-loop rate as a
//! ratio of the floor's, with the spread of the rounds' ratios. Then every webhook runs at `--rate` for
//! the per-webhook review durations of the server's histogram. `MILO_LOAD_SERVER_BIN=<path>`
//! measures another build of the server under the same client.
//!
//! Then the same objects are loaded from every state format (JSON stream, `kind: List` in JSON and
//! YAML, multi-document YAML) for peak and steady RSS; `--format-objects 0` skips that.

#[path = "load/floor.rs"]
mod floor;
#[path = "load/formats.rs"]
mod formats;
#[path = "load/membership.rs"]
mod membership;
#[path = "load/webhooks.rs"]
mod webhooks;

use std::fs::File;
use std::io::{BufWriter, Write};
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio::sync::{Mutex, mpsc::UnboundedReceiver};
use tokio_rustls::TlsConnector;

use membership::{API, NS};

const PATH: &str = "/validate-notification-miloapis-com-v1alpha1-contactgroupmembership";
const GROUPS: usize = 100;
const CASES: usize = 1000;
const RATE_CONNECTIONS: usize = 8;
/// Bounds every request, so a stuck server cannot hang the bench.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const READY_TIMEOUT: Duration = Duration::from_secs(300);
const MIB: f64 = 1024.0 * 1024.0;

struct Options {
    objects: Vec<usize>,
    format_objects: usize,
    concurrency: usize,
    seconds: u64,
    rate: u64,
}

/// Hand-parsed `--flag value` pairs; anything else (cargo's `--bench`) is ignored.
fn options() -> Result<Options> {
    let args: Vec<String> = std::env::args().collect();
    let get = |flag: &str| match args.iter().position(|a| a == flag) {
        Some(i) => Some(args.get(i + 1).context(format!("{flag} needs a value"))).transpose(),
        None => Ok(None),
    };
    let num = |flag: &str, default: u64| match get(flag)? {
        Some(v) => v.parse().context(format!("{flag}: bad value {v:?}")),
        None => anyhow::Ok(default),
    };
    let objects = match get("--objects")? {
        Some(v) => v
            .split(',')
            .map(|n| n.trim().replace('_', "").parse())
            .collect::<Result<_, _>>()
            .context(format!("--objects: bad value {v:?}"))?,
        None => vec![10_000, 1_000_000],
    };
    let concurrency = num("--concurrency", 32)? as usize;
    let (seconds, rate) = (num("--seconds", 10)?, num("--rate", 1000)?);
    if objects.iter().any(|&n: &usize| n < 2) || concurrency == 0 || seconds == 0 || rate == 0 {
        bail!("--objects must each be >= 2; --concurrency, --seconds and --rate > 0");
    }
    let format_objects = num("--format-objects", 200_000)? as usize;
    let o = Options {
        objects,
        format_objects,
        concurrency,
        seconds,
        rate,
    };
    Ok(o)
}

/// `n` objects plus the 100 groups (nothing when `n == 0`) as JSON, one string each, formatted by
/// hand so a million objects take a second, not minutes.
fn objects(n: usize) -> impl Iterator<Item = String> {
    let groups = (0..if n == 0 { 0 } else { GROUPS }).map(|i| {
        let visibility = if i % 2 == 0 { "public" } else { "private" };
        format!(
            r#"{{"apiVersion":"{API}","kind":"ContactGroup","metadata":{{"name":"group-{i}","namespace":"{NS}"}},"spec":{{"displayName":"Group {i}","visibility":"{visibility}"}}}}"#
        )
    });
    let contacts = (0..n / 2).map(|i| {
        format!(
            r#"{{"apiVersion":"{API}","kind":"Contact","metadata":{{"name":"contact-{i}","namespace":"{NS}"}},"spec":{{"email":"contact-{i}@example.com","subject":{{"apiGroup":"iam.miloapis.com","kind":"User","name":"user-{i}"}}}}}}"#
        )
    });
    let memberships = (0..n / 2).map(|i| {
        let g = i % GROUPS;
        format!(
            r#"{{"apiVersion":"{API}","kind":"ContactGroupMembership","metadata":{{"name":"member-{i}","namespace":"{NS}"}},"spec":{{"contactRef":{{"name":"contact-{i}","namespace":"{NS}"}},"contactGroupRef":{{"name":"group-{g}","namespace":"{NS}"}}}}}}"#
        )
    });
    groups.chain(contacts).chain(memberships)
}

/// The objects as a JSON stream, one object per line.
fn write_state(path: &Path, n: usize) -> Result<()> {
    let mut w = BufWriter::with_capacity(1 << 20, File::create(path)?);
    for object in objects(n) {
        writeln!(w, "{object}")?;
    }
    w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    Ok(())
}

/// One pre-serialized review and the verdict it must get.
#[derive(Clone)]
struct Case {
    path: &'static str,
    body: Bytes,
    uid: String,
    /// `None`: any verdict will do.
    allowed: Option<bool>,
}

/// ~80% new pairs (contact-j with a group other than its own: allowed), ~20% a second membership
/// of an existing pair under a new name (denied as a duplicate), spread over all contacts.
fn cases(n: usize) -> Vec<Case> {
    let mut cases = Vec::with_capacity(CASES);
    for k in 0..CASES {
        let (j, duplicate) = ((k * 7919 + k / 3) % (n / 2), k % 5 == 0);
        let group = (j + if duplicate { 0 } else { 1 + k % 7 }) % GROUPS;
        let uid = format!("bench-{k}");
        let review = membership::review(&uid, j, group);
        let (body, allowed) = (
            serde_json::to_vec(&review).unwrap().into(),
            Some(!duplicate),
        );
        cases.push(Case {
            path: PATH,
            body,
            uid,
            allowed,
        });
    }
    cases
}

/// The spawned server; killed on drop so an error path leaves no process behind.
struct Server {
    child: Child,
    addr: SocketAddr,
    admin: SocketAddr,
    ca_pem: String,
    ready_after: Duration,
}

impl Drop for Server {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Server {
    /// Spawns `serve` on two ports that were free a moment ago and waits for `/readyz`.
    async fn start(dir: &Path, state: &Path) -> Result<Server> {
        let [a, b] = [(); 2].map(|()| StdListener::bind("127.0.0.1:0"));
        let (a, b) = (a?, b?);
        let (addr, admin) = (a.local_addr()?, b.local_addr()?);
        drop((a, b));
        let log = dir.join("server.log");
        let listen = format!("--listen={addr} --admin-listen={admin} --shutdown-delay=0s");
        // MILO_LOAD_SERVER_BIN measures another build (an older commit) under the same client.
        let bin = std::env::var_os("MILO_LOAD_SERVER_BIN");
        let bin = bin.unwrap_or_else(|| env!("CARGO_BIN_EXE_milo-webhook").into());
        let mut command = Command::new(bin);
        floor::pin(&mut command, floor::SERVER_CPU);
        let child = command
            .arg("serve")
            .args(listen.split(' '))
            .arg("--state")
            .arg(state)
            .arg("--certs-dir")
            .arg(dir.join("certs"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log)?)
            .spawn()?;
        floor::check_pinned(child.id(), floor::SERVER_CPU)?;
        let (ca_pem, ready_after) = (String::new(), Duration::ZERO);
        let mut server = Server {
            child,
            addr,
            admin,
            ca_pem,
            ready_after,
        };
        let started = Instant::now();
        while readyz(admin).await != Some(200) {
            if let Some(status) = server.child.try_wait()? {
                let log = std::fs::read_to_string(&log)?;
                bail!("server exited ({status}) before ready:\n{log}");
            }
            if started.elapsed() > READY_TIMEOUT {
                bail!("server not ready within {READY_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        server.ready_after = started.elapsed();
        server.ca_pem = std::fs::read_to_string(dir.join("certs/ca.crt"))?;
        Ok(server)
    }

    /// `VmRSS` of the server, in MiB.
    fn rss(&self) -> Result<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let line = status.lines().find_map(|l| l.strip_prefix("VmRSS:"));
        let kib = line.context("no VmRSS")?.trim_end_matches("kB").trim();
        Ok(kib.parse::<f64>()? / 1024.0)
    }

    /// SIGTERM (graceful, zero drain delay); SIGKILL if it is still running 15 s later.
    async fn stop(mut self) -> Result<()> {
        let pid = self.child.id().to_string();
        Command::new("kill").arg(pid).status()?;
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                eprintln!("server ignored SIGTERM for 15 s; killing it");
                self.child.kill()?;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }
}

/// Status of `GET /readyz` on the plain-HTTP admin port; `None` while it is not listening.
async fn readyz(admin: SocketAddr) -> Option<u16> {
    let attempt = async {
        let stream = TcpStream::connect(admin).await.ok()?;
        let (mut sender, conn) = http1::handshake(TokioIo::new(stream)).await.ok()?;
        tokio::spawn(conn);
        let request = Request::get("/readyz").header("host", "localhost");
        let request = request.body(Full::<Bytes>::default()).ok()?;
        Some(sender.send_request(request).await.ok()?.status().as_u16())
    };
    let status = tokio::time::timeout(Duration::from_secs(2), attempt).await;
    status.ok().flatten()
}

/// A rustls client trusting only the generated CA, offering only HTTP/1.1.
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

type Sender = SendRequest<Full<Bytes>>;
type Cases = Arc<Vec<Case>>;

/// One keep-alive connection; TCP_NODELAY so Nagle does not hold back small requests.
async fn connect(addr: SocketAddr, tls: &TlsConnector) -> Result<Sender> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let stream = tls.connect(ServerName::try_from("localhost")?, tcp).await?;
    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

/// Sends one review. Outer error: transport (ends the connection); inner: a wrong answer.
async fn review(sender: &mut Sender, case: &Case) -> Result<Result<(), String>> {
    let request = Request::post(case.path)
        .header("host", "localhost")
        .header("content-type", "application/json")
        .body(Full::new(case.body.clone()))?;
    let exchange = async {
        sender.ready().await?;
        let response = sender.send_request(request).await?;
        let status = response.status().as_u16();
        anyhow::Ok((status, response.into_body().collect().await?.to_bytes()))
    };
    let exchange = tokio::time::timeout(REQUEST_TIMEOUT, exchange).await;
    let (status, body) = exchange.context("request timed out")??;
    let reply = serde_json::from_slice::<Reply>(&body)
        .ok()
        .and_then(|r| r.response);
    let (uid, allowed) = reply.map_or((None, None), |r| (r.uid, r.allowed));
    let verdict = case
        .allowed
        .map_or(allowed.is_some(), |want| allowed == Some(want));
    if status == 200 && verdict && uid.as_deref() == Some(case.uid.as_str()) {
        return Ok(Ok(()));
    }
    let (uid, want, got) = (&case.uid, case.allowed, String::from_utf8_lossy(&body));
    let mismatch = format!("MISMATCH {uid}: expected 200, allowed={want:?}; got {status}: {got}");
    Ok(Err(mismatch))
}

/// The part of an `AdmissionReview` reply the client checks, decoded typed and borrowed so that
/// checking every answer costs the client little beside the server it measures.
#[derive(serde::Deserialize)]
struct Reply<'a> {
    #[serde(borrow)]
    response: Option<ReplyResponse<'a>>,
}

#[derive(serde::Deserialize)]
struct ReplyResponse<'a> {
    #[serde(borrow)]
    uid: Option<std::borrow::Cow<'a, str>>,
    allowed: Option<bool>,
}

/// What a phase saw: latencies in ns, wrong verdicts, transport errors, when it last heard back.
#[derive(Default)]
struct Tally {
    latencies: Vec<u64>,
    failures: Vec<String>,
    last: Option<Instant>,
}

impl Tally {
    /// Sorts latencies; returns (p50, p99, max) in ms.
    fn percentiles(&mut self) -> (f64, f64, f64) {
        self.latencies.sort_unstable();
        let len = self.latencies.len();
        let at = |q: f64| {
            let i = ((q * len as f64).ceil() as usize).clamp(1, len.max(1)) - 1;
            let ns = self.latencies.get(i).copied();
            ns.map_or(f64::NAN, |ns| ns as f64 / 1e6)
        };
        (at(0.50), at(0.99), at(1.0))
    }

    /// Prints the first few failures and their count; returns the count.
    fn absorb(&mut self, other: Tally) {
        self.latencies.extend(other.latencies);
        self.failures.extend(other.failures);
        self.last = self.last.max(other.last);
    }

    fn report(&self, phase: &str) -> usize {
        let count = self.failures.len();
        for failure in self.failures.iter().take(10) {
            eprintln!("  {phase}: {failure}");
        }
        if count > 0 {
            eprintln!("  {phase}: {count} mismatched verdicts or errors");
        }
        count
    }
}

/// Where a connection's next review comes from: `(case number, time latency counts from)`.
enum Jobs {
    /// Closed loop: the next review as soon as the last is answered, until then.
    Until(Instant),
    /// Open loop: scheduled by the pacing thread; the first free connection takes the next.
    Queue(Mutex<UnboundedReceiver<(usize, Instant)>>),
}

impl Jobs {
    async fn next(&self, i: usize) -> Option<(usize, Instant)> {
        match self {
            Jobs::Until(end) => (Instant::now() < *end).then(|| (i, Instant::now())),
            Jobs::Queue(rx) => rx.lock().await.recv().await,
        }
    }
}

/// `count` keep-alive connections, all up before a phase's clock starts.
async fn connect_all(addr: SocketAddr, tls: &TlsConnector, count: usize) -> Result<Vec<Sender>> {
    let mut senders = Vec::with_capacity(count);
    for _ in 0..count {
        senders.push(connect(addr, tls).await?);
    }
    Ok(senders)
}

/// Runs every connection off `jobs` until they run out; returns what all of them saw and the
/// connections, for the next round.
async fn drive(senders: Vec<Sender>, cases: &Cases, jobs: Jobs) -> Result<(Tally, Vec<Sender>)> {
    let (jobs, connections) = (Arc::new(jobs), senders.len());
    let mut tasks = Vec::with_capacity(connections);
    for (c, mut sender) in senders.into_iter().enumerate() {
        let (cases, jobs) = (cases.clone(), jobs.clone());
        tasks.push(tokio::spawn(async move {
            let (mut tally, mut i) = (Tally::default(), c);
            while let Some((job, since)) = jobs.next(i).await {
                i += connections; // closed loop: connections walk the cases in disjoint strides
                let outcome = review(&mut sender, &cases[job * 7 % cases.len()]).await;
                tally.last = Some(Instant::now());
                match outcome {
                    Ok(verdict) => {
                        tally.latencies.push(since.elapsed().as_nanos() as u64);
                        tally.failures.extend(verdict.err());
                    }
                    Err(error) => {
                        tally.failures.push(format!("ERROR {error:#}"));
                        break;
                    }
                }
            }
            (tally, sender)
        }));
    }
    drop(jobs); // the queue closes for the pacer once every connection has given up
    let (mut total, mut senders) = (Tally::default(), Vec::with_capacity(connections));
    for task in tasks {
        let (tally, sender) = task.await?;
        total.absorb(tally);
        senders.push(sender);
    }
    Ok((total, senders))
}

/// Time the process `pid` has spent on a CPU, all its threads together, in seconds (from
/// `/proc/<pid>/task/*/schedstat`, nanosecond precision); 0 where that is not available.
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0.0;
    };
    let on_cpu = |task: std::fs::DirEntry| -> Option<u64> {
        let stat = std::fs::read_to_string(task.path().join("schedstat")).ok()?;
        stat.split_whitespace().next()?.parse().ok()
    };
    let ns: u64 = tasks.flatten().filter_map(on_cpu).sum();
    ns as f64 / 1e9
}

/// One closed-loop round of `seconds`: what it saw, the time it took and the connections back.
async fn closed_round(
    senders: Vec<Sender>,
    cases: &Cases,
    seconds: f64,
) -> Result<(Tally, f64, Vec<Sender>)> {
    let start = Instant::now();
    let deadline = Jobs::Until(start + Duration::from_secs_f64(seconds));
    let (tally, senders) = drive(senders, cases, deadline).await?;
    Ok((tally, start.elapsed().as_secs_f64(), senders))
}

/// The closed loop against the server and the floor in alternating rounds of one second (each
/// side `--seconds` in all), so drift in the machine's speed (other tenants, frequency) falls on
/// both alike. Returns both tallies, both throughputs and the per-round ratios, sorted.
async fn closed_loops(
    (server, floor): (Vec<Sender>, Vec<Sender>),
    (cases, floor_cases): (&Cases, &Cases),
    (server_pid, floor_pid): (u32, u32),
    o: &Options,
) -> Result<(Side, Side, Vec<f64>)> {
    let (mut server, mut floor) = (server, floor);
    let (mut ours, mut theirs) = (Side::default(), Side::default());
    let mut ratios = Vec::new();
    for _ in 0..o.seconds {
        server = ours.round(server, cases, server_pid).await?;
        floor = theirs.round(floor, floor_cases, floor_pid).await?;
        ratios.push(ours.last_rate / theirs.last_rate.max(1e-9));
    }
    ratios.sort_by(f64::total_cmp);
    Ok((ours, theirs, ratios))
}

/// What one side (the server or the floor) of the closed loop saw over its rounds.
#[derive(Default)]
struct Side {
    tally: Tally,
    /// Wall time of its rounds.
    seconds: f64,
    /// CPU time the process spent in its rounds.
    cpu_seconds: f64,
    /// CPU time the client (this process) spent in those rounds.
    client_cpu_seconds: f64,
    /// Reviews per second in its last round.
    last_rate: f64,
}

impl Side {
    /// Runs one one-second round; returns the connections.
    async fn round(
        &mut self,
        senders: Vec<Sender>,
        cases: &Cases,
        pid: u32,
    ) -> Result<Vec<Sender>> {
        let (cpu, client_cpu) = (cpu_seconds(pid), cpu_seconds(std::process::id()));
        let (tally, secs, senders) = closed_round(senders, cases, 1.0).await?;
        self.cpu_seconds += cpu_seconds(pid) - cpu;
        self.client_cpu_seconds += cpu_seconds(std::process::id()) - client_cpu;
        self.last_rate = tally.latencies.len() as f64 / secs;
        self.tally.absorb(tally);
        self.seconds += secs;
        Ok(senders)
    }

    /// Reviews per second over all rounds.
    fn rate(&self) -> f64 {
        self.tally.latencies.len() as f64 / self.seconds.max(1e-9)
    }

    /// The process's CPU time per review, in microseconds.
    fn cpu_us_per_review(&self) -> f64 {
        self.cpu_seconds * 1e6 / self.tally.latencies.len().max(1) as f64
    }

    /// The client's CPU time per review against this side, in microseconds.
    fn client_cpu_us_per_review(&self) -> f64 {
        self.client_cpu_seconds * 1e6 / self.tally.latencies.len().max(1) as f64
    }

    /// How busy the process kept its core: under about 0.9, the client, not this side, set the
    /// rate, and the rate ratio understates the difference (the CPU ratio does not).
    fn busy(&self) -> f64 {
        self.cpu_seconds / self.seconds.max(1e-9)
    }
}

/// Open loop: a thread (precise sleeps, unlike tokio's 1 ms timer wheel) schedules one review
/// every 1/rate s; latency counts from the scheduled time, so queueing for a connection shows.
async fn fixed_rate(senders: Vec<Sender>, cases: &Cases, o: &Options) -> Result<(Tally, f64)> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let (total, period) = (o.rate * o.seconds, Duration::from_secs(1) / o.rate as u32);
    let start = Instant::now() + Duration::from_millis(10);
    let pacer = std::thread::spawn(move || {
        for i in 0..total {
            let at = start + period.mul_f64(i as f64);
            std::thread::sleep(at.saturating_duration_since(Instant::now()));
            if tx.send((i as usize, at)).is_err() {
                break; // every connection failed
            }
        }
    });
    let tally = drive(senders, cases, Jobs::Queue(Mutex::new(rx))).await;
    let joined = pacer.join();
    joined.map_err(|_| anyhow::anyhow!("pacer panicked"))?;
    let (tally, _) = tally?;
    let elapsed = tally.last.map_or(0.0, |last| (last - start).as_secs_f64());
    let achieved = tally.latencies.len() as f64 / elapsed.max(1e-9);
    Ok((tally, achieved))
}

/// The table row, the targets line and the failure count of one object count.
type Summary = (String, String, usize);

/// One object count: write the state, start the server, measure, load, stop.
async fn bench(dir: &Path, n: usize, o: &Options, baseline: f64) -> Result<Summary> {
    let state = dir.join(format!("state-{n}.json"));
    let written = Instant::now();
    write_state(&state, n)?;
    let write_s = written.elapsed().as_secs_f64();
    let mib = std::fs::metadata(&state)?.len() as f64 / MIB;
    println!("N={n}: wrote {mib:.0} MiB of state in {write_s:.1} s");
    let server = Server::start(dir, &state).await?;
    let (rss, ready_s) = (server.rss()?, server.ready_after.as_secs_f64());
    println!("N={n}: ready after {ready_s:.1} s, RSS {rss:.1} MiB");
    let (cases, tls) = (Arc::new(cases(n)), connector(&server.ca_pem)?);
    // The floor allows everything, so every case expects an allow there.
    let floor_cases: Vec<Case> = cases
        .iter()
        .cloned()
        .map(|c| Case {
            allowed: Some(true),
            ..c
        })
        .collect();
    let floor_server = floor::Floor::start(&dir.join("certs")).await?;
    let senders = (
        connect_all(server.addr, &tls, o.concurrency).await?,
        connect_all(floor_server.addr, &tls, o.concurrency).await?,
    );
    let both = (&cases, &Arc::new(floor_cases));
    let pids = (server.child.id(), floor_server.child.id());
    let (ours, theirs, ratios) = closed_loops(senders, both, pids, o).await?;
    drop(floor_server);
    let (throughput, floor_throughput) = (ours.rate(), theirs.rate());
    let (cpu, floor_cpu) = (ours.cpu_us_per_review(), theirs.cpu_us_per_review());
    let (busy, floor_busy) = (ours.busy() * 100.0, theirs.busy() * 100.0);
    let client_cpu = ours.client_cpu_us_per_review();
    let floor_client_cpu = theirs.client_cpu_us_per_review();
    let (mut closed, mut floor) = (ours.tally, theirs.tally);
    let ratio = throughput / floor_throughput;
    let spread = match ratios.as_slice() {
        [] => String::new(),
        r => format!(
            " (rounds: min {:.2}, median {:.2}, max {:.2})",
            r[0],
            r[r.len() / 2],
            r[r.len() - 1]
        ),
    };
    println!(
        "N={n}: {throughput:.0} reviews/s in the closed loop, floor {floor_throughput:.0}/s, ratio {ratio:.2}{spread}"
    );
    println!(
        "N={n}: CPU per review {cpu:.1} us, floor {floor_cpu:.1} us, ratio {:.2}",
        floor_cpu / cpu.max(1e-9)
    );
    println!(
        "N={n}: core busy {busy:.0}%, floor's {floor_busy:.0}%; client CPU per review {client_cpu:.1} us, {floor_client_cpu:.1} us against the floor; fixed rate next"
    );
    let senders = connect_all(server.addr, &tls, RATE_CONNECTIONS).await?;
    let (mut open, rate) = fixed_rate(senders, &cases, o).await?;
    let rss_after = server.rss()?;
    server.stop().await?;
    std::fs::remove_file(&state)?;
    let failed = closed.report("closed loop") + floor.report("floor") + open.report("fixed rate");
    let (floor_p50, floor_p99, _) = floor.percentiles();
    let per_object = (rss - baseline) * MIB / (n + GROUPS) as f64;
    let ((p50, p99, max), (rate_p50, rate_p99, _)) = (closed.percentiles(), open.percentiles());
    let limit = 64.0 + 300.0 * (n + GROUPS) as f64 / MIB;
    let met = |ok: bool| if ok { "met   " } else { "MISSED" };
    let (t1, t2) = (met(throughput >= 10_000.0), met(rate_p99 <= 2.0));
    let t4 = met(ratio >= 0.9);
    let t3 = met(rss < limit);
    let row = format!(
        "{n:<9} {ready_s:>7.1} {rss:>8.1} {rss_after:>9.1} {per_object:>12.0} {throughput:>10.0} {p50:>7.3} {p99:>7.3} {max:>7.2}  | {floor_throughput:>8.0} {floor_p50:>7.3} {floor_p99:>7.3} {ratio:>5.2}  | {rate:>7.0} {rate_p50:>7.3} {rate_p99:>7.3}"
    );
    let targets = format!(
        "  N={n:<8} >= 10,000 reviews/s: {t1} ({throughput:.0}/s)   p99 <= 2 ms at {}/s: {t2} ({rate_p99:.3} ms)   RSS < 64 MiB + 300 B/object = {limit:.1} MiB: {t3} ({rss:.1} MiB)   >= 0.9 of the floor: {t4} ({ratio:.2})",
        o.rate
    );
    Ok((row, targets, failed))
}

fn main() {
    floor::run_if_asked();
    let code = match run() {
        Ok(0) => 0,
        Ok(failed) => {
            eprintln!("load bench FAILED: {failed} mismatched verdicts or errors");
            1
        }
        Err(error) => {
            eprintln!("load bench failed: {error:#}");
            1
        }
    };
    std::process::exit(code);
}

/// The client runtime has at most 2 workers, so it cannot outgrow the server it measures, and no
/// more than the cores it is pinned to, so its workers do not take turns on one core.
fn run() -> Result<usize> {
    let o = options()?;
    floor::pin_client();
    let workers = floor::client_cpus().min(2);
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    let runtime = runtime.worker_threads(workers).enable_all().build()?;
    runtime.block_on(async {
        let dir = tempfile::tempdir()?;
        let empty = dir.path().join("state-empty.json");
        write_state(&empty, 0)?;
        let server = Server::start(dir.path(), &empty).await?;
        let baseline = server.rss()?;
        server.stop().await?;
        println!("empty state: RSS {baseline:.1} MiB");
        let (mut lines, mut failed) = (Vec::new(), 0);
        for &n in &o.objects {
            let (row, targets, f) = bench(dir.path(), n, &o, baseline).await?;
            lines.push((row, targets));
            failed += f;
        }
        let (c, secs, rate) = (o.concurrency, o.seconds, o.rate);
        println!("\nbaseline (empty state) RSS {baseline:.1} MiB; closed loop {c} connections x {secs} s; fixed rate {rate}/s on {RATE_CONNECTIONS} connections");
        println!("objects   ready_s  rss_mib rss_after bytes/object  reviews/s  p50_ms  p99_ms  max_ms  |  floor/s  p50_ms  p99_ms ratio  |    rate  p50_ms  p99_ms");
        lines.iter().for_each(|(row, _)| println!("{row}"));
        println!("\ntargets (reported, not enforced):");
        lines.iter().for_each(|(_, targets)| println!("{targets}"));
        let smallest = o.objects.iter().copied().min().unwrap_or(10_000);
        failed += webhooks::per_webhook(dir.path(), smallest, &o).await?;
        if o.format_objects > 0 {
            formats::compare(dir.path(), o.format_objects, baseline).await?;
        }
        Ok(failed)
    })
}
