//! `milo-webhook serve`: wire the view, the certificates and the two listeners together.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use tokio::net::TcpListener;

use super::cluster::{Source, controllers_summary, source};
use super::parse_duration;
use super::provider::ProviderClients;
use crate::controllers::email::EmailSettings;
use crate::controllers::invitation::InvitationSettings;
use crate::controllers::invitation::access::AccessBackendKind;
use crate::controllers::leader::{self, LeaseSettings};
use crate::controllers::pace::{PaceMetrics, PaceSettings};
use crate::controllers::{self, ControllerKind, ControllerSettings};
use crate::metrics::Metrics;
use crate::server::tls::{self, CertPaths, ReloadingCertResolver};
use crate::server::{ServeOptions, Server, Shutdown};
use crate::view::ClusterView;

/// Flags of `serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address of the HTTPS webhook listener.
    #[arg(long, env = "MILO_WEBHOOK_LISTEN", default_value = "0.0.0.0:9443")]
    pub listen: SocketAddr,
    /// Address of the plain-HTTP admin listener (/livez, /readyz, /metrics).
    #[arg(
        long,
        env = "MILO_WEBHOOK_ADMIN_LISTEN",
        default_value = "127.0.0.1:8080"
    )]
    pub admin_listen: SocketAddr,
    /// Serving certificate (PEM chain). Without it and --tls-key-file, a dev CA and certificate
    /// are generated into --certs-dir.
    #[arg(long, env = "MILO_WEBHOOK_TLS_CERT_FILE", requires = "tls_key_file")]
    pub tls_cert_file: Option<PathBuf>,
    /// Private key of the serving certificate (PEM).
    #[arg(
        long,
        env = "MILO_WEBHOOK_TLS_KEY_FILE",
        visible_alias = "tls-private-key-file",
        requires = "tls_cert_file"
    )]
    pub tls_key_file: Option<PathBuf>,
    /// Where generated dev certificates go.
    #[arg(
        long,
        env = "MILO_WEBHOOK_CERTS_DIR",
        visible_alias = "cert-dir",
        default_value = "certs"
    )]
    pub certs_dir: PathBuf,
    /// How often the certificate and unsubscribe key files are checked for rotation.
    #[arg(long, env = "MILO_WEBHOOK_TLS_RELOAD_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub tls_reload_interval: Duration,
    /// Offline mode: manifests (files or directories, repeatable) the view is built from.
    #[arg(long, env = "MILO_WEBHOOK_STATE", value_delimiter = ',')]
    pub state: Vec<PathBuf>,
    /// Cluster mode with this kubeconfig (its current context). In a pod (KUBERNETES_SERVICE_HOST
    /// set) the pod's service account is used without it; elsewhere `serve` talks to no cluster
    /// unless told to with this flag or --use-current-context.
    #[arg(long, env = "MILO_WEBHOOK_KUBECONFIG", conflicts_with_all = ["state", "use_current_context"])]
    pub kubeconfig: Option<PathBuf>,
    /// Cluster mode with the current context of $KUBECONFIG (or ~/.kube/config): the cluster
    /// kubectl would talk to, where the controllers then write.
    #[arg(
        long,
        env = "MILO_WEBHOOK_USE_CURRENT_CONTEXT",
        conflicts_with = "state"
    )]
    pub use_current_context: bool,
    /// How long to keep serving after SIGTERM while /readyz fails, so that load balancers stop
    /// sending reviews first [default: 5s in cluster mode, 0 offline].
    #[arg(long, env = "MILO_WEBHOOK_SHUTDOWN_DELAY", value_parser = parse_duration)]
    pub shutdown_delay: Option<Duration>,
    /// Deadline for one review, body included; keep it below the webhooks' timeoutSeconds.
    #[arg(long, env = "MILO_WEBHOOK_REQUEST_TIMEOUT", default_value = "8s", value_parser = parse_duration)]
    pub request_timeout: Duration,
    /// Close webhook connections gracefully once about this old (each draws its own age within
    /// ±10%), so that the API server reconnects and the Service spreads the load over the
    /// replicas, e.g. after a rollout; `0` keeps connections open for as long as the client
    /// does.
    #[arg(long, env = "MILO_WEBHOOK_MAX_CONNECTION_AGE", default_value = "5m", value_parser = parse_duration)]
    pub max_connection_age: Duration,
    /// Settings the rules read.
    #[command(flatten)]
    pub rules: super::RuleArgs,
    /// What clients can make a replica hold.
    #[command(flatten)]
    pub limits: super::limits::LimitArgs,
    /// Log format: `text` (coloured only on a terminal) or `json` (one object per line).
    #[arg(long, env = "MILO_WEBHOOK_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
    /// The embedded controllers (cluster mode only).
    #[command(flatten)]
    pub controllers: ControllerArgs,
    /// Provider sync and the provider events listener.
    #[command(flatten)]
    pub providers: super::provider::ProviderArgs,
}

