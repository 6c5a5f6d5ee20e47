//! The AdmissionReview wire format, owned here rather than taken from kube-core: its
//! `AdmissionResponse` encodes `patch` as an integer array (the API server wants base64) and its
//! `invalid()` drops the uid. Parsing recovers the uid whenever it can, so even a malformed request
//! gets an AdmissionReview denial the API server can match, not just an HTTP error.

use base64::Engine;
use kube::core::admission::Operation;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Verdict;
use super::decode::{Object, Typed, fast_review, without_position};
use super::shape::{self, GroupVersionKind, GroupVersionResource, UserInfo};
use super::status::{Denial, Target};
use std::any::Any;
use std::borrow::Cow;

/// The only AdmissionReview version served; webhook configurations ask for it alone.
pub const ADMISSION_API_VERSION: &str = "admission.k8s.io/v1";

/// The `request` of an AdmissionReview, borrowing its strings and objects from the body where it
/// can (the offline commands, which parse trees, get an owned `Request<'static>`); objects stay
/// raw until a rule asks for their type.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Request<'a> {
    /// Echoed in the response.
    #[serde(borrow)]
    pub uid: Cow<'a, str>,
    /// Kind of the object.
    #[serde(borrow)]
    pub kind: GroupVersionKind<'a>,
    /// Resource requested.
    #[serde(borrow)]
    pub resource: GroupVersionResource<'a>,
    /// Subresource, if any (`status`, ...).
    #[serde(borrow, default)]
    pub sub_resource: Option<Cow<'a, str>>,
    /// The kind, resource and subresource originally requested, when a conversion or an
    /// equivalent-resource match changed them: not read by the rules, but decoded (borrowed, so
    /// at no cost), so a review with a malformed one is refused like any other malformed request.
    #[serde(borrow, default)]
    pub request_kind: Option<GroupVersionKind<'a>>,
    /// See `request_kind`.
    #[serde(borrow, default)]
    pub request_resource: Option<GroupVersionResource<'a>>,
    /// See `request_kind`.
    #[serde(default)]
    pub request_sub_resource: Option<shape::AnyString>,
    /// Object name; empty on CREATE with generateName.
    #[serde(borrow, default)]
    pub name: Cow<'a, str>,
    /// Namespace, for namespaced kinds.
    #[serde(borrow, default)]
    pub namespace: Option<Cow<'a, str>>,
    /// What is being done.
    pub operation: Operation,
    /// Who is doing it: the API server always says, and the rules depend on it, so a review
    /// without it is malformed (found by tests/fuzz_reviews.rs: it was decided as nobody).
    #[serde(borrow)]
    pub user_info: UserInfo<'a>,
    /// The object after the operation (absent on DELETE), as raw JSON.
    #[serde(borrow, default)]
    pub object: Option<Object<'a>>,
    /// The object before the operation (UPDATE and DELETE), as raw JSON.
    #[serde(borrow, default)]
    pub old_object: Option<Object<'a>>,
    /// Whether the request is a dry run.
    #[serde(default)]
    pub dry_run: Option<bool>,
}

/// A spec on CREATE (no old one) or the new and old specs on UPDATE, borrowed where they can be.
pub type NewAndOld<'a, S> = (Cow<'a, S>, Option<Cow<'a, S>>);

/// The wire name of an operation.
pub fn operation_name(op: &Operation) -> &'static str {
    match op {
        Operation::Create => "CREATE",
        Operation::Update => "UPDATE",
        Operation::Delete => "DELETE",
        Operation::Connect => "CONNECT",
    }
}

