//! The benchmark workloads shared by every benchmark of the project (see the anchors' README):
//! big-1x16M, gpt2s-148 and small-1000x4K, with the C reference's deterministic data.

use optjit_runtime::AlignedBuf;

/// Tensor sizes (elements) of a named workload, or `None` for an unknown name.
pub fn sizes(name: &str) -> Option<Vec<usize>> {
    let shapes = shapes(name)?;
    Some(shapes.iter().map(|s| s.iter().product()).collect())
}

/// Tensor shapes of a named workload: GPT-2 small's real shapes (matrices and vectors), the
/// others vectors. Only shape-dependent steps (Adafactor) see the difference.
pub fn shapes(name: &str) -> Option<Vec<Vec<usize>>> {
    match name {
        "big-1x16M" => Some(vec![vec![16 << 20]]),
        "gpt2s-148" => Some(gpt2_small()),
        "small-1000x4K" => Some(vec![vec![4096]; 1000]),
        _ => None,
    }
}

/// Every workload name.
pub const NAMES: [&str; 3] = ["big-1x16M", "gpt2s-148", "small-1000x4K"];

/// The 148 parameter tensors of GPT-2 small (124.4M elements), with their shapes: token and
/// position embeddings, then per layer ln_1, attention (c_attn, c_proj), ln_2 and the MLP
/// (c_fc, c_proj), weights before biases, then ln_f.
fn gpt2_small() -> Vec<Vec<usize>> {
    let (d, vocab, ctx) = (768, 50257, 1024);
    let mut shapes = vec![vec![vocab, d], vec![ctx, d]];
    for _ in 0..12 {
        shapes.extend([
            vec![d],
            vec![d],
            vec![d, 3 * d],
            vec![3 * d],
            vec![d, d],
            vec![d],
            vec![d],
            vec![d],
            vec![d, 4 * d],
            vec![4 * d],
            vec![4 * d, d],
            vec![d],
        ]);
    }
    shapes.extend([vec![d], vec![d]]);
    shapes
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
