//! Flags of provider sync and the provider events listener, and what they build: the Resend
//! client (only when an API key is configured: without one nothing is called) and the signing
//! keys of the events listener. Names follow Milo's integration where it had them
//! (`RESEND_API_KEY`, `RESEND_WEBHOOK_SIGNING_KEY`, `RESEND_CONTACT_WEBHOOK_SIGNING_KEY`,
//! `LOOPS_SIGNING_SECRET`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;

use super::parse_duration;
use tokio::net::TcpListener;

use crate::controllers::loops::events::LoopsEventSink;
use crate::controllers::preferences::PreferenceActions;
use crate::controllers::resend::oneclick::OneClickSink;
use crate::controllers::resend::sink::OptOutSink;
use crate::metrics::Metrics;
use crate::providers::metrics::ProviderMetrics;
use crate::providers::resend::{ResendClient, ResendConfig};
use crate::server::{Shutdown, tls};
use crate::server::{preferences, provider_events, unsubscribe};
use crate::view::ClusterView;

/// Why `--provider-events-listen` is refused offline.
pub const EVENTS_NEED_CLUSTER: &str = "--provider-events-listen needs cluster mode: events are recorded on Contacts, which --state cannot hold";

/// Environment variable with the Resend API key (Milo's name).
pub const API_KEY_ENV: &str = "RESEND_API_KEY";

/// Flags of provider sync.
#[derive(Debug, Args)]
pub struct ProviderArgs {
    /// File holding the Resend API key (a mounted Secret). Without it, the RESEND_API_KEY
    /// environment variable; without either, provider sync is off.
    #[arg(long, env = "MILO_WEBHOOK_RESEND_API_KEY_FILE")]
    pub resend_api_key_file: Option<PathBuf>,
    /// Resend's API address.
    #[arg(
        long,
        env = "RESEND_BASE_URL",
        default_value = "https://api.resend.com"
    )]
    pub resend_base_url: String,
    /// Requests per second for the whole Resend account (every call of every kind shares it).
    #[arg(long, env = "MILO_WEBHOOK_RESEND_RATE_LIMIT", default_value_t = 5.0, value_parser = positive_rate)]
    pub resend_rate_limit: f64,
    /// File holding the Loops API key (a mounted Secret). Without it, the LOOPS_API_KEY
    /// environment variable; without either, Loops sync is off.
    #[arg(long, env = "MILO_WEBHOOK_LOOPS_API_KEY_FILE")]
    pub loops_api_key_file: Option<PathBuf>,
    /// Loops' API address.
    #[arg(long, env = "LOOPS_BASE_URL", default_value = crate::providers::loops::DEFAULT_BASE_URL)]
    pub loops_base_url: String,
    /// Requests per second for the whole Loops account (every call of every kind shares it).
    #[arg(long, env = "MILO_WEBHOOK_LOOPS_RATE_LIMIT", default_value_t = crate::providers::loops::DEFAULT_RATE, value_parser = positive_rate)]
    pub loops_rate_limit: f64,
    /// How often the cluster is compared with Resend to repair drift (listings, not per-object
    /// reads).
    #[arg(long, env = "MILO_WEBHOOK_PROVIDER_RESYNC", default_value = "1h", value_parser = parse_duration)]
    pub provider_resync: Duration,
    /// Address of the plain-HTTP listener for provider events (Resend webhooks), for an ingress
    /// or gateway to expose; off when unset. Separate from the admission port, which stays
    /// private.
    #[arg(long, env = "MILO_WEBHOOK_PROVIDER_EVENTS_LISTEN")]
    pub provider_events_listen: Option<SocketAddr>,
    /// Serve provider events over TLS with this certificate (PEM chain).
    #[arg(
        long,
        env = "MILO_WEBHOOK_PROVIDER_EVENTS_TLS_CERT_FILE",
        requires = "provider_events_tls_key_file"
    )]
    pub provider_events_tls_cert_file: Option<PathBuf>,
    /// Private key of --provider-events-tls-cert-file (PEM).
    #[arg(
        long,
        env = "MILO_WEBHOOK_PROVIDER_EVENTS_TLS_KEY_FILE",
        requires = "provider_events_tls_cert_file"
    )]
    pub provider_events_tls_key_file: Option<PathBuf>,
    /// File with the signing secret (`whsec_…`) of the Resend webhook for email events. Without
    /// it, the RESEND_WEBHOOK_SIGNING_KEY environment variable.
    #[arg(long, env = "MILO_WEBHOOK_RESEND_WEBHOOK_SIGNING_KEY_FILE")]
    pub resend_webhook_signing_key_file: Option<PathBuf>,
    /// File with the signing secret of the Resend webhook for contact events. Without it, the
    /// RESEND_CONTACT_WEBHOOK_SIGNING_KEY environment variable; without that, the email key.
    #[arg(long, env = "MILO_WEBHOOK_RESEND_CONTACT_WEBHOOK_SIGNING_KEY_FILE")]
    pub resend_contact_webhook_signing_key_file: Option<PathBuf>,
    /// File with the signing secret (`whsec_…`, at least 24 bytes) of the Loops webhook, whose
    /// events the listener takes on the Loops path. Without it, the LOOPS_SIGNING_SECRET
    /// environment variable; without either, Loops deliveries are refused (503).
    #[arg(long, env = "MILO_WEBHOOK_LOOPS_SIGNING_SECRET_FILE")]
    pub loops_signing_secret_file: Option<PathBuf>,
    /// File with the key one-click unsubscribe links are signed with (at least 32 bytes, from a
    /// Secret). With it, the provider events listener also serves `/unsubscribe/<token>`. Re-read
    /// when it changes (every --tls-reload-interval).
    #[arg(long, env = "MILO_WEBHOOK_UNSUBSCRIBE_SIGNING_KEY_FILE")]
    pub unsubscribe_signing_key_file: Option<PathBuf>,
    /// Files with older unsubscribe keys, comma-separated or repeated: links they signed keep
    /// working, new links are signed with --unsubscribe-signing-key-file. To rotate, make the
    /// new key the signing key and the old one a verification key; drop it once the mail it
    /// signed is old enough. An empty file holds no key. Re-read when they change.
    #[arg(
        long,
        env = "MILO_WEBHOOK_UNSUBSCRIBE_VERIFICATION_KEY_FILES",
        value_delimiter = ',',
        requires = "unsubscribe_signing_key_file"
    )]
    pub unsubscribe_verification_key_file: Vec<PathBuf>,
    /// The keys, once read: the events listener and the email sender share them, so one
    /// watcher reloads both.
    #[arg(skip)]
    pub unsubscribe_keys: std::sync::OnceLock<Arc<unsubscribe::UnsubscribeKeys>>,
    /// The public address of the provider events listener, which one-click unsubscribe links in
    /// mail point at (e.g. `https://mail.example.com`).
    #[arg(long, env = "MILO_WEBHOOK_UNSUBSCRIBE_BASE_URL")]
    pub unsubscribe_base_url: Option<String>,
    /// How long a preference page link in mail works ({{.PreferencesLink}}), e.g. `720h` (30
    /// days). The page is served with the one-click links, signed with the same keys.
    #[arg(long, env = "MILO_WEBHOOK_PREFERENCES_LINK_TTL", default_value = "720h", value_parser = super::parse_duration)]
    pub preferences_link_ttl: std::time::Duration,
    /// The `from` of every Email sent (Milo's flag), e.g. `Milo <noreply@example.com>` on a
    /// domain verified at Resend. Without it the email controller does not run.
    #[arg(long, env = "MILO_WEBHOOK_EMAIL_FROM_ADDRESS")]
    pub email_from_address: Option<String>,
    /// The `reply_to` of every Email sent (Milo's flag); none when unset.
    #[arg(long, env = "MILO_WEBHOOK_EMAIL_REPLY_TO_ADDRESS")]
    pub email_reply_to_address: Option<String>,
}

