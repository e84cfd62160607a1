//! A hand-fused Adafactor in plain Rust (PyTorch's update with its defaults: eps1 = f32's
//! epsilon, eps2 = 1e-3, d = 1, beta2_decay = -0.8, no weight decay): the fewest passes the
//! update allows, every tensor's rows cut into ~64K-element pieces split across threads (one
//! thread scope per pass for all tensors), column sums in per-piece accumulators, 8-lane f32
//! accumulators so that rustc vectorizes, AVX2+FMA chosen at run time. The compiled Adafactor
//! is measured against it.

use optjit::AlignedBuf;

const EPS1: f32 = f32::EPSILON;
const EPS2: f64 = 1e-3;
const LANES: usize = 8;
const PIECE: usize = 1 << 16;

/// One tensor's view and state.
pub struct Tensor {
    matrices: usize,
    rows: usize,
    cols: usize,
    factored: bool,
    row_var: Vec<f32>,
    col_var: Vec<f32>,
    /// Per-step scratch: the row factor's scale and the sums of pass 1 and 2.
    row_scale: Vec<f32>,
}

impl Tensor {
    /// Zero state for a tensor of `shape`.
    pub fn new(shape: &[usize]) -> Tensor {
        let n: usize = shape.iter().product();
        let (matrices, rows, cols) = match shape {
            [lead @ .., r, c] => (lead.iter().product(), *r, *c),
            _ => (1, 1, n),
        };
        Tensor {
            matrices,
            rows,
            cols,
            factored: shape.len() >= 2,
            row_var: vec![0.0; matrices * rows],
            col_var: vec![0.0; matrices * cols],
            row_scale: vec![0.0; matrices * rows],
        }
    }
}

/// A piece of work: rows `rows` of tensor `tensor`.
#[derive(Clone)]
struct Piece {
    tensor: usize,
    rows: std::ops::Range<usize>,
}

/// What pass 1 gives for a piece: the sum of p^2, each row's sum of g^2, and the column sums
/// of g^2 of the piece's matrix (factored tensors), or the sum of u^2 (vectors).
#[derive(Default)]
struct Sums {
    pp: f64,
    uu: f64,
    row_sums: Vec<f64>,
    col_sums: Vec<f32>,
}

/// Runs `f` on every piece, pieces split into `threads` contiguous runs, results in order.
fn run<T: Send>(pieces: &[Piece], threads: usize, f: impl Fn(&Piece) -> T + Sync) -> Vec<T> {
    let per = pieces.len().div_ceil(threads.max(1)).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = pieces
            .chunks(per)
            .map(|run| scope.spawn(|| run.iter().map(&f).collect::<Vec<T>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("thread"))
            .collect()
    })
}

#[inline(always)]
fn lanes_sum(acc: [f32; LANES]) -> f64 {
    acc.iter().map(|&x| x as f64).sum()
}

/// Pass 1 of a factored row: sum of p^2, sum of g^2, g^2 into `cols`.
#[inline(always)]
fn row_pass1(p: &[f32], g: &[f32], cols: &mut [f32]) -> (f64, f64) {
    let (mut pp, mut gg) = ([0f32; LANES], [0f32; LANES]);
    let mut chunks = p
        .chunks_exact(LANES)
        .zip(g.chunks_exact(LANES))
        .zip(cols.chunks_exact_mut(LANES));
    for ((p8, g8), c8) in &mut chunks {
        for k in 0..LANES {
            let sq = g8[k] * g8[k];
            gg[k] += sq;
            c8[k] += sq;
            pp[k] += p8[k] * p8[k];
        }
    }
    let tail = p.len() / LANES * LANES;
    let (mut pt, mut gt) = (0.0f64, 0.0f64);
    for j in tail..p.len() {
        let sq = g[j] * g[j];
        cols[j] += sq;
        gt += sq as f64;
        pt += (p[j] * p[j]) as f64;
    }
    (lanes_sum(pp) + pt, lanes_sum(gg) + gt)
}

