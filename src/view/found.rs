//! What lookups return: borrowed, resolved views of the view's records, so rules read plain
//! strings and never see symbols.

use crate::api::notification::Visibility;

/// A namespace/name pair resolved back to text, as lookups return it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NamedRef<'a> {
    /// Namespace ("" for cluster-scoped kinds).
    pub namespace: &'a str,
    /// Name.
    pub name: &'a str,
}

/// A Contact as lookups return it.
#[derive(Clone, Copy, Debug)]
pub struct ContactView<'a> {
    /// Where the contact lives.
    pub key: NamedRef<'a>,
    /// `spec.email`.
    pub email: &'a str,
    /// `spec.subject`, when set.
    pub subject: Option<SubjectView<'a>>,
}

/// A Contact's subject as lookups return it.
#[derive(Clone, Copy, Debug)]
pub struct SubjectView<'a> {
    /// `apiGroup`.
    pub api_group: &'a str,
    /// `kind`.
    pub kind: &'a str,
    /// `name`.
    pub name: &'a str,
    /// `namespace` ("" when unset).
    pub namespace: &'a str,
}

/// A User as lookups return it.
#[derive(Clone, Copy, Debug)]
pub struct UserView<'a> {
    /// The User's name (the UID the API server authenticates it with).
    pub name: &'a str,
    /// `spec.email`.
    pub email: &'a str,
    /// `metadata.uid`, for ownerReferences.
    pub uid: &'a str,
}

/// A ContactGroup as lookups return it.
#[derive(Clone, Copy, Debug)]
pub struct GroupView<'a> {
    /// Where the group lives.
    pub key: NamedRef<'a>,
    /// `spec.displayName`.
    pub display_name: &'a str,
    /// `spec.visibility`.
    pub visibility: Visibility,
}
