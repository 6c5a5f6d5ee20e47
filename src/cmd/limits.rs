//! Flags bounding what clients can make one replica hold: review bodies, reviews in flight and
//! connections per listener (see [`crate::server::budget`]). The defaults keep a replica under
//! its 256 MiB limit whatever clients send; raise them only with the memory limit.

use std::time::Duration;

use clap::Args;

use super::parse_duration;
use crate::server::budget::{
    DEFAULT_MAX_CONCURRENT_REVIEWS, DEFAULT_MAX_IN_FLIGHT_REVIEW_BYTES, DEFAULT_MAX_REVIEW_BYTES,
    ReviewLimits,
};
use crate::server::{DEFAULT_EVENTS_MAX_CONNECTIONS, DEFAULT_MAX_CONNECTIONS, EventsOptions};

/// Flags of the listeners' bounds.
#[derive(Debug, Clone, Args)]
pub struct LimitArgs {
    /// Largest AdmissionReview body read (bytes, or with a Ki/Mi suffix); larger ones get 413.
    /// The default is the API server's own request limit.
    #[arg(long, env = "MILO_WEBHOOK_MAX_REVIEW_BYTES", default_value = "3Mi", value_parser = parse_bytes)]
    pub max_review_bytes: usize,
    /// Bytes review bodies may hold beyond the first 64 KiB of each, all reviews together; a
    /// body that would pass it gets 429 with Retry-After.
    #[arg(long, env = "MILO_WEBHOOK_MAX_IN_FLIGHT_REVIEW_BYTES", default_value = "32Mi", value_parser = parse_bytes)]
    pub max_in_flight_review_bytes: usize,
    /// Reviews read or decided at once; more get 429 with Retry-After at once.
    #[arg(long, env = "MILO_WEBHOOK_MAX_CONCURRENT_REVIEWS", default_value_t = DEFAULT_MAX_CONCURRENT_REVIEWS, value_parser = at_least_one)]
    pub max_concurrent_reviews: usize,
    /// Connections the webhook listener serves at once; more are closed as they arrive.
    #[arg(long, env = "MILO_WEBHOOK_MAX_CONNECTIONS", default_value_t = DEFAULT_MAX_CONNECTIONS, value_parser = at_least_one)]
    pub max_connections: usize,
    /// Connections the provider events listener serves at once; more are closed as they arrive.
    #[arg(long, env = "MILO_WEBHOOK_PROVIDER_EVENTS_MAX_CONNECTIONS", default_value_t = DEFAULT_EVENTS_MAX_CONNECTIONS, value_parser = at_least_one)]
    pub provider_events_max_connections: usize,
    /// An HTTP/2 connection to the provider events listener with no new request for this long
    /// is closed (GOAWAY); PINGs every 30 s drop peers that stopped answering.
    #[arg(long, env = "MILO_WEBHOOK_PROVIDER_EVENTS_IDLE_TIMEOUT", default_value = "2m", value_parser = parse_duration)]
    pub provider_events_idle_timeout: Duration,
}

impl LimitArgs {
    /// The webhook listener's review limits.
    pub fn review_limits(&self) -> ReviewLimits {
        ReviewLimits {
            max_body: self.max_review_bytes,
            max_in_flight_bytes: self.max_in_flight_review_bytes,
            max_concurrent: self.max_concurrent_reviews,
        }
    }

    /// The events listener's connection bounds.
    pub fn events(&self) -> EventsOptions {
        EventsOptions {
            max_connections: self.provider_events_max_connections,
            idle_timeout: self.provider_events_idle_timeout,
            ..EventsOptions::default()
        }
    }
}

// The defaults above are spelled as text for `--help`; these keep them equal to the constants.
const _: () = assert!(DEFAULT_MAX_REVIEW_BYTES == 3 * 1024 * 1024);
const _: () = assert!(DEFAULT_MAX_IN_FLIGHT_REVIEW_BYTES == 32 * 1024 * 1024);

fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{text:?} is not a positive whole number")),
    }
}

/// Parses a byte count: digits, optionally followed by `Ki`, `Mi` or `Gi` (Kubernetes' binary
/// suffixes); at least one byte, at most 4 GiB (what the budgets can count).
pub fn parse_bytes(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let (digits, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, ""),
    };
    let shift = match unit {
        "" => 0,
        "Ki" => 10,
        "Mi" => 20,
        "Gi" => 30,
        _ => {
            return Err(format!(
                "{text:?}: expected bytes, or a number with Ki, Mi or Gi"
            ));
        }
    };
    let bytes = digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_shl(shift).filter(|b| b >> shift == n))
        .filter(|b| (1..=u64::from(u32::MAX)).contains(b))
        .ok_or_else(|| format!("{text:?}: expected between 1 byte and 4Gi"))?;
    Ok(bytes as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_counts_take_binary_suffixes() {
        assert_eq!(parse_bytes("3Mi"), Ok(3 * 1024 * 1024));
        assert_eq!(parse_bytes("64Ki"), Ok(65536));
        assert_eq!(parse_bytes("1000"), Ok(1000));
        for bad in ["", "0", "3MB", "-1", "5Gi", "Mi"] {
            assert!(parse_bytes(bad).is_err(), "{bad}");
        }
    }
}
