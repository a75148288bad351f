//! Deterministic pseudo-random model inputs shared by the inference benches
//! (`#[path = "inputs.rs"] mod inputs;`).

/// `count` tensors of `per` values in [-2, 2) from a fixed xorshift sequence (the same on every run).
pub fn random_tensors(count: usize, per: usize) -> Vec<Vec<f32>> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    (0..count)
        .map(|_| {
            (0..per)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    (state >> 40) as f32 / (1u64 << 24) as f32 * 4.0 - 2.0
                })
                .collect()
        })
        .collect()
}