/// Flags of the embedded controllers.
#[derive(Debug, Args)]
pub struct ControllerArgs {
    /// Controllers the elected leader runs, comma-separated (default: all of them).
    // A literal rather than `default_values_t = ControllerKind::ALL`, which `--help` would show
    // space-separated, unlike what the flag takes; tests/cli.rs checks it names them all.
    #[arg(
        long,
        env = "MILO_WEBHOOK_CONTROLLERS",
        value_delimiter = ',',
        default_value = "enrollment,removal,membership,usercontact,invitation,resend,loops,email",
        conflicts_with = "no_controllers"
    )]
    pub controllers: Vec<ControllerKind>,
    /// Serve admission only: run no controllers and take no part in leader election.
    #[arg(long, env = "MILO_WEBHOOK_NO_CONTROLLERS")]
    pub no_controllers: bool,
    /// Milo's system namespace: the default of --contact-namespace and
    /// --invitation-role-namespace, as in Milo's controller manager.
    #[arg(
        long,
        env = "MILO_WEBHOOK_SYSTEM_NAMESPACE",
        default_value = "milo-system"
    )]
    pub system_namespace: String,
    /// Namespace the usercontact controller creates Users' Contacts in [default: --system-namespace].
    #[arg(long, env = "MILO_WEBHOOK_CONTACT_NAMESPACE")]
    pub contact_namespace: Option<String>,
    /// Reconciles each controller runs at once: an upper bound; how many of their requests are
    /// in flight is --api-write-concurrency's adaptive limit.
    #[arg(
        long,
        env = "MILO_WEBHOOK_CONTROLLER_CONCURRENCY",
        default_value_t = 64,
        value_parser = clap::value_parser!(u16).range(1..)
    )]
    pub controller_concurrency: u16,
    /// Steps an enrollment pass keeps going at once (membership creates and record
    /// annotations): an upper bound under --api-write-concurrency's adaptive limit.
    #[arg(
        long,
        env = "MILO_WEBHOOK_ENROLLMENT_CONCURRENCY",
        default_value_t = 64,
        value_parser = clap::value_parser!(u16).range(1..)
    )]
    pub enrollment_concurrency: u16,
    /// Ceiling of the controllers' requests in flight to the API server. Below it the limit
    /// adapts: it starts at 16, grows while the API server's latency holds, and falls when
    /// latency rises, on throttling (429, after waiting out Retry-After) and on server errors.
    #[arg(
        long,
        env = "MILO_WEBHOOK_API_WRITE_CONCURRENCY",
        default_value_t = 64,
        value_parser = clap::value_parser!(u16).range(1..)
    )]
    pub api_write_concurrency: u16,
    /// How often every controller compares desired and observed state in memory and queues what
    /// differs (a safety net for anything a change could have missed).
    #[arg(long, env = "MILO_WEBHOOK_CONTROLLER_RESYNC", default_value = "10m", value_parser = parse_duration)]
    pub controller_resync: Duration,
    /// Namespace of the leader-election Lease (default: the pod's namespace when in a cluster,
    /// else milo-system).
    #[arg(
        long,
        env = "MILO_WEBHOOK_LEADER_ELECTION_NAMESPACE",
        visible_alias = "leader-elect-resource-namespace"
    )]
    pub leader_election_namespace: Option<String>,
    /// Name of the leader-election Lease (not Milo's `datum-controller-manager`: Milo's controller
    /// manager keeps holding that one for its other controllers).
    #[arg(
        long,
        env = "MILO_WEBHOOK_LEADER_ELECTION_LEASE",
        visible_alias = "leader-elect-resource-name",
        default_value = "milo-webhook-controllers"
    )]
    pub leader_election_lease: String,
    /// This replica's identity in the Lease (default: the hostname, which is the pod name).
    #[arg(long, env = "MILO_WEBHOOK_LEADER_ELECTION_IDENTITY")]
    pub leader_election_identity: Option<String>,
    /// How long the Lease is valid without renewal (seconds, or a Go duration such as `15s`); a
    /// dead leader is replaced after at most this.
    #[arg(
        long,
        env = "MILO_WEBHOOK_LEADER_ELECTION_LEASE_SECONDS",
        visible_alias = "leader-elect-lease-duration",
        default_value = "15",
        value_parser = super::parse_seconds
    )]
    pub leader_election_lease_seconds: u64,
    /// The invitation controller.
    #[command(flatten)]
    pub invitations: InvitationArgs,
}

