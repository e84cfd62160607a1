//! Checkpoints: an optimizer saved after some step and restored in a fresh one goes on with
//! the very trajectory of an uninterrupted run, on the CPU, on the simulated GPU and from one
//! to the other; the file is safetensors (read here by the `safetensors` crate), verified when
//! read; a checkpoint that does not fit is refused with nothing modified.

mod common;

use common::sim_gpu::SimGpu;
use optjit::ir::DType;
use optjit::{Checkpoint, CudaOptimizer, Group, Optimizer, OptimizerError, Setup};
use optjit_cli::golden::{Resume, run_file, run_file_resuming};
use optjit_cli::stepper::Backend;
use std::collections::BTreeMap;

const CPU: Backend = Backend::Cpu { threads: 1 };

/// `CudaOptimizer` on the PTX interpreter.
fn simulator() -> Backend {
    Backend::Other {
        name: "sim",
        open: |definition, setup| {
            let optimizer = CudaOptimizer::new(definition, setup, SimGpu::new())?;
            Ok(Box::new(optimizer))
        },
    }
}

#[test]
fn resuming_a_golden_case_on_the_cpu_changes_no_bit() {
    for case in common::GOLDEN_CASES {
        let path = common::golden_path(case);
        let plain = run_file(&path, &CPU).expect(case);
        assert!(plain.passed(), "{plain}");
        for after_step in [0, 9] {
            let resume = Resume {
                after_step,
                on: CPU,
            };
            let resumed = run_file_resuming(&path, &CPU, Some(&resume)).expect(case);
            // The largest errors against PyTorch are the same f64s: the same trajectory.
            assert_eq!(resumed, plain, "{case} resumed after step {after_step}");
        }
    }
}

#[test]
fn resuming_a_golden_case_in_the_simulator_changes_no_bit() {
    let sim = simulator();
    for case in common::GOLDEN_CASES {
        let path = common::golden_path(case);
        let plain = run_file(&path, &sim).expect(case);
        let resume = Resume {
            after_step: 9,
            on: sim.clone(),
        };
        let resumed = run_file_resuming(&path, &sim, Some(&resume)).expect(case);
        assert!(plain.passed(), "{plain}");
        assert_eq!(resumed, plain, "{case}");
    }
}

#[test]
fn golden_cases_resume_from_the_cpu_on_the_gpu_and_back() {
    let sim = simulator();
    for case in common::GOLDEN_CASES {
        let path = common::golden_path(case);
        for (from, to) in [(&CPU, &sim), (&sim, &CPU)] {
            let resume = Resume {
                after_step: 9,
                on: to.clone(),
            };
            let result = run_file_resuming(&path, from, Some(&resume)).expect(case);
            let route = format!("{} to {}", from.name(), to.name());
            assert!(result.passed(), "{route}: {result}");
        }
    }
}

/// Gradient `k` of the tensors of [`shapes`].
fn grads(k: usize) -> Vec<Vec<f32>> {
    shapes()
        .iter()
        .enumerate()
        .map(|(t, shape)| {
            let n: usize = shape.iter().product();
            (0..n)
                .map(|i| ((i * 7 + t * 13 + k * 31) % 17) as f32 / 8.0 - 1.0)
                .collect()
        })
        .collect()
}

fn shapes() -> Vec<Vec<usize>> {
    vec![vec![3, 5], vec![7], vec![2, 2, 3], vec![0]]
}

fn initial_params() -> Vec<Vec<f32>> {
    grads(100)
}

/// AdamW over two param groups with their own weight decay.
fn adamw_setup() -> (optjit::Definition, Setup) {
    let adamw = optjit::optim::AdamW::new().lr(0.01).build().expect("AdamW");
    let groups = vec![
        Group {
            tensors: vec![0, 2],
            hypers: BTreeMap::new(),
        },
        Group {
            tensors: vec![1, 3],
            hypers: BTreeMap::from([("weight_decay".to_string(), 0.0)]),
        },
    ];
    let setup = Setup {
        shapes: shapes(),
        groups,
        hypers: adamw.hypers.clone(),
        threads: 1,
        ..Setup::default()
    };
    (adamw.definition, setup)
}

