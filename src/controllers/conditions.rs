//! Building status conditions the Kubernetes way: `lastTransitionTime` moves only when the status
//! flips, so a controller re-asserting the same condition every reconcile does not churn it.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use serde_json::{Value, json};

/// The condition every kind here reports.
pub use crate::api::common::sync::READY;

/// A condition as the controller wants it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired<'a> {
    /// `type`.
    pub type_: &'a str,
    /// True or False.
    pub status: bool,
    /// CamelCase reason.
    pub reason: &'a str,
    /// One sentence for humans.
    pub message: String,
}

/// The longest condition message a CRD accepts (metav1.Condition's `maxLength`, which Milo's CRDs
/// and ours declare): a longer one makes the API server refuse the whole status write.
pub const MAX_MESSAGE_CHARS: usize = 32768;

/// Cuts every condition message in `status` to [`MAX_MESSAGE_CHARS`] characters, marking the
/// cut. Messages quote what others wrote (a provider's error, a template's text) and are not
/// bounded where they are built, so the one place every status write passes bounds them.
pub fn bound_messages(status: &mut Value) {
    const CUT: &str = " [...]";
    let Some(conditions) = status.get_mut("conditions").and_then(Value::as_array_mut) else {
        return;
    };
    for message in conditions.iter_mut().filter_map(|c| c.get_mut("message")) {
        let Some(text) = message.as_str() else {
            continue;
        };
        if let Some((at, _)) = text.char_indices().nth(MAX_MESSAGE_CHARS) {
            let keep = text[..at]
                .char_indices()
                .nth(MAX_MESSAGE_CHARS - CUT.len())
                .map_or(at, |(i, _)| i);
            *message = Value::String(format!("{}{CUT}", &text[..keep]));
        }
    }
}

/// The JSON of `desired`, keeping `lastTransitionTime` from `existing` when the status is the same
/// and stamping `now` when it changed or is new.
pub fn render(
    existing: &[Condition],
    desired: &Desired<'_>,
    observed_generation: Option<i64>,
    now: jiff::Timestamp,
) -> Value {
    let status = if desired.status { "True" } else { "False" };
    let since = existing
        .iter()
        .find(|c| c.type_ == desired.type_ && c.status == status)
        .map(|c| c.last_transition_time.0)
        .unwrap_or_else(|| Time(now).0);
    let mut condition = json!({
        "type": desired.type_,
        "status": status,
        "reason": desired.reason,
        "message": desired.message,
        "lastTransitionTime": Time(since),
    });
    if let Some(generation) = observed_generation {
        condition["observedGeneration"] = json!(generation);
    }
    condition
}

/// Whether `existing` already says what `desired` says, so no write is needed.
pub fn is_current(
    existing: &[Condition],
    desired: &Desired<'_>,
    observed_generation: Option<i64>,
) -> bool {
    let status = if desired.status { "True" } else { "False" };
    existing.iter().any(|c| {
        c.type_ == desired.type_
            && c.status == status
            && c.reason == desired.reason
            && c.message == desired.message
            && (observed_generation.is_none() || c.observed_generation == observed_generation)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready(status: &str, at: &str) -> Condition {
        Condition {
            type_: READY.into(),
            status: status.into(),
            reason: "Old".into(),
            message: "old".into(),
            last_transition_time: Time(at.parse().unwrap()),
            observed_generation: Some(1),
        }
    }

    #[test]
    fn transition_time_moves_only_when_status_flips() {
        let now: jiff::Timestamp = "2026-11-21T12:00:00Z".parse().unwrap();
        let desired = Desired {
            type_: READY,
            status: true,
            reason: "CreateSuccessful",
            message: "done".into(),
        };
        let kept = render(
            &[ready("True", "2026-01-01T00:00:00Z")],
            &desired,
            None,
            now,
        );
        assert_eq!(kept["lastTransitionTime"], "2026-01-01T00:00:00Z");
        let flipped = render(
            &[ready("False", "2026-01-01T00:00:00Z")],
            &desired,
            Some(2),
            now,
        );
        assert_eq!(flipped["lastTransitionTime"], "2026-11-21T12:00:00Z");
        assert_eq!(flipped["observedGeneration"], 2);
        assert!(!is_current(
            &[ready("True", "2026-01-01T00:00:00Z")],
            &desired,
            None
        ));
    }

    #[test]
    fn long_messages_are_cut_to_what_the_crd_accepts() {
        let long = "é".repeat(MAX_MESSAGE_CHARS + 10);
        let mut status = json!({"conditions": [
            {"type": "Ready", "message": long},
            {"type": "Other", "message": "short"},
        ]});
        bound_messages(&mut status);
        let cut = status["conditions"][0]["message"].as_str().unwrap();
        assert_eq!(cut.chars().count(), MAX_MESSAGE_CHARS);
        assert!(cut.ends_with(" [...]"));
        assert_eq!(status["conditions"][1]["message"], "short");
    }
}
