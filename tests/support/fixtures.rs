//! Loads and checks the `webhooks/` fixture corpus (format in `webhooks/README.md`).

use std::path::{Path, PathBuf};

use base64::Engine;
use milo_webhook::view::Store;
use milo_webhook::view::manifests::apply_object;
use serde::Deserialize;
use serde_json::{Value, json};

/// One case.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Fixture {
    pub description: String,
    pub path: String,
    #[serde(default)]
    pub state: Vec<Value>,
    pub request: Option<Value>,
    pub review: Option<Value>,
    pub raw_body: Option<String>,
    /// The decision time (RFC 3339); the clock when absent.
    pub now: Option<String>,
    /// `--invitation-ttl` (Go duration); 336h when absent.
    pub invitation_ttl: Option<String>,
    pub expect: Expect,
    #[serde(skip)]
    pub name: String,
}

/// What the answer must be.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Expect {
    #[serde(default = "ok")]
    pub http_status: u16,
    pub allowed: Option<bool>,
    pub code: Option<u16>,
    pub reason: Option<String>,
    pub message: Option<String>,
    pub causes: Option<Vec<ExpectedCause>>,
    pub patch: Option<Value>,
    /// Fragments that must each appear in one of the response's warnings.
    pub warnings: Option<Vec<String>>,
    /// Fragments that must appear nowhere in the response (names a denial may not reveal).
    #[serde(default)]
    pub not_mentioned: Vec<String>,
    #[serde(default)]
    pub review_exit: i32,
}

fn ok() -> u16 {
    200
}

/// A cause that must be present, in order.
#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ExpectedCause {
    pub field: String,
    pub reason: String,
}

/// The corpus directory.
pub fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("webhooks")
}

/// Every fixture, in name order.
pub fn all() -> Vec<Fixture> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(corpus_dir())
        .expect("webhooks/ exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).expect("readable fixture");
            let mut fixture: Fixture = serde_saphyr::from_str(&text)
                .unwrap_or_else(|e| panic!("{}: not a fixture: {e}", path.display()));
            fixture.name = path.file_stem().unwrap().to_string_lossy().into_owned();
            let bodies = [
                fixture.request.is_some(),
                fixture.review.is_some(),
                fixture.raw_body.is_some(),
            ];
            assert_eq!(
                bodies.iter().filter(|b| **b).count(),
                1,
                "{}: exactly one of request, review, rawBody",
                fixture.name
            );
            fixture
        })
        .collect()
}

fn plural(kind: &str) -> String {
    let lower = kind.to_lowercase();
    match lower.strip_suffix('y') {
        Some(stem) => format!("{stem}ies"),
        None => format!("{lower}s"),
    }
}

