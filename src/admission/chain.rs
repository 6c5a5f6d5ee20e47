//! Running webhooks the way the API server does, for the offline `review` and `check` commands:
//! one webhook by path, or every webhook registered for the request in API-server order
//! (mutating first, each one's patch applied before the next, then validating).

use super::decode::Object;
use super::registry::{WEBHOOKS, Webhook, WebhookType};
use super::review::{AdmissionResponse, BadReview, Request, ReviewResponse};
use super::status::Denial;
use super::{Settings, Verdict, decide};
use crate::view::ClusterView;

/// Which webhooks a review goes through.
#[derive(Clone, Copy, Debug)]
pub enum Route {
    /// The webhook at one HTTP path.
    One(&'static Webhook),
    /// Every webhook registered for the request's resource and operation.
    All,
}

/// Decides a parsed review (or explains why it could not be parsed). Without a uid there is no
/// AdmissionReview to answer with, so the caller gets the message back instead.
pub fn respond(
    route: Route,
    parsed: Result<Request, BadReview>,
    view: &ClusterView,
    settings: &Settings,
) -> Result<ReviewResponse, String> {
    let response = match parsed {
        Ok(request) => {
            let uid = request.uid.clone();
            let verdict = match route {
                Route::One(webhook) => {
                    let verdict = decide(webhook, &request, view, settings);
                    refuse_malformed(request, verdict)
                }
                Route::All => run_all(request, view, settings).0,
            };
            AdmissionResponse::from_verdict(&uid, verdict)
        }
        Err(BadReview {
            uid: Some(uid),
            message,
        }) => AdmissionResponse::from_verdict(&uid, Denial::bad_request(message).into()),
        Err(BadReview { uid: None, message }) => return Err(message),
    };
    Ok(ReviewResponse::new(response))
}

/// Runs every matching webhook; the first denial wins (returned with the webhook that denied),
/// else the combined patch is returned.
pub fn run_all(
    mut request: Request,
    view: &ClusterView,
    settings: &Settings,
) -> (Verdict, Option<&'static Webhook>) {
    let (group, resource, op) = (
        request.resource.group.clone(),
        request.resource.resource.clone(),
        request.operation_name(),
    );
    let matching: Vec<&Webhook> = [WebhookType::Mutating, WebhookType::Validating]
        .into_iter()
        .flat_map(|kind| WEBHOOKS.iter().filter(move |w| w.kind == kind))
        .filter(|w| w.matches(&group, &resource, op))
        .collect();
    if matching.is_empty() {
        let message =
            format!("no milo-webhook webhook is registered for {op} of {resource}.{group}");
        return (Denial::bad_request(message).into(), None);
    }
    let mut combined = Vec::new();
    let mut all_warnings = Vec::new();
    for webhook in matching {
        match decide(webhook, &request, view, settings) {
            Verdict::Deny(denial) => return (Verdict::Deny(denial), Some(webhook)),
            Verdict::Allow { patch, warnings } => {
                all_warnings.extend(warnings);
                if patch.0.is_empty() {
                    continue;
                }
                let applied = request.object.take().map(|object| {
                    let mut object = object.into_value();
                    let applied = json_patch::patch(&mut object, &patch);
                    request.object = Some(Object::from_value(object));
                    applied
                });
                if let Some(Err(error)) = applied {
                    let message = format!(
                        "webhook {} returned a patch that does not apply: {error}",
                        webhook.path
                    );
                    return (Denial::internal(message).into(), Some(webhook));
                }
                combined.extend(patch.0);
            }
        }
    }
    if let Some(denial) = request.malformed_objects(None) {
        return (denial.into(), None);
    }
    let verdict = Verdict::Allow {
        patch: json_patch::Patch(combined),
        warnings: all_warnings,
    };
    (verdict, None)
}

/// An allow becomes a 400 when an object (as patched) is malformed; see
/// [`Request::malformed_objects`].
fn refuse_malformed(mut request: Request, verdict: Verdict) -> Verdict {
    let Verdict::Allow { patch, .. } = &verdict else {
        return verdict;
    };
    let patched = match (request.object.take(), patch.0.is_empty()) {
        (Some(object), false) => {
            let mut object = object.into_value();
            match json_patch::patch(&mut object, patch) {
                Ok(()) => Some(object),
                Err(error) => {
                    let message = format!("the webhook's patch does not apply: {error}");
                    return Denial::internal(message).into();
                }
            }
        }
        (object, _) => {
            request.object = object;
            None
        }
    };
    match request.malformed_objects(patched.as_ref()) {
        Some(denial) => denial.into(),
        None => verdict,
    }
}
