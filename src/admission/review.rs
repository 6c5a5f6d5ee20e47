//! The AdmissionReview wire format, owned here rather than taken from kube-core: its
//! `AdmissionResponse` encodes `patch` as an integer array (the API server wants base64) and its
//! `invalid()` drops the uid. Parsing recovers the uid whenever it can, so even a malformed request
//! gets an AdmissionReview denial the API server can match, not just an HTTP error.

use base64::Engine;
use k8s_openapi::api::authentication::v1::UserInfo;
use kube::core::admission::Operation;
use kube::core::{GroupVersionKind, GroupVersionResource};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Verdict;
use super::status::{Denial, Target};

/// The only AdmissionReview version served; webhook configurations ask for it alone.
pub const ADMISSION_API_VERSION: &str = "admission.k8s.io/v1";

/// The `request` of an AdmissionReview; objects stay raw until a rule asks for its type.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Request {
    /// Echoed in the response.
    pub uid: String,
    /// Kind of the object.
    pub kind: GroupVersionKind,
    /// Resource requested.
    pub resource: GroupVersionResource,
    /// Subresource, if any (`status`, ...).
    #[serde(default)]
    pub sub_resource: Option<String>,
    /// Object name; empty on CREATE with generateName.
    #[serde(default)]
    pub name: String,
    /// Namespace, for namespaced kinds.
    #[serde(default)]
    pub namespace: Option<String>,
    /// What is being done.
    pub operation: Operation,
    /// Who is doing it.
    #[serde(default)]
    pub user_info: UserInfo,
    /// The object after the operation (absent on DELETE).
    #[serde(default)]
    pub object: Option<Value>,
    /// The object before the operation (UPDATE and DELETE).
    #[serde(default)]
    pub old_object: Option<Value>,
    /// Whether the request is a dry run.
    #[serde(default)]
    pub dry_run: Option<bool>,
}

/// The wire name of an operation.
pub fn operation_name(op: &Operation) -> &'static str {
    match op {
        Operation::Create => "CREATE",
        Operation::Update => "UPDATE",
        Operation::Delete => "DELETE",
        Operation::Connect => "CONNECT",
    }
}

impl Request {
    fn parse<K: DeserializeOwned>(value: Option<&Value>, field: &str) -> Result<K, Denial> {
        let value = value
            .filter(|v| !v.is_null())
            .ok_or_else(|| Denial::bad_request(format!("{field} is required")))?;
        K::deserialize(value).map_err(|e| Denial::bad_request(format!("{field} is malformed: {e}")))
    }

    /// `request.object.spec` as `S`, for rules that only read the spec.
    pub fn spec<S: DeserializeOwned>(&self) -> Result<S, Denial> {
        Self::parse(
            self.object.as_ref().and_then(|o| o.get("spec")),
            "request.object.spec",
        )
    }

    /// The new and old specs of an UPDATE.
    pub fn spec_pair<S: DeserializeOwned>(&self) -> Result<(S, S), Denial> {
        Ok((self.spec()?, self.old_spec()?))
    }

    /// The spec on CREATE (with no old one) or the new and old specs on UPDATE; `None` for other
    /// operations, which spec rules have nothing to say about.
    pub fn new_and_old_spec<S: DeserializeOwned>(&self) -> Result<Option<(S, Option<S>)>, Denial> {
        match self.operation {
            Operation::Create => Ok(Some((self.spec()?, None))),
            Operation::Update => Ok(Some((self.spec()?, Some(self.old_spec()?)))),
            _ => Ok(None),
        }
    }

    /// `request.oldObject.spec`, for DELETE.
    pub fn old_spec<S: DeserializeOwned>(&self) -> Result<S, Denial> {
        Self::parse(
            self.old_object.as_ref().and_then(|o| o.get("spec")),
            "request.oldObject.spec",
        )
    }

    /// The operation's wire name.
    pub fn operation_name(&self) -> &'static str {
        operation_name(&self.operation)
    }

    /// The object the request is about, for denial messages.
    pub fn target(&self) -> Target {
        let object = self.object.as_ref().or(self.old_object.as_ref());
        let from_object = |field: &str| {
            object
                .and_then(|o| o.pointer(field))
                .and_then(Value::as_str)
                .unwrap_or_default()
        };
        let name = if self.name.is_empty() {
            let name = from_object("/metadata/name");
            if name.is_empty() {
                from_object("/metadata/generateName")
            } else {
                name
            }
        } else {
            &self.name
        };
        Target {
            group: self.kind.group.clone(),
            kind: self.kind.kind.clone(),
            name: name.to_owned(),
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

/// Parses an HTTP body as an AdmissionReview.
pub fn parse_review(body: &[u8]) -> Result<Request, BadReview> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(BadReview::new(
            None,
            "request body is empty: expected an AdmissionReview",
        ));
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| BadReview::new(None, format!("request body is not valid JSON: {e}")))?;
    parse_review_value(value)
}

/// Checks the envelope of an already-decoded AdmissionReview and reads its request.
pub fn parse_review_value(mut value: Value) -> Result<Request, BadReview> {
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
    let mut parsed: Request = Request::deserialize(&request)
        .map_err(|e| BadReview::new(uid, format!("AdmissionReview request is malformed: {e}")))?;
    parsed.object = object.filter(|v| !v.is_null());
    parsed.old_object = old_object.filter(|v| !v.is_null());
    Ok(parsed)
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
