//! One test's cluster: a real etcd and kube-apiserver (and kube-controller-manager when asked),
//! a CRD set, the deployment's RBAC, the milo-webhook binary registered as the admission
//! webhooks, and the fake Resend it syncs to. Everything lives in a temporary directory and is
//! killed when the [`Env`] is dropped; a failing test prints the tail of every process's log and
//! keeps the directory (logs, audit log; not etcd's data) for a look.

pub mod audit;
pub mod browser;
pub mod certs;
pub mod control_plane;
pub mod crds;
pub mod objects;
pub mod process;
pub mod server;

use std::path::Path;

use milo_webhook::controllers::ControllerKind;
use serde_json::json;

use crate::support::fake_loops::{self, FakeLoops};
use crate::support::fake_resend::{self, FakeConfig, FakeResend};
pub use crds::CrdSet;
pub use server::{INVITATIONS_USER, SERVER_USER, SYSTEM_NAMESPACE, Server, ServerOptions};

/// How a test's cluster is set up.
#[derive(Clone, Debug, Default)]
pub struct EnvOptions {
    /// Run kube-controller-manager (garbage collection, namespace deletion).
    pub controller_manager: bool,
    /// Start the fake Resend and point the server at it.
    pub resend: bool,
    /// Start the fake Loops and point the server at it.
    pub loops: bool,
    /// How the first replica runs (`resend_base_url` is filled in when `resend`).
    pub server: ServerOptions,
}

/// A running test cluster. Fields drop in order: replicas first, the fake Resend, then the
/// control plane, then the directory.
pub struct Env {
    /// The replicas; `servers[0]` serves the registered webhooks.
    pub servers: Vec<Server>,
    /// The invitation controller's own process, under its own account (as the manifests'
    /// `milo-webhook-invitations` Deployment runs it), when the options ask for invitations.
    pub invitations: Option<Server>,
    /// The fake Resend, when asked for.
    pub resend: Option<FakeResend>,
    /// The fake Loops, when asked for.
    pub loops: Option<FakeLoops>,
    /// The test's (admin) client.
    pub client: kube::Client,
    /// Which CRDs are installed.
    pub crds: CrdSet,
    /// etcd, kube-apiserver and maybe kube-controller-manager.
    pub plane: control_plane::ControlPlane,
    /// The files replicas share.
    pub files: server::ServerFiles,
    options: ServerOptions,
    dir: Option<tempfile::TempDir>,
}

/// Bytes free for an unprivileged writer on the filesystem of `path` (0 when unknown).
fn free_bytes(path: &Path) -> u64 {
    use std::os::unix::ffi::OsStrExt as _;
    let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return 0;
    };
    // SAFETY: statvfs(3) with a NUL-terminated path and a zeroed out-struct it fills in.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) } != 0 {
        return 0;
    }
    stat.f_bavail.saturating_mul(stat.f_frsize)
}

fn temp_dir() -> tempfile::TempDir {
    // etcd fsyncs every write: on tmpfs that costs nothing. Containers often mount a 64 MiB
    // /dev/shm, less than etcd preallocates for its WAL: then the usual temporary directory.
    let shm = Path::new("/dev/shm");
    let mut builder = tempfile::Builder::new();
    builder.prefix("milo-envtest-");
    if shm.is_dir() && free_bytes(shm) > 2 << 30 {
        builder.tempdir_in(shm)
    } else {
        builder.tempdir()
    }
    .expect("create a temporary directory")
}

