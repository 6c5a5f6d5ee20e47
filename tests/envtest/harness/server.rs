//! The milo-webhook binary in cluster mode, as a Deployment replica would run it: its own
//! kubeconfig (the `milo-webhook` ServiceAccount's identity, bound by
//! `manifests/deploy/rbac.yaml`), a serving certificate from the test CA, leader election, the
//! controllers, provider sync pointed at the in-process fake Resend, and the provider events
//! listener with the Resend and Loops signing secrets.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine as _;

use super::certs::Ca;
use super::control_plane::{free_port, write_kubeconfig};
use super::crds::file_documents;
use super::objects;
use super::process::Process;

/// The user the server authenticates as: the ServiceAccount the deployment's RBAC binds.
pub const SERVER_USER: &str = "system:serviceaccount:milo-system:milo-webhook";
/// The user the invitation controller authenticates as: its own Deployment's ServiceAccount, the
/// only one the RBAC lets grant access.
pub const INVITATIONS_USER: &str = "system:serviceaccount:milo-system:milo-webhook-invitations";
/// The namespace of the leader-election Lease (and the default contact namespace).
pub const SYSTEM_NAMESPACE: &str = "milo-system";
/// The API key the fake Resend accepts.
pub const RESEND_KEY: &str = "re_test_key";
/// The signing secret of the Resend webhooks (email and contact events).
pub const SIGNING_SECRET: &str = "whsec_ZW52dGVzdC1zaWduaW5nLXNlY3JldC0zMi1ieXRlcyE=";
/// The signing secret of the Loops webhook (32 bytes).
pub const LOOPS_SIGNING_SECRET: &str = "whsec_ZW52dGVzdC1sb29wcy1zaWduaW5nLXNlY3JldC0zMiE=";
/// The `from` of every Email sent.
pub const EMAIL_FROM: &str = "Milo <noreply@example.com>";

/// How a server is run.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// `--controllers` (comma-separated; empty for `--no-controllers`); `None` for all of them.
    /// [`super::Env`] runs the invitation controller apart, as the manifests do.
    pub controllers: Option<String>,
    /// The fake Resend's base URL: provider sync and email delivery on.
    pub resend_base_url: Option<String>,
    /// The fake Loops' base URL: Loops sync on.
    pub loops_base_url: Option<String>,
    /// `--leader-election-lease-seconds`.
    pub lease_seconds: u64,
    /// `--shutdown-delay`.
    pub shutdown_delay: &'static str,
    /// More `serve` flags, as `--flag=value`.
    pub extra: Vec<String>,
    /// The kubeconfig to run with, when not the milo-webhook account's.
    pub kubeconfig: Option<PathBuf>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            controllers: None,
            resend_base_url: None,
            loops_base_url: None,
            lease_seconds: 6,
            shutdown_delay: "1s",
            extra: Vec::new(),
            kubeconfig: None,
        }
    }
}

/// The binary under test: `$MILO_ENVTEST_BIN` (CI passes the release build), else the one cargo
/// built for this test.
pub fn binary() -> PathBuf {
    let path = std::env::var_os("MILO_ENVTEST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_milo-webhook")));
    assert!(
        path.is_file(),
        "the milo-webhook binary {} does not exist (MILO_ENVTEST_BIN is relative to the repository root; build it with `cargo build --release --locked`)",
        path.display()
    );
    path
}

/// One replica.
pub struct Server {
    /// Its identity in the Lease.
    pub identity: String,
    /// The webhook port (HTTPS).
    pub listen: u16,
    /// The admin port (plain HTTP: /readyz, /metrics).
    pub admin: u16,
    /// The provider events port (plain HTTP: Resend and Loops webhooks, one-click unsubscribe).
    pub events: u16,
    /// The running process (none while stopped).
    pub process: Option<Process>,
    command: Vec<String>,
    dir: PathBuf,
}

/// Files every replica of a cluster shares.
pub struct ServerFiles {
    kubeconfig: PathBuf,
    /// The invitation controller's kubeconfig ([`INVITATIONS_USER`]).
    pub invitations_kubeconfig: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    resend_key: PathBuf,
    loops_key: PathBuf,
    signing_key: PathBuf,
    loops_signing_key: PathBuf,
    unsubscribe_key: PathBuf,
    /// The CA the serving certificate is signed by (the webhook configurations' caBundle).
    pub ca: PathBuf,
}

impl ServerFiles {
    /// Writes the server's kubeconfig, serving pair and secrets into `dir`.
    pub fn write(dir: &Path, ca: &Ca, url: &str) -> Self {
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).expect("write a server file");
            path
        };
        let kubeconfig = dir.join("milo-webhook.kubeconfig");
        write_kubeconfig(
            &kubeconfig,
            url,
            ca,
            SERVER_USER,
            &ca.client(SERVER_USER, "system:serviceaccounts"),
        );
        let invitations_kubeconfig = dir.join("milo-webhook-invitations.kubeconfig");
        write_kubeconfig(
            &invitations_kubeconfig,
            url,
            ca,
            INVITATIONS_USER,
            &ca.client(INVITATIONS_USER, "system:serviceaccounts"),
        );
        let serving = ca.serving("milo-webhook");
        let unsubscribe = base64::engine::general_purpose::STANDARD
            .encode((0..48).map(|_| fastrand::u8(..)).collect::<Vec<u8>>());
        Self {
            kubeconfig,
            invitations_kubeconfig,
            cert: write("webhook.crt", &serving.cert_pem),
            key: write("webhook.key", &serving.key_pem),
            resend_key: write("resend-api-key", RESEND_KEY),
            loops_key: write("loops-api-key", crate::support::fake_loops::API_KEY),
            signing_key: write("resend-signing-key", SIGNING_SECRET),
            loops_signing_key: write("loops-signing-secret", LOOPS_SIGNING_SECRET),
            unsubscribe_key: write("unsubscribe-key", &unsubscribe),
            ca: write("webhook-ca.crt", &ca.cert_pem),
        }
    }
}