impl Request<'_> {
    fn parse<'s, K: DeserializeOwned + Clone + 'static>(
        &'s self,
        object: Option<&'s Object<'_>>,
        field: &str,
    ) -> Result<Cow<'s, K>, Denial> {
        // The kind's own type, decoded once and kept for the malformed-object check, holds the
        // spec when the rule reads the kind's spec type; anything else decodes the spec alone.
        let typed = object.map(|o| o.typed(|raw| decode_kind(&self.kind, raw)));
        let spec = typed.and_then(|typed| spec_of(typed.as_ref().ok()?.as_ref()));
        if let Some(spec) = spec.and_then(|spec| spec.downcast_ref::<K>()) {
            return Ok(Cow::Borrowed(spec));
        }
        let spec = object.map(Object::spec).transpose();
        match spec.map(Option::flatten) {
            Ok(Some(spec)) => Ok(Cow::Owned(spec)),
            Ok(None) => Err(Denial::bad_request(format!("{field} is required"))),
            Err(e) => Err(Denial::bad_request(format!("{field} is malformed: {e}"))),
        }
    }

    /// `request.object.spec` as `S`, for rules that only read the spec: borrowed from the object
    /// as its kind's type when that decodes, else decoded straight from the object's JSON.
    pub fn spec<S: DeserializeOwned + Clone + 'static>(&self) -> Result<Cow<'_, S>, Denial> {
        self.parse(self.object.as_ref(), "request.object.spec")
    }

    /// The new and old specs of an UPDATE.
    pub fn spec_pair<S: DeserializeOwned + Clone + 'static>(
        &self,
    ) -> Result<(Cow<'_, S>, Cow<'_, S>), Denial> {
        Ok((self.spec()?, self.old_spec()?))
    }

    /// The spec on CREATE (with no old one) or the new and old specs on UPDATE; `None` for other
    /// operations, which spec rules have nothing to say about.
    pub fn new_and_old_spec<S: DeserializeOwned + Clone + 'static>(
        &self,
    ) -> Result<Option<NewAndOld<'_, S>>, Denial> {
        match self.operation {
            Operation::Create => Ok(Some((self.spec()?, None))),
            Operation::Update => Ok(Some((self.spec()?, Some(self.old_spec()?)))),
            _ => Ok(None),
        }
    }

    /// `request.oldObject.spec`, for DELETE.
    pub fn old_spec<S: DeserializeOwned + Clone + 'static>(&self) -> Result<Cow<'_, S>, Denial> {
        self.parse(self.old_object.as_ref(), "request.oldObject.spec")
    }

    /// The operation's wire name.
    pub fn operation_name(&self) -> &'static str {
        operation_name(&self.operation)
    }

    /// The object the request is about, for denial messages.
    pub fn target(&self) -> Target {
        Target {
            group: self.kind.group.to_string(),
            kind: self.kind.kind.to_string(),
            name: self.own_name().to_owned(),
        }
    }

    /// The name of the object the request is about: the request's, else the object's
    /// `metadata.name`, else its `generateName` (the object is only parsed in those rare cases).
    pub fn own_name(&self) -> &str {
        if !self.name.is_empty() {
            return &self.name;
        }
        let object = self.object.as_ref().or(self.old_object.as_ref());
        let from_object = |field: &str| {
            object
                .and_then(|o| o.value().pointer(field))
                .and_then(Value::as_str)
                .unwrap_or_default()
        };
        let name = from_object("/metadata/name");
        if name.is_empty() {
            from_object("/metadata/generateName")
        } else {
            name
        }
    }

    /// The request's namespace, or the empty string.
    pub fn namespace(&self) -> &str {
        self.namespace.as_deref().unwrap_or_default()
    }
}

/// A review that could not be understood. With a uid it becomes an AdmissionReview denial; without
/// one it can only be an HTTP 400.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadReview {
    /// The request uid, when it could be read.
    pub uid: Option<String>,
    /// What is wrong, in one sentence.
    pub message: String,
}

impl BadReview {
    fn new(uid: Option<&str>, message: impl Into<String>) -> Self {
        Self {
            uid: uid.map(str::to_owned),
            message: message.into(),
        }
    }
}

/// Parses an HTTP body as an AdmissionReview: typed and straight from the bytes when the review
/// is well formed ([`fast_review`]), else by [`diagnose`](super::diagnose::diagnose), which words
/// what is wrong as [`parse_review_slowly`] would, without building a tree of a body anyone may
/// have chosen.
pub fn parse_review(body: &[u8]) -> Result<Request<'_>, BadReview> {
    match fast_review(body) {
        Some(request) => Ok(request),
        None => super::diagnose::diagnose(body),
    }
}

/// Parses an HTTP body as an AdmissionReview through a `Value` tree: the reference the bounded
/// paths are tested against, for bodies a caller already trusts.
pub fn parse_review_slowly(body: &[u8]) -> Result<Request<'static>, BadReview> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(BadReview::new(
            None,
            "request body is empty: expected an AdmissionReview",
        ));
    }
    let value = json_without_duplicate_keys(body)
        .map_err(|e| BadReview::new(None, format!("request body is not valid JSON: {e}")))?;
    parse_review_value(value)
}

/// Parses JSON like `serde_json::from_slice::<Value>`, but rejects an object that names a key
/// twice. JSON leaves duplicates undefined and readers disagree (first or last wins); the API
/// server never sends them, so a review with one is not decided on a guess (found by
/// tests/fuzz_reviews.rs: `"operation": null, ..., "operation": "CREATE"` was allowed).
pub fn json_without_duplicate_keys(bytes: &[u8]) -> Result<Value, serde_json::Error> {
    serde_json::from_slice::<Unique>(bytes).map(|unique| unique.0)
}

