//! The slim records the view keeps per object: only what admission rules and controllers look up,
//! as symbols. Full objects (and their managedFields, annotations, status) are never stored.

use super::index::Key;
use super::symbols::Sym;
use crate::api::iam::InvitationState;
use crate::api::notification::Visibility;

/// A Contact: its address and whom it belongs to.
#[derive(Clone, Copy, Debug)]
pub struct ContactRecord {
    /// The address as written.
    pub email: Sym,
    /// The address lower-cased, the uniqueness key.
    pub email_key: Sym,
    /// The subject, when set.
    pub subject: Option<SubjectRecord>,
    /// A digest of `metadata.uid` ([`uid_digest`]): enough for the preference page to tell a
    /// recreated Contact from the one a link names without an API call, in what was padding
    /// (the page's writes still check the full uid with the API server).
    pub uid: u32,
}

/// A 32-bit digest of a `metadata.uid`, stable across processes.
pub fn uid_digest(uid: &str) -> u32 {
    let sum = ring::digest::digest(&ring::digest::SHA256, uid.as_bytes());
    let b = sum.as_ref();
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// A Contact's subject reference.
#[derive(Clone, Copy, Debug)]
pub struct SubjectRecord {
    /// `spec.subject.apiGroup`.
    pub api_group: Sym,
    /// `spec.subject.kind`.
    pub kind: Sym,
    /// `spec.subject.name`.
    pub name: Sym,
    /// `spec.subject.namespace` (the empty symbol when unset).
    pub namespace: Sym,
}

/// A ContactGroup: the identity users see.
#[derive(Clone, Copy, Debug)]
pub struct GroupRecord {
    /// `spec.displayName`.
    pub display_name: Sym,
    /// `spec.visibility`.
    pub visibility: Visibility,
    /// `spec.description`, when set: what the preference page shows under the name.
    pub description: Option<Sym>,
}

/// The (contact, group) pair a membership or removal names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Pair {
    /// The contact.
    pub contact: Key,
    /// The group.
    pub group: Key,
}

/// A User: the address invitations and contacts are matched on, and (on the leader) what the
/// usercontact controller copies to the User's Contact. Those fit in the row's padding: a
/// follower's rows are no larger for them.
#[derive(Clone, Copy, Debug)]
pub struct UserRecord {
    /// `spec.email` as written.
    pub email: Sym,
    /// `spec.email` lower-cased.
    pub email_key: Sym,
    /// `metadata.uid`.
    pub uid: Sym,
    /// A digest of `spec.givenName` and `spec.familyName` (leader only; see [`names_digest`]):
    /// enough to tell whether the User's Contact carries its names, without keeping every
    /// person's names as strings.
    pub names: u64,
    /// Whether it is being deleted (leader only).
    pub deleting: bool,
}

/// A digest of a person's given and family names, an empty name counting as none. Stable across
/// processes (SipHash with fixed keys), so it can be compared with any other digest.
pub fn names_digest(given: Option<&str>, family: Option<&str>) -> u64 {
    use std::hash::{Hash, Hasher};
    fn present(name: Option<&str>) -> Option<&str> {
        name.filter(|n| !n.is_empty())
    }
    let mut hasher = std::hash::DefaultHasher::new();
    (present(given), present(family)).hash(&mut hasher);
    hasher.finish()
}

/// What the leader's controllers read of a membership or removal beyond its pair; left empty on
/// followers. It fits in the row's padding, so it costs no bytes per object.
#[derive(Clone, Copy, Debug, Default)]
pub struct PairStatus {
    /// `status.username`.
    pub username: Option<Sym>,
    /// Whether it is being deleted.
    pub deleting: bool,
    /// Whether a membership carries the enrollment finalizer ([`super::ENROLLMENT_FINALIZER`]).
    pub holds_record: bool,
    /// A membership's provider-sync condition and finalizer.
    pub sync: super::sync::SyncMarks,
    /// A removal the person made themselves (its source annotation is one of
    /// [`crate::api::consent::REJOINABLE`]), kept on every replica: the preference page offers to
    /// undo only those. In what was padding.
    pub by_person: bool,
}

/// `expires_at` of an invitation that never expires.
pub const NEVER: i64 = i64::MAX;

/// A UserInvitation: what duplicate and membership checks need.
#[derive(Clone, Copy, Debug)]
pub struct InvitationRecord {
    /// `spec.email` lower-cased.
    pub email_key: Sym,
    /// `spec.organizationRef.name`.
    pub organization: Sym,
    /// `spec.state`.
    pub state: InvitationState,
    /// `spec.expirationDate` in Unix seconds, [`NEVER`] when unset (a sentinel rather than an
    /// `Option`, which would widen every row of the view by 8 bytes).
    pub expires_at: i64,
}

/// A ContactGroupEnrollmentPolicy: the group it targets.
#[derive(Clone, Copy, Debug)]
pub struct PolicyRecord {
    /// `spec.contactGroupRef`.
    pub group: Key,
}

/// A variable an EmailTemplate declares: all admission and the invitation controller read of a
/// template (bodies are checked when the template itself is admitted, never looked up).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TemplateVariableRecord {
    /// `name`.
    pub name: Sym,
    /// `required`.
    pub required: bool,
    /// Whether `type` is `url` (values must be absolute https URLs).
    pub url: bool,
}
