//! Which cluster `serve` talks to, if any: only one it was told to use (in a pod, `--kubeconfig`,
//! or `--use-current-context`), else the offline state; and the one start line saying which
//! cluster and which controllers are live.

use std::path::PathBuf;

use super::UsageError;
use super::serve::ServeArgs;
use crate::controllers::ControllerKind;
use crate::view::Store;
use crate::view::manifests::load_paths;

/// Where the view comes from.
pub(super) enum Source {
    Offline(Box<Store>),
    /// The client for watches and leader election, and the configuration the controllers'
    /// paced client is built from.
    Cluster(kube::Client, Box<kube::Config>),
}

/// Whether this process runs in a pod: the kubelet sets `KUBERNETES_SERVICE_HOST` in every
/// container, and nothing else does unless asked to.
fn in_cluster() -> bool {
    std::env::var_os("KUBERNETES_SERVICE_HOST").is_some_and(|v| !v.is_empty())
}

/// The kubeconfig files kubectl reads: those `$KUBECONFIG` lists, else `~/.kube/config`.
fn kubeconfig_paths() -> Vec<PathBuf> {
    let listed: Vec<PathBuf> = std::env::var_os("KUBECONFIG")
        .map(|v| {
            std::env::split_paths(&v)
                .filter(|p| !p.as_os_str().is_empty())
                .collect()
        })
        .unwrap_or_default();
    if !listed.is_empty() {
        return listed;
    }
    std::env::home_dir()
        .map(|home| vec![home.join(".kube").join("config")])
        .unwrap_or_default()
}

/// One line for a kubeconfig that cannot be used: the path as the user typed it, unquoted.
fn kubeconfig_error(error: &kube::config::KubeconfigError) -> String {
    match error {
        kube::config::KubeconfigError::ReadConfig(io, path) => {
            format!("cannot read {}: {io}", path.display())
        }
        other => other.to_string(),
    }
}

/// The view's source, and how it was chosen, for the line `serve` starts with: only a cluster
/// the command line names (`--kubeconfig`, `--use-current-context`) or the pod it runs in is
/// ever used, so a command that looks local never writes to whatever cluster the current kube
/// context points at.
pub(super) async fn source(args: &ServeArgs) -> anyhow::Result<(Source, String)> {
    if !args.state.is_empty() {
        let mut store = Store::admission_only();
        let report = load_paths(&mut store, &args.state)
            .map_err(|e| UsageError(format!("cannot load state: {e}")))?;
        crate::view::release_freed_memory();
        tracing::info!(files = report.files, objects = report.total(), stored = ?report.stored, skipped = ?report.skipped, "offline mode: state loaded");
        let paths: Vec<String> = args.state.iter().map(|p| p.display().to_string()).collect();
        return Ok((
            Source::Offline(Box::new(store)),
            format!("offline: {}", paths.join(", ")),
        ));
    }
    let (config, how) = if let Some(path) = &args.kubeconfig {
        let flag = format!("--kubeconfig {}", path.display());
        let kubeconfig = kube::config::Kubeconfig::read_from(path)
            .map_err(|e| UsageError(format!("--kubeconfig: {}", kubeconfig_error(&e))))?;
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .map_err(|e| UsageError(format!("{flag}: {}", kubeconfig_error(&e))))?;
        (config, flag)
    } else if args.use_current_context {
        let paths = kubeconfig_paths();
        let shown: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        if !paths.iter().any(|p| p.exists()) {
            return Err(UsageError(format!(
                "--use-current-context: no kubeconfig at {}",
                if shown.is_empty() {
                    "$KUBECONFIG or ~/.kube/config".to_owned()
                } else {
                    shown.join(", ")
                }
            ))
            .into());
        }
        let kubeconfig = kube::config::Kubeconfig::read()
            .map_err(|e| UsageError(format!("--use-current-context: {}", kubeconfig_error(&e))))?;
        let context = kubeconfig.current_context.clone().unwrap_or_default();
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .map_err(|e| UsageError(format!("--use-current-context: {}", kubeconfig_error(&e))))?;
        (
            config,
            format!("current context {context} of {}", shown.join(", ")),
        )
    } else if in_cluster() {
        let config = kube::Config::incluster().map_err(|e| {
            UsageError(format!(
                "KUBERNETES_SERVICE_HOST is set, but this is not a pod with a service account ({e}); outside a cluster unset it, or pass --kubeconfig or --state"
            ))
        })?;
        (config, "in-cluster".to_owned())
    } else {
        let unused = kubeconfig_paths()
            .into_iter()
            .find(|p| p.exists())
            .map(|p| {
                format!(
                    "; {} is not used without --use-current-context",
                    p.display()
                )
            })
            .unwrap_or_default();
        tracing::warn!(
            "no cluster named: serving offline with an empty state (--state PATH loads manifests; --kubeconfig PATH or --use-current-context serves a cluster){unused}"
        );
        return Ok((
            Source::Offline(Box::default()),
            "offline: no --state, an empty cluster".to_owned(),
        ));
    };
    let described = format!("cluster {} ({how})", config.cluster_url);
    Ok((
        Source::Cluster(kube::Client::try_from(config.clone())?, Box::new(config)),
        described,
    ))
}

/// What the start line says of the controllers: those this replica runs while it holds the
/// Lease, and those selected but off for want of configuration.
pub fn controllers_summary(
    selected: &[ControllerKind],
    cluster: bool,
    (resend_key, loops_key): (bool, bool),
    email_from: bool,
) -> String {
    if selected.is_empty() {
        return "controllers: none (--no-controllers)".to_owned();
    }
    if !cluster {
        return "controllers: none (offline: they need a cluster)".to_owned();
    }
    let mut live = Vec::new();
    let mut off = Vec::new();
    for kind in selected {
        match kind {
            ControllerKind::Resend if !resend_key => off.push("resend (no Resend API key)"),
            ControllerKind::Loops if !loops_key => off.push("loops (no Loops API key)"),
            ControllerKind::Email if !resend_key || !email_from => {
                off.push("email (needs a Resend API key and --email-from-address)")
            }
            kind => live.push(kind.as_str()),
        }
    }
    let mut line = match live.is_empty() {
        true => "controllers: none".to_owned(),
        false => format!("controllers while leading: {}", live.join(",")),
    };
    if !off.is_empty() {
        line.push_str(&format!("; off: {}", off.join(", ")));
    }
    line
}