/// A `Value` whose objects have no duplicate keys.
struct Unique(Value);

impl<'de> Deserialize<'de> for Unique {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(UniqueVisitor).map(Unique)
    }
}

struct UniqueVisitor;

impl<'de> serde::de::Visitor<'de> for UniqueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(v.into())
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(v.into())
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Unique::deserialize(d).map(|u| u.0)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(Unique(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(serde::de::Error::custom(format_args!(
                    "duplicate key {key:?}"
                )));
            }
            let Unique(value) = map.next_value()?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

/// Checks the envelope of an already-decoded AdmissionReview and reads its request.
pub fn parse_review_value(mut value: Value) -> Result<Request<'static>, BadReview> {
    let Some(review) = value.as_object_mut() else {
        return Err(BadReview::new(
            None,
            "request body is not an AdmissionReview object",
        ));
    };
    let Some(mut request) = review.remove("request").filter(Value::is_object) else {
        return Err(BadReview::new(None, "AdmissionReview has no request"));
    };
    let uid = match request.get("uid").and_then(Value::as_str) {
        Some(uid) if !uid.is_empty() => uid.to_owned(),
        _ => return Err(BadReview::new(None, "AdmissionReview request has no uid")),
    };
    let uid = Some(uid.as_str());
    let field = |name: &str| {
        review
            .get(name)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let (api_version, kind) = (field("apiVersion"), field("kind"));
    if api_version != ADMISSION_API_VERSION {
        return Err(BadReview::new(
            uid,
            format!(
                "unsupported AdmissionReview apiVersion {api_version:?}: only {ADMISSION_API_VERSION} is served"
            ),
        ));
    }
    if kind != "AdmissionReview" {
        return Err(BadReview::new(
            uid,
            format!("expected kind AdmissionReview, got {kind:?}"),
        ));
    }
    // Give the header a chance to parse without the (possibly large) objects first, so a bad object
    // and a bad header produce different messages.
    let object = request.as_object_mut().and_then(|r| r.remove("object"));
    let old_object = request.as_object_mut().and_then(|r| r.remove("oldObject"));
    let mut parsed: Request<'static> = Request::deserialize(request)
        .map_err(|e| BadReview::new(uid, format!("AdmissionReview request is malformed: {e}")))?;
    parsed.object = object.filter(|v| !v.is_null()).map(Object::from_value);
    parsed.old_object = old_object.filter(|v| !v.is_null()).map(Object::from_value);
    Ok(parsed)
}

impl Request<'_> {
    /// Before an allow: the objects (`object` as the webhooks patched it) must match the Rust type
    /// of their kind, metadata included. The rules read only the parts they judge, and a part
    /// they skip must not let a malformed request through (found by tests/fuzz_reviews.rs);
    /// checked only on the way to an allow so that the rules' own, more precise denials (422
    /// NotSupported and the like) come first.
    pub fn malformed_objects(&self, patched: Option<&Value>) -> Option<Denial> {
        let object = match patched {
            Some(tree) => Some(Source::Tree(tree)),
            None => self.object.as_ref().map(Source::Raw),
        };
        [
            ("request.object", object),
            (
                "request.oldObject",
                self.old_object.as_ref().map(Source::Raw),
            ),
        ]
        .into_iter()
        .find_map(|(field, object)| {
            let error = well_typed(&self.kind, object?).err()?;
            Some(Denial::bad_request(format!(
                "{field} is malformed: {error}"
            )))
        })
    }
}

/// An object to check: as received, or as a tree (patched).
#[derive(Clone, Copy)]
enum Source<'a> {
    Raw(&'a Object<'a>),
    Tree(&'a Value),
}

/// Checks an object against the Rust type of its kind; a received object is decoded only once.
fn well_typed(kind: &GroupVersionKind<'_>, object: Source<'_>) -> Result<(), String> {
    let decode = |raw: &str| decode_kind(kind, raw);
    match object {
        Source::Raw(raw) => raw.typed(decode).as_ref().map(drop).map_err(Clone::clone),
        Source::Tree(tree) => decode(&tree.to_string()).map(drop),
    }
}