impl Fixture {
    /// The AdmissionReview the case sends, when it is not raw bytes.
    pub fn review(&self) -> Option<Value> {
        if let Some(review) = &self.review {
            return Some(review.clone());
        }
        let overrides = self
            .request
            .as_ref()?
            .as_object()
            .expect("request is a mapping")
            .clone();
        let object = overrides
            .get("object")
            .or_else(|| overrides.get("oldObject"))
            .expect("request has an object");
        let api_version = object["apiVersion"].as_str().expect("object apiVersion");
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let kind = object["kind"].as_str().expect("object kind");
        let mut request = json!({
            "uid": format!("fixture-{}", self.name),
            "kind": {"group": group, "version": version, "kind": kind},
            "resource": {"group": group, "version": version, "resource": plural(kind)},
            "requestKind": {"group": group, "version": version, "kind": kind},
            "name": object.pointer("/metadata/name").cloned().unwrap_or(json!("")),
            "namespace": object.pointer("/metadata/namespace").cloned().unwrap_or(Value::Null),
            "userInfo": {"username": "admin", "uid": "admin-uid", "groups": ["system:masters", "system:authenticated"]},
            "dryRun": false,
        });
        for (key, value) in overrides {
            request[key] = value;
        }
        Some(
            json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}),
        )
    }

    /// The settings the server decides with.
    pub fn settings(&self) -> milo_webhook::admission::Settings {
        let ttl =
            milo_webhook::cmd::parse_duration(self.invitation_ttl.as_deref().unwrap_or("336h"))
                .unwrap();
        milo_webhook::admission::Settings {
            invitation_ttl: (!ttl.is_zero()).then_some(ttl),
            clock: self
                .now
                .as_deref()
                .map(|t| t.parse().expect("now is RFC 3339")),
        }
    }

    /// The same settings as `review` flags.
    pub fn settings_args(&self) -> Vec<String> {
        let mut args = vec![
            "--invitation-ttl".to_owned(),
            self.invitation_ttl.clone().unwrap_or("336h".into()),
        ];
        if let Some(now) = &self.now {
            args.extend(["--now".to_owned(), now.clone()]);
        }
        args
    }

    /// The bytes sent.
    pub fn body(&self) -> Vec<u8> {
        match &self.raw_body {
            Some(raw) => raw.as_bytes().to_vec(),
            None => serde_json::to_vec(&self.review().unwrap()).unwrap(),
        }
    }

    /// The uid the response must echo.
    pub fn uid(&self) -> Option<String> {
        self.review()?
            .pointer("/request/uid")?
            .as_str()
            .map(str::to_owned)
    }

    /// The view the case runs against.
    pub fn store(&self) -> Store {
        let mut store = Store::default();
        for object in &self.state {
            let api_version = object["apiVersion"].as_str().unwrap_or_default();
            let kind = object["kind"].as_str().unwrap_or_default();
            let stored = apply_object(&mut store, api_version, kind, object.clone())
                .unwrap_or_else(|e| panic!("{}: bad state object: {e}", self.name));
            assert!(
                stored,
                "{}: state object of unindexed kind {kind}",
                self.name
            );
        }
        store
    }

    /// Writes the state as a manifest file for the `review` command.
    pub fn write_state(&self, dir: &Path) -> PathBuf {
        let path = dir.join(format!("{}-state.json", self.name));
        let list = json!({"apiVersion": "v1", "kind": "List", "items": self.state});
        std::fs::write(&path, serde_json::to_vec(&list).unwrap()).unwrap();
        path
    }

    /// Checks an HTTP answer.
    pub fn check_http(&self, status: u16, body: &[u8]) {
        assert_eq!(
            status,
            self.expect.http_status,
            "{}: HTTP status; body: {}",
            self.name,
            String::from_utf8_lossy(body)
        );
        if status != 200 {
            let text = String::from_utf8_lossy(body);
            if let Some(fragment) = &self.expect.message {
                assert!(
                    text.contains(fragment.as_str()),
                    "{}: {text:?} lacks {fragment:?}",
                    self.name
                );
            }
            return;
        }
        let review: Value = serde_json::from_slice(body)
            .unwrap_or_else(|e| panic!("{}: response is not JSON: {e}", self.name));
        self.check_review(&review);
    }

    /// Checks an AdmissionReview answer.
    pub fn check_review(&self, review: &Value) {
        let name = &self.name;
        assert_eq!(review["apiVersion"], "admission.k8s.io/v1", "{name}");
        assert_eq!(review["kind"], "AdmissionReview", "{name}");
        let response = &review["response"];
        assert_eq!(
            response["uid"].as_str(),
            self.uid().as_deref(),
            "{name}: uid must be echoed"
        );
        let expect = &self.expect;
        if let Some(allowed) = expect.allowed {
            assert_eq!(response["allowed"], allowed, "{name}: {response}");
        }
        let text = response.to_string();
        for fragment in &expect.not_mentioned {
            assert!(
                !text.contains(fragment.as_str()),
                "{name}: the response mentions {fragment:?}: {text}"
            );
        }
        let status = &response["status"];
        if response["allowed"] == true {
            assert!(
                status.is_null(),
                "{name}: an allowed response carries no status"
            );
        } else {
            assert_eq!(status["status"], "Failure", "{name}");
        }
        if let Some(code) = expect.code {
            assert_eq!(status["code"], code, "{name}: {status}");
        }
        if let Some(reason) = &expect.reason {
            assert_eq!(status["reason"], reason.as_str(), "{name}: {status}");
        }
        if let Some(fragment) = &expect.message {
            let message = status["message"].as_str().unwrap_or_default();
            assert!(
                message.contains(fragment.as_str()),
                "{name}: message {message:?} lacks {fragment:?}"
            );
        }
        if let Some(causes) = &expect.causes {
            let got: Vec<ExpectedCause> = status["details"]["causes"]
                .as_array()
                .unwrap_or_else(|| panic!("{name}: no causes in {status}"))
                .iter()
                .map(|c| ExpectedCause {
                    field: c["field"].as_str().unwrap_or_default().into(),
                    reason: c["reason"].as_str().unwrap_or_default().into(),
                })
                .collect();
            assert_eq!(&got, causes, "{name}: causes");
        }
        let warnings: Vec<&str> = response["warnings"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        match &expect.warnings {
            Some(fragments) => {
                for fragment in fragments {
                    assert!(
                        warnings.iter().any(|w| w.contains(fragment.as_str())),
                        "{name}: no warning with {fragment:?} in {warnings:?}"
                    );
                }
            }
            None => assert!(
                warnings.is_empty(),
                "{name}: unexpected warnings {warnings:?}"
            ),
        }
        match &expect.patch {
            Some(patch) => {
                assert_eq!(response["patchType"], "JSONPatch", "{name}");
                let encoded = response["patch"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{name}: patch is not a base64 string"));
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(encoded)
                    .expect("base64 patch");
                let decoded: Value = serde_json::from_slice(&decoded).expect("JSON patch");
                assert_eq!(&decoded, patch, "{name}: patch");
            }
            None => assert!(
                response.get("patch").is_none(),
                "{name}: unexpected patch {response}"
            ),
        }
    }
}
