//! Adafactor and factored values beyond the golden file's small shapes: rows longer than a
//! chunk, more rows than a column-walk record, several matrices per tensor, vectors and a 0-d
//! tensor beside matrices, an f64 reference of PyTorch's update, clipping over every kind of
//! tensor, a column walk folding every kind of reduction, and determinism across threads (the
//! GPU's agreement with the CPU is in `tests/cuda.rs`).

use optjit::optim::Adafactor;
use optjit::{GRAD_NORM, Optimizer, Setup};

/// Matrices with rows longer than a chunk (65536) and with more rows than a column-walk record
/// holds (4096), widths that are and are not multiples of 16, matrices of one row or one
/// column, three 2-d matrices in one tensor, a vector and a 0-d tensor.
const SHAPES: [&[usize]; 8] = [
    &[3, 70_000],
    &[3, 40, 50],
    &[1000],
    &[],
    &[7, 1],
    &[5000, 20],
    &[1, 33],
    &[2, 1, 5],
];

fn len(shape: &[usize]) -> usize {
    shape.iter().product()
}

fn values(shape: &[usize], seed: usize, scale: f32) -> Vec<f32> {
    (0..len(shape))
        .map(|i| ((((i * 7919 + seed * 104_729) % 2003) as f32) - 1001.0) * scale / 1001.0)
        .collect()
}

fn grads(step: usize) -> Vec<Vec<f32>> {
    SHAPES
        .iter()
        .enumerate()
        .map(|(t, s)| values(s, 31 * step + t + 1, 0.5))
        .collect()
}

fn params() -> Vec<Vec<f32>> {
    SHAPES.iter().map(|s| values(s, 0, 1.0)).collect()
}

fn optimizer(clip: Option<f64>, threads: usize) -> Optimizer {
    let configured = Adafactor::new()
        .lr(0.02)
        .weight_decay(0.01)
        .build()
        .expect("Adafactor");
    let configured = match clip {
        Some(max_norm) => configured.with_clip_grad_norm(max_norm).expect("clip"),
        None => configured,
    };
    let setup = Setup {
        shapes: SHAPES.iter().map(|s| s.to_vec()).collect(),
        hypers: configured.hypers.clone(),
        threads,
        ..Setup::default()
    };
    Optimizer::new(&configured.definition, setup).expect("optimizer")
}

/// PyTorch's `_single_tensor_adafactor` in f64 for one tensor (eps1 = f32's epsilon, eps2 =
/// 1e-3, d = 1, beta2_decay = -0.8).
struct Reference {
    shape: Vec<usize>,
    row_var: Vec<f64>,
    col_var: Vec<f64>,
    variance: Vec<f64>,
}

impl Reference {
    fn new(shape: &[usize]) -> Reference {
        let (m, r, c) = view(shape);
        Reference {
            shape: shape.to_vec(),
            row_var: vec![0.0; m * r],
            col_var: vec![0.0; m * c],
            variance: vec![0.0; len(shape)],
        }
    }

    fn step(&mut self, p: &mut [f64], g: &[f64], step: f64, lr: f64, wd: f64) {
        let (eps1, eps2) = (f32::EPSILON as f64, 1e-3f64);
        let n = p.len() as f64;
        let w = step.powf(-0.8);
        let rho = lr.min(1.0 / step.sqrt());
        let rms = (p.iter().map(|x| x * x).sum::<f64>() / n).sqrt();
        let alpha = eps2.max(rms) * rho;
        p.iter_mut().for_each(|x| *x *= 1.0 - lr * wd);
        let var: Vec<f64> = if self.shape.len() >= 2 {
            let (mats, rows, cols) = view(&self.shape);
            for mr in 0..mats * rows {
                let mean = (0..cols).map(|j| g[mr * cols + j].powi(2)).sum::<f64>() / cols as f64;
                self.row_var[mr] += w * (mean - self.row_var[mr]);
            }
            for m in 0..mats {
                for j in 0..cols {
                    let at = |i: usize| g[(m * rows + i) * cols + j].powi(2);
                    let mean = (0..rows).map(at).sum::<f64>() / rows as f64;
                    self.col_var[m * cols + j] += w * (mean - self.col_var[m * cols + j]);
                }
            }
            let rows_means: Vec<f64> = self
                .row_var
                .chunks(rows)
                .map(|r| r.iter().sum::<f64>() / rows as f64)
                .collect();
            (0..p.len())
                .map(|e| {
                    let (mr, j) = (e / cols, e % cols);
                    let m = mr / rows;
                    self.row_var[mr] * self.col_var[m * cols + j] / rows_means[m].max(eps1)
                })
                .collect()
        } else {
            for (v, x) in self.variance.iter_mut().zip(g) {
                *v += w * (x * x - *v);
            }
            self.variance.clone()
        };
        let update: Vec<f64> = g
            .iter()
            .zip(&var)
            .map(|(x, v)| x / v.max(eps1 * eps1).sqrt())
            .collect();
        let rms_u = (update.iter().map(|u| u * u).sum::<f64>() / n).sqrt();
        let denom = rms_u.max(1.0);
        for (x, u) in p.iter_mut().zip(&update) {
            *x -= alpha / denom * u;
        }
    }
}