/// Flags of the invitation controller.
#[derive(Debug, Args)]
pub struct InvitationArgs {
    /// How invitees get access to their invitation and roles on acceptance: plain Kubernetes
    /// RBAC (any cluster) or Milo IAM PolicyBindings and OrganizationMemberships.
    #[arg(
        long,
        env = "MILO_WEBHOOK_ACCESS_BACKEND",
        value_enum,
        default_value = "rbac"
    )]
    pub access_backend: AccessBackendKind,
    /// EmailTemplate invitation Emails are rendered from (Milo's default, so a cluster set up for
    /// Milo needs no change).
    #[arg(
        long,
        env = "MILO_WEBHOOK_INVITATION_EMAIL_TEMPLATE",
        visible_alias = "user-invitation-email-template",
        default_value = "emailtemplates.notification.miloapis.com-userinvitationemailtemplate"
    )]
    pub invitation_email_template: String,
    /// Link sent in the invitation Email; `{organization}`, `{namespace}` and `{invitation}`
    /// are replaced.
    #[arg(
        long,
        env = "MILO_WEBHOOK_INVITATION_URL_TEMPLATE",
        default_value = "https://cloud.datum.net/invitations/{organization}/{invitation}"
    )]
    pub invitation_url_template: String,
    /// How long an accepted invitation is kept (for administrators to see) before deletion.
    #[arg(long, env = "MILO_WEBHOOK_ACCEPTED_RETENTION", default_value = "168h", value_parser = parse_duration)]
    pub accepted_retention: Duration,
    /// `milo` backend: the Role letting the invitee read their invitation.
    #[arg(
        long,
        env = "MILO_WEBHOOK_INVITATION_GET_ROLE",
        visible_alias = "get-invitation-role-name",
        default_value = "iam.miloapis.com-getinvitation"
    )]
    pub invitation_get_role: String,
    /// `milo` backend: the Role letting the invitee accept or decline their invitation.
    #[arg(
        long,
        env = "MILO_WEBHOOK_INVITATION_ACCEPT_ROLE",
        visible_alias = "accept-invitation-role-name",
        default_value = "iam.miloapis.com-acceptinvitation"
    )]
    pub invitation_accept_role: String,
    /// `milo` backend: the namespace of those two roles [default: --system-namespace].
    #[arg(long, env = "MILO_WEBHOOK_INVITATION_ROLE_NAMESPACE")]
    pub invitation_role_namespace: Option<String>,
}