fn positive_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(rate),
        _ => Err(format!(
            "{text:?} is not a positive number of requests per second"
        )),
    }
}

/// A secret from `file` when given, else from the environment variable `env`; `None` when
/// neither is set. Surrounding whitespace (a trailing newline in a Secret file) is dropped.
pub fn secret(file: Option<&Path>, env: &str) -> anyhow::Result<Option<String>> {
    let text = match file {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?,
        None => match std::env::var(env) {
            Ok(value) => value,
            Err(_) => return Ok(None),
        },
    };
    let text = text.trim();
    if text.is_empty() {
        anyhow::bail!(
            "{} is empty",
            file.map_or_else(|| env.to_owned(), |p| p.display().to_string())
        );
    }
    Ok(Some(text.to_owned()))
}

impl ProviderArgs {
    /// The email sender's addresses and unsubscribe links; blank flags count as unset.
    pub fn email_settings(&self) -> anyhow::Result<crate::controllers::email::EmailSettings> {
        let present = |v: &Option<String>| {
            v.as_deref()
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        let unsubscribe = match (
            self.unsubscribe_keys()?,
            present(&self.unsubscribe_base_url),
        ) {
            (Some(keys), Some(base_url)) => Some(crate::controllers::email::UnsubscribeLinks {
                keys,
                base_url,
                preferences_ttl: self.preferences_link_ttl,
            }),
            _ => None,
        };
        Ok(crate::controllers::email::EmailSettings {
            from: present(&self.email_from_address),
            reply_to: present(&self.email_reply_to_address),
            unsubscribe,
        })
    }

    /// The Resend client, when an API key is configured.
    pub fn resend_client(&self, metrics: ProviderMetrics) -> anyhow::Result<Option<ResendClient>> {
        let Some(api_key) = secret(self.resend_api_key_file.as_deref(), API_KEY_ENV)? else {
            return Ok(None);
        };
        let mut config = ResendConfig::new(api_key);
        config.base_url = self.resend_base_url.trim_end_matches('/').to_owned();
        config.rate_limit = self.resend_rate_limit;
        let client =
            ResendClient::new(config, metrics).context("cannot build the Resend client")?;
        Ok(Some(client))
    }
}

/// Environment variable with the Loops API key (Milo's name).
pub const LOOPS_API_KEY_ENV: &str = "LOOPS_API_KEY";

/// The provider clients an API key was given for, sharing one set of request metrics, and the
/// syncs' metrics.
pub struct ProviderClients {
    /// Resend, with `--resend-api-key-file` or `RESEND_API_KEY`.
    pub resend: Option<ResendClient>,
    /// Loops, with `--loops-api-key-file` or `LOOPS_API_KEY`.
    pub loops: Option<crate::providers::loops::LoopsClient>,
    /// The syncs' backlog metrics.
    pub sync: crate::controllers::providers::SyncMetrics,
}

impl ProviderArgs {
    /// The clients of every provider with an API key, their metrics registered in `metrics`.
    pub fn clients(&self, metrics: &crate::metrics::Metrics) -> anyhow::Result<ProviderClients> {
        let requests = metrics.subsystem(ProviderMetrics::register);
        Ok(ProviderClients {
            resend: self.resend_client(requests.clone())?,
            loops: self.loops_client(requests)?,
            sync: metrics.subsystem(crate::controllers::providers::SyncMetrics::register),
        })
    }

