//! What Resend answered for each object lately, until the view shows it recorded.
//!
//! The sync reads what it last mirrored back from each object's status, through the view. Two
//! moments make that read stale and would cost a second provider call for nothing:
//! - the provider call succeeded but the status write after it failed (a conflict, an API server
//!   restart, a CRD that refuses a field): the retry sees nothing recorded;
//! - the status write landed, but the view has not seen it yet when the object is reconciled
//!   again (the sync's own finalizer write wakes it a few milliseconds earlier).
//!
//! Remembering the answer, and whether its status landed, makes the first retry a status write
//! alone and the second nothing at all. Bounded: past `capacity` the oldest entry is forgotten
//! (at most one repeated call for that object), and a recorded answer is kept only for
//! [`RECORDED_TTL`], far longer than the view ever lags.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::controllers::ObjectKey;
use crate::view::ViewKind;

/// Entries kept at most: far more than the objects in flight between a provider call and its
/// status write reaching the view, yet under a few MiB.
pub const DEFAULT_CAPACITY: usize = 16_384;

/// How long an answer whose status landed is trusted over the view: the view trails the API
/// server by milliseconds; after this the view alone decides.
pub const RECORDED_TTL: Duration = Duration::from_secs(60);

type Slot = (ViewKind, ObjectKey);

/// What is known of one object's last answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recall {
    /// Resend answered `id`; the status recording it has not landed: write it, call nothing.
    Unrecorded(String),
    /// Its status landed too: nothing to do until the view catches up.
    Recorded,
}

struct Entry {
    /// What the answer was for (the object's uid and generation, or the pair a membership
    /// joined): a changed object never reuses a stale answer.
    stamp: String,
    id: String,
    /// When the status landed.
    recorded: Option<Instant>,
}

/// Answers by object.
pub struct Answers {
    inner: Mutex<Inner>,
    capacity: usize,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<Slot, Entry>,
    /// Insertion order, for eviction; may hold slots already forgotten (skipped, compacted).
    order: VecDeque<Slot>,
}

impl Answers {
    /// An empty memory of at most `capacity` answers.
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Remembers that Resend holds `id` for `key` as of `stamp`, its status not yet written.
    pub fn answered(&self, kind: ViewKind, key: &ObjectKey, stamp: String, id: String) {
        let mut inner = self.lock();
        let slot = (kind, key.clone());
        let entry = Entry {
            stamp,
            id,
            recorded: None,
        };
        if inner.entries.insert(slot.clone(), entry).is_none() {
            inner.order.push_back(slot);
        }
        let now = Instant::now();
        while let Some(oldest) = inner.order.front() {
            let stale = match inner.entries.get(oldest) {
                None => true,
                Some(e) => e
                    .recorded
                    .is_some_and(|at| now.duration_since(at) > RECORDED_TTL),
            };
            if !stale && inner.entries.len() <= self.capacity {
                break;
            }
            let oldest = inner.order.pop_front().expect("front exists");
            inner.entries.remove(&oldest);
        }
        if inner.order.len() > 2 * self.capacity {
            let Inner { entries, order } = &mut *inner;
            order.retain(|slot| entries.contains_key(slot));
        }
    }

    /// The status recording `key`'s answer landed.
    pub fn recorded(&self, kind: ViewKind, key: &ObjectKey) {
        if let Some(entry) = self.lock().entries.get_mut(&(kind, key.clone())) {
            entry.recorded = Some(Instant::now());
        }
    }

    /// What is known of `key` as of `stamp`.
    pub fn recall(&self, kind: ViewKind, key: &ObjectKey, stamp: &str) -> Option<Recall> {
        let inner = self.lock();
        let entry = inner.entries.get(&(kind, key.clone()))?;
        if entry.stamp != stamp {
            return None;
        }
        match entry.recorded {
            None => Some(Recall::Unrecorded(entry.id.clone())),
            Some(at) if at.elapsed() <= RECORDED_TTL => Some(Recall::Recorded),
            Some(_) => None,
        }
    }

    /// Forgets `key` (it is being deleted, or drift repair doubts it).
    pub fn forget(&self, kind: ViewKind, key: &ObjectKey) {
        self.lock().entries.remove(&(kind, key.clone()));
    }

    /// How many answers are remembered (for tests and metrics).
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many wait for their status to land.
    pub fn unrecorded(&self) -> usize {
        self.lock()
            .entries
            .values()
            .filter(|e| e.recorded.is_none())
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> ObjectKey {
        ObjectKey::new("ns", name)
    }

    #[test]
    fn recalls_the_answer_then_that_it_landed_only_for_the_same_stamp() {
        let memory = Answers::new(4);
        let contact = ViewKind::Contact;
        memory.answered(contact, &key("a"), "uid-1/1".into(), "re_1".into());
        assert_eq!(
            memory.recall(contact, &key("a"), "uid-1/1"),
            Some(Recall::Unrecorded("re_1".into()))
        );
        assert_eq!(memory.recall(contact, &key("a"), "uid-1/2"), None);
        assert_eq!(
            memory.recall(ViewKind::Membership, &key("a"), "uid-1/1"),
            None
        );
        memory.recorded(contact, &key("a"));
        assert_eq!(
            memory.recall(contact, &key("a"), "uid-1/1"),
            Some(Recall::Recorded)
        );
        assert_eq!(memory.unrecorded(), 0);
        memory.forget(contact, &key("a"));
        assert_eq!(memory.recall(contact, &key("a"), "uid-1/1"), None);
        assert!(memory.is_empty());
    }

    #[test]
    fn forgets_the_oldest_past_capacity_and_stays_bounded() {
        let memory = Answers::new(2);
        for i in 0..3 {
            memory.answered(
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
            memory.answered(ViewKind::Contact, &k, "s".into(), "id".into());
            memory.forget(ViewKind::Contact, &k);
        }
        assert!(memory.lock().order.len() <= 2 * 2 + 1);
    }
}
