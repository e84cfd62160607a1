//! Hand-built kernels that together use every instruction kind, every reduction op and
//! scope, and both walks (assembled by `tests/ptxas.rs` and run by `tests/ptx_sim.rs`), and one
//! kernel per element op (run by `tests/ptx_sim.rs`).

use optjit::ir::{Binary, Buffer, BufferUse, Cmp, DType, Unary};
use optjit::kernels_gen::{Inst, Kernel, ReduceOp, ReduceScope, Value};

/// Every hand-built kernel, named.
pub fn all() -> Vec<(&'static str, Kernel)> {
    vec![
        ("every-instruction", every_instruction()),
        ("no-scalars", no_scalars()),
        ("adamw", adamw()),
        ("reductions", reductions()),
        ("column-walk", column_walk()),
    ]
}

/// One kernel per element op, storing `op(param, grad)` (unary: `op(param)`; comparison:
/// `select(cmp(param, grad), param, grad)`), so that each op's result, special values
/// included, reaches memory unmixed. Pow is left out: it is the scalar program's.
pub fn per_op() -> Vec<(String, Kernel)> {
    let v = Value;
    let mut ops: Vec<(String, Vec<Inst>)> = Vec::new();
    for &u in Unary::ALL.iter().filter(|u| !u.scalar_only()) {
        ops.push((u.mnemonic().to_string(), vec![Inst::Unary(u, v(0))]));
    }
    for &b in Binary::ALL.iter().filter(|&&b| b != Binary::Pow) {
        ops.push((b.mnemonic().to_string(), vec![Inst::Binary(b, v(0), v(1))]));
    }
    for &c in Cmp::ALL {
        let select = vec![Inst::Cmp(c, v(0), v(1)), Inst::Select(v(2), v(0), v(1))];
        ops.push((c.mnemonic().to_string(), select));
    }
    ops.into_iter()
        .map(|(name, body)| {
            let mut insts = vec![Inst::Load { buffer: 0 }, Inst::Load { buffer: 1 }];
            insts.extend(body);
            let result = Value(insts.len() as u32 - 1);
            insts.push(Inst::Store {
                buffer: 0,
                value: result,
            });
            let kernel = Kernel {
                walk: optjit::ir::Walk::Elements,
                scopes: Vec::new(),
                name: format!("{name}.phase0"),
                elem_dtype: DType::F32,
                buffers: vec![
                    BufferUse::new(Buffer::Param, true, true),
                    BufferUse::new(Buffer::Grad, true, false),
                ],
                n_scalars: 0,
                insts,
            };
            (name, kernel)
        })
        .collect()
}

/// Every per-element instruction kind: loads of a read-write and a read-only buffer, a scalar,
/// a constant, every unary op but the scalar-only ones, every binary op but pow, fma, every
/// comparison, selects, and stores to two buffers. Each result feeds the stores.
pub fn every_instruction() -> Kernel {
    let mut insts = vec![
        Inst::Load { buffer: 0 },
        Inst::Load { buffer: 1 },
        Inst::Scalar { slot: 1 },
        Inst::Const(0.25),
    ];
    let value = |insts: &Vec<Inst>| Value(insts.len() as u32 - 1);
    let (param, grad, scalar, constant) = (Value(0), Value(1), Value(2), Value(3));
    let mut acc = param;
    for &u in Unary::ALL.iter().filter(|u| !u.scalar_only()) {
        insts.push(Inst::Unary(u, acc));
        let result = value(&insts);
        insts.push(Inst::Binary(Binary::Add, result, grad));
        acc = value(&insts);
    }
    for &op in Binary::ALL.iter().filter(|&&op| op != Binary::Pow) {
        insts.push(Inst::Binary(op, acc, scalar));
        acc = value(&insts);
    }
    insts.push(Inst::Fma(acc, scalar, constant));
    acc = value(&insts);
    for &c in Cmp::ALL {
        insts.push(Inst::Cmp(c, acc, grad));
        let mask = value(&insts);
        insts.push(Inst::Select(mask, acc, constant));
        acc = value(&insts);
    }
    insts.push(Inst::Store {
        buffer: 0,
        value: acc,
    });
    insts.push(Inst::Store {
        buffer: 2,
        value: grad,
    });
    Kernel::elements(
        "every.phase0",
        vec![
            BufferUse::new(Buffer::Param, true, true),
            BufferUse::new(Buffer::Grad, true, false),
            BufferUse::new(Buffer::State("copy".into()), false, true),
        ],
        2,
        insts,
    )
}

/// `param -= 0.01 * grad`, with no scalars.
pub fn no_scalars() -> Kernel {
    let v = Value;
    Kernel::elements(
        "sgd_const.phase0",
        vec![
            BufferUse::new(Buffer::Param, true, true),
            BufferUse::new(Buffer::Grad, true, false),
        ],
        0,
        vec![
            Inst::Load { buffer: 0 },
            Inst::Load { buffer: 1 },
            Inst::Const(-0.01),
            Inst::Fma(v(1), v(2), v(0)),
            Inst::Store {
                buffer: 0,
                value: v(3),
            },
        ],
    )
}

