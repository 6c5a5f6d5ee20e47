//! etcd, kube-apiserver and (optionally) kube-controller-manager on free loopback ports, with
//! RBAC, no anonymous access and an audit log of every request at Metadata level.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine as _;

use super::certs::{Ca, Pair, service_account_key};
use super::process::Process;

/// The user the tests act as (in `system:masters`, so RBAC allows it everything).
pub const ADMIN_USER: &str = "envtest-admin";

/// A port of 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free port")
        .port()
}

/// Where the binaries are, or exactly what is missing and how to get it.
pub struct Binaries {
    /// etcd.
    pub etcd: PathBuf,
    /// kube-apiserver.
    pub apiserver: PathBuf,
    /// kube-controller-manager.
    pub controller_manager: PathBuf,
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

impl Binaries {
    /// Finds the binaries: etcd at `/usr/bin/etcd` or on `PATH`; the Kubernetes ones in
    /// `$MILO_ENVTEST_ASSETS`, else `target/envtest` of this repository. Panics naming every
    /// missing one with the command that provides it: the envtest feature never passes without
    /// a real API server.
    pub fn find() -> Self {
        let etcd = Some(PathBuf::from("/usr/bin/etcd"))
            .filter(|p| p.is_file())
            .or_else(|| on_path("etcd"));
        let assets = std::env::var_os("MILO_ENVTEST_ASSETS")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/envtest"));
        let apiserver = assets.join("kube-apiserver");
        let controller_manager = assets.join("kube-controller-manager");
        let mut missing = Vec::new();
        if etcd.is_none() {
            missing.push(
                "etcd (not at /usr/bin/etcd nor on PATH): install it with `apt-get install -y etcd-server`"
                    .to_owned(),
            );
        }
        for binary in [&apiserver, &controller_manager] {
            if !binary.is_file() {
                missing.push(format!(
                    "{} is missing: unpack it with `../shared/envtest/install target/envtest` from the repository root (or point MILO_ENVTEST_ASSETS at a directory holding kube-apiserver and kube-controller-manager)",
                    binary.display()
                ));
            }
        }
        assert!(
            missing.is_empty(),
            "the envtest tier needs a real control plane:\n  {}",
            missing.join("\n  ")
        );
        Self {
            etcd: etcd.expect("checked above"),
            apiserver,
            controller_manager,
        }
    }
}

/// A running control plane.
pub struct ControlPlane {
    /// `https://127.0.0.1:<port>`.
    pub url: String,
    /// The admin kubeconfig.
    pub kubeconfig: PathBuf,
    /// The audit log (JSON lines).
    pub audit_log: PathBuf,
    /// The processes, in start order (dropped, so killed, in reverse).
    pub processes: Vec<Process>,
}

const AUDIT_POLICY: &str = "apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: Metadata
";

/// Writes a kubeconfig for `user` with the client certificate `pair`.
pub fn write_kubeconfig(path: &Path, url: &str, ca: &Ca, user: &str, pair: &Pair) {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let text = format!(
        "apiVersion: v1
kind: Config
clusters:
- name: envtest
  cluster:
    server: {url}
    certificate-authority-data: {ca}
users:
- name: {user}
  user:
    client-certificate-data: {cert}
    client-key-data: {key}
contexts:
- name: envtest
  context:
    cluster: envtest
    user: {user}
current-context: envtest
",
        ca = b64(&ca.cert_pem),
        cert = b64(&pair.cert_pem),
        key = b64(&pair.key_pem),
    );
    std::fs::write(path, text).expect("write a kubeconfig");
}

/// A kube client from a kubeconfig file.
pub async fn client(kubeconfig: &Path) -> kube::Client {
    let config = kube::config::Kubeconfig::read_from(kubeconfig).expect("read the kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(config, &Default::default())
        .await
        .expect("a client config");
    kube::Client::try_from(config).expect("a kube client")
}

impl ControlPlane {
    /// Starts etcd and kube-apiserver in `dir`, and kube-controller-manager when
    /// `controller_manager` (garbage collection of owned objects, namespace deletion); returns
    /// once `/readyz` answers.
    pub async fn start(dir: &Path, ca: &Ca, controller_manager: bool) -> (Self, kube::Client) {
        let bins = Binaries::find();
        let (client_port, peer_port, secure_port) = (free_port(), free_port(), free_port());
        let mut processes = Vec::new();

        let mut etcd = Command::new(&bins.etcd);
        let client_url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        etcd.arg("--data-dir")
            .arg(dir.join("etcd"))
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("default={peer_url}")])
            .args([
                "--name",
                "default",
                "--log-level",
                "warn",
                "--logger",
                "zap",
            ]);
        processes.push(Process::spawn("etcd", dir, etcd));

        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).expect("write a control-plane file");
            path
        };
        let serving = ca.serving("kube-apiserver");
        let ca_file = write("ca.crt", &ca.cert_pem);
        let cert_file = write("apiserver.crt", &serving.cert_pem);
        let key_file = write("apiserver.key", &serving.key_pem);
        let (sa_private, sa_public) = service_account_key();
        let sa_key = write("sa.key", &sa_private);
        let sa_pub = write("sa.pub", &sa_public);
        let policy = write("audit-policy.yaml", AUDIT_POLICY);
        let audit_log = dir.join("audit.log");
        let mut apiserver = Command::new(&bins.apiserver);
        apiserver
            .arg(format!("--etcd-servers={client_url}"))
            .args(["--bind-address=127.0.0.1", "--advertise-address=127.0.0.1"])
            .arg(format!("--secure-port={secure_port}"))
            .arg(format!("--tls-cert-file={}", cert_file.display()))
            .arg(format!("--tls-private-key-file={}", key_file.display()))
            .arg(format!("--client-ca-file={}", ca_file.display()))
            .args(["--authorization-mode=RBAC", "--anonymous-auth=false"])
            .arg("--service-account-issuer=https://kubernetes.default.svc")
            .arg(format!("--service-account-key-file={}", sa_pub.display()))
            .arg(format!(
                "--service-account-signing-key-file={}",
                sa_key.display()
            ))
            .args([
                "--service-cluster-ip-range=10.0.0.0/24",
                "--endpoint-reconciler-type=none",
            ])
            .arg(format!("--audit-policy-file={}", policy.display()))
            .arg(format!("--audit-log-path={}", audit_log.display()))
            .args(["--audit-log-mode=blocking", "--audit-log-format=json"])
            // Never rotated (the default rotates at 100 MB, which a benchmark at 20,000 contacts
            // passes, and counts read only the current file).
            .arg("--audit-log-maxsize=1000000")
            .arg(format!(
                "--cert-dir={}",
                dir.join("apiserver-certs").display()
            ))
            .arg("-v=1");
        processes.push(Process::spawn("kube-apiserver", dir, apiserver));

        let url = format!("https://127.0.0.1:{secure_port}");
        let kubeconfig = dir.join("admin.kubeconfig");
        write_kubeconfig(
            &kubeconfig,
            &url,
            ca,
            ADMIN_USER,
            &ca.client(ADMIN_USER, "system:masters"),
        );
        let mut plane = Self {
            url,
            kubeconfig,
            audit_log,
            processes,
        };
        let client = client(&plane.kubeconfig).await;
        plane.wait_ready(&client).await;

        if controller_manager {
            let mut kcm = Command::new(&bins.controller_manager);
            kcm.arg(format!("--kubeconfig={}", plane.kubeconfig.display()))
                .args([
                    "--controllers=garbagecollector,namespace",
                    "--leader-elect=false",
                    "--bind-address=127.0.0.1",
                    "--use-service-account-credentials=false",
                    "-v=1",
                ])
                .arg(format!("--secure-port={}", free_port()))
                .arg(format!(
                    "--authentication-kubeconfig={}",
                    plane.kubeconfig.display()
                ))
                .arg(format!(
                    "--authorization-kubeconfig={}",
                    plane.kubeconfig.display()
                ))
                .arg(format!("--cert-dir={}", dir.join("kcm-certs").display()));
            plane
                .processes
                .push(Process::spawn("kube-controller-manager", dir, kcm));
        }
        (plane, client)
    }

    async fn wait_ready(&mut self, client: &kube::Client) {
        let started = Instant::now();
        let mut last = String::new();
        while started.elapsed() < Duration::from_secs(60) {
            for p in &mut self.processes {
                p.assert_running();
            }
            let request = http::Request::get("/readyz").body(Vec::new()).unwrap();
            match client.request_text(request).await {
                Ok(text) if text.trim() == "ok" => return,
                Ok(text) => last = text,
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("kube-apiserver not ready after 60 s: {last}");
    }
}