    /// The Loops client, when an API key is configured.
    pub fn loops_client(
        &self,
        metrics: ProviderMetrics,
    ) -> anyhow::Result<Option<crate::providers::loops::LoopsClient>> {
        use crate::providers::loops::{LoopsClient, LoopsConfig};
        let Some(api_key) = secret(self.loops_api_key_file.as_deref(), LOOPS_API_KEY_ENV)? else {
            return Ok(None);
        };
        let mut config = LoopsConfig::new(api_key);
        config.base_url = self.loops_base_url.trim_end_matches('/').to_owned();
        config.rate_limit = self.loops_rate_limit;
        let client = LoopsClient::new(config, metrics).context("cannot build the Loops client")?;
        Ok(Some(client))
    }
}

/// Environment variable with the email events' signing secret (Milo's name).
pub const EMAIL_SIGNING_KEY_ENV: &str = "RESEND_WEBHOOK_SIGNING_KEY";
/// Environment variable with the contact events' signing secret (Milo's name).
pub const CONTACT_SIGNING_KEY_ENV: &str = "RESEND_CONTACT_WEBHOOK_SIGNING_KEY";
/// Environment variable with the Loops webhook's signing secret (Milo's name).
pub const LOOPS_SIGNING_SECRET_ENV: &str = "LOOPS_SIGNING_SECRET";

fn signing_key(
    file: Option<&Path>,
    env: &str,
    flag: &str,
) -> anyhow::Result<Option<crate::providers::svix::SigningKey>> {
    secret(file, env)?
        .map(|text| {
            crate::providers::svix::SigningKey::parse(&text)
                .map_err(|e| anyhow::anyhow!("{flag} (or {env}): {e}"))
        })
        .transpose()
}

impl ProviderArgs {
    /// The keys of one-click unsubscribe links, when configured: read once, then shared (see
    /// [`unsubscribe::UnsubscribeKeys::watch`] for their reload).
    pub fn unsubscribe_keys(&self) -> anyhow::Result<Option<Arc<unsubscribe::UnsubscribeKeys>>> {
        if let Some(keys) = self.unsubscribe_keys.get() {
            return Ok(Some(keys.clone()));
        }
        let Some(signing) = &self.unsubscribe_signing_key_file else {
            return Ok(None);
        };
        let files = unsubscribe::KeyFiles {
            signing: signing.clone(),
            verifying: self.unsubscribe_verification_key_file.clone(),
        };
        let keys = unsubscribe::UnsubscribeKeys::load(files).map_err(|e| {
            anyhow::anyhow!(
                "--unsubscribe-signing-key-file/--unsubscribe-verification-key-file: {e}"
            )
        })?;
        Ok(Some(self.unsubscribe_keys.get_or_init(|| keys).clone()))
    }