impl ServeArgs {
    /// `--max-connection-age`, `None` when `0` turns it off.
    pub fn max_connection_age(&self) -> Option<Duration> {
        Some(self.max_connection_age).filter(|age| !age.is_zero())
    }

    /// `--shutdown-delay`, else 5 s in cluster mode (for the Service's endpoints to drop the
    /// replica) and none offline, where no load balancer is waiting to notice.
    pub fn shutdown_delay(&self, cluster: bool) -> Duration {
        self.shutdown_delay.unwrap_or(if cluster {
            DEFAULT_SHUTDOWN_DELAY
        } else {
            Duration::ZERO
        })
    }
}

/// `--shutdown-delay` in cluster mode when not given.
pub const DEFAULT_SHUTDOWN_DELAY: Duration = Duration::from_secs(5);

impl InvitationArgs {
    /// The invitation controller's settings.
    pub fn settings(&self, system_namespace: &str) -> InvitationSettings {
        InvitationSettings {
            access_backend: self.access_backend,
            email_template: self.invitation_email_template.clone(),
            url_template: self.invitation_url_template.clone(),
            accepted_retention: self.accepted_retention,
            get_role: self.invitation_get_role.clone(),
            accept_role: self.invitation_accept_role.clone(),
            role_namespace: self
                .invitation_role_namespace
                .clone()
                .unwrap_or_else(|| system_namespace.to_owned()),
        }
    }
}

impl ControllerArgs {
    /// The controllers selected, in a stable order, none with `--no-controllers`.
    pub fn selected(&self) -> Vec<ControllerKind> {
        if self.no_controllers {
            return Vec::new();
        }
        let mut selected = self.controllers.clone();
        selected.sort();
        selected.dedup();
        selected
    }

    /// What the controllers are given, with --system-namespace filled in where no namespace
    /// was given.
    pub fn settings(&self) -> ControllerSettings {
        ControllerSettings {
            contact_namespace: self
                .contact_namespace
                .clone()
                .unwrap_or_else(|| self.system_namespace.clone()),
            resync: self.controller_resync,
            concurrency: usize::from(self.controller_concurrency),
            enrollment_concurrency: usize::from(self.enrollment_concurrency),
            invitation: self.invitations.settings(&self.system_namespace),
            provider_resync: Duration::from_secs(3600),
            email: Default::default(),
        }
    }

    /// The controllers' write pace.
    pub fn pace(&self) -> PaceSettings {
        PaceSettings {
            ceiling: usize::from(self.api_write_concurrency),
            ..PaceSettings::default()
        }
    }

    fn lease(&self) -> LeaseSettings {
        const IN_CLUSTER_NAMESPACE: &str =
            "/var/run/secrets/kubernetes.io/serviceaccount/namespace";
        let namespace = self.leader_election_namespace.clone().unwrap_or_else(|| {
            std::fs::read_to_string(IN_CLUSTER_NAMESPACE)
                .map(|ns| ns.trim().to_owned())
                .unwrap_or_else(|_| "milo-system".into())
        });
        let identity = self.leader_election_identity.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
            let host = host.trim();
            if host.is_empty() {
                format!("milo-webhook-{}", std::process::id())
            } else {
                host.to_owned()
            }
        });
        LeaseSettings {
            namespace,
            name: self.leader_election_lease.clone(),
            identity,
            duration_seconds: self.leader_election_lease_seconds,
            grace_seconds: (self.leader_election_lease_seconds / 3).max(1),
        }
    }
}