/// (matrices, rows, columns) as PyTorch factors a shape.
fn view(shape: &[usize]) -> (usize, usize, usize) {
    match shape {
        [lead @ .., r, c] => (lead.iter().product(), *r, *c),
        _ => (1, 1, len(shape)),
    }
}

fn close(got: f32, want: f64, what: &str) {
    let err = (got as f64 - want).abs();
    assert!(
        err <= 1e-6 + 1e-4 * want.abs(),
        "{what}: got {got}, want {want}"
    );
}

/// The f64 L2 norm over every element of every tensor.
fn global_norm(tensors: &[Vec<f32>]) -> f64 {
    let squares = tensors.iter().flatten().map(|&x| (x as f64).powi(2));
    squares.sum::<f64>().sqrt()
}

#[test]
fn matches_an_f64_reference_of_pytorch_on_every_kind_of_tensor() {
    let mut opt = optimizer(None, 2);
    assert_eq!(opt.compiled_kinds().count(), 3, "matrices, vectors, 0-d");
    let mut params = params();
    let mut reference: Vec<Reference> = SHAPES.iter().map(|s| Reference::new(s)).collect();
    let mut want: Vec<Vec<f64>> = params
        .iter()
        .map(|p| p.iter().map(|&x| x as f64).collect())
        .collect();
    for step in 1..=8 {
        let g = grads(step);
        opt.step(&mut params, &g).expect("step");
        for ((r, p), g) in reference.iter_mut().zip(&mut want).zip(&g) {
            let g: Vec<f64> = g.iter().map(|&x| x as f64).collect();
            r.step(p, &g, step as f64, 0.02, 0.01);
        }
    }
    for (t, (got, want)) in params.iter().zip(&want).enumerate() {
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            close(g, w, &format!("param {t}[{i}]"));
        }
    }
    for (t, r) in reference.iter().enumerate() {
        let factored = SHAPES[t].len() >= 2;
        let states: &[(&str, &[f64])] = match factored {
            true => &[("row_var", &r.row_var), ("col_var", &r.col_var)],
            false => &[("variance", &r.variance)],
        };
        for (name, want) in states {
            let got = opt.state(t, name).unwrap_or_else(|| panic!("{t}.{name}"));
            assert_eq!(got.len(), want.len(), "{t}.{name}");
            for (i, (&g, &w)) in got.iter().zip(want.iter()).enumerate() {
                close(g, w, &format!("state {t}.{name}[{i}]"));
            }
        }
    }
}