/// `g / sqrt(max(scale * col, eps1^2))` for one row, either summing its squares or applying it.
#[inline(always)]
fn row_update(p: Option<&mut [f32]>, g: &[f32], cols: &[f32], scale: f32, step: f32) -> f64 {
    let floor = EPS1 * EPS1;
    let u = |x: f32, c: f32| x / (scale * c).max(floor).sqrt();
    match p {
        None => {
            let mut acc = [0f32; LANES];
            for (g8, c8) in g.chunks_exact(LANES).zip(cols.chunks_exact(LANES)) {
                for k in 0..LANES {
                    let v = u(g8[k], c8[k]);
                    acc[k] += v * v;
                }
            }
            let tail = g.len() / LANES * LANES;
            lanes_sum(acc)
                + (tail..g.len())
                    .map(|j| (u(g[j], cols[j]) as f64).powi(2))
                    .sum::<f64>()
        }
        Some(p) => {
            for ((x, &y), &c) in p.iter_mut().zip(g).zip(cols) {
                *x -= step * u(y, c);
            }
            0.0
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn row_pass1_avx2(p: &[f32], g: &[f32], cols: &mut [f32]) -> (f64, f64) {
    row_pass1(p, g, cols)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn row_update_avx2(p: Option<&mut [f32]>, g: &[f32], cols: &[f32], scale: f32, step: f32) -> f64 {
    row_update(p, g, cols, scale, step)
}

fn avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

fn pass1(p: &[f32], g: &[f32], cols: &mut [f32]) -> (f64, f64) {
    #[cfg(target_arch = "x86_64")]
    if avx2() {
        // SAFETY: the features were detected on this CPU.
        return unsafe { row_pass1_avx2(p, g, cols) };
    }
    row_pass1(p, g, cols)
}

fn update(p: Option<&mut [f32]>, g: &[f32], cols: &[f32], scale: f32, step: f32) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if avx2() {
        // SAFETY: the features were detected on this CPU.
        return unsafe { row_update_avx2(p, g, cols, scale, step) };
    }
    row_update(p, g, cols, scale, step)
}

/// A vector's span: with `out = None`, the sums of p^2 and u^2 (`p`, `v` read); with
/// `out = Some((p, v))`, the update written to both.
#[inline(always)]
fn vector_body(
    out: Option<&mut (&mut [f32], &mut [f32])>,
    p: &[f32],
    g: &[f32],
    v: &[f32],
    w: f32,
    scale: f32,
) -> (f64, f64) {
    let floor = EPS1 * EPS1;
    match out {
        None => {
            let (mut pp, mut uu) = ([0f32; LANES], [0f32; LANES]);
            let whole = p.len() / LANES * LANES;
            for ((p8, g8), v8) in p[..whole]
                .chunks_exact(LANES)
                .zip(g[..whole].chunks_exact(LANES))
                .zip(v[..whole].chunks_exact(LANES))
            {
                for k in 0..LANES {
                    let var = v8[k] + w * (g8[k] * g8[k] - v8[k]);
                    let u = g8[k] / var.max(floor).sqrt();
                    pp[k] += p8[k] * p8[k];
                    uu[k] += u * u;
                }
            }
            let (mut pt, mut ut) = (0.0f64, 0.0f64);
            for j in whole..p.len() {
                let var = v[j] + w * (g[j] * g[j] - v[j]);
                let u = g[j] / var.max(floor).sqrt();
                pt += (p[j] * p[j]) as f64;
                ut += (u * u) as f64;
            }
            (lanes_sum(pp) + pt, lanes_sum(uu) + ut)
        }
        Some((p, v)) => {
            for ((x, vi), &y) in p.iter_mut().zip(v.iter_mut()).zip(g) {
                let var = *vi + w * (y * y - *vi);
                *x -= scale * (y / var.max(floor).sqrt());
                *vi = var;
            }
            (0.0, 0.0)
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn vector_avx2(
    out: Option<&mut (&mut [f32], &mut [f32])>,
    p: &[f32],
    g: &[f32],
    v: &[f32],
    w: f32,
    scale: f32,
) -> (f64, f64) {
    vector_body(out, p, g, v, w, scale)
}

fn vector(
    out: Option<&mut (&mut [f32], &mut [f32])>,
    p: &[f32],
    g: &[f32],
    v: &[f32],
    w: f32,
    scale: f32,
) -> (f64, f64) {
    #[cfg(target_arch = "x86_64")]
    if avx2() {
        // SAFETY: the features were detected on this CPU.
        return unsafe { vector_avx2(out, p, g, v, w, scale) };
    }
    vector_body(out, p, g, v, w, scale)
}

/// A raw pointer that threads writing disjoint rows share.
#[derive(Clone, Copy)]
struct Shared(*mut f32);
// SAFETY: each piece writes only its own rows (see `step`).
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

/// One Adafactor step over every tensor (1-based `step`, learning rate `lr`).
pub fn step(
    params: &mut [AlignedBuf],
    grads: &[AlignedBuf],
    tensors: &mut [Tensor],
    step: u64,
    lr: f64,
    threads: usize,
) {
    let t = step as f64;
    let w = t.powf(-0.8);
    let rho = lr.min(1.0 / t.sqrt());
    // Pieces of ~PIECE elements, whole rows (a vector is one row: cut it into row-like spans).
    let mut pieces = Vec::new();
    for (i, tensor) in tensors.iter().enumerate() {
        // (matrices, rows per matrix, columns): a piece never crosses a matrix.
        let (mats, rows, cols) = match tensor.factored {
            true => (tensor.matrices, tensor.rows, tensor.cols),
            false => (1, tensor.cols.div_ceil(PIECE), PIECE),
        };
        let per = (PIECE / cols.max(1)).max(1);
        for m in 0..mats {
            for r0 in (0..rows).step_by(per) {
                pieces.push(Piece {
                    tensor: i,
                    rows: m * rows + r0..m * rows + (r0 + per).min(rows),
                });
            }
        }
    }
    let span = |tensor: &Tensor, n: usize, row: usize| -> std::ops::Range<usize> {
        match tensor.factored {
            true => row * tensor.cols..(row + 1) * tensor.cols,
            false => (row * PIECE).min(n)..((row + 1) * PIECE).min(n),
        }
    };
    let ps: Vec<Shared> = params.iter_mut().map(|p| Shared(p.as_mut_ptr())).collect();
    let lens: Vec<usize> = params.iter().map(|p| p.len()).collect();
    let vars: Vec<Shared> = tensors
        .iter_mut()
        .map(|t| Shared(t.col_var.as_mut_ptr()))
        .collect();

    // Pass 1: p^2, row and column sums of g^2 (factored); p^2 and u^2 (vectors).
    let tensors_ref = &*tensors;
    let sums = run(&pieces, threads, |piece| {
        let tensor = &tensors_ref[piece.tensor];
        let n = lens[piece.tensor];
        // SAFETY: pass 1 only reads.
        let p = unsafe { std::slice::from_raw_parts(ps[piece.tensor].0, n) };
        let g = &grads[piece.tensor][..];
        let mut s = Sums::default();
        if tensor.factored {
            s.col_sums = vec![0.0; tensor.cols];
            for row in piece.rows.clone() {
                let r = span(tensor, n, row);
                let (pp, gg) = pass1(&p[r.clone()], &g[r], &mut s.col_sums);
                s.pp += pp;
                s.row_sums.push(gg);
            }
        } else {
            for row in piece.rows.clone() {
                let r = span(tensor, n, row);
                let (pp, uu) = vector(
                    None,
                    &p[r.clone()],
                    &g[r.clone()],
                    &tensor.col_var[r],
                    w as f32,
                    0.0,
                );
                s.pp += pp;
                s.uu += uu;
            }
        }
        s
    });
    // Host: the factors and the per-tensor sums.
    let mut pp = vec![0.0f64; tensors.len()];
    let mut uu = vec![0.0f64; tensors.len()];
    let mut col_sums: Vec<Vec<f64>> = tensors
        .iter()
        .map(|t| match t.factored {
            true => vec![0.0; t.col_var.len()],
            false => Vec::new(),
        })
        .collect();
    let mut row_sums: Vec<Vec<f64>> = tensors.iter().map(|_| Vec::new()).collect();
    for (piece, s) in pieces.iter().zip(&sums) {
        let i = piece.tensor;
        pp[i] += s.pp;
        uu[i] += s.uu;
        if tensors[i].factored {
            let m = piece.rows.start / tensors[i].rows;
            let cols = tensors[i].cols;
            for (acc, &x) in col_sums[i][m * cols..(m + 1) * cols]
                .iter_mut()
                .zip(&s.col_sums)
            {
                *acc += x as f64;
            }
            row_sums[i].extend(&s.row_sums);
        }
    }
    for (i, tensor) in tensors.iter_mut().enumerate() {
        if !tensor.factored {
            continue;
        }
        for (v, &sum) in tensor.row_var.iter_mut().zip(&row_sums[i]) {
            let mean = sum / tensor.cols as f64;
            *v = (*v as f64 + w * (mean - *v as f64)) as f32;
        }
        for (v, &sum) in tensor.col_var.iter_mut().zip(&col_sums[i]) {
            let mean = sum / tensor.rows as f64;
            *v = (*v as f64 + w * (mean - *v as f64)) as f32;
        }
        for m in 0..tensor.matrices {
            let own = &tensor.row_var[m * tensor.rows..(m + 1) * tensor.rows];
            let mean = own.iter().map(|&x| x as f64).sum::<f64>() / tensor.rows as f64;
            for r in 0..tensor.rows {
                let row = m * tensor.rows + r;
                tensor.row_scale[row] = (tensor.row_var[row] as f64 / mean.max(EPS1 as f64)) as f32;
            }
        }
    }

    // Pass 2 (factored): u^2.
    let tensors_ref = &*tensors;
    let sums2 = run(&pieces, threads, |piece| {
        let tensor = &tensors_ref[piece.tensor];
        if !tensor.factored {
            return 0.0;
        }
        let n = lens[piece.tensor];
        let g = &grads[piece.tensor][..];
        let mut total = 0.0;
        for row in piece.rows.clone() {
            let m = row / tensor.rows;
            let cols = &tensor.col_var[m * tensor.cols..(m + 1) * tensor.cols];
            total += update(
                None,
                &g[span(tensor, n, row)],
                cols,
                tensor.row_scale[row],
                0.0,
            );
        }
        total
    });
    for (piece, s) in pieces.iter().zip(sums2) {
        uu[piece.tensor] += s;
    }
    let scales: Vec<f32> = (0..tensors.len())
        .map(|i| {
            let n = lens[i] as f64;
            let alpha = EPS2.max((pp[i] / n).sqrt()) * rho;
            (alpha / (uu[i] / n).sqrt().max(1.0)) as f32
        })
        .collect();

    // Pass 3: the update (vectors also write their variance).
    let tensors_ref = &*tensors;
    run(&pieces, threads, |piece| {
        let tensor = &tensors_ref[piece.tensor];
        let n = lens[piece.tensor];
        let g = &grads[piece.tensor][..];
        let scale = scales[piece.tensor];
        for row in piece.rows.clone() {
            let r = span(tensor, n, row);
            // SAFETY: pieces hold disjoint rows of their tensor.
            let p =
                unsafe { std::slice::from_raw_parts_mut(ps[piece.tensor].0.add(r.start), r.len()) };
            if tensor.factored {
                let m = row / tensor.rows;
                let cols = &tensor.col_var[m * tensor.cols..(m + 1) * tensor.cols];
                update(Some(p), &g[r], cols, tensor.row_scale[row], scale);
            } else {
                // SAFETY: as above, for the variance.
                let v = unsafe {
                    std::slice::from_raw_parts_mut(vars[piece.tensor].0.add(r.start), r.len())
                };
                let mut out = (p, v);
                let pc: &[f32] = &[];
                vector(Some(&mut out), pc, &g[r], &[], w as f32, scale);
            }
        }
    });
}
