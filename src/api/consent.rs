//! The consent audit trail's wire contract: the annotations that record who opted a person out of
//! a group (or back in), when and on what evidence, and which of those sources were the person's
//! own act. The controllers write them ([`crate::controllers::consent`]); the view reads the
//! source of each removal so the preference page can tell a person's own opt-out (which they may
//! undo) from an operator's (which stays).

/// Annotation naming what created a removal (one of [`source`]'s values, or anything an operator
/// writes).
pub const SOURCE_ANNOTATION: &str = "notification.miloapis.com/removal-source";
/// Annotation with when the person opted out (RFC 3339).
pub const TIME_ANNOTATION: &str = "notification.miloapis.com/removal-time";
/// Annotation with the provider event (its delivery id) that reported the opt-out.
pub const EVENT_ANNOTATION: &str = "notification.miloapis.com/removal-event";
/// Annotation naming what made a membership again on the person's behalf.
pub const JOIN_SOURCE_ANNOTATION: &str = "notification.miloapis.com/membership-source";
/// Annotation with when the person rejoined (RFC 3339).
pub const JOIN_TIME_ANNOTATION: &str = "notification.miloapis.com/membership-time";
/// Annotation with the provider event that reported the rejoin.
pub const JOIN_EVENT_ANNOTATION: &str = "notification.miloapis.com/membership-event";

/// The sources this server writes in [`SOURCE_ANNOTATION`] and [`JOIN_SOURCE_ANNOTATION`].
pub mod source {
    /// The person opted out at Resend (`contact.updated` with `unsubscribed: true`).
    pub const RESEND_UNSUBSCRIBE: &str = "resend-unsubscribe";
    /// The person reported mail as spam (Resend's `email.complained`).
    pub const RESEND_COMPLAINT: &str = "resend-complaint";
    /// The person used a one-click unsubscribe link (RFC 8058).
    pub const ONE_CLICK: &str = "one-click-unsubscribe";
    /// The person left the group's list, or every list, at Loops.
    pub const LOOPS_UNSUBSCRIBE: &str = "loops-unsubscribe";
    /// The person rejoined the group's list on Loops' preference page (a membership's source).
    pub const LOOPS_SUBSCRIBE: &str = "loops-subscribe";
    /// The person left, or rejoined, the group on this server's preference page.
    pub const PREFERENCE_PAGE: &str = "preference-page";
    /// The person left the group's topic on Resend's hosted preference page.
    pub const RESEND_TOPIC: &str = "resend-topic";
}

/// The removal sources a rejoin at a provider may undo: opt-outs the person made at a provider or
/// through a link, which the same person rejoining at a provider takes back. A complaint is not
/// among them (a spam report is not taken back by a click on a preference page), nor is any
/// removal made in the cluster.
pub const REJOINABLE: [&str; 5] = [
    source::RESEND_UNSUBSCRIBE,
    source::ONE_CLICK,
    source::LOOPS_UNSUBSCRIBE,
    source::PREFERENCE_PAGE,
    source::RESEND_TOPIC,
];

/// Whether a removal annotated with `source` records the person's own opt-out (one of
/// [`REJOINABLE`]).
pub fn made_by_person(source: Option<&str>) -> bool {
    source.is_some_and(|s| REJOINABLE.contains(&s))
}