/// An AdamW step as the lowering produces it: scalars `[decay = 1 - lr * wd, beta1, beta2,
/// -step_size, 1 / sqrt(bias_correction2)]`, eps a constant.
pub fn adamw() -> Kernel {
    let v = Value;
    Kernel::elements(
        "adamw.phase0",
        vec![
            BufferUse::new(Buffer::Param, true, true),
            BufferUse::new(Buffer::Grad, true, false),
            BufferUse::new(Buffer::State("exp_avg".into()), true, true),
            BufferUse::new(Buffer::State("exp_avg_sq".into()), true, true),
        ],
        5,
        vec![
            Inst::Load { buffer: 0 },                // v0 param
            Inst::Load { buffer: 1 },                // v1 grad
            Inst::Load { buffer: 2 },                // v2 exp_avg
            Inst::Load { buffer: 3 },                // v3 exp_avg_sq
            Inst::Scalar { slot: 0 },                // v4 decay
            Inst::Scalar { slot: 1 },                // v5 beta1
            Inst::Scalar { slot: 2 },                // v6 beta2
            Inst::Scalar { slot: 3 },                // v7 -step_size
            Inst::Scalar { slot: 4 },                // v8 1 / sqrt(bc2)
            Inst::Const(1.0),                        // v9
            Inst::Binary(Binary::Sub, v(9), v(5)),   // v10 1 - beta1
            Inst::Binary(Binary::Sub, v(9), v(6)),   // v11 1 - beta2
            Inst::Binary(Binary::Mul, v(0), v(4)),   // v12 decayed param
            Inst::Binary(Binary::Sub, v(1), v(2)),   // v13 grad - exp_avg
            Inst::Fma(v(13), v(10), v(2)),           // v14 exp_avg.lerp(grad, 1 - beta1)
            Inst::Binary(Binary::Mul, v(3), v(6)),   // v15
            Inst::Binary(Binary::Mul, v(1), v(1)),   // v16 grad^2
            Inst::Fma(v(16), v(11), v(15)),          // v17 new exp_avg_sq
            Inst::Unary(Unary::Sqrt, v(17)),         // v18
            Inst::Binary(Binary::Mul, v(18), v(8)),  // v19
            Inst::Const(1e-8),                       // v20 eps
            Inst::Binary(Binary::Add, v(19), v(20)), // v21 denom
            Inst::Binary(Binary::Div, v(14), v(21)), // v22
            Inst::Fma(v(22), v(7), v(12)),           // v23 new param
            Inst::Store {
                buffer: 0,
                value: v(23),
            },
            Inst::Store {
                buffer: 2,
                value: v(14),
            },
            Inst::Store {
                buffer: 3,
                value: v(17),
            },
        ],
    )
}

/// `param -= lr * grad` with every reduction op, mixed with the store: the sum of squares of
/// grad (partial 0), the largest absolute value of the new param (partial 2) and the sum of the
/// update (partial 1), slots out of instruction order.
pub fn reductions() -> Kernel {
    let v = Value;
    Kernel::elements(
        "norms.phase0",
        vec![
            BufferUse::new(Buffer::Param, true, true),
            BufferUse::new(Buffer::Grad, true, false),
        ],
        1,
        vec![
            Inst::Load { buffer: 0 },              // v0 param
            Inst::Load { buffer: 1 },              // v1 grad
            Inst::Scalar { slot: 0 },              // v2 -lr
            Inst::Binary(Binary::Mul, v(1), v(2)), // v3 update
            Inst::Binary(Binary::Add, v(0), v(3)), // v4 new param
            Inst::Reduce {
                op: ReduceOp::SumSquares,
                slot: 0,
                value: v(1),
            },
            Inst::Store {
                buffer: 0,
                value: v(4),
            },
            Inst::Reduce {
                op: ReduceOp::MaxAbs,
                slot: 2,
                value: v(4),
            },
            Inst::Reduce {
                op: ReduceOp::Sum,
                slot: 1,
                value: v(3),
            },
        ],
    )
}

/// A column walk folding a scaled gradient with every op into partials of every scope (slot
/// `3 * op + scope`), as Adafactor's row and column means and a clip's norm do.
pub fn column_walk() -> Kernel {
    let v = Value;
    let ops = [ReduceOp::SumSquares, ReduceOp::Sum, ReduceOp::MaxAbs];
    let scopes = [ReduceScope::Record, ReduceScope::Row, ReduceScope::Column];
    let mut insts = vec![
        Inst::Load { buffer: 0 },              // v0 grad
        Inst::Scalar { slot: 0 },              // v1 scale
        Inst::Binary(Binary::Mul, v(0), v(1)), // v2 scaled
    ];
    for (o, &op) in ops.iter().enumerate() {
        for s in 0..scopes.len() {
            insts.push(Inst::Reduce {
                op,
                slot: 3 * o + s,
                value: v(2),
            });
        }
    }
    Kernel {
        walk: optjit::ir::Walk::Columns,
        scopes: ops.iter().flat_map(|_| scopes).collect(),
        name: "means.phase0".into(),
        elem_dtype: DType::F32,
        buffers: vec![BufferUse::new(Buffer::Grad, true, false)],
        n_scalars: 1,
        insts,
    }
}