fn certificates(args: &ServeArgs) -> anyhow::Result<Arc<ReloadingCertResolver>> {
    let paths = match (&args.tls_cert_file, &args.tls_key_file) {
        (Some(cert), Some(key)) => CertPaths {
            cert: cert.clone(),
            key: key.clone(),
        },
        _ => {
            let dev = tls::ensure_dev_certificates(&args.certs_dir)
                .map_err(|e| anyhow::anyhow!("--certs-dir: {e}"))?;
            tracing::info!(ca = %dev.ca.display(), "serving a generated development certificate; trust it with --cacert {}", dev.ca.display());
            dev.paths
        }
    };
    ReloadingCertResolver::load(paths.clone()).map_err(|e| {
        // Name the flag the operator has to fix, not just the file.
        let flag = match e.path() {
            Some(path) if path == paths.cert => "--tls-cert-file",
            Some(path) if path == paths.key => "--tls-key-file",
            _ => "--tls-cert-file/--tls-key-file",
        };
        anyhow::anyhow!("{flag}: {e}")
    })
}

pub use super::logging::{DEFAULT_LOG_FILTER, init_logging};

/// Runs the server until SIGTERM or SIGINT, then drains.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    crate::server::budget::return_large_buffers_to_the_system();
    // The state first: a broken state file should fail before anything is generated or logged
    // about certificates.
    let (source, described) = source(&args).await?;
    let (view, client) = match source {
        Source::Offline(store) => (Arc::new(ClusterView::offline(*store)), None),
        Source::Cluster(client, config) => {
            (Arc::new(ClusterView::unsynced()), Some((client, config)))
        }
    };
    if client.is_none() && args.providers.provider_events_listen.is_some() {
        // Before anything is generated or bound: the flag cannot work offline.
        anyhow::bail!(super::provider::EVENTS_NEED_CLUSTER);
    }
    let metrics = Arc::new(Metrics::default());
    let (providers, email) = match &client {
        Some(_) => (
            Some(args.providers.clients(&metrics)?),
            args.providers.email_settings()?,
        ),
        None => (None, Default::default()),
    };
    let keys = providers
        .as_ref()
        .map_or((false, false), |p| (p.resend.is_some(), p.loops.is_some()));
    let controllers = controllers_summary(
        &args.controllers.selected(),
        client.is_some(),
        keys,
        email.from.is_some(),
    );
    // The one line that says where writes go, if anywhere.
    tracing::info!("{described}; {controllers}");
    let resolver = certificates(&args)?;
    let tls_config = tls::server_config(resolver.clone())?;
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let admin_listener = TcpListener::bind(args.admin_listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.admin_listen))?;
    // Registered now, not when the controller first leads, so that every replica exports the
    // series the alerts read (at zero until it leads).
    crate::controllers::invitation::metrics::InvitationMetrics::of(&metrics);
    let shutdown_delay = args.shutdown_delay(client.is_some());
    let options = ServeOptions {
        request_timeout: args.request_timeout,
        shutdown_delay,
        max_connection_age: args.max_connection_age(),
        settings: Arc::new(args.rules.settings()),
        review_limits: args.limits.review_limits(),
        max_connections: args.limits.max_connections,
        events: args.limits.events(),
        ..ServeOptions::default()
    };
    let server = Arc::new(Server {
        view: view.clone(),
        metrics: metrics.clone(),
        options,
        shutdown: Shutdown::default(),
    });
    tracing::info!(webhooks = %args.listen, admin = %args.admin_listen, "listening");

    let resend = providers.as_ref().and_then(|p| p.resend.clone());
    let events = super::provider::provider_events(
        &args,
        (client.as_ref().map(|(c, _)| c), resend),
        &view,
        &metrics,
        &server.shutdown,
    )
    .await?;
    let mut leading = None;
    if let Some((client, config)) = client {
        tokio::spawn(crate::view::watch::run(client.clone(), view.clone()));
        leading = start_controllers(
            &args,
            (client, *config),
            view,
            metrics.clone(),
            (providers, email),
            &server.shutdown,
        )
        .await?;
    }
    // The unsubscribe keys, read by the events listener or the email sender, are watched once.
    if let Some(keys) = args.providers.unsubscribe_keys.get().cloned() {
        let stop = server.shutdown.clone();
        let stopped = async move { stop.stopped().await };
        tokio::spawn(keys.watch(args.tls_reload_interval, stopped));
    }
    let events = events.map(|(listener, router, tls)| {
        let server = server.clone();
        tokio::spawn(async move { server.serve_provider_events(listener, router, tls).await })
    });
    let reload_metrics = metrics.clone();
    let shutdown = server.shutdown.clone();
    tokio::spawn(tls::watch_for_rotation(
        resolver,
        args.tls_reload_interval,
        move |outcome| {
            reload_metrics.record_reload(matches!(outcome, tls::ReloadOutcome::Reloaded))
        },
        async move { shutdown.stopped().await },
    ));
    let signals = server.shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        signals.begin(shutdown_delay).await;
    });
    let webhooks = {
        let server = server.clone();
        tokio::spawn(async move { server.serve_webhooks(listener, tls_config).await })
    };
    let admin = {
        let server = server.clone();
        tokio::spawn(async move { server.serve_admin(admin_listener).await })
    };
    let (webhooks, admin) = tokio::join!(webhooks, admin);
    if let Some(events) = events {
        events.await?;
    }
    if let Some(leading) = leading {
        // Released during the drain already, unless the API server was slow; bounded anyway.
        let _ = tokio::time::timeout(leader::RELEASE_TIMEOUT, leading).await;
    }
    webhooks?;
    admin?;
    tracing::info!("stopped");
    Ok(())
}

