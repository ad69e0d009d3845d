//! A compact table of 64-bit key fingerprints, for the 48 hours of keys that outlive their merge.
//!
//! Owns: what one closed dedup key (or claimed order key) costs in memory, and its expiry. Must
//! not: hold strings or anything per key beyond one 12-byte entry.
//!
//! Why fingerprints: a closed action only needs to answer "was this key seen, when, and how did
//! it end". Keeping the key text would cost 50-100 bytes per key; a 56-bit fingerprint plus a
//! 32-bit anchor second plus 8 flag bits fits in 12 bytes (13 with hashbrown's control byte, so
//! 15-30 bytes per key between hashbrown's 87.5% and 43.75% load factors). The price is a false
//! "seen before" when two live keys share 56 bits: with n live keys the chance that a new key
//! collides is about n / 2^56, i.e. 1.4e-8 at 1e9 live keys (and 1.4e-11 at 1e6).

use hashbrown::HashTable;

/// Fingerprint of a key: the low 56 bits of an xxh3-64 hash of its parts.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct Fingerprint(u64);

impl Fingerprint {
    const MASK: u64 = (1 << 56) - 1;

    /// Hashes the parts with a separator that cannot appear in them (0xFF is never valid UTF-8),
    /// so ("ab","c") and ("a","bc") differ. xxh3 with a fixed seed: the same key gives the same
    /// fingerprint in every process and release, which a changelog restore relies on.
    ///
    /// The parts are joined in a stack buffer and hashed in one call: the streaming hasher
    /// copies its 192-byte secret on every `new` and buffers each `update`, which was most of
    /// what a fingerprint cost (perf, 1M replay). Both give the same hash of the same bytes.
    pub fn of(parts: &[&str]) -> Fingerprint {
        const STACK: usize = 256;
        let len: usize = parts.iter().map(|p| p.len() + 1).sum();
        let (mut stack, mut heap) = ([0u8; STACK], Vec::new());
        let buf = if len <= STACK {
            &mut stack[..len]
        } else {
            heap.resize(len, 0);
            &mut heap[..]
        };
        let mut at = 0;
        for part in parts {
            buf[at..at + part.len()].copy_from_slice(part.as_bytes());
            buf[at + part.len()] = 0xFF;
            at += part.len() + 1;
        }
        Fingerprint(xxhash_rust::xxh3::xxh3_64(buf) & Self::MASK)
    }

    pub fn from_raw(raw: u64) -> Fingerprint {
        Fingerprint(raw & Self::MASK)
    }

    pub fn raw(self) -> u64 {
        self.0
    }

    fn hash(self) -> u64 {
        // The fingerprint is already a good hash; spread it so hashbrown's top-7-bit control
        // bytes are not all zero (the top 8 bits of a fingerprint are always zero).
        self.0.wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }
}

/// One entry: fingerprint (56 bits) and flags (8 bits) packed into two u32 halves, plus the
/// anchor second. Three u32s keep the entry at 12 bytes with 4-byte alignment.
#[derive(Debug, Clone, Copy)]
struct Entry {
    lo: u32,
    hi: u32,
    anchor_s: u32,
}

impl Entry {
    fn new(fp: Fingerprint, anchor_s: u32, flags: u8) -> Entry {
        let packed = fp.0 | (u64::from(flags) << 56);
        Entry {
            lo: packed as u32,
            hi: (packed >> 32) as u32,
            anchor_s,
        }
    }

    fn packed(&self) -> u64 {
        u64::from(self.lo) | (u64::from(self.hi) << 32)
    }

    fn fingerprint(&self) -> Fingerprint {
        Fingerprint(self.packed() & Fingerprint::MASK)
    }

    fn flags(&self) -> u8 {
        (self.packed() >> 56) as u8
    }
}

/// What the table knows about a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyState {
    /// Unix seconds of the action's first copy.
    pub anchor_s: u32,
    pub flags: u8,
}

#[derive(Default)]
pub struct KeyTable {
    table: HashTable<Entry>,
}

impl KeyTable {
    pub fn get(&self, fp: Fingerprint) -> Option<KeyState> {
        self.table
            .find(fp.hash(), |e| e.fingerprint() == fp)
            .map(|e| KeyState {
                anchor_s: e.anchor_s,
                flags: e.flags(),
            })
    }

    /// Inserts or overwrites the key's state.
    pub fn put(&mut self, fp: Fingerprint, state: KeyState) {
        let entry = Entry::new(fp, state.anchor_s, state.flags);
        match self.table.find_mut(fp.hash(), |e| e.fingerprint() == fp) {
            Some(slot) => *slot = entry,
            None => {
                self.table
                    .insert_unique(fp.hash(), entry, |e| e.fingerprint().hash());
            }
        }
    }

