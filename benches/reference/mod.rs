//! Hand-fused reference kernels in plain Rust: one pass per element, bias corrections hoisted,
//! chunks of every tensor split across threads, compiled by rustc for the host CPU (AVX-512 or
//! AVX2+FMA versions chosen at run time). The compiled steps are measured against these.

use optjit::AlignedBuf;

/// Elements per chunk, as in the runtime and the C anchor.
const CHUNK: usize = 1 << 16;

/// Per-step scalars of AdamW, computed once on the host as PyTorch does.
#[derive(Clone, Copy)]
pub struct AdamWScalars {
    beta1: f32,
    beta2: f32,
    eps: f32,
    decay: f32,
    step_size: f32,
    bias_correction2_sqrt: f32,
}

impl AdamWScalars {
    /// Scalars for 1-based `step`.
    pub fn new(lr: f64, beta1: f64, beta2: f64, eps: f64, weight_decay: f64, step: u64) -> Self {
        let step = step as i32;
        AdamWScalars {
            beta1: beta1 as f32,
            beta2: beta2 as f32,
            eps: eps as f32,
            decay: (1.0 - lr * weight_decay) as f32,
            step_size: (lr / (1.0 - beta1.powi(step))) as f32,
            bias_correction2_sqrt: (1.0 - beta2.powi(step)).sqrt() as f32,
        }
    }
}

#[inline(always)]
fn adamw_loop(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], s: AdamWScalars) {
    for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
        let mi = s.beta1 * *m + (1.0 - s.beta1) * g;
        let vi = s.beta2 * *v + (1.0 - s.beta2) * g * g;
        *m = mi;
        *v = vi;
        *p = *p * s.decay - s.step_size * mi / (vi.sqrt() / s.bias_correction2_sqrt + s.eps);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
fn adamw_avx512(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], s: AdamWScalars) {
    adamw_loop(p, g, m, v, s)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn adamw_avx2(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], s: AdamWScalars) {
    adamw_loop(p, g, m, v, s)
}

fn adamw_chunk(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], s: AdamWScalars) {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512vl") {
            // SAFETY: the features were detected on this CPU.
            return unsafe { adamw_avx512(p, g, m, v, s) };
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            // SAFETY: the features were detected on this CPU.
            return unsafe { adamw_avx2(p, g, m, v, s) };
        }
    }
    adamw_loop(p, g, m, v, s)
}

/// One chunk of work: mutable views of one range of one tensor.
type Chunk<'a> = (&'a mut [f32], &'a [f32], &'a mut [f32], &'a mut [f32]);

/// One AdamW step over every tensor, chunks split evenly across `threads`.
pub fn adamw_step(
    params: &mut [AlignedBuf],
    grads: &[AlignedBuf],
    exp_avg: &mut [AlignedBuf],
    exp_avg_sq: &mut [AlignedBuf],
    s: AdamWScalars,
    threads: usize,
) {
    let mut chunks: Vec<Chunk> = Vec::new();
    for (((p, g), m), v) in params
        .iter_mut()
        .zip(grads)
        .zip(exp_avg.iter_mut())
        .zip(exp_avg_sq.iter_mut())
    {
        let parts = p
            .chunks_mut(CHUNK)
            .zip(g.chunks(CHUNK))
            .zip(m.chunks_mut(CHUNK))
            .zip(v.chunks_mut(CHUNK));
        chunks.extend(parts.map(|(((p, g), m), v)| (p, g, m, v)));
    }
    let per_thread = chunks.len().div_ceil(threads.max(1)).max(1);
    std::thread::scope(|scope| {
        let mut groups = chunks.chunks_mut(per_thread);
        let first = groups.next();
        for group in groups {
            scope.spawn(move || {
                group
                    .iter_mut()
                    .for_each(|(p, g, m, v)| adamw_chunk(p, g, m, v, s))
            });
        }
        if let Some(group) = first {
            group
                .iter_mut()
                .for_each(|(p, g, m, v)| adamw_chunk(p, g, m, v, s));
        }
    });
}