impl Env {
    /// Starts a cluster with `crds` and one replica of the server, whose webhooks are
    /// registered.
    pub async fn start(crds: CrdSet, options: EnvOptions) -> Self {
        let dir = temp_dir();
        let path = dir.path().to_owned();
        let ca = certs::Ca::new();
        let (plane, client) =
            control_plane::ControlPlane::start(&path, &ca, options.controller_manager).await;
        crds::install(&client, crds).await;
        objects::create(
            &client,
            &json!({"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": SYSTEM_NAMESPACE}}),
        )
        .await;
        crds::install_rbac(&client).await;
        let resend = if options.resend {
            Some(fake_resend::start(FakeConfig::default()).await)
        } else {
            None
        };
        let loops = if options.loops {
            Some(fake_loops::start(fake_loops::FakeConfig::default()).await)
        } else {
            None
        };
        let mut server_options = options.server.clone();
        if let Some(fake) = &resend {
            server_options.resend_base_url = Some(fake.base_url.clone());
        }
        if let Some(fake) = &loops {
            server_options.loops_base_url = Some(fake.base_url.clone());
        }
        let files = server::ServerFiles::write(&path, &ca, &plane.url);
        // As in the manifests: the invitation controller runs apart, under its own account.
        let wanted: Vec<String> = match &server_options.controllers {
            Some(list) => list
                .split(',')
                .filter(|c| !c.is_empty())
                .map(str::to_owned)
                .collect(),
            None => ControllerKind::ALL.iter().map(|k| k.to_string()).collect(),
        };
        let invitation = ControllerKind::Invitation.to_string();
        let others: Vec<String> = wanted
            .iter()
            .filter(|c| **c != invitation)
            .cloned()
            .collect();
        let invitations_options = wanted.contains(&invitation).then(|| ServerOptions {
            controllers: Some(invitation.clone()),
            kubeconfig: Some(files.invitations_kubeconfig.clone()),
            extra: [
                server_options.extra.clone(),
                vec!["--leader-election-lease=milo-webhook-invitations".into()],
            ]
            .concat(),
            ..server_options.clone()
        });
        server_options.controllers = Some(others.join(","));
        let mut env = Self {
            servers: Vec::new(),
            invitations: None,
            resend,
            loops,
            client,
            crds,
            plane,
            files,
            options: server_options,
            dir: Some(dir),
        };
        env.add_replica("replica-a").await;
        server::register_webhooks(&env.client, &path, &env.files, env.servers[0].listen).await;
        if let Some(options) = invitations_options {
            let server = Server::start(&path, &env.files, "invitations-a", &options).await;
            env.invitations = Some(server);
        }
        env
    }

    /// Starts one more replica of the server (same flags), joining the leader election.
    pub async fn add_replica(&mut self, identity: &str) -> &mut Server {
        let dir = self.dir().to_owned();
        let server = Server::start(&dir, &self.files, identity, &self.options).await;
        self.servers.push(server);
        self.servers.last_mut().expect("just pushed")
    }

    /// The test's directory.
    pub fn dir(&self) -> &Path {
        self.dir
            .as_ref()
            .expect("the directory lives as long as the Env")
            .path()
    }

    /// The fake Resend (panics when the Env was started without it).
    pub fn resend(&self) -> &FakeResend {
        self.resend.as_ref().expect("EnvOptions::resend")
    }

    /// The fake Loops (panics when the Env was started without it).
    pub fn loops(&self) -> &FakeLoops {
        self.loops.as_ref().expect("EnvOptions::loops")
    }

    /// Creates a namespace.
    pub async fn namespace(&self, name: &str) {
        objects::create(
            &self.client,
            &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
        )
        .await;
    }

    /// The Prometheus text of the first replica's admin `/metrics`.
    pub async fn metrics(&self) -> String {
        let url = format!("http://127.0.0.1:{}/metrics", self.servers[0].admin);
        reqwest::get(&url)
            .await
            .and_then(reqwest::Response::error_for_status)
            .expect("GET /metrics")
            .text()
            .await
            .expect("the metrics text")
    }

    /// Webhook calls the API server made so far, by (webhook name, operation), read from its
    /// own `apiserver_admission_webhook_admission_duration_seconds_count`: what the API server
    /// paid, whatever the webhook saw.
    pub async fn webhook_calls(&self) -> std::collections::BTreeMap<(String, String), u64> {
        let request = http::Request::get("/metrics")
            .body(Vec::new())
            .expect("a GET request");
        let text = self
            .client
            .request_text(request)
            .await
            .expect("GET the API server's /metrics");
        parse_webhook_calls(&text)
    }

    /// The `crd_missing_fields` series the leader exports as 1: (kind, field) pairs the installed
    /// CRDs do not declare although the server would write them.
    pub async fn crd_missing_fields(&self) -> Vec<(String, String)> {
        let label = |line: &str, name: &str| {
            let start = line.find(&format!("{name}=\""))? + name.len() + 2;
            let end = line[start..].find('"')? + start;
            Some(line[start..end].to_owned())
        };
        self.metrics()
            .await
            .lines()
            .filter(|l| l.contains("crd_missing_fields{") && l.ends_with(" 1"))
            .filter_map(|l| Some((label(l, "kind")?, label(l, "field")?)))
            .collect()
    }

    /// Writes by the server (either account) that the API server refused.
    pub fn refused_writes(&self) -> Vec<audit::Event> {
        [SERVER_USER, INVITATIONS_USER]
            .iter()
            .flat_map(|user| audit::refused_writes(&self.plane.audit_log, user))
            .collect()
    }

    /// The check every scenario ends with, on the server's writes as the audit log saw them.
    /// With our CRDs, the API server refuses none of them, except 409s (AlreadyExists on a
    /// retried deterministic create, or a stale resourceVersion), which the controllers are
    /// built to absorb, and Events into a namespace being deleted (best effort, and the
    /// NamespaceLifecycle plugin refuses every create there). With Milo's CRDs some writes cannot
    /// land; the server must not send the same refused write twice.
    pub fn assert_server_writes_clean(&self) {
        self.assert_server_writes_clean_but(|_| false);
    }

    /// [`Self::assert_server_writes_clean`], with the refusals a scenario provokes on purpose.
    pub fn assert_server_writes_clean_but(&self, provoked: impl Fn(&audit::Event) -> bool) {
        let expected = |e: &audit::Event| {
            provoked(e)
                || e.code == 409
                || (e.resource == "events" && e.message.contains("because it is being terminated"))
        };
        match self.crds {
            CrdSet::Ours => {
                let refused: Vec<String> = self
                    .refused_writes()
                    .iter()
                    .filter(|e| !expected(e))
                    .map(ToString::to_string)
                    .collect();
                assert!(
                    refused.is_empty(),
                    "the API server refused {} write(s) by the server:\n  {}",
                    refused.len(),
                    refused.join("\n  ")
                );
            }
            CrdSet::Milo => {
                // Shown with --nocapture: what Milo's CRDs refused once, which is allowed.
                for e in self.refused_writes() {
                    eprintln!("refused once (Milo's CRDs): {e}");
                }
                let repeated: Vec<String> = [SERVER_USER, INVITATIONS_USER]
                    .iter()
                    .flat_map(|user| audit::repeated_refusals(&self.plane.audit_log, user))
                    // A 409 is a write raced by another writer and retried on fresh state
                    // (with Milo's atomic status lists every writer sends its read's
                    // resourceVersion), not a write the CRDs cannot take.
                    .filter(|(e, _)| !provoked(e) && e.code != 409)
                    .map(|(e, n)| format!("{n}x {e}"))
                    .collect();
                assert!(
                    repeated.is_empty(),
                    "the server repeated refused writes (Milo's CRDs cannot take them):\n  {}",
                    repeated.join("\n  ")
                );
            }
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let processes = self
            .servers
            .iter()
            .chain(&self.invitations)
            .filter_map(|s| s.process.as_ref())
            .chain(self.plane.processes.iter());
        for p in processes {
            eprintln!(
                "----- {} (last 40 lines of {})\n{}",
                p.name,
                p.log.display(),
                p.tail(40)
            );
        }
        let refused = self.refused_writes();
        if !refused.is_empty() {
            eprintln!("----- writes by the server the API server refused:");
            for e in refused.iter().take(40) {
                eprintln!("  {e}");
            }
        }
        if let Some(dir) = self.dir.take() {
            // The logs and the audit log are worth keeping; etcd's data (64 MiB of WAL, in
            // memory under /dev/shm) is not.
            let _ = std::fs::remove_dir_all(dir.path().join("etcd"));
            eprintln!("----- kept the test's logs: {}", dir.keep().display());
        }
    }
}

/// Sums `apiserver_admission_webhook_admission_duration_seconds_count` by (name, operation).
pub fn parse_webhook_calls(text: &str) -> std::collections::BTreeMap<(String, String), u64> {
    let label = |line: &str, name: &str| {
        let start = line.find(&format!("{name}=\""))? + name.len() + 2;
        let end = line[start..].find('"')? + start;
        Some(line[start..end].to_owned())
    };
    let mut calls = std::collections::BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| l.starts_with("apiserver_admission_webhook_admission_duration_seconds_count{"))
    {
        let (Some(name), Some(operation), Some(count)) = (
            label(line, "name"),
            label(line, "operation"),
            line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()),
        ) else {
            continue;
        };
        *calls.entry((name, operation)).or_insert(0) += count as u64;
    }
    calls
}
