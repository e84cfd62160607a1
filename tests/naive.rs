//! Naive definitions compile to the built-ins' per-element work: the e-graph hoists bias
//! corrections, divisions by scalars and square roots of scalars into the scalar program.

mod common;

use optjit::optim::AdamW;
use optjit::rewrite::{OpCounts, count_elem_ops};
use optjit::{CompileOptions, Definition, Optimizer, Setup, compile};

/// The per-element op counts and bytes of every phase of `definition`'s compiled plan.
fn counts(definition: &Definition) -> (Vec<OpCounts>, usize) {
    let compiled = compile(definition, &CompileOptions::default()).expect("compiles");
    let plan = &compiled.plan;
    let counts = plan
        .phases
        .iter()
        .map(|p| count_elem_ops(&plan.graph, p))
        .collect();
    (counts, plan.bytes_per_elem())
}

#[test]
fn naive_adamw_does_the_per_element_work_of_the_builtin() {
    let builtin = AdamW::new().build().expect("AdamW");
    let (want, want_bytes) = counts(&builtin.definition);
    let (got, got_bytes) = counts(&common::adamw_naive());
    assert_eq!(got, want, "naive {:?}\nbuilt-in {want:?}", got);
    assert_eq!(got_bytes, want_bytes);
    let [phase] = got.as_slice() else {
        panic!("one phase, got {got:?}")
    };
    assert!(phase.div <= 1 && phase.sqrt <= 1, "{phase}");
    assert_eq!(phase.pow + phase.exp + phase.log, 0, "{phase}");
}

#[test]
fn naive_adamw_steps_like_the_builtin() {
    let shapes = vec![vec![37], vec![4, 5]];
    let setup = || Setup {
        shapes: shapes.clone(),
        ..Setup::default()
    };
    let builtin = AdamW::new().build().expect("AdamW");
    let mut want = Optimizer::new(&builtin.definition, setup()).expect("built-in");
    let mut got = Optimizer::new(&common::adamw_naive(), setup()).expect("naive");
    let init: Vec<Vec<f32>> = shapes
        .iter()
        .enumerate()
        .map(|(t, s)| {
            (0..s.iter().product::<usize>())
                .map(|i| ((i * 7 + t) % 11) as f32 * 0.1 - 0.5)
                .collect()
        })
        .collect();
    let (mut p_want, mut p_got) = (init.clone(), init.clone());
    for step in 0..5 {
        let grads: Vec<Vec<f32>> = init
            .iter()
            .map(|p| p.iter().map(|x| (x * 3.0 + step as f32).sin()).collect())
            .collect();
        want.step(&mut p_want, &grads).expect("steps");
        got.step(&mut p_got, &grads).expect("steps");
    }
    for (a, b) in p_want.iter().flatten().zip(p_got.iter().flatten()) {
        assert!((a - b).abs() <= 1e-6 + 1e-5 * a.abs(), "{a} vs {b}");
    }
}