    /// The events listener's settings: its signing keys (the contact path falls back to the
    /// email key when its own is unset).
    pub fn events_config(
        &self,
    ) -> anyhow::Result<crate::server::provider_events::ProviderEventsConfig> {
        Ok(crate::server::provider_events::ProviderEventsConfig {
            contact_key: signing_key(
                self.resend_contact_webhook_signing_key_file.as_deref(),
                CONTACT_SIGNING_KEY_ENV,
                "--resend-contact-webhook-signing-key-file",
            )?,
            email_key: signing_key(
                self.resend_webhook_signing_key_file.as_deref(),
                EMAIL_SIGNING_KEY_ENV,
                "--resend-webhook-signing-key-file",
            )?,
            loops_key: secret(
                self.loops_signing_secret_file.as_deref(),
                LOOPS_SIGNING_SECRET_ENV,
            )?
            .map(|text| {
                crate::providers::loops::LoopsSigningKey::parse(&text).map_err(|e| {
                    anyhow::anyhow!(
                        "--loops-signing-secret-file (or {LOOPS_SIGNING_SECRET_ENV}): {e}"
                    )
                })
            })
            .transpose()?,
            ..Default::default()
        })
    }

    /// The events listener's TLS settings, when it serves TLS; the certificate is reloaded on
    /// rotation like the admission port's.
    pub fn events_tls(
        &self,
    ) -> anyhow::Result<Option<std::sync::Arc<crate::server::tls::ReloadingCertResolver>>> {
        let (Some(cert), Some(key)) = (
            &self.provider_events_tls_cert_file,
            &self.provider_events_tls_key_file,
        ) else {
            return Ok(None);
        };
        let paths = crate::server::tls::CertPaths {
            cert: cert.clone(),
            key: key.clone(),
        };
        crate::server::tls::ReloadingCertResolver::load(paths)
            .map(Some)
            .map_err(|e| anyhow::anyhow!("--provider-events-tls-cert-file/-key-file: {e}"))
    }
}

/// A bound provider events listener, its router and its TLS settings.
pub type EventsListener = (TcpListener, axum::Router, Option<Arc<rustls::ServerConfig>>);

/// Binds the provider events listener when `--provider-events-listen` is set. It needs a cluster:
/// the opt-outs it receives are recorded on Contacts. With the Resend client (`resend`, the one
/// the sync uses, so one rate limit), contact events also read the contact's topics.
pub async fn provider_events(
    args: &super::serve::ServeArgs,
    (client, resend): (Option<&kube::Client>, Option<ResendClient>),
    view: &Arc<ClusterView>,
    metrics: &Arc<Metrics>,
    shutdown: &Shutdown,
) -> anyhow::Result<Option<EventsListener>> {
    let Some(addr) = args.providers.provider_events_listen else {
        return Ok(None);
    };
    let Some(client) = client else {
        anyhow::bail!(EVENTS_NEED_CLUSTER);
    };
    let config = args.providers.events_config()?;
    if config.contact_key.is_none() && config.email_key.is_none() && config.loops_key.is_none() {
        tracing::warn!(
            "no Resend or Loops signing key configured: every provider event is refused (503) until one is"
        );
    }
    let tls = match args.providers.events_tls()? {
        Some(resolver) => {
            let config = tls::server_config(resolver.clone())?;
            let reloads = metrics.clone();
            let stop = shutdown.clone();
            tokio::spawn(tls::watch_for_rotation(
                resolver,
                args.tls_reload_interval,
                move |outcome| {
                    reloads.record_reload(matches!(outcome, tls::ReloadOutcome::Reloaded))
                },
                async move { stop.stopped().await },
            ));
            Some(config)
        }
        None => None,
    };
    let sink = Arc::new(provider_events::PerProvider {
        resend: Arc::new(OptOutSink::new(client.clone(), view.clone()).with_topics(resend)),
        loops: Arc::new(LoopsEventSink::new(client.clone(), view.clone())),
    });
    let mut router = provider_events::router(
        config,
        sink,
        metrics.subsystem(provider_events::ProviderEventMetrics::register),
    );
    if let Some(keys) = args.providers.unsubscribe_keys()? {
        let sink = Arc::new(OneClickSink::new(client.clone()));
        router = router.merge(unsubscribe::router(keys.clone(), sink));
        let actions = Arc::new(PreferenceActions::new(client.clone(), view.clone()));
        router = router.merge(preferences::router(keys, view.clone(), actions));
    }
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    tracing::info!(provider_events = %addr, tls = tls.is_some(), "listening for provider events");
    Ok(Some((listener, router, tls)))
}