fn scratch_file(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("optjit-checkpoint-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir.join(name)
}

#[test]
fn a_checkpoint_file_resumes_adamw_bit_for_bit() {
    let (definition, setup) = adamw_setup();
    let mut first = Optimizer::new(&definition, setup.clone()).expect("optimizer");
    let mut params = initial_params();
    for k in 0..3 {
        first.step(&mut params, &grads(k)).expect("step");
    }
    first.set_hyper(Some(1), "lr", 0.02).expect("lr");
    first.step(&mut params, &grads(3)).expect("step");

    let saved = first.checkpoint();
    let path = scratch_file("adamw.safetensors");
    saved.save(&path).expect("save");
    let loaded = Checkpoint::load(&path).expect("load");
    assert_eq!(loaded, saved, "the file holds the checkpoint exactly");
    assert_eq!((loaded.steps(), loaded.hyper(1, "lr")), (4, Some(0.02)));

    let mut second = Optimizer::new(&definition, setup).expect("optimizer");
    second.restore(&loaded).expect("restore");
    assert_eq!((second.steps(), second.hyper(1, "lr").unwrap()), (4, 0.02));
    let mut resumed_params = params.clone();
    for k in 4..8 {
        first.step(&mut params, &grads(k)).expect("step");
        second.step(&mut resumed_params, &grads(k)).expect("step");
    }
    let bits = |p: &[Vec<f32>]| -> Vec<Vec<u32>> {
        p.iter()
            .map(|t| t.iter().map(|x| x.to_bits()).collect())
            .collect()
    };
    assert_eq!(bits(&resumed_params), bits(&params));
    assert_eq!(second.checkpoint(), first.checkpoint());
    std::fs::remove_file(&path).expect("remove");
}

#[test]
fn half_precision_states_resume_in_the_simulator_and_on_the_cpu() {
    let (definition, mut setup) = adamw_setup();
    setup.dtype = DType::BF16;
    let sim = |setup: &Setup| {
        CudaOptimizer::new(&definition, setup.clone(), SimGpu::new()).expect("optimizer")
    };
    let mut first = sim(&setup);
    let mut params = initial_params();
    for k in 0..3 {
        first.step_host(&mut params, &grads(k)).expect("step");
    }
    let saved = first.checkpoint().expect("checkpoint");
    assert_eq!(saved.dtype(), DType::BF16);
    let exp_avg = saved.state(0, "exp_avg").expect("exp_avg");
    assert!(exp_avg.iter().any(|&x| x != 0.0), "the states moved");
    let rounded = |x: &f32| optjit::half::bf16::from_f32(*x).to_f32() == *x;
    assert!(exp_avg.iter().all(rounded), "bf16 values, exactly");

    let mut second = sim(&setup);
    second.restore(&saved).expect("restore");
    let mut resumed_params = params.clone();
    for k in 3..6 {
        first.step_host(&mut params, &grads(k)).expect("step");
        second
            .step_host(&mut resumed_params, &grads(k))
            .expect("step");
    }
    assert_eq!(resumed_params, params);
    assert_eq!(second.checkpoint().unwrap(), first.checkpoint().unwrap());

    // On the CPU (f32), the bf16 values are kept exactly.
    setup.dtype = DType::F32;
    let mut cpu = Optimizer::new(&definition, setup).expect("optimizer");
    cpu.restore(&saved).expect("restore");
    let on_cpu = cpu.checkpoint();
    assert_eq!(on_cpu.state(0, "exp_avg"), saved.state(0, "exp_avg"));
    assert_eq!(on_cpu.state(2, "exp_avg_sq"), saved.state(2, "exp_avg_sq"));
}

#[test]
fn the_file_is_safetensors() {
    let (definition, setup) = adamw_setup();
    let mut opt = Optimizer::new(&definition, setup).expect("optimizer");
    let mut params = initial_params();
    opt.step(&mut params, &grads(0)).expect("step");
    let bytes = opt.checkpoint().to_bytes();

    let (_, metadata) =
        safetensors::SafeTensors::read_metadata(&bytes).expect("a safetensors file");
    let metadata = metadata.metadata().clone().expect("metadata");
    assert_eq!(metadata["format"], optjit::CHECKPOINT_FORMAT);
    assert_eq!(metadata["rule"], "adamw");
    let file = safetensors::SafeTensors::deserialize(&bytes).expect("a safetensors file");
    let exp_avg = file.tensor("state.2.exp_avg").expect("exp_avg of tensor 2");
    assert_eq!(exp_avg.dtype(), safetensors::Dtype::F32);
    assert_eq!(exp_avg.shape(), &[2, 2, 3]);
    let values: Vec<f32> = (exp_avg.data().chunks_exact(4))
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    assert_eq!(values, opt.state(2, "exp_avg").unwrap());
    let lr = file.tensor("group.1.hyper.lr").expect("lr of group 1");
    assert_eq!((lr.dtype(), lr.shape()), (safetensors::Dtype::F64, &[][..]));
    assert_eq!(lr.data(), &0.01f64.to_le_bytes());
    let steps = file.tensor("steps").expect("steps");
    assert_eq!(steps.data(), &1u64.to_le_bytes());
}

/// The header and the data of a checkpoint file's bytes.
fn split(bytes: &[u8]) -> (serde_json::Value, Vec<u8>) {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = serde_json::from_slice(&bytes[8..8 + n]).expect("JSON header");
    (header, bytes[8 + n..].to_vec())
}

/// A file of `header` and `data`, with the checksum of `data`.
fn join(mut header: serde_json::Value, data: &[u8]) -> Vec<u8> {
    header["__metadata__"]["checksum"] =
        format!("xxh3_64:{:016x}", xxhash_rust::xxh3::xxh3_64(data)).into();
    let text = header.to_string();
    let mut bytes = (text.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(text.as_bytes());
    bytes.extend_from_slice(data);
    bytes
}

#[test]
fn damaged_or_foreign_files_are_refused() {
    let (definition, setup) = adamw_setup();
    let opt = Optimizer::new(&definition, setup).expect("optimizer");
    let bytes = opt.checkpoint().to_bytes();
    let (header, data) = split(&bytes);
    let rebuilt = Checkpoint::from_bytes(&join(header.clone(), &data)).expect("rebuilt");
    assert_eq!(rebuilt, opt.checkpoint());

    let refused = |bytes: &[u8]| Checkpoint::from_bytes(bytes).unwrap_err().to_string();
    let mut flipped = bytes.clone();
    *flipped.last_mut().unwrap() ^= 1;
    assert!(
        refused(&flipped).contains("checksum"),
        "{}",
        refused(&flipped)
    );
    let cut = &bytes[..bytes.len() - 4];
    assert!(refused(cut).contains("checksum"), "{}", refused(cut));
    assert!(refused(&bytes[..100]).contains("header length"));
    assert!(refused(&bytes[..5]).contains("too short"));

    let mut foreign = header.clone();
    foreign["__metadata__"]["format"] = "pytorch".into();
    let message = refused(&join(foreign, &data));
    assert!(message.contains("format is 'pytorch'"), "{message}");

    let mut unknown = header.clone();
    unknown["weights.0"] = unknown["steps"].clone();
    let message = refused(&join(unknown, &data));
    assert!(message.contains("weights.0: not an entry"), "{message}");

    let mut outside = header.clone();
    outside["state.0.exp_avg"]["data_offsets"][1] = (data.len() + 4).into();
    let message = refused(&join(outside, &data));
    assert!(
        message.contains("state.0.exp_avg: data_offsets"),
        "{message}"
    );

    let mut no_group = header;
    no_group.as_object_mut().unwrap().remove("group.0.tensors");
    let message = refused(&join(no_group, &data));
    assert!(message.contains("no 'group.0.tensors' entry"), "{message}");
}

/// Restoring `bytes` into `opt` fails with a message holding `expected`, and changes nothing.
fn refuses(opt: &mut Optimizer, bytes: &[u8], expected: &str) {
    let before = opt.checkpoint();
    let checkpoint = Checkpoint::from_bytes(bytes).expect("a well-formed file");
    match opt.restore(&checkpoint) {
        Err(e @ (OptimizerError::Checkpoint { .. } | OptimizerError::BadHyper { .. })) => {
            assert!(e.to_string().contains(expected), "{e}")
        }
        other => panic!("expected a refusal mentioning {expected}, got {other:?}"),
    }
    assert_eq!(opt.checkpoint(), before, "nothing changed");
}

#[test]
fn checkpoints_that_do_not_fit_are_refused_with_nothing_modified() {
    let (definition, setup) = adamw_setup();
    let mut opt = Optimizer::new(&definition, setup.clone()).expect("optimizer");
    let mut params = initial_params();
    opt.step(&mut params, &grads(0)).expect("step");
    let bytes = opt.checkpoint().to_bytes();
    let mut fresh = Optimizer::new(&definition, setup.clone()).expect("optimizer");

    let adam = optjit::optim::Adam::new().build().expect("Adam");
    let mut other = Optimizer::new(&adam.definition, setup.clone()).expect("optimizer");
    refuses(&mut other, &bytes, "made by optimizer 'adamw'");

    let mut reshaped = setup.clone();
    reshaped.shapes[1] = vec![8];
    let mut other = Optimizer::new(&definition, reshaped).expect("optimizer");
    refuses(&mut other, &bytes, "shapes");

    let mut one_group = setup.clone();
    one_group.groups.clear();
    let mut other = Optimizer::new(&definition, one_group).expect("optimizer");
    refuses(&mut other, &bytes, "2 param group(s), this optimizer 1");

    let amsgrad = optjit::optim::AdamW::new()
        .amsgrad(true)
        .build()
        .expect("AdamW");
    let mut other = Optimizer::new(&amsgrad.definition, setup.clone()).expect("optimizer");
    refuses(&mut other, &bytes, "lack 'max_exp_avg_sq'");

    let (header, data) = split(&bytes);
    let edit = |entry: &str, value: f64| {
        let range = &header[entry]["data_offsets"];
        let begin = range[0].as_u64().unwrap() as usize;
        let mut data = data.clone();
        data[begin..begin + 8].copy_from_slice(&value.to_le_bytes());
        join(header.clone(), &data)
    };
    refuses(&mut fresh, &edit("group.1.hyper.lr", -1.0), "lr must be");
    let mut renamed = header.clone();
    let lr = renamed
        .as_object_mut()
        .unwrap()
        .remove("group.0.hyper.lr")
        .unwrap();
    renamed["group.0.hyper.learning_rate"] = lr;
    refuses(&mut fresh, &join(renamed, &data), "include 'learning_rate'");
    let mut short = header.clone();
    let range = short["state.1.exp_avg"]["data_offsets"].clone();
    let begin = range[0].as_u64().unwrap();
    short["state.1.exp_avg"]["shape"] = serde_json::json!([3]);
    short["state.1.exp_avg"]["data_offsets"] = serde_json::json!([begin, begin + 12]);
    refuses(
        &mut fresh,
        &join(short, &data),
        "holds 3 values, this optimizer's 7",
    );
}
