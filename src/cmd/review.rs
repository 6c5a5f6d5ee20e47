//! `milo-webhook review`: decide one AdmissionReview offline, exactly as the server would.

use std::io::Read;
use std::path::PathBuf;

use clap::Args;
use serde_json::Value;

use crate::admission::chain::{Route, respond};
use crate::admission::registry::{WEBHOOKS, by_path};
use crate::admission::review::parse_review_value;
use crate::view::manifests::load_paths;
use crate::view::{ClusterView, Store};

/// Flags of `review`.
#[derive(Debug, Args)]
pub struct ReviewArgs {
    /// Manifests the view is built from (file or directory; repeatable).
    #[arg(long, env = "MILO_WEBHOOK_STATE", value_delimiter = ',')]
    pub state: Vec<PathBuf>,
    /// Run only the webhook at this HTTP path; without it every webhook registered for the
    /// request runs in API-server order.
    #[arg(long, env = "MILO_WEBHOOK_REVIEW_PATH")]
    pub path: Option<String>,
    /// Decide as if it were this time (RFC 3339), for expiry questions.
    #[arg(long, env = "MILO_WEBHOOK_NOW", value_parser = super::parse_time)]
    pub now: Option<jiff::Timestamp>,
    /// Settings the rules read.
    #[command(flatten)]
    pub rules: super::RuleArgs,
    /// The AdmissionReview (JSON or YAML); `-` or nothing reads standard input.
    pub file: Option<PathBuf>,
}

/// Decides the review and returns the JSON to print; `Err` is the one line for stderr (exit 2).
pub fn run(args: &ReviewArgs) -> Result<String, String> {
    let route = match &args.path {
        Some(path) => Route::One(by_path(path).ok_or_else(|| {
            let known: Vec<&str> = WEBHOOKS.iter().map(|w| w.path).collect();
            format!(
                "unknown webhook path {path:?}; known paths: {}",
                known.join(", ")
            )
        })?),
        None => Route::All,
    };
    let text = read_input(args.file.as_ref())?;
    // Name the file, as `check` does: "expected ident" alone does not say which input it was.
    let value = parse_document(&text).map_err(|e| match named_file(args.file.as_ref()) {
        Some(path) => format!("{}: {e}", path.display()),
        None => e,
    })?;
    let mut store = Store::admission_only();
    load_paths(&mut store, &args.state).map_err(|e| format!("cannot load state: {e}"))?;
    let view = ClusterView::offline(store);
    let settings = crate::admission::Settings {
        clock: args.now,
        ..args.rules.settings()
    };
    let reply = respond(route, parse_review_value(value), &view, &settings)?;
    serde_json::to_string_pretty(&reply).map_err(|e| format!("cannot encode the response: {e}"))
}

/// The file named on the command line, `None` for standard input (`-` or nothing).
fn named_file(file: Option<&PathBuf>) -> Option<&PathBuf> {
    file.filter(|f| f.as_os_str() != "-")
}

fn read_input(file: Option<&PathBuf>) -> Result<String, String> {
    match named_file(file) {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display())),
        None => {
            use std::io::IsTerminal;
            if std::io::stdin().is_terminal() {
                // Otherwise a newcomer who forgot the file sees a command that silently hangs.
                eprintln!(
                    "milo-webhook: reading the AdmissionReview from standard input (end it with Ctrl-D, or pass a FILE)"
                );
            }
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| format!("cannot read standard input: {e}"))?;
            Ok(text)
        }
    }
}

/// JSON, or failing that YAML; one clear line when it is neither.
pub fn parse_document(text: &str) -> Result<Value, String> {
    if text.trim().is_empty() {
        return Err("the AdmissionReview is empty".into());
    }
    let json_error = match crate::admission::review::json_without_duplicate_keys(text.as_bytes()) {
        Ok(value) => return Ok(value),
        Err(error) => error,
    };
    match serde_saphyr::from_str::<Value>(text) {
        Ok(value) if value.is_object() => Ok(value),
        Ok(_) => Err(format!(
            "the AdmissionReview is not valid JSON ({json_error}) and not a YAML mapping"
        )),
        Err(yaml_error) => Err(format!(
            "the AdmissionReview is not valid JSON ({json_error}) nor YAML ({yaml_error})"
        )),
    }
}
