//! Secondary indexes: from a derived key to the objects that have it. Most keys map to exactly one
//! object, so the one-object case is stored inline and costs no allocation.

use std::hash::Hash;

use hashbrown::HashMap;

use super::symbols::Sym;

/// An object's identity in the view: namespace (the empty string for cluster-scoped kinds) and name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    /// Namespace symbol.
    pub namespace: Sym,
    /// Name symbol.
    pub name: Sym,
}

/// Objects sharing one index key.
#[derive(Clone, Debug)]
enum Keys {
    One(Key),
    // Boxed so the common one-key case keeps the value at 16 bytes.
    #[allow(clippy::box_collection)]
    Many(Box<Vec<Key>>),
}

/// A multi-valued index from `K` to object keys, with O(1) insert, remove and lookup.
#[derive(Clone, Debug)]
pub struct MultiIndex<K> {
    map: HashMap<K, Keys>,
}

impl<K> Default for MultiIndex<K> {
    fn default() -> Self {
        Self {
            map: HashMap::default(),
        }
    }
}

impl<K: Hash + Eq> MultiIndex<K> {
    /// Records that `key` has index value `k`.
    pub fn insert(&mut self, k: K, key: Key) {
        match self.map.get_mut(&k) {
            None => {
                self.map.insert(k, Keys::One(key));
            }
            Some(Keys::One(existing)) if *existing == key => {}
            Some(slot @ Keys::One(_)) => {
                let Keys::One(existing) = *slot else {
                    unreachable!()
                };
                *slot = Keys::Many(Box::new(vec![existing, key]));
            }
            Some(Keys::Many(keys)) => {
                if !keys.contains(&key) {
                    keys.push(key);
                }
            }
        }
    }

    /// Forgets that `key` has index value `k`.
    pub fn remove(&mut self, k: &K, key: Key) {
        let Some(slot) = self.map.get_mut(k) else {
            return;
        };
        match slot {
            Keys::One(existing) => {
                if *existing == key {
                    self.map.remove(k);
                }
            }
            Keys::Many(keys) => {
                keys.retain(|x| *x != key);
                match keys.len() {
                    0 => {
                        self.map.remove(k);
                    }
                    1 => *slot = Keys::One(keys[0]),
                    _ => {}
                }
            }
        }
    }

    /// The objects with index value `k`, in insertion order.
    pub fn get(&self, k: &K) -> &[Key] {
        match self.map.get(k) {
            None => &[],
            Some(Keys::One(key)) => std::slice::from_ref(key),
            Some(Keys::Many(keys)) => keys,
        }
    }
}