/// Joins the leader election and runs the selected controllers whenever this replica leads.
/// The returned task ends once shutdown has begun, the controllers have stopped and the lease
/// has been released (within the drain, so the next leader need not wait for expiry).
async fn start_controllers(
    args: &ServeArgs,
    (client, config): (kube::Client, kube::Config),
    view: Arc<ClusterView>,
    metrics: Arc<Metrics>,
    (clients, email): (Option<ProviderClients>, EmailSettings),
    shutdown: &Shutdown,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    let providers = &args.providers;
    let args = &args.controllers;
    let selected = args.selected();
    if selected.is_empty() {
        tracing::info!("controllers disabled: serving admission only");
        return Ok(None);
    }
    let lease = args.lease();
    let election = leader::campaign(client.clone(), &lease)
        .await
        .context("cannot start leader election")?;
    tracing::info!(lease = %lease.name, namespace = %lease.namespace, identity = %lease.identity, controllers = ?selected, "joined leader election");
    let mut settings = args.settings();
    settings.provider_resync = providers.provider_resync;
    settings.email = email;
    // Controllers write through a client of their own, paced by the API server's answers; the
    // election keeps the plain one, so a backlog of writes never delays a renewal.
    let pace = metrics.subsystem(PaceMetrics::register);
    let writes = controllers::pace::client(config, args.pace(), pace.limit)
        .context("cannot build the controllers' API client")?;
    let mut ctx = controllers::Context::new(
        writes,
        view,
        metrics.clone(),
        settings,
        Some(lease.identity.clone()),
    )
    .with_crd_check();
    if let Some(ProviderClients {
        resend,
        loops,
        sync,
    }) = clients
    {
        if let Some(client) = resend {
            ctx = ctx.with_resend(client, sync.clone());
        }
        if let Some(client) = loops {
            ctx = ctx.with_loops(client, sync);
        }
    }
    let ctx = Arc::new(ctx);
    let draining = shutdown.clone();
    Ok(Some(tokio::spawn(leader::lead_until(
        election,
        metrics,
        move || controllers::spawn(&ctx, &selected),
        async move { draining.draining().await },
    ))))
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {},
                    _ = tokio::signal::ctrl_c() => {},
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops the server");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}