#[test]
fn clipping_adds_the_norm_up_over_every_kind_of_tensor() {
    let max_norm = 0.5;
    let mut clipped = optimizer(Some(max_norm), 2);
    let mut plain = optimizer(None, 2);
    let (mut p_clipped, mut p_plain) = (params(), params());
    for step in 1..=5 {
        let g = grads(step);
        let norm = global_norm(&g);
        let coef = (max_norm / (norm + 1e-6)).min(1.0);
        assert!(coef < 1.0, "the clip must bite");
        let scaled: Vec<Vec<f32>> = g
            .iter()
            .map(|t| t.iter().map(|&x| (x as f64 * coef) as f32).collect())
            .collect();
        clipped.step(&mut p_clipped, &g).expect("clipped step");
        plain.step(&mut p_plain, &scaled).expect("plain step");
        let got = clipped.scalar_state(0, GRAD_NORM).expect("grad_norm");
        // Squares are rounded to f32 before the f64 sum: agreement to 1e-6, not to the bit.
        assert!((got - norm).abs() <= 1e-6 * norm, "norm {got} vs {norm}");
    }
    for (a, b) in p_clipped.iter().flatten().zip(p_plain.iter().flatten()) {
        close(*a, *b as f64, "clipped vs pre-clipped");
    }
}

#[test]
fn threads_do_not_change_a_bit() {
    let run = |threads| {
        let mut opt = optimizer(Some(1.0), threads);
        let mut p = params();
        for step in 1..=3 {
            opt.step(&mut p, &grads(step)).expect("step");
        }
        let cols = opt.state(0, "col_var").expect("col_var").to_vec();
        (p, cols, opt.scalar_state(0, GRAD_NORM))
    };
    let (one, two) = (run(1), run(2));
    assert!(
        one.0
            .iter()
            .flatten()
            .zip(two.0.iter().flatten())
            .all(|(a, b)| a.to_bits() == b.to_bits())
    );
    assert!(
        one.1
            .iter()
            .zip(&two.1)
            .all(|(a, b)| a.to_bits() == b.to_bits())
    );
    assert_eq!(one.2, two.2);
}

/// A column walk that also folds a global norm, a per-tensor maximum and row means (a traced
/// rule, not Adafactor): `p -= lr * col_mean(g*g) * row_mean(|g|) * g / (global_norm(g) *
/// max_abs(g))`, against the same in f64.
#[test]
fn a_column_walk_folds_every_kind_of_reduction() {
    let t = optjit::Tracer::new("walk");
    let lr = t.hyper("lr", 0.1);
    let (p, g) = (t.param(), t.grad());
    let scale = (&g * &g).col_mean() * g.abs().row_mean() / (g.global_norm() * g.max_abs());
    t.set_param(&p - &lr * scale * &g);
    let definition = t.finish().expect("traced");
    let shapes: Vec<Vec<usize>> = vec![vec![5000, 20], vec![3, 40, 50]];
    let setup = Setup {
        shapes: shapes.clone(),
        threads: 2,
        ..Setup::default()
    };
    let mut opt = Optimizer::new(&definition, setup).expect("optimizer");
    let plan = &opt.compiled().plan;
    assert_eq!(plan.phases.len(), 2, "{plan}");
    assert_eq!(plan.phases[0].walk, optjit::ir::Walk::Columns, "{plan}");
    let shape_refs: Vec<&[usize]> = shapes.iter().map(Vec::as_slice).collect();
    let mut params: Vec<Vec<f32>> = shape_refs.iter().map(|s| values(s, 3, 1.0)).collect();
    let g: Vec<Vec<f32>> = shape_refs.iter().map(|s| values(s, 9, 0.5)).collect();
    let before = params.clone();
    opt.step(&mut params, &g).expect("step");
    let norm = global_norm(&g);
    for (t, shape) in shape_refs.iter().enumerate() {
        let (mats, rows, cols) = view(shape);
        let g: Vec<f64> = g[t].iter().map(|&x| x as f64).collect();
        let max_abs = g.iter().fold(0.0f64, |m, x| m.max(x.abs()));
        for e in 0..g.len() {
            let (mr, j) = (e / cols, e % cols);
            let m = mr / rows;
            let col = (0..rows)
                .map(|i| g[(m * rows + i) * cols + j].powi(2))
                .sum::<f64>()
                / rows as f64;
            let row = (0..cols).map(|k| g[mr * cols + k].abs()).sum::<f64>() / cols as f64;
            let want = before[t][e] as f64 - 0.1 * col * row * g[e] / (norm * max_abs);
            close(
                params[t][e],
                want,
                &format!("param {t}[{e}] of {mats} matrices"),
            );
        }
    }
}
