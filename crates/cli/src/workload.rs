//! The benchmark workloads shared by every benchmark of the project (see the anchors' README):
//! big-1x16M, gpt2s-148 and small-1000x4K, with the C reference's deterministic data.

use optjit_runtime::AlignedBuf;

/// Tensor sizes (elements) of a named workload, or `None` for an unknown name.
pub fn sizes(name: &str) -> Option<Vec<usize>> {
    match name {
        "big-1x16M" => Some(vec![16 << 20]),
        "gpt2s-148" => Some(gpt2_small()),
        "small-1000x4K" => Some(vec![4096; 1000]),
        _ => None,
    }
}

/// Every workload name.
pub const NAMES: [&str; 3] = ["big-1x16M", "gpt2s-148", "small-1000x4K"];

/// The 148 parameter tensors of GPT-2 small (124.4M elements).
fn gpt2_small() -> Vec<usize> {
    let (d, vocab, ctx) = (768, 50257, 1024);
    let mut sizes = vec![vocab * d, ctx * d];
    for _ in 0..12 {
        sizes.extend([
            d,
            d,
            3 * d * d,
            3 * d,
            d * d,
            d,
            d,
            d,
            4 * d * d,
            4 * d,
            4 * d * d,
            d,
        ]);
    }
    sizes.extend([d, d]);
    sizes
}

/// Parameters and gradients filled as the C reference fills them, in 64-byte-aligned buffers
/// as the C reference (and PyTorch's CPU allocator) allocates them.
pub fn data(sizes: &[usize]) -> (Vec<AlignedBuf>, Vec<AlignedBuf>) {
    let fill = |f: fn(usize) -> f32| -> Vec<AlignedBuf> {
        sizes
            .iter()
            .map(|&n| {
                let mut buf = AlignedBuf::filled(n, 0.0);
                buf.iter_mut().enumerate().for_each(|(i, x)| *x = f(i));
                buf
            })
            .collect()
    };
    (
        fill(|i| 0.01 * (i % 101) as f32),
        fill(|i| 0.001 * (i % 37) as f32 - 0.018),
    )
}
