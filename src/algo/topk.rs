//! Bounded top-R selection: keep the R smallest `(key, id)` pairs of a stream without sorting it.
//!
//! Keys are `u32` (a Hamming distance, or an f32 mapped by [`f32_key`], which preserves order).
//! Each entry is packed as `key << 32 | id` into one `u64`, so the heap compares plain integers and
//! ties are broken by the smaller id. A stream of n items costs O(n) comparisons against the current
//! worst kept key plus O(log R) per item that enters (few once the heap is full).

use std::collections::BinaryHeap;

/// Order-preserving map of an f32 to a u32: `a < b` (as `f32::total_cmp`) iff
/// `f32_key(a) < f32_key(b)`. NaN sorts after +inf (positive NaN) as in `total_cmp`.
#[inline]
pub fn f32_key(x: f32) -> u32 {
    let b = x.to_bits();
    if b & 0x8000_0000 != 0 {
        !b
    } else {
        b | 0x8000_0000
    }
}

/// Inverse of [`f32_key`].
#[inline]
pub fn f32_from_key(k: u32) -> f32 {
    if k & 0x8000_0000 != 0 {
        f32::from_bits(k & 0x7fff_ffff)
    } else {
        f32::from_bits(!k)
    }
}

/// The R smallest `(key, id)` seen so far (ties by smaller id).
#[derive(Debug, Clone)]
pub struct TopK {
    cap: usize,
    /// Max-heap of packed `key << 32 | id`: the top is the worst entry kept.
    heap: BinaryHeap<u64>,
}

impl TopK {
    /// Empty selector keeping at most `cap` entries.
    pub fn new(cap: usize) -> TopK {
        TopK {
            cap,
            // Reserved up front only up to a modest size: `cap` may be a user setting far larger than
            // what the stream will ever hold.
            heap: BinaryHeap::with_capacity(cap.min(1 << 16) + 1),
        }
    }

    /// Entries kept.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Forgets every entry (keeps the allocation).
    pub fn clear(&mut self) {
        self.heap.clear();
    }

    /// The packed worst entry kept when full, else `u64::MAX`: an item enters iff its packed value is
    /// smaller. Callers scanning many keys can compare `key < (threshold >> 32)` first.
    #[inline]
    pub fn threshold(&self) -> u64 {
        if self.heap.len() < self.cap {
            u64::MAX
        } else {
            self.heap.peek().copied().unwrap_or(u64::MAX)
        }
    }

    /// Offers one item.
    #[inline]
    pub fn push(&mut self, key: u32, id: u32) {
        self.push_packed((u64::from(key) << 32) | u64::from(id));
    }

    /// Offers an entry packed by the caller (any u64; smaller is better), for keys and ids that do
    /// not fit the `key << 32 | id` form of [`Self::push`].
    #[inline]
    pub fn push_packed(&mut self, v: u64) {
        if self.cap == 0 {
            return;
        }
        if self.heap.len() < self.cap {
            self.heap.push(v);
        } else if let Some(mut top) = self.heap.peek_mut() {
            if v < *top {
                *top = v;
            }
        }
    }

    /// The kept packed entries, in no particular order.
    pub fn into_packed(self) -> Vec<u64> {
        self.heap.into_vec()
    }

    /// Offers `keys[i]` with id `base + i` for every i (the inner loop of a scan).
    #[inline]
    pub fn push_block(&mut self, keys: &[u32], base: u32) {
        let mut limit = (self.threshold() >> 32) as u32;
        for (i, &k) in keys.iter().enumerate() {
            // `k <= limit` also admits ties (the id decides in `push`).
            if k <= limit {
                self.push(k, base + i as u32);
                limit = (self.threshold() >> 32) as u32;
            }
        }
    }

    /// The kept `(key, id)` pairs, best first.
    pub fn into_sorted(self) -> Vec<(u32, u32)> {
        let mut v = self.heap.into_vec();
        v.sort_unstable();
        v.into_iter()
            .map(|x| ((x >> 32) as u32, x as u32))
            .collect()
    }

    /// The kept ids, in no particular order (cheaper than [`Self::into_sorted`] when an exact
    /// rerank follows).
    pub fn ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.heap.iter().map(|&x| x as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn f32_key_preserves_order() {
        let mut xs = vec![
            -f32::INFINITY,
            -3.5,
            -1e-30,
            -0.0,
            0.0,
            1e-30,
            2.0,
            f32::INFINITY,
            f32::NAN,
        ];
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for _ in 0..1000 {
            xs.push(rng.random_range(-100.0f32..100.0));
        }
        for &a in &xs {
            assert_eq!(f32_from_key(f32_key(a)).to_bits(), a.to_bits());
            for &b in xs.iter().take(50) {
                assert_eq!(a.total_cmp(&b), f32_key(a).cmp(&f32_key(b)), "{a} {b}");
            }
        }
    }

    #[test]
    fn topk_equals_full_sort() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for &(n, cap, range) in &[
            (0usize, 5usize, 10u32),
            (3, 5, 10),
            (1000, 1, 50),
            (1000, 10, 50),
            (5000, 200, 300),
            (5000, 200, u32::MAX),
            (100, 100, 4),
            (100, 0, 4),
        ] {
            let keys: Vec<u32> = (0..n)
                .map(|_| rng.random_range(0..=range.min(u32::MAX - 1)))
                .collect();
            let mut sorted: Vec<(u32, u32)> = keys
                .iter()
                .enumerate()
                .map(|(i, &k)| (k, i as u32))
                .collect();
            sorted.sort_unstable();
            sorted.truncate(cap);
            let mut t = TopK::new(cap);
            for (i, &k) in keys.iter().enumerate() {
                t.push(k, i as u32);
            }
            assert_eq!(t.clone().into_sorted(), sorted, "push n={n} cap={cap}");
            let mut ids: Vec<u32> = t.ids().collect();
            ids.sort_unstable();
            let mut want: Vec<u32> = sorted.iter().map(|x| x.1).collect();
            want.sort_unstable();
            assert_eq!(ids, want);
            // Block pushes in uneven pieces give the same answer.
            let mut b = TopK::new(cap);
            let mut base = 0usize;
            for chunk in keys.chunks(37) {
                b.push_block(chunk, base as u32);
                base += chunk.len();
            }
            assert_eq!(b.into_sorted(), sorted, "block n={n} cap={cap}");
        }
    }
}
