//! The one-click tokens acted on in the last minute, so that repeated POSTs of one link (a
//! mailbox provider retrying, a person clicking twice, a scanner replaying) cost no API call:
//! the first one's removal stands, and the repeat is answered as it was. Bounded in entries, so
//! a flood of distinct genuine tokens costs at most [`RecentTokens::CAPACITY`] small entries.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Digests of recently honoured tokens, each for [`RecentTokens::TTL`].
#[derive(Debug, Default)]
pub struct RecentTokens {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    at: HashMap<[u8; 16], Instant>,
    order: VecDeque<([u8; 16], Instant)>,
}

impl RecentTokens {
    /// How long a honoured token is remembered.
    pub const TTL: Duration = Duration::from_secs(60);
    /// How many are remembered at most (the oldest are forgotten first).
    pub const CAPACITY: usize = 10_000;

    /// Whether `token` was honoured within the last [`Self::TTL`].
    pub fn contains(&self, token: &str) -> bool {
        self.contains_at(token, Instant::now())
    }

    /// Remembers `token` as honoured now.
    pub fn insert(&self, token: &str) {
        self.insert_at(token, Instant::now())
    }

    fn contains_at(&self, token: &str, now: Instant) -> bool {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner
            .at
            .get(&digest(token))
            .is_some_and(|at| now.saturating_duration_since(*at) < Self::TTL)
    }

    fn insert_at(&self, token: &str, now: Instant) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let Inner { at, order } = &mut *inner;
        while let Some((oldest, when)) = order.front().copied() {
            let expired = now.saturating_duration_since(when) >= Self::TTL;
            if !expired && order.len() < Self::CAPACITY {
                break;
            }
            order.pop_front();
            // Only if it was not honoured again since (then a later entry is in `order`).
            if at.get(&oldest) == Some(&when) {
                at.remove(&oldest);
            }
        }
        let key = digest(token);
        at.insert(key, now);
        order.push_back((key, now));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner.lock().unwrap().at.len()
    }
}

fn digest(token: &str) -> [u8; 16] {
    let sum = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut out = [0; 16];
    out.copy_from_slice(&sum.as_ref()[..16]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_remembered_for_a_minute() {
        let recent = RecentTokens::default();
        let start = Instant::now();
        assert!(!recent.contains_at("a", start));
        recent.insert_at("a", start);
        assert!(recent.contains_at("a", start + Duration::from_secs(59)));
        assert!(!recent.contains_at("a", start + Duration::from_secs(60)));
        assert!(!recent.contains_at("b", start));
    }

    #[test]
    fn memory_is_bounded_and_the_oldest_go_first() {
        let recent = RecentTokens::default();
        let start = Instant::now();
        for i in 0..RecentTokens::CAPACITY + 10 {
            recent.insert_at(&i.to_string(), start);
        }
        assert_eq!(recent.len(), RecentTokens::CAPACITY);
        assert!(!recent.contains_at("0", start), "the oldest was forgotten");
        assert!(recent.contains_at(&(RecentTokens::CAPACITY + 9).to_string(), start));
        // Expired entries are dropped as new ones come.
        recent.insert_at("late", start + RecentTokens::TTL);
        assert_eq!(recent.len(), 1);
    }
}
