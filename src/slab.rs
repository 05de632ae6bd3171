//! The one generational slab and its typed key, used for every table of flows and host
//! sockets.
//!
//! # Theory of operation
//!
//! A [`Slab`] holds values at stable indices; every index has a generation that advances
//! when its value is removed, and a [`Key`] names an index *and* the generation it was
//! handed out with. A key that outlives its value (a late io_uring completion, an event for
//! a flow that was reaped, a timer of an earlier occupant) matches nothing, so stale
//! references are harmless by construction.
//!
//! - Limits: at most `max` live values (`insert` returns `None` beyond it); the entry vector
//!   is reserved for `max` up front (virtual memory only until touched) and never grows past
//!   it, so entries never move while the slab lives (the io_uring driver lends entry fields
//!   to the kernel).
//! - Generations are [`GEN_BITS`] (24) bits: a key packs into 56 bits, leaving the top byte of
//!   a 64-bit word for a tag (the io_uring op code, the poll thread's flow kind) —
//!   [`Key::pack`] / [`Key::unpack`].

/// Bits of a key's generation.
pub const GEN_BITS: u32 = 24;
const GEN_MASK: u32 = (1 << GEN_BITS) - 1;

/// Names one value of a [`Slab`]: its index and the generation it was inserted with.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    idx: u32,
    gen: u32,
}

impl Key {
    /// The index (stable while the value lives; reused after removal).
    #[must_use]
    pub fn index(self) -> u32 {
        self.idx
    }

    /// `tag (8) | generation (24) | index (32)`.
    #[must_use]
    pub fn pack(self, tag: u8) -> u64 {
        (u64::from(tag) << 56) | (u64::from(self.gen & GEN_MASK) << 32) | u64::from(self.idx)
    }

    /// Inverse of [`Key::pack`]: `(tag, key)`.
    #[must_use]
    pub fn unpack(word: u64) -> (u8, Key) {
        // Truncations intended: the fields of the packed word.
        #[allow(clippy::cast_possible_truncation)]
        let key = Key {
            idx: word as u32,
            gen: ((word >> 32) as u32) & GEN_MASK,
        };
        #[allow(clippy::cast_possible_truncation)]
        ((word >> 56) as u8, key)
    }

    /// A key outside any slab's use (for tagged words that name no value, such as the
    /// poll thread's wake-up fds): index `idx`, generation 0.
    #[must_use]
    pub fn fixed(idx: u32) -> Key {
        Key { idx, gen: 0 }
    }
}

struct Entry<T> {
    gen: u32,
    val: Option<T>,
}

/// Values by [`Key`], bounded, with generation-checked access.
pub struct Slab<T> {
    entries: Vec<Entry<T>>,
    free: Vec<u32>,
    len: usize,
    max: usize,
}

impl<T> Slab<T> {
    /// A slab of at most `max` live values (capped at `u32::MAX`).
    #[must_use]
    pub fn new(max: usize) -> Slab<T> {
        let max = max.min(u32::MAX as usize);
        Slab {
            entries: Vec::with_capacity(max),
            free: Vec::new(),
            len: 0,
            max,
        }
    }

    /// Live values.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Most live values.
    #[must_use]
    pub fn max(&self) -> usize {
        self.max
    }

    /// Insert; `None` when `max` values are live.
    pub fn insert(&mut self, val: T) -> Option<Key> {
        if self.len >= self.max {
            return None;
        }
        let idx = match self.free.pop() {
            Some(i) => i,
            None => {
                let i = u32::try_from(self.entries.len()).ok()?;
                self.entries.push(Entry { gen: 1, val: None });
                i
            }
        };
        let e = &mut self.entries[idx as usize];
        e.val = Some(val);
        self.len += 1;
        Some(Key { idx, gen: e.gen })
    }

