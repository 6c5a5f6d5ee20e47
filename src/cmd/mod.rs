//! The command line: flag definitions (every flag also read from a `MILO_WEBHOOK_*` variable) and
//! one module per subcommand. `main.rs` only parses and dispatches.

pub mod check;
pub mod cluster;
pub mod limits;
pub mod logging;
pub mod provider;
pub mod review;
pub mod serve;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::admission::Settings;

/// Admission webhooks for Milo's contact-group, enrollment and invitation APIs.
#[derive(Debug, Parser)]
#[command(name = "milo-webhook", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
// Parsed once per process; boxing `serve`'s flags would only add noise.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the admission webhooks over HTTPS (cluster mode, or offline with --state).
    Serve(serve::ServeArgs),
    /// Decide one AdmissionReview against a state and print the response.
    Review(review::ReviewArgs),
    /// Try plain manifests against a state and print what the API server would answer.
    Check(check::CheckArgs),
    /// Print the CustomResourceDefinitions generated from the Rust types.
    Crds(CrdsArgs),
    /// Print the Validating and Mutating WebhookConfigurations for every webhook served.
    WebhookConfig(WebhookConfigArgs),
}

/// A mistake in what the command line named (a file that cannot be read or parsed, a cluster
/// configuration that cannot be loaded): the binary exits 2 for it, as `review` and `check` do
/// for unreadable input, and 1 for failures while running.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// The exit code for an error of `serve`: 2 for a [`UsageError`], else 1.
pub fn exit_code(error: &anyhow::Error) -> u8 {
    if error.downcast_ref::<UsageError>().is_some() {
        2
    } else {
        1
    }
}

/// Flags of `crds`.
#[derive(Debug, Args)]
pub struct CrdsArgs {
    /// Write one file per CRD plus the kustomizations into this directory instead of printing
    /// (how `manifests/crds/` is made; the CRDs of kinds Milo owns go to `standalone/`).
    #[arg(long, env = "MILO_WEBHOOK_CRDS_OUTPUT_DIR")]
    pub output_dir: Option<PathBuf>,
}

/// Prints the CRDs, or writes them into `--output-dir`.
pub fn crds(args: &CrdsArgs) -> anyhow::Result<Option<String>> {
    let Some(dir) = &args.output_dir else {
        return Ok(Some(crate::crds::to_yaml()?));
    };
    for (file, content) in crate::crds::files()? {
        let path = dir.join(file);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, content)?;
    }
    Ok(None)
}

/// Flags of `webhook-config`.
#[derive(Debug, Args)]
pub struct WebhookConfigArgs {
    /// Base URL the API server calls (`https://HOST:PORT`); each webhook's path is appended.
    #[arg(long, env = "MILO_WEBHOOK_URL", conflicts_with = "service")]
    pub url: Option<String>,
    /// Service the API server calls, in --namespace.
    #[arg(long, env = "MILO_WEBHOOK_SERVICE", requires = "namespace")]
    pub service: Option<String>,
    /// Namespace of --service.
    #[arg(long, env = "MILO_WEBHOOK_NAMESPACE")]
    pub namespace: Option<String>,
    /// Port of --service.
    #[arg(long, env = "MILO_WEBHOOK_SERVICE_PORT", default_value_t = 443)]
    pub port: i32,
    /// PEM file of the CA that signed the serving certificate (becomes caBundle).
    #[arg(long, env = "MILO_WEBHOOK_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// `namespace/certificate` for cert-manager to inject the caBundle instead.
    #[arg(long, env = "MILO_WEBHOOK_INJECT_CA_FROM")]
    pub inject_ca_from: Option<String>,
    /// Name of both configuration objects.
    #[arg(long, env = "MILO_WEBHOOK_CONFIG_NAME", default_value = "milo-webhook")]
    pub name: String,
    /// Per-call timeout the API server applies (1-30).
    #[arg(long, env = "MILO_WEBHOOK_TIMEOUT_SECONDS", default_value_t = 10,
          value_parser = clap::value_parser!(i32).range(1..=30))]
    pub timeout_seconds: i32,
    /// Leave out `matchConditions`, for API servers older than 1.30: every request the rules
    /// match is then sent to the webhook, which still decides it.
    #[arg(long, env = "MILO_WEBHOOK_NO_MATCH_CONDITIONS")]
    pub no_match_conditions: bool,
}