impl Server {
    /// Starts a replica named `identity` and waits for its /readyz (every watch synced).
    pub async fn start(
        dir: &Path,
        files: &ServerFiles,
        identity: &str,
        options: &ServerOptions,
    ) -> Self {
        let (listen, admin, events) = (free_port(), free_port(), free_port());
        let path = |p: &Path| p.display().to_string();
        let mut command: Vec<String> = vec![
            "serve".into(),
            format!(
                "--kubeconfig={}",
                path(options.kubeconfig.as_deref().unwrap_or(&files.kubeconfig))
            ),
            format!("--listen=127.0.0.1:{listen}"),
            format!("--admin-listen=127.0.0.1:{admin}"),
            format!("--tls-cert-file={}", path(&files.cert)),
            format!("--tls-key-file={}", path(&files.key)),
            format!("--certs-dir={}", path(&dir.join("unused-certs"))),
            format!("--system-namespace={SYSTEM_NAMESPACE}"),
            format!("--leader-election-namespace={SYSTEM_NAMESPACE}"),
            format!("--leader-election-identity={identity}"),
            format!("--leader-election-lease-seconds={}", options.lease_seconds),
            format!("--shutdown-delay={}", options.shutdown_delay),
            format!("--provider-events-listen=127.0.0.1:{events}"),
            format!(
                "--resend-webhook-signing-key-file={}",
                path(&files.signing_key)
            ),
            format!(
                "--loops-signing-secret-file={}",
                path(&files.loops_signing_key)
            ),
            format!(
                "--unsubscribe-signing-key-file={}",
                path(&files.unsubscribe_key)
            ),
            format!("--unsubscribe-base-url=http://127.0.0.1:{events}"),
            format!("--email-from-address={EMAIL_FROM}"),
        ];
        command.extend(options.extra.iter().cloned());
        match options.controllers.as_deref() {
            Some("") => command.push("--no-controllers".into()),
            Some(controllers) => command.push(format!("--controllers={controllers}")),
            None => {}
        }
        if let Some(url) = &options.resend_base_url {
            command.push(format!("--resend-api-key-file={}", path(&files.resend_key)));
            command.push(format!("--resend-base-url={url}"));
            command.push("--resend-rate-limit=50".into());
        }
        if let Some(url) = &options.loops_base_url {
            command.push(format!("--loops-api-key-file={}", path(&files.loops_key)));
            command.push(format!("--loops-base-url={url}"));
            command.push("--loops-rate-limit=50".into());
        }
        let mut server = Self {
            identity: identity.to_owned(),
            listen,
            admin,
            events,
            process: None,
            command,
            dir: dir.to_owned(),
        };
        server.restart().await;
        server
    }

    /// Starts the process again with the same flags and ports, and waits for /readyz.
    pub async fn restart(&mut self) {
        assert!(self.process.is_none(), "{} is still running", self.identity);
        let mut command = Command::new(binary());
        command
            .args(&self.command)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("RUST_LOG", "info,milo_webhook=debug")
            .env("NO_COLOR", "1");
        let name = format!("milo-webhook-{}", self.identity);
        self.process = Some(Process::spawn(&name, &self.dir, command));
        self.wait_ready().await;
    }

    async fn wait_ready(&mut self) {
        let url = format!("http://127.0.0.1:{}/readyz", self.admin);
        let http = reqwest::Client::new();
        let started = Instant::now();
        let mut last = String::new();
        while started.elapsed() < Duration::from_secs(60) {
            self.process.as_mut().expect("running").assert_running();
            match http.get(&url).send().await {
                Ok(r) if r.status().is_success() => return,
                Ok(r) => last = format!("{}: {}", r.status(), r.text().await.unwrap_or_default()),
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "{} not ready after 60 s ({last}); its log:\n{}",
            self.identity,
            self.process
                .as_ref()
                .map(|p| p.tail(60))
                .unwrap_or_default()
        );
    }

    /// SIGTERM, as a rollout sends it; true when the process exited within `timeout`.
    pub fn terminate(&mut self, timeout: Duration) -> bool {
        let exited = self.process.as_mut().is_none_or(|p| p.terminate(timeout));
        self.process = None;
        exited
    }

    /// SIGKILL: a crash, with no chance to release anything.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.kill();
        }
    }

    /// `http://127.0.0.1:<events port>`.
    pub fn events_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.events)
    }
}

/// Registers the webhook configurations the binary itself prints for `https://127.0.0.1:<port>`.
pub async fn register_webhooks(client: &kube::Client, dir: &Path, files: &ServerFiles, port: u16) {
    let output = Command::new(binary())
        .args(["webhook-config", "--url"])
        .arg(format!("https://127.0.0.1:{port}"))
        .arg("--ca-file")
        .arg(&files.ca)
        .output()
        .expect("run milo-webhook webhook-config");
    assert!(
        output.status.success(),
        "webhook-config failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let file = dir.join("webhooks.yaml");
    std::fs::write(&file, &output.stdout).expect("write the webhook configurations");
    let mut registered = 0;
    for doc in file_documents(&file) {
        let items = match doc["kind"].as_str() {
            Some("List") => doc["items"].as_array().cloned().unwrap_or_default(),
            _ => vec![doc],
        };
        for item in items {
            objects::create(client, &item).await;
            registered += 1;
        }
    }
    assert_eq!(
        registered, 2,
        "expected a Validating and a Mutating WebhookConfiguration"
    );
}
