//! String interning for the view: every name, namespace and email is stored once and referred to
//! by a 4-byte [`Sym`], which is what keeps a million indexed objects within a few hundred bytes
//! each. Symbols are reference-counted so deleted objects give their strings back. A string of up
//! to 24 bytes (most names) is stored inside its entry, with no allocation of its own: that saves
//! the allocation's overhead per symbol, and a lookup one dependent cache miss.

use std::hash::BuildHasher;
use std::num::NonZeroU32;

use compact_str::CompactString;
use hashbrown::{DefaultHashBuilder, HashTable};

/// An interned string. Only meaningful with the [`Symbols`] table that issued it. Never zero, so
/// an `Option<Sym>` is as small as a `Sym`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sym(NonZeroU32);

impl Sym {
    fn new(index: u32) -> Self {
        Sym(NonZeroU32::new(index + 1).expect("fewer than 2^32 - 1 distinct strings"))
    }

    fn index(self) -> usize {
        (self.0.get() - 1) as usize
    }
}

#[derive(Clone)]
struct Entry {
    text: CompactString,
    refs: u32,
}

/// The table of interned strings.
#[derive(Clone, Default)]
pub struct Symbols {
    entries: Vec<Entry>,
    free: Vec<u32>,
    table: HashTable<u32>,
    hasher: DefaultHashBuilder,
}

impl Symbols {
    /// Interns `text`, taking one reference that [`Symbols::release`] gives back.
    pub fn intern(&mut self, text: &str) -> Sym {
        let hash = self.hasher.hash_one(text);
        let entries = &self.entries;
        if let Some(&id) = self
            .table
            .find(hash, |&id| entries[id as usize].text == text)
        {
            self.entries[id as usize].refs += 1;
            return Sym::new(id);
        }
        let entry = Entry {
            text: CompactString::new(text),
            refs: 1,
        };
        let id = match self.free.pop() {
            Some(id) => {
                self.entries[id as usize] = entry;
                id
            }
            None => {
                self.entries.push(entry);
                u32::try_from(self.entries.len() - 1).expect("fewer than 2^32 distinct strings")
            }
        };
        let (entries, hasher) = (&self.entries, &self.hasher);
        self.table.insert_unique(hash, id, |&id| {
            hasher.hash_one(entries[id as usize].text.as_str())
        });
        Sym::new(id)
    }

    /// The symbol for `text` if any stored object uses it; takes no reference. A string that was
    /// never interned cannot match any object, so lookups can stop early.
    pub fn get(&self, text: &str) -> Option<Sym> {
        let hash = self.hasher.hash_one(text);
        self.table
            .find(hash, |&id| self.entries[id as usize].text == text)
            .map(|&id| Sym::new(id))
    }

    /// The text of a symbol.
    pub fn resolve(&self, sym: Sym) -> &str {
        self.entries[sym.index()].text.as_str()
    }

    /// Gives back one reference; the string is dropped when the last one goes.
    pub fn release(&mut self, sym: Sym) {
        let entry = &mut self.entries[sym.index()];
        entry.refs -= 1;
        if entry.refs > 0 {
            return;
        }
        let hash = self.hasher.hash_one(entry.text.as_str());
        entry.text = CompactString::default();
        let id = sym.index() as u32;
        if let Ok(found) = self.table.find_entry(hash, |&slot| slot == id) {
            found.remove();
        }
        self.free.push(id);
    }

    /// How many distinct strings are live, for metrics and tests.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether no string is interned.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interning_shares_and_release_frees() {
        let mut symbols = Symbols::default();
        let a = symbols.intern("milo-system");
        let b = symbols.intern("milo-system");
        assert_eq!(a, b);
        assert_eq!(symbols.len(), 1);
        symbols.release(a);
        assert_eq!(symbols.get("milo-system"), Some(b));
        symbols.release(b);
        assert_eq!(symbols.get("milo-system"), None);
        assert!(symbols.is_empty());
        let c = symbols.intern("other");
        assert_eq!(symbols.resolve(c), "other");
        assert_eq!(c, a, "freed slots are reused");
    }
}