/// Flags the admission rules read, shared by `serve`, `review` and `check`.
#[derive(Debug, Clone, Args)]
pub struct RuleArgs {
    /// Lifetime given to invitations created without an expirationDate (Go duration; `0` keeps
    /// "never expires").
    #[arg(long, env = "MILO_WEBHOOK_INVITATION_TTL", default_value = "336h", value_parser = parse_duration)]
    pub invitation_ttl: Duration,
}

impl RuleArgs {
    /// The settings, reading the clock at decision time.
    pub fn settings(&self) -> Settings {
        Settings {
            invitation_ttl: (!self.invitation_ttl.is_zero()).then_some(self.invitation_ttl),
            clock: None,
        }
    }
}

/// Parses an RFC 3339 time for `--now`.
pub fn parse_time(text: &str) -> Result<jiff::Timestamp, String> {
    text.parse()
        .map_err(|e| format!("not an RFC 3339 time: {e}"))
}

/// Parses whole seconds (`15`) or a Go-style duration (`15s`, `1m`), for flags Kubernetes
/// components spell as durations; at least one second.
pub fn parse_seconds(text: &str) -> Result<u64, String> {
    let seconds = match text.parse::<u64>() {
        Ok(seconds) => seconds,
        Err(_) => parse_duration(text)?.as_secs_f64().ceil() as u64,
    };
    if seconds == 0 {
        return Err("must be at least one second".into());
    }
    Ok(seconds)
}

/// Parses a Go-style duration (`500ms`, `5s`, `1h30m`), the syntax Kubernetes users already know.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let parsed: kube::core::Duration = text.parse().map_err(|e| format!("{e}"))?;
    Ok(parsed.into())
}

/// What `webhook-config` warns about on standard error (the YAML on standard output is as
/// asked): configurations without a `caBundle`, which the API server can only use when the
/// serving certificate chains to a CA it already trusts, never the development CA.
pub fn webhook_config_warning(args: &WebhookConfigArgs) -> Option<String> {
    if args.ca_file.is_some() || args.inject_ca_from.is_some() {
        return None;
    }
    Some(if args.url.is_some() {
        "warning: no --ca-file, so the configurations carry no caBundle and the API server will not trust a private CA; for the development certificate add --ca-file certs/ca.crt".to_owned()
    } else {
        "warning: no --ca-file nor --inject-ca-from, so the configurations carry no caBundle and the API server will not trust a private CA".to_owned()
    })
}

/// Renders `webhook-config`.
pub fn webhook_config(args: &WebhookConfigArgs) -> anyhow::Result<String> {
    use crate::webhook_config::{Endpoint, RenderOptions, to_yaml};
    let endpoint = match (&args.url, &args.service, &args.namespace) {
        (Some(url), None, _) => {
            anyhow::ensure!(
                url.starts_with("https://"),
                "--url must start with https:// (the API server only calls webhooks over TLS)"
            );
            Endpoint::Url(url.clone())
        }
        (None, Some(name), Some(namespace)) => Endpoint::Service {
            name: name.clone(),
            namespace: namespace.clone(),
            port: args.port,
        },
        _ => anyhow::bail!("give either --url, or --service with --namespace"),
    };
    let ca_bundle = match &args.ca_file {
        Some(path) => {
            let pem = std::fs::read(path)
                .map_err(|e| anyhow::anyhow!("cannot read --ca-file {}: {e}", path.display()))?;
            anyhow::ensure!(
                String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----"),
                "--ca-file {} holds no PEM certificate",
                path.display()
            );
            Some(pem)
        }
        None => None,
    };
    let options = RenderOptions {
        name: args.name.clone(),
        endpoint,
        ca_bundle,
        inject_ca_from: args.inject_ca_from.clone(),
        timeout_seconds: args.timeout_seconds,
        match_conditions: !args.no_match_conditions,
    };
    Ok(to_yaml(&options)?)
}