/// The spec of an object decoded by [`decode_kind`], when its kind has one.
fn spec_of(typed: &(dyn Any + Send + Sync)) -> Option<&dyn Any> {
    use crate::api::{
        Contact, ContactGroup, ContactGroupEnrollmentPolicy, ContactGroupMembership,
        ContactGroupMembershipRemoval, Email, EmailBroadcast, EmailTemplate, User, UserInvitation,
    };
    use kube::core::object::HasSpec;
    fn spec<K: HasSpec + 'static>(typed: &(dyn Any + Send + Sync)) -> Option<&dyn Any> {
        typed.downcast_ref::<K>().map(|k| k.spec() as &dyn Any)
    }
    spec::<Contact>(typed)
        .or_else(|| spec::<ContactGroup>(typed))
        .or_else(|| spec::<ContactGroupMembership>(typed))
        .or_else(|| spec::<ContactGroupMembershipRemoval>(typed))
        .or_else(|| spec::<ContactGroupEnrollmentPolicy>(typed))
        .or_else(|| spec::<Email>(typed))
        .or_else(|| spec::<EmailTemplate>(typed))
        .or_else(|| spec::<User>(typed))
        .or_else(|| spec::<UserInvitation>(typed))
        .or_else(|| spec::<EmailBroadcast>(typed))
}

/// Decodes an object's JSON as the Rust type of its kind (`DynamicObject` for other kinds).
fn decode_kind(kind: &GroupVersionKind<'_>, raw: &str) -> Typed {
    use crate::api::{
        Contact, ContactGroup, ContactGroupEnrollmentPolicy, ContactGroupMembership,
        ContactGroupMembershipRemoval, Email, EmailBroadcast, EmailTemplate, User, UserInvitation,
    };
    fn check<K: DeserializeOwned + Send + Sync + 'static>(raw: &str) -> Typed {
        match serde_json::from_str::<K>(raw) {
            Ok(object) => Ok(Box::new(object)),
            Err(error) => Err(without_position(&error)),
        }
    }
    let object = raw;
    match (&*kind.group, &*kind.kind) {
        ("notification.miloapis.com", "Contact") => check::<Contact>(object),
        ("notification.miloapis.com", "ContactGroup") => check::<ContactGroup>(object),
        ("notification.miloapis.com", "ContactGroupMembership") => {
            check::<ContactGroupMembership>(object)
        }
        ("notification.miloapis.com", "ContactGroupMembershipRemoval") => {
            check::<ContactGroupMembershipRemoval>(object)
        }
        ("notification.miloapis.com", "ContactGroupEnrollmentPolicy") => {
            check::<ContactGroupEnrollmentPolicy>(object)
        }
        ("notification.miloapis.com", "Email") => check::<Email>(object),
        ("notification.miloapis.com", "EmailTemplate") => check::<EmailTemplate>(object),
        ("notification.miloapis.com", "EmailBroadcast") => check::<EmailBroadcast>(object),
        ("iam.miloapis.com", "User") => check::<User>(object),
        ("iam.miloapis.com", "UserInvitation") => check::<UserInvitation>(object),
        _ => check::<kube::core::DynamicObject>(object),
    }
}

/// The `response` of an AdmissionReview.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionResponse {
    /// The request uid, always echoed.
    pub uid: String,
    /// The verdict.
    pub allowed: bool,
    /// Why not, when denied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<Denial>,
    /// Base64 of a JSON Patch, when the mutating webhook changes the object.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch: Option<String>,
    /// `JSONPatch` whenever `patch` is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch_type: Option<&'static str>,
    /// Warnings shown to the client (kubectl prints them).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl AdmissionResponse {
    /// The response for a verdict.
    pub fn from_verdict(uid: &str, verdict: Verdict) -> Self {
        match verdict {
            Verdict::Allow { patch, warnings } => {
                let patch = (!patch.0.is_empty()).then(|| {
                    let json = serde_json::to_vec(&patch).unwrap_or_default();
                    base64::engine::general_purpose::STANDARD.encode(json)
                });
                let patch_type = patch.as_ref().map(|_| "JSONPatch");
                Self {
                    uid: uid.to_owned(),
                    allowed: true,
                    status: None,
                    patch,
                    patch_type,
                    warnings,
                }
            }
            Verdict::Deny(denial) => Self {
                uid: uid.to_owned(),
                allowed: false,
                status: Some(denial),
                patch: None,
                patch_type: None,
                warnings: Vec::new(),
            },
        }
    }
}

/// The AdmissionReview sent back to the API server.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReviewResponse {
    /// `admission.k8s.io/v1`.
    pub api_version: &'static str,
    /// `AdmissionReview`.
    pub kind: &'static str,
    /// The verdict.
    pub response: AdmissionResponse,
}

impl ReviewResponse {
    /// Wraps a response in the envelope.
    pub fn new(response: AdmissionResponse) -> Self {
        Self {
            api_version: ADMISSION_API_VERSION,
            kind: "AdmissionReview",
            response,
        }
    }
}
