//! Provider call metrics: how many requests each provider operation made and how they ended, and
//! how often the provider told us to slow down. A rising `provider_rate_limited` means the
//! configured account rate is higher than the account's real limit.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// Labels of one provider request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderRequestLabels {
    /// `resend` or `loops`.
    pub provider: String,
    /// The client call, e.g. `get_contact`, `list_contacts`.
    pub operation: String,
    /// The HTTP status, or `timeout` / `transport` when no answer arrived.
    pub code: String,
}

/// Labels naming a provider.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderLabels {
    /// `resend` or `loops`.
    pub provider: String,
}

/// Provider metrics. Cloning shares the same series, so one value can be handed to every client.
#[derive(Clone, Debug, Default)]
pub struct ProviderMetrics {
    /// Requests sent, by provider, operation and outcome.
    pub requests: Family<ProviderRequestLabels, Counter>,
    /// 429 answers of any kind, by provider.
    pub rate_limited: Family<ProviderLabels, Counter>,
}

impl ProviderMetrics {
    /// Creates the families and registers them (the registry adds its `milo_webhook` prefix and
    /// the `_total` suffix of counters).
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "provider_requests",
            "Requests sent to an email provider, by operation and HTTP status (or timeout/transport)",
            metrics.requests.clone(),
        );
        registry.register(
            "provider_rate_limited",
            "Answers in which a provider refused a request for rate or quota (HTTP 429)",
            metrics.rate_limited.clone(),
        );
        metrics
    }

    /// Metrics that are counted but exported nowhere, for tests and benchmarks.
    pub fn unregistered() -> Self {
        Self::default()
    }

    /// Counts one request.
    pub fn record_request(&self, provider: &str, operation: &str, code: &str) {
        self.requests
            .get_or_create(&ProviderRequestLabels {
                provider: provider.into(),
                operation: operation.into(),
                code: code.into(),
            })
            .inc();
    }

    /// Counts one 429.
    pub fn record_rate_limited(&self, provider: &str) {
        self.rate_limited
            .get_or_create(&ProviderLabels {
                provider: provider.into(),
            })
            .inc();
    }

    /// Requests counted so far for one provider, operation and code (for tests).
    pub fn request_count(&self, provider: &str, operation: &str, code: &str) -> u64 {
        self.requests
            .get_or_create(&ProviderRequestLabels {
                provider: provider.into(),
                operation: operation.into(),
                code: code.into(),
            })
            .get()
    }

    /// 429s counted so far for one provider (for tests).
    pub fn rate_limited_count(&self, provider: &str) -> u64 {
        self.rate_limited
            .get_or_create(&ProviderLabels {
                provider: provider.into(),
            })
            .get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode;

    #[test]
    fn families_are_exported_with_the_registry_prefix() {
        let mut registry = Registry::with_prefix("milo_webhook");
        let metrics = ProviderMetrics::register(&mut registry);
        metrics.record_request("resend", "get_contact", "200");
        metrics.record_rate_limited("resend");
        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        assert!(
            text.contains(
                r#"milo_webhook_provider_requests_total{provider="resend",operation="get_contact",code="200"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"milo_webhook_provider_rate_limited_total{provider="resend"} 1"#),
            "{text}"
        );
        assert_eq!(metrics.request_count("resend", "get_contact", "200"), 1);
    }
}