    #[must_use]
    pub fn get(&self, key: Key) -> Option<&T> {
        match self.entries.get(key.idx as usize) {
            Some(Entry { gen, val: Some(v) }) if *gen == key.gen => Some(v),
            _ => None,
        }
    }

    pub fn get_mut(&mut self, key: Key) -> Option<&mut T> {
        match self.entries.get_mut(key.idx as usize) {
            Some(Entry { gen, val: Some(v) }) if *gen == key.gen => Some(v),
            _ => None,
        }
    }

    #[must_use]
    pub fn contains(&self, key: Key) -> bool {
        self.get(key).is_some()
    }

    /// Remove the value `key` names; its index is free for reuse under a new generation.
    pub fn remove(&mut self, key: Key) -> Option<T> {
        let e = self.entries.get_mut(key.idx as usize)?;
        if e.gen != key.gen {
            return None;
        }
        let v = e.val.take()?;
        // Generation 0 is left to `Key::fixed`.
        e.gen = match (e.gen + 1) & GEN_MASK {
            0 => 1,
            g => g,
        };
        self.free.push(key.idx);
        self.len -= 1;
        Some(v)
    }

    /// Live values with their keys.
    pub fn iter(&self) -> impl Iterator<Item = (Key, &T)> {
        self.entries.iter().enumerate().filter_map(|(i, e)| {
            // Indices fit in u32: `insert` never grows past it.
            #[allow(clippy::cast_possible_truncation)]
            let idx = i as u32;
            e.val.as_ref().map(|v| (Key { idx, gen: e.gen }, v))
        })
    }

    /// Live values with their keys, writable.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (Key, &mut T)> {
        self.entries.iter_mut().enumerate().filter_map(|(i, e)| {
            let gen = e.gen;
            // Indices fit in u32: `insert` never grows past it.
            #[allow(clippy::cast_possible_truncation)]
            let idx = i as u32;
            e.val.as_mut().map(|v| (Key { idx, gen }, v))
        })
    }

    /// Remove every value, in index order.
    pub fn drain(&mut self) -> impl Iterator<Item = T> + '_ {
        let keys: Vec<Key> = self.iter_mut().map(|(k, _)| k).collect();
        keys.into_iter().filter_map(|k| self.remove(k))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_keys_match_nothing() {
        let mut s = Slab::new(2);
        let a = s.insert(1).unwrap();
        let b = s.insert(2).unwrap();
        assert!(s.insert(3).is_none(), "bounded");
        assert_eq!(s.remove(a), Some(1));
        assert_eq!(s.remove(a), None, "removed twice");
        let c = s.insert(4).unwrap();
        assert_eq!(c.index(), a.index(), "index reused");
        assert_ne!(c, a, "under a new generation");
        assert_eq!(s.get(a), None);
        assert_eq!(s.get(b), Some(&2));
        assert_eq!(s.get(c), Some(&4));
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn pack_round_trip() {
        let mut s = Slab::new(4);
        let k = s.insert(()).unwrap();
        for tag in [0u8, 1, 0x7f, 0xff] {
            assert_eq!(Key::unpack(k.pack(tag)), (tag, k));
        }
        let f = Key::fixed(7);
        assert_eq!(Key::unpack(f.pack(3)), (3, f));
    }

    #[test]
    fn generations_wrap_without_reaching_zero() {
        let mut s = Slab::new(1);
        let mut last = s.insert(0u32).unwrap();
        for _ in 0..(1 << GEN_BITS) + 5 {
            s.remove(last);
            last = s.insert(0).unwrap();
            assert_ne!(last, Key::fixed(0));
        }
    }

    #[test]
    fn drain_empties() {
        let mut s = Slab::new(8);
        for i in 0..5 {
            s.insert(i);
        }
        let k = s.insert(9).unwrap();
        s.remove(k);
        let mut all: Vec<i32> = s.drain().collect();
        all.sort_unstable();
        assert_eq!(all, vec![0, 1, 2, 3, 4]);
        assert!(s.is_empty());
    }
}
