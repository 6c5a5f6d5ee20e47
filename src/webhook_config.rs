//! Renders the ValidatingWebhookConfiguration and MutatingWebhookConfiguration that register every
//! webhook in the registry, so the cluster's registrations can never drift from what the binary
//! serves.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MatchCondition, MutatingWebhook, MutatingWebhookConfiguration, RuleWithOperations,
    ServiceReference, ValidatingWebhook, ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::admission::{WEBHOOKS, Webhook, WebhookType};

/// How the API server reaches the webhook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// A base URL such as `https://10.0.0.1:9443`; each webhook's path is appended.
    Url(String),
    /// An in-cluster Service.
    Service {
        /// Service name.
        name: String,
        /// Service namespace.
        namespace: String,
        /// Service port.
        port: i32,
    },
}

/// Everything the configurations depend on.
#[derive(Clone, Debug)]
pub struct RenderOptions {
    /// Name of both configuration objects.
    pub name: String,
    /// Where the server is.
    pub endpoint: Endpoint,
    /// PEM of the CA that signed the serving certificate, if known.
    pub ca_bundle: Option<Vec<u8>>,
    /// `namespace/certificate` for cert-manager's CA injector, when it manages the bundle.
    pub inject_ca_from: Option<String>,
    /// Per-call timeout the API server applies.
    pub timeout_seconds: i32,
    /// Whether to render `matchConditions` (API servers 1.30 and later), so the API server
    /// skips calls whose outcome is known.
    pub match_conditions: bool,
}

fn client_config(options: &RenderOptions, webhook: &Webhook) -> WebhookClientConfig {
    let ca_bundle = options.ca_bundle.clone().map(ByteString);
    match &options.endpoint {
        Endpoint::Url(base) => WebhookClientConfig {
            url: Some(format!("{}{}", base.trim_end_matches('/'), webhook.path)),
            ca_bundle,
            service: None,
        },
        Endpoint::Service {
            name,
            namespace,
            port,
        } => WebhookClientConfig {
            url: None,
            ca_bundle,
            service: Some(ServiceReference {
                name: name.clone(),
                namespace: namespace.clone(),
                path: Some(webhook.path.to_owned()),
                port: Some(*port),
            }),
        },
    }
}

fn rules(webhook: &Webhook) -> Vec<RuleWithOperations> {
    vec![RuleWithOperations {
        api_groups: Some(vec![webhook.group.to_owned()]),
        api_versions: Some(vec![webhook.version.to_owned()]),
        operations: Some(webhook.operations.iter().map(|s| (*s).to_owned()).collect()),
        resources: Some(vec![webhook.resource.to_owned()]),
        scope: Some(
            if webhook.namespaced {
                "Namespaced"
            } else {
                "Cluster"
            }
            .to_owned(),
        ),
    }]
}

fn match_conditions(options: &RenderOptions, webhook: &Webhook) -> Option<Vec<MatchCondition>> {
    let conditions: Vec<MatchCondition> = webhook
        .match_conditions
        .iter()
        .map(|c| MatchCondition {
            name: c.name.to_owned(),
            expression: c.expression.to_owned(),
        })
        .collect();
    (options.match_conditions && !conditions.is_empty()).then_some(conditions)
}

fn metadata(options: &RenderOptions) -> ObjectMeta {
    let annotations = options
        .inject_ca_from
        .as_ref()
        .map(|from| BTreeMap::from([("cert-manager.io/inject-ca-from".to_owned(), from.clone())]));
    ObjectMeta {
        name: Some(options.name.clone()),
        annotations,
        labels: Some(BTreeMap::from([(
            "app.kubernetes.io/name".to_owned(),
            "milo-webhook".to_owned(),
        )])),
        ..Default::default()
    }
}

fn of_type(kind: WebhookType) -> impl Iterator<Item = &'static Webhook> {
    WEBHOOKS.iter().filter(move |w| w.kind == kind)
}

/// The validating configuration.
pub fn validating(options: &RenderOptions) -> ValidatingWebhookConfiguration {
    let webhooks = of_type(WebhookType::Validating)
        .map(|w| ValidatingWebhook {
            name: w.name.to_owned(),
            admission_review_versions: vec!["v1".to_owned()],
            client_config: client_config(options, w),
            failure_policy: Some("Fail".to_owned()),
            match_conditions: match_conditions(options, w),
            match_policy: Some("Equivalent".to_owned()),
            rules: Some(rules(w)),
            side_effects: "None".to_owned(),
            timeout_seconds: Some(options.timeout_seconds),
            ..Default::default()
        })
        .collect();
    ValidatingWebhookConfiguration {
        metadata: metadata(options),
        webhooks: Some(webhooks),
    }
}

/// The mutating configuration.
pub fn mutating(options: &RenderOptions) -> MutatingWebhookConfiguration {
    let webhooks = of_type(WebhookType::Mutating)
        .map(|w| MutatingWebhook {
            name: w.name.to_owned(),
            admission_review_versions: vec!["v1".to_owned()],
            client_config: client_config(options, w),
            failure_policy: Some("Fail".to_owned()),
            match_conditions: match_conditions(options, w),
            match_policy: Some("Equivalent".to_owned()),
            reinvocation_policy: Some("Never".to_owned()),
            rules: Some(rules(w)),
            side_effects: "None".to_owned(),
            timeout_seconds: Some(options.timeout_seconds),
            ..Default::default()
        })
        .collect();
    MutatingWebhookConfiguration {
        metadata: metadata(options),
        webhooks: Some(webhooks),
    }
}

/// Both configurations as one YAML stream.
pub fn to_yaml(options: &RenderOptions) -> Result<String, serde_saphyr::SerializeError> {
    Ok(format!(
        "---\n{}---\n{}",
        crate::crds::to_yaml_document(&validating(options))?,
        crate::crds::to_yaml_document(&mutating(options))?
    ))
}
