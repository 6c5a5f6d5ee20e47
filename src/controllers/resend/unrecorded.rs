//! Provider outcomes whose status write has not landed yet.
//!
//! The sync reads what it last mirrored back from each object's status. When the provider call
//! succeeded but the status write after it failed (a conflict, an API server restart, a CRD that
//! refuses a field), the next reconcile would see nothing recorded and call the provider again,
//! spending the account's few requests per second on repeats. Remembering the outcome here until
//! the status lands makes the retry a status write alone. Bounded: past `capacity` the oldest
//! entry is forgotten, which costs at most one repeated call for that object.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use crate::controllers::ObjectKey;
use crate::view::ViewKind;

/// Entries kept by default: far more than the objects in flight between a provider call and
/// its status write, yet a few MiB at most.
pub const DEFAULT_CAPACITY: usize = 16_384;

type Slot = (ViewKind, ObjectKey);

/// Outcomes by object, each tied to a `stamp` that says what it was for (the object's uid and
/// generation, or the pair a membership joined): a changed object never reuses a stale one.
pub struct Unrecorded {
    inner: Mutex<Inner>,
    capacity: usize,
}

#[derive(Default)]
struct Inner {
    outcomes: HashMap<Slot, (String, String)>,
    /// Insertion order, for eviction; may hold slots already forgotten (skipped, compacted).
    order: VecDeque<Slot>,
}

impl Unrecorded {
    /// An empty memory of at most `capacity` outcomes.
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Remembers that the provider holds `id` for `key` as of `stamp`.
    pub fn remember(&self, kind: ViewKind, key: &ObjectKey, stamp: String, id: String) {
        let mut inner = self.lock();
        let slot = (kind, key.clone());
        if inner.outcomes.insert(slot.clone(), (stamp, id)).is_none() {
            inner.order.push_back(slot);
        }
        while inner.outcomes.len() > self.capacity {
            let Some(oldest) = inner.order.pop_front() else {
                break;
            };
            inner.outcomes.remove(&oldest);
        }
        if inner.order.len() > 2 * self.capacity {
            let Inner { outcomes, order } = &mut *inner;
            order.retain(|slot| outcomes.contains_key(slot));
        }
    }

    /// The id remembered for `key` as of `stamp`, if its status has not landed since.
    pub fn recall(&self, kind: ViewKind, key: &ObjectKey, stamp: &str) -> Option<String> {
        let inner = self.lock();
        let (remembered, id) = inner.outcomes.get(&(kind, key.clone()))?;
        (remembered == stamp).then(|| id.clone())
    }

    /// Forgets `key`: its status landed, or it is gone.
    pub fn recorded(&self, kind: ViewKind, key: &ObjectKey) {
        self.lock().outcomes.remove(&(kind, key.clone()));
    }

    /// How many outcomes wait for their status (for tests and metrics).
    pub fn len(&self) -> usize {
        self.lock().outcomes.len()
    }

    /// Whether none waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> ObjectKey {
        ObjectKey::new("ns", name)
    }

    #[test]
    fn recalls_only_for_the_same_stamp_until_recorded() {
        let memory = Unrecorded::new(4);
        memory.remember(
            ViewKind::Contact,
            &key("a"),
            "uid-1/1".into(),
            "re_1".into(),
        );
        assert_eq!(
            memory.recall(ViewKind::Contact, &key("a"), "uid-1/1"),
            Some("re_1".into())
        );
        assert_eq!(memory.recall(ViewKind::Contact, &key("a"), "uid-1/2"), None);
        assert_eq!(
            memory.recall(ViewKind::Membership, &key("a"), "uid-1/1"),
            None
        );
        memory.recorded(ViewKind::Contact, &key("a"));
        assert_eq!(memory.recall(ViewKind::Contact, &key("a"), "uid-1/1"), None);
        assert!(memory.is_empty());
    }

    #[test]
    fn forgets_the_oldest_past_capacity_and_stays_bounded() {
        let memory = Unrecorded::new(2);
        for i in 0..3 {
            memory.remember(
                ViewKind::Contact,
                &key(&i.to_string()),
                "s".into(),
                "id".into(),
            );
        }
        assert_eq!(memory.len(), 2);
        assert_eq!(memory.recall(ViewKind::Contact, &key("0"), "s"), None);
        assert!(memory.recall(ViewKind::Contact, &key("2"), "s").is_some());
        for i in 0..1000 {
            let k = key(&format!("x{i}"));
            memory.remember(ViewKind::Contact, &k, "s".into(), "id".into());
            memory.recorded(ViewKind::Contact, &k);
        }
        assert!(memory.lock().order.len() <= 4 + 1);
    }
}