    pub fn remove(&mut self, fp: Fingerprint) {
        if let Ok(entry) = self.table.find_entry(fp.hash(), |e| e.fingerprint() == fp) {
            entry.remove();
        }
    }

    /// Drops every key anchored before `cutoff_s`, in one pass, and hands each dropped key to
    /// `dropped` (the engine marks it for a changelog tombstone; with no changelog kept, that is
    /// one untaken branch per dropped key, no allocation).
    pub fn expire_before(&mut self, cutoff_s: u32, mut dropped: impl FnMut(Fingerprint)) {
        self.table.retain(|e| {
            let keep = e.anchor_s >= cutoff_s;
            if !keep {
                dropped(e.fingerprint());
            }
            keep
        });
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Bytes the table has allocated (entries plus control bytes), for the state-size metric.
    pub fn allocated_bytes(&self) -> usize {
        let buckets = self.table.capacity() * 8 / 7;
        buckets * (std::mem::size_of::<Entry>() + 1)
    }

    /// Every key and its state, for a changelog snapshot. Order is unspecified.
    pub fn iter(&self) -> impl Iterator<Item = (Fingerprint, KeyState)> + '_ {
        self.table.iter().map(|e| {
            (
                e.fingerprint(),
                KeyState {
                    anchor_s: e.anchor_s,
                    flags: e.flags(),
                },
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A changelog written by one release is restored by the next, so a key's fingerprint must
    /// never change: the same as the streaming hash of the parts each followed by 0xFF, short
    /// parts or long, and pinned for one key.
    #[test]
    fn fingerprints_are_stable_across_releases() {
        let streamed = |parts: &[&str]| {
            let mut h = xxhash_rust::xxh3::Xxh3Default::new();
            for part in parts {
                h.update(part.as_bytes());
                h.update(&[0xFF]);
            }
            Fingerprint(h.digest() & Fingerprint::MASK)
        };
        let long = "x".repeat(300);
        for parts in [
            &["P1", "Purchase", "e1"][..],
            &[][..],
            &[""][..],
            &["ab", "c"][..],
            &[long.as_str(), "e"][..],
            &["P", long.as_str()][..],
        ] {
            assert_eq!(Fingerprint::of(parts), streamed(parts), "{parts:?}");
        }
        assert_ne!(Fingerprint::of(&["ab", "c"]), Fingerprint::of(&["a", "bc"]));
        assert_eq!(
            Fingerprint::of(&["P1", "Purchase", "e1"]).raw(),
            33_315_234_593_389_037
        );
    }

    #[test]
    fn entry_is_twelve_bytes() {
        assert_eq!(std::mem::size_of::<Entry>(), 12);
    }

    #[test]
    fn flags_and_anchor_round_trip_beside_the_fingerprint() {
        let mut t = KeyTable::default();
        let fp = Fingerprint::of(&["P1", "Purchase", "e1"]);
        t.put(
            fp,
            KeyState {
                anchor_s: 77,
                flags: 0b1010_0101,
            },
        );
        assert_eq!(
            t.get(fp),
            Some(KeyState {
                anchor_s: 77,
                flags: 0b1010_0101
            })
        );
        t.put(
            fp,
            KeyState {
                anchor_s: 78,
                flags: 1,
            },
        );
        assert_eq!(
            t.get(fp),
            Some(KeyState {
                anchor_s: 78,
                flags: 1
            })
        );
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn part_boundaries_change_the_fingerprint() {
        assert_ne!(Fingerprint::of(&["ab", "c"]), Fingerprint::of(&["a", "bc"]));
    }

    #[test]
    fn expire_drops_only_older_anchors_and_reports_each() {
        let mut t = KeyTable::default();
        for i in 0..100u32 {
            t.put(
                Fingerprint::of(&[&i.to_string()]),
                KeyState {
                    anchor_s: i,
                    flags: 0,
                },
            );
        }
        let mut dropped = Vec::new();
        t.expire_before(60, |fp| dropped.push(fp));
        assert_eq!(t.len(), 40);
        dropped.sort_unstable();
        let mut expected: Vec<_> = (0..60u32)
            .map(|i| Fingerprint::of(&[&i.to_string()]))
            .collect();
        expected.sort_unstable();
        assert_eq!(dropped, expected, "every dropped key is reported, once");
        assert!(t.get(Fingerprint::of(&["59"])).is_none());
        assert!(t.get(Fingerprint::of(&["60"])).is_some());
    }
}
