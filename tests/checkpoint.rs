//! Checkpoints: an optimizer saved after some step and restored in a fresh one goes on with
//! the very trajectory of an uninterrupted run, on the CPU, on the simulated GPU and from one
//! to the other; the file is safetensors (read here by the `safetensors` crate), verified when
//! read; a checkpoint that does not fit is refused with nothing modified.

mod common;

use common::sim_gpu::SimGpu;
use optjit::ir::DType;
use optjit::{Checkpoint, CudaOptimizer, Group, Optimizer, OptimizerError, Setup};
use optjit_cli::golden::{CaseResult, Resume, run_file, run_file_resuming};
use optjit_cli::stepper::Backend;
use proptest::prelude::any;
use proptest::sample::Index;
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

/// Golden case `case` run on `from`, checkpointed after step `after_step` and resumed on `to`.
fn resumed(case: &str, from: &Backend, after_step: usize, to: &Backend) -> CaseResult {
    let resume = Resume {
        after_step,
        on: to.clone(),
    };
    run_file_resuming(&common::golden_path(case), from, Some(&resume)).expect(case)
}

#[test]
fn resuming_a_golden_case_on_the_cpu_changes_no_bit() {
    for case in common::GOLDEN_CASES {
        let plain = run_file(&common::golden_path(case), &CPU).expect(case);
        assert!(plain.passed(), "{plain}");
        for after_step in [0, 9] {
            // The largest errors against PyTorch are the same f64s: the same trajectory.
            let resumed = resumed(case, &CPU, after_step, &CPU);
            assert_eq!(resumed, plain, "{case} resumed after step {after_step}");
        }
    }
}

#[test]
fn resuming_a_golden_case_in_the_simulator_changes_no_bit() {
    let sim = simulator();
    for case in common::GOLDEN_CASES {
        let plain = run_file(&common::golden_path(case), &sim).expect(case);
        assert!(plain.passed(), "{plain}");
        assert_eq!(resumed(case, &sim, 9, &sim), plain, "{case}");
    }
}

#[test]
fn golden_cases_resume_from_the_cpu_on_the_gpu_and_back() {
    let sim = simulator();
    for case in common::GOLDEN_CASES {
        for (from, to) in [(&CPU, &sim), (&sim, &CPU)] {
            let result = resumed(case, from, 9, to);
            let route = format!("{} to {}", from.name(), to.name());
            assert!(result.passed(), "{route}: {result}");
        }
    }
}

/// Every built-in variant (each distinct kernel shape, clipping included) and Adafactor (its
/// per-row and per-column states) over matrices, vectors, a scalar and an empty tensor, with
/// `lr` changed before the save and after: stopped after 3 steps, saved through bytes and
/// resumed, it ends on the bits of the uninterrupted run; and `save_checkpoint` writes the
/// same bytes as `checkpoint().to_bytes()`.
#[test]
fn every_builtin_resumes_bit_for_bit() {
    let shapes = vec![vec![4, 6], vec![3, 2, 5], vec![7], vec![], vec![0, 3]];
    let data = |k: usize| values(&shapes, k);
    let mut variants = common::builtin_variants();
    let adafactor = optjit::optim::Adafactor::new().build().expect("Adafactor");
    variants.push(("adafactor", adafactor));
    for (case, configured) in variants {
        let setup = Setup {
            shapes: shapes.clone(),
            hypers: configured.hypers.clone(),
            threads: 1,
            ..Setup::default()
        };
        let open = || Optimizer::new(&configured.definition, setup.clone()).expect(case);
        let (mut straight, mut first) = (open(), open());
        let (mut p_straight, mut p_first) = (data(50), data(50));
        for k in 0..3 {
            if k == 1 {
                // Set before the save: the checkpoint carries it.
                straight.set_hyper(None, "lr", 0.02).expect(case);
                first.set_hyper(None, "lr", 0.02).expect(case);
            }
            straight.step(&mut p_straight, &data(k)).expect(case);
            first.step(&mut p_first, &data(k)).expect(case);
        }
        let bytes = first.checkpoint().to_bytes();
        // Saved straight from the states, the file is the same.
        let path = scratch_file(&format!("{case}.safetensors"));
        first.save_checkpoint(&path).expect(case);
        assert!(
            std::fs::read(&path).expect(case) == bytes,
            "{case}: save_checkpoint"
        );
        std::fs::remove_file(&path).expect(case);
        drop(first);
        let mut resumed = open();
        let checkpoint = Checkpoint::from_bytes(&bytes).expect(case);
        resumed.restore(&checkpoint).expect(case);
        for k in 3..6 {
            if k == 4 {
                straight.set_hyper(None, "lr", 0.003).expect(case);
                resumed.set_hyper(None, "lr", 0.003).expect(case);
            }
            straight.step(&mut p_straight, &data(k)).expect(case);
            resumed.step(&mut p_first, &data(k)).expect(case);
        }
        let bits = |p: &[Vec<f32>]| -> Vec<Vec<u32>> {
            (p.iter())
                .map(|t| t.iter().map(|x| x.to_bits()).collect())
                .collect()
        };
        assert_eq!(bits(&p_first), bits(&p_straight), "{case}");
        // As bytes: NaN states (Adafactor's column means of the 0-row matrix) compare equal.
        let same = resumed.checkpoint().to_bytes() == straight.checkpoint().to_bytes();
        assert!(same, "{case}: the states differ");
    }
}

/// Values number `k` for tensors of `shapes`, in [-1, 1].
fn values(shapes: &[Vec<usize>], k: usize) -> Vec<Vec<f32>> {
    (shapes.iter().enumerate())
        .map(|(t, shape)| {
            let n: usize = shape.iter().product();
            (0..n)
                .map(|i| ((i * 7 + t * 13 + k * 31) % 17) as f32 / 8.0 - 1.0)
                .collect()
        })
        .collect()
}

/// Gradient `k` of the tensors of [`shapes`].
fn grads(k: usize) -> Vec<Vec<f32>> {
    values(&shapes(), k)
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
            rule: None,
        },
        Group {
            tensors: vec![1, 3],
            hypers: BTreeMap::from([("weight_decay".to_string(), 0.0)]),
            rule: None,
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

/// State from elsewhere, by PyTorch's names (here another optimizer's, as a user would copy
/// `optimizer.state_dict()`), filled into a checkpoint of a fresh optimizer, resumes exactly.
#[test]
fn a_fresh_checkpoint_filled_in_by_name_resumes() {
    let nadam = optjit::optim::NAdam::new().lr(0.01).build().expect("NAdam");
    let setup = Setup {
        shapes: shapes(),
        hypers: nadam.hypers.clone(),
        threads: 1,
        ..Setup::default()
    };
    let mut source = Optimizer::new(&nadam.definition, setup.clone()).expect("optimizer");
    let mut params = initial_params();
    for k in 0..4 {
        source.step(&mut params, &grads(k)).expect("step");
    }

    let mut target = Optimizer::new(&nadam.definition, setup).expect("optimizer");
    let mut template = target.checkpoint();
    assert_eq!(template.steps(), 0);
    for t in 0..shapes().len() {
        let names: Vec<String> = template.state_names(t).map(String::from).collect();
        assert_eq!(names, ["exp_avg", "exp_avg_sq"], "PyTorch's names");
        for name in names {
            let values = source.state(t, &name).expect("the same state there");
            template.set_state(t, &name, values).expect("set_state");
        }
    }
    let mu_product = source
        .scalar_state(0, "mu_product")
        .expect("NAdam's mu_product");
    assert!(mu_product != 1.0, "it moved");
    template
        .set_scalar_state(0, "mu_product", mu_product)
        .expect("set");
    template.set_steps(4).expect("set_steps");
    target.restore(&template).expect("restore");

    let mut resumed_params = params.clone();
    for k in 4..7 {
        source.step(&mut params, &grads(k)).expect("step");
        target.step(&mut resumed_params, &grads(k)).expect("step");
    }
    assert_eq!(resumed_params, params);

    let refused = |e: optjit::CheckpointError| e.to_string();
    let message = refused(
        template
            .set_state(0, "momentum_buffer", &[0.0; 15])
            .unwrap_err(),
    );
    assert!(
        message.contains("no state 'momentum_buffer' (it has: exp_avg, exp_avg_sq)"),
        "{message}"
    );
    let message = refused(template.set_state(1, "exp_avg", &[0.0; 3]).unwrap_err());
    assert!(message.contains("holds 7 values, got 3"), "{message}");
    let message = refused(template.set_state(9, "exp_avg", &[]).unwrap_err());
    assert!(message.contains("tensor 9 does not exist"), "{message}");
    let message = refused(template.set_scalar_state(1, "mu_product", 1.0).unwrap_err());
    assert!(message.contains("param group 1 (of 1)"), "{message}");
    assert!(template.set_steps(u64::MAX).is_err());
}

/// A restore into f16 storage refuses a finite state that f16 cannot hold (it would come back
/// as infinity), with nothing written; bf16, whose range is f32's, takes it.
#[test]
fn states_beyond_the_range_of_f16_are_refused() {
    let (definition, mut setup) = adamw_setup();
    let mut cpu = Optimizer::new(&definition, setup.clone()).expect("optimizer");
    let mut params = initial_params();
    let large: Vec<Vec<f32>> = grads(0)
        .iter()
        .map(|g| g.iter().map(|x| x * 1e4).collect())
        .collect();
    cpu.step(&mut params, &large).expect("step");
    let saved = cpu.checkpoint();
    assert!(
        saved
            .state(0, "exp_avg_sq")
            .unwrap()
            .iter()
            .any(|&v| v > 65504.0)
    );

    setup.dtype = DType::F16;
    let mut f16 = CudaOptimizer::new(&definition, setup.clone(), SimGpu::new()).expect("f16");
    let before = f16.checkpoint().expect("checkpoint");
    let message = f16.restore(&saved).unwrap_err().to_string();
    assert!(message.contains("beyond what f16 can hold"), "{message}");
    assert_eq!(
        f16.checkpoint().expect("checkpoint"),
        before,
        "nothing changed"
    );

    setup.dtype = DType::BF16;
    let mut bf16 = CudaOptimizer::new(&definition, setup, SimGpu::new()).expect("bf16");
    bf16.restore(&saved).expect("bf16 holds it");
}

/// Options that change no name are the restoring optimizer's (docs/checkpoints.md): SGD saved
/// with Nesterov momentum goes on with plain momentum, as an optimizer built that way would.
#[test]
fn options_that_change_no_name_are_the_restoring_optimizers() {
    let sgd = |nesterov: bool| {
        let sgd = optjit::optim::Sgd::new().lr(0.1).momentum(0.9);
        let sgd = sgd.nesterov(nesterov).build().expect("SGD");
        let setup = Setup {
            shapes: shapes(),
            hypers: sgd.hypers.clone(),
            ..Setup::default()
        };
        Optimizer::new(&sgd.definition, setup).expect("optimizer")
    };
    // After one step both hold the same momentum buffer (the gradient): only the parameters
    // differ, and they are the caller's.
    let (mut nesterov, mut plain) = (sgd(true), sgd(false));
    let (mut p_nesterov, mut p_plain) = (initial_params(), initial_params());
    nesterov.step(&mut p_nesterov, &grads(0)).expect("step");
    plain.step(&mut p_plain, &grads(0)).expect("step");
    let mut restored = sgd(false);
    restored
        .restore(&nesterov.checkpoint())
        .expect("plain momentum takes it");
    let mut p_restored = p_plain.clone();
    for k in 1..4 {
        plain.step(&mut p_plain, &grads(k)).expect("step");
        restored.step(&mut p_restored, &grads(k)).expect("step");
    }
    assert_eq!(p_restored, p_plain);
    assert_ne!(p_nesterov, p_plain, "Nesterov's own step differs");
}

/// A step replayed from a CUDA graph reads the restored states: a restore writes the buffers
/// the graph was captured on, in place.
#[test]
fn a_captured_graph_steps_from_the_restored_states_in_the_simulator() {
    let (definition, setup) = adamw_setup();
    let sim = || {
        let mut opt =
            CudaOptimizer::new(&definition, setup.clone(), SimGpu::new()).expect("optimizer");
        opt.set_graph_capture(true);
        opt
    };
    let mut first = sim();
    let mut params = initial_params();
    for k in 0..3 {
        first.step_host(&mut params, &grads(k)).expect("step");
    }
    let saved = first.checkpoint().expect("checkpoint");

    let mut second = sim();
    let mut other_params = initial_params();
    second
        .step_host(&mut other_params, &grads(7))
        .expect("step");
    assert!(
        second.replays_graph(),
        "the graph is captured before the restore"
    );
    second.restore(&saved).expect("restore");
    let mut resumed_params = params.clone();
    for k in 3..5 {
        first.step_host(&mut params, &grads(k)).expect("step");
        second
            .step_host(&mut resumed_params, &grads(k))
            .expect("step");
    }
    assert!(second.replays_graph());
    assert_eq!(second.stats().graph_captures, 1, "the same graph, replayed");
    assert_eq!(resumed_params, params);
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

/// A checkpoint file taken apart: its metadata, and its entries (name, dtype, shape, bytes) in
/// the order of the data.
#[derive(Clone)]
struct Parts {
    metadata: serde_json::Value,
    entries: Vec<(String, String, Vec<u64>, Vec<u8>)>,
}

impl Parts {
    fn of(bytes: &[u8]) -> Parts {
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).expect("JSON");
        let data = &bytes[8 + n..];
        let mut entries = Vec::new();
        for (name, entry) in header.as_object().unwrap() {
            if name == "__metadata__" {
                continue;
            }
            let numbers = |key: &str| -> Vec<u64> {
                let list = entry[key].as_array().unwrap();
                list.iter().map(|v| v.as_u64().unwrap()).collect()
            };
            let range = numbers("data_offsets");
            let bytes = data[range[0] as usize..range[1] as usize].to_vec();
            let dtype = entry["dtype"].as_str().unwrap().to_string();
            entries.push((range[0], (name.clone(), dtype, numbers("shape"), bytes)));
        }
        entries.sort_by_key(|(begin, _)| *begin);
        Parts {
            metadata: header["__metadata__"].clone(),
            entries: entries.into_iter().map(|(_, e)| e).collect(),
        }
    }

    /// The entry `name`.
    fn entry(&mut self, name: &str) -> &mut (String, String, Vec<u64>, Vec<u8>) {
        self.entries.iter_mut().find(|e| e.0 == name).expect(name)
    }

    /// The file: entries one after another, `edit` applied to the header, then the checksum
    /// of the whole file.
    fn file_edited(&self, edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
        let mut header = serde_json::json!({});
        let mut data = Vec::new();
        for (name, dtype, shape, bytes) in &self.entries {
            let range = [data.len(), data.len() + bytes.len()];
            header[name] =
                serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": range});
            data.extend_from_slice(bytes);
        }
        header["__metadata__"] = self.metadata.clone();
        header["__metadata__"]["checksum"] = format!("xxh3_64:{}", "0".repeat(16)).into();
        edit(&mut header);
        let text = header.to_string();
        let mut file = (text.len() as u64).to_le_bytes().to_vec();
        file.extend_from_slice(text.as_bytes());
        file.extend_from_slice(&data);
        with_checksum(file)
    }

    fn file(&self) -> Vec<u8> {
        self.file_edited(|_| ())
    }
}

/// What precedes the checksum's digits in a checkpoint's header.
const CHECKSUM_TAG: &[u8] = b"\"checksum\":\"xxh3_64:";

/// `file` with its checksum's digits set to the XXH3 of the whole file with them as `0`s (as
/// docs/checkpoints.md says); unchanged if it has no checksum.
fn with_checksum(mut file: Vec<u8>) -> Vec<u8> {
    let tag = file
        .windows(CHECKSUM_TAG.len())
        .position(|w| w == CHECKSUM_TAG);
    if let Some(at) = tag.map(|at| at + CHECKSUM_TAG.len()) {
        file[at..at + 16].fill(b'0');
        let hash = format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&file));
        file[at..at + 16].copy_from_slice(hash.as_bytes());
    }
    file
}

#[test]
fn damaged_or_foreign_files_are_refused() {
    let (definition, setup) = adamw_setup();
    let opt = Optimizer::new(&definition, setup).expect("optimizer");
    let bytes = opt.checkpoint().to_bytes();
    let parts = Parts::of(&bytes);
    let rebuilt = Checkpoint::from_bytes(&parts.file()).expect("rebuilt");
    assert_eq!(rebuilt, opt.checkpoint());

    let refused = |bytes: &[u8]| Checkpoint::from_bytes(bytes).unwrap_err().to_string();
    let expect = |bytes: &[u8], expected: &str| {
        let message = refused(bytes);
        assert!(message.contains(expected), "{message}");
    };
    let mut flipped = bytes.clone();
    *flipped.last_mut().unwrap() ^= 1;
    expect(&flipped, "checksum");
    expect(&bytes[..bytes.len() - 4], "bytes of data");
    expect(&bytes[..100], "header length");
    expect(&bytes[..5], "too short");

    let mut foreign = parts.clone();
    foreign.metadata["format"] = "pytorch".into();
    expect(&foreign.file(), "format is 'pytorch'");

    let mut unknown = parts.clone();
    let entry = ("weights.0".into(), "F32".into(), vec![1], vec![0; 4]);
    unknown.entries.push(entry);
    expect(&unknown.file(), "weights.0: not an entry");

    let mut no_group = parts.clone();
    no_group.entries.retain(|e| e.0 != "group.0.tensors");
    expect(&no_group.file(), "no 'group.0.tensors' entry");

    let mut padded = parts.clone();
    padded.entry("state.0.exp_avg").0 = "state.00.exp_avg".into();
    expect(&padded.file(), "'00' is not an index");

    let mut endless = parts.clone();
    endless.entry("steps").3 = u64::MAX.to_le_bytes().to_vec();
    expect(&endless.file(), "steps: 18446744073709551615, more than");

    let mut huge = parts.clone();
    huge.entry("shape.0").3 = [1u64 << 40, 1 << 40]
        .iter()
        .flat_map(|d| d.to_le_bytes())
        .collect();
    expect(
        &huge.file(),
        "shape.0: shape [1099511627776, 1099511627776] has more elements",
    );

    let outside = parts.file_edited(|h| h["state.3.exp_avg"]["data_offsets"][1] = 1_000_000.into());
    expect(&outside, "state.3.exp_avg: data_offsets");

    // Two entries on the same bytes (a file that could make the reader copy them over and
    // over): refused, as safetensors refuses them.
    let overlapping = parts.file_edited(|h| {
        h["state.0.exp_avg"]["data_offsets"] = h["state.0.exp_avg_sq"]["data_offsets"].clone();
    });
    expect(&overlapping, "without gaps or overlaps");
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

    let parts = Parts::of(&bytes);
    let mut negative = parts.clone();
    negative.entry("group.1.hyper.lr").3 = (-1.0f64).to_le_bytes().to_vec();
    let message = "lr must be a finite number >= 0, got -1 in param group 1 of the checkpoint";
    refuses(&mut fresh, &negative.file(), message);
    let mut renamed = parts.clone();
    renamed.entry("group.0.hyper.lr").0 = "group.0.hyper.learning_rate".into();
    refuses(&mut fresh, &renamed.file(), "include 'learning_rate'");
    let mut short = parts;
    let exp_avg = short.entry("state.1.exp_avg");
    (exp_avg.2, exp_avg.3) = (vec![3], exp_avg.3[..12].to_vec());
    refuses(
        &mut fresh,
        &short.file(),
        "holds 3 values, this optimizer's 7",
    );
}

/// One edit of a checkpoint file's parts: `kind` picks what, the indices where, `byte` a value.
fn edit(parts: &mut Parts, kind: u8, at: &Index, other: &Index, byte: u8) {
    let n = parts.entries.len();
    let entry = &mut parts.entries[at.index(n)];
    match kind % 8 {
        // A dimension of the shape, or one more or one fewer.
        0 => match entry.2.is_empty() {
            true => entry.2.push(u64::from(byte % 4)),
            false => {
                let d = other.index(entry.2.len());
                entry.2[d] = u64::from(byte % 8);
            }
        },
        1 => {
            entry.2.pop();
        }
        2 => entry.1 = ["U64", "F64", "F32", "I8", "BF16"][usize::from(byte) % 5].to_string(),
        // A character of the name.
        3 => {
            let mut name = entry.0.clone().into_bytes();
            let c = other.index(name.len());
            name[c] = b".0123456789_ax"[usize::from(byte) % 14];
            entry.0 = String::from_utf8(name).unwrap();
        }
        4 => {
            parts.entries.remove(at.index(n));
        }
        5 => {
            let copy = parts.entries[other.index(n)].clone();
            parts.entries.push(copy);
        }
        // A byte of the data (the checksum follows).
        6 if !entry.3.is_empty() => {
            let b = other.index(entry.3.len());
            entry.3[b] = byte;
        }
        _ => {
            let key = ["rule", "dtype", "format"][usize::from(byte) % 3];
            parts.metadata[key] = ["adamw", "bf16", "f64", ""][other.index(4)].into();
        }
    }
}

/// Whatever a damaged file holds (entries with other shapes, dtypes, names, data, some
/// missing or repeated; metadata changed; a raw byte anywhere changed), reading it, restoring
/// it (on the CPU, and in f16 on the simulated GPU) and stepping on never panic; and enough of
/// the damaged files get through to the restore that the restore is exercised (with this seed,
/// 156 are read and 66 restored).
#[test]
fn damaged_files_never_panic() {
    use proptest::strategy::Strategy;
    use proptest::test_runner::{Config, RngSeed, TestRunner};
    let config = Config {
        cases: 1000,
        rng_seed: RngSeed::Fixed(0xc4ec_5017),
        failure_persistence: None,
        ..Config::default()
    };
    let edits =
        proptest::collection::vec((0..8u8, any::<Index>(), any::<Index>(), any::<u8>()), 1..4);
    let raw = proptest::option::weighted(0.2, (any::<Index>(), any::<u8>()));
    let (definition, setup) = adamw_setup();
    let mut opt = Optimizer::new(&definition, setup.clone()).expect("optimizer");
    let mut params = initial_params();
    opt.step(&mut params, &grads(0)).expect("step");
    let bytes = opt.checkpoint().to_bytes();
    let mut half = setup.clone();
    half.dtype = DType::F16;
    let (read, restored) = (std::cell::Cell::new(0), std::cell::Cell::new(0));
    let mut runner = TestRunner::new(config);
    let outcome = runner.run(&(edits, raw).boxed(), |(edits, raw)| {
        let mut parts = Parts::of(&bytes);
        for (kind, at, other, byte) in &edits {
            edit(&mut parts, *kind, at, other, *byte);
        }
        let mut file = parts.file();
        if let Some((at, byte)) = raw {
            let at = at.index(file.len());
            file[at] = byte;
        }
        let Ok(checkpoint) = Checkpoint::from_bytes(&file) else {
            return Ok(());
        };
        read.set(read.get() + 1);
        let mut fresh = Optimizer::new(&definition, setup.clone()).expect("optimizer");
        if fresh.restore(&checkpoint).is_ok() {
            restored.set(restored.get() + 1);
            let mut params = params.clone();
            fresh
                .step(&mut params, &grads(1))
                .expect("a restored optimizer steps");
        }
        let mut gpu = CudaOptimizer::new(&definition, half.clone(), SimGpu::new()).expect("f16");
        if gpu.restore(&checkpoint).is_ok() {
            let mut params = params.clone();
            gpu.step_host(&mut params, &grads(1))
                .expect("a restored optimizer steps");
        }
        Ok(())
    });
    outcome.expect("no damaged file makes anything panic");
    let (read, restored) = (read.get(), restored.get());
    assert!(
        read >= 100 && restored >= 40,
        "{read} read, {restored} restored of 1000"
    );
}

/// The checksum covers the header: two entries' offsets swapped (the data of one read as the
/// other's, every range still valid) are refused, as is any changed header byte.
#[test]
fn a_changed_header_fails_the_checksum() {
    let (definition, setup) = adamw_setup();
    let mut opt = Optimizer::new(&definition, setup).expect("optimizer");
    let mut params = initial_params();
    opt.step(&mut params, &grads(0)).expect("step");
    let bytes = opt.checkpoint().to_bytes();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).expect("JSON");
    let (a, b) = ("state.0.exp_avg", "state.0.exp_avg_sq");
    let offsets = header[a]["data_offsets"].clone();
    header[a]["data_offsets"] = header[b]["data_offsets"].clone();
    header[b]["data_offsets"] = offsets;
    let mut text = header.to_string().into_bytes();
    assert!(text.len() <= n, "the same header, padded as before");
    text.resize(n, b' ');
    let swapped = [&bytes[..8], &text, &bytes[8 + n..]].concat();
    assert_ne!(swapped, bytes);
    let message = Checkpoint::from_bytes(&swapped).unwrap_err().to_string();
    assert!(
        message.contains("the file's checksum is") && message.contains("(the file is damaged)"),
        "{message}"
    );
    // The same swap with the checksum made right is read, the two states exchanged: only the
    // checksum stood in its way.
    let read = Checkpoint::from_bytes(&with_checksum(swapped)).expect("read");
    assert_eq!(read.state(0, a), opt.checkpoint().state(0, b));

    let rule = bytes
        .windows(7)
        .position(|w| w == b"\"adamw\"")
        .expect("the rule");
    let mut renamed = bytes.clone();
    renamed[rule + 1] = b'A';
    let message = Checkpoint::from_bytes(&renamed).unwrap_err().to_string();
    assert!(message.contains("checksum"), "{message}");
    assert_eq!(
        opt.checkpoint().to_bytes(),
        bytes,
        "saving is deterministic"
    );
}

/// A header of more entries or JSON values than a checkpoint may have is refused before it is
/// parsed (a 99 MB header of empty entries took 1.96 GB), whatever its checksum.
#[test]
fn a_header_of_too_many_entries_is_refused_before_it_is_parsed() {
    let file = |header: String| {
        let mut file = (header.len() as u64).to_le_bytes().to_vec();
        file.extend_from_slice(header.as_bytes());
        file
    };
    let checksum = format!(
        "\"__metadata__\":{{\"checksum\":\"xxh3_64:{}\"}}",
        "0".repeat(16)
    );
    let entries = (0..(1 << 20) + 1)
        .map(|i| format!("\"{i}\":{{}},"))
        .collect::<String>();
    let started = std::time::Instant::now();
    let message = Checkpoint::from_bytes(&file(format!("{{{entries}{checksum}}}")))
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("the header holds 1048577 entries or more, more than the 1048576"),
        "{message}"
    );
    let values = "1,".repeat(1 << 24);
    let header = format!("{{\"shape.0\":{{\"shape\":[{values}1]}},{checksum}}}");
    let message = Checkpoint::from_bytes(&file(header))
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("JSON values or more, more than the"),
        "{message}"
    );
    let elapsed = started.elapsed();
    assert!(elapsed.as_secs() < 10, "took {elapsed:?}");
}

/// A fresh scratch directory of its own for `test`.
fn scratch_dir(test: &str) -> std::path::PathBuf {
    let dir = scratch_file(test);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// A saved optimizer's file, and the optimizer.
fn stepped_adamw() -> Optimizer {
    let (definition, setup) = adamw_setup();
    let mut opt = Optimizer::new(&definition, setup).expect("optimizer");
    let mut params = initial_params();
    opt.step(&mut params, &grads(0)).expect("step");
    opt
}

/// `save_checkpoint("/dev/null")` replaced the device node with a regular file when it could
/// (as root): a save writes only regular files.
#[cfg(unix)]
#[test]
fn saving_to_a_device_is_refused_and_leaves_it_alone() {
    use std::os::unix::fs::FileTypeExt;
    let opt = stepped_adamw();
    let null = std::path::Path::new("/dev/null");
    if std::fs::OpenOptions::new().write(true).open(null).is_ok() {
        let message = opt.save_checkpoint(null).unwrap_err().to_string();
        assert!(
            message.contains("/dev/null: a character device: a checkpoint is written only"),
            "{message}"
        );
        let kind = std::fs::symlink_metadata(null)
            .expect("/dev/null")
            .file_type();
        assert!(kind.is_char_device(), "/dev/null is still a device");
    }
    // The same through a link, and for other special files.
    let dir = scratch_dir("special-targets");
    let link = dir.join("to-null");
    std::os::unix::fs::symlink(null, &link).expect("symlink");
    let message = opt.save_checkpoint(&link).unwrap_err().to_string();
    assert!(
        message.contains("a symbolic link to a character device"),
        "{message}"
    );
    let fifo = dir.join("fifo");
    let status = std::process::Command::new("mkfifo").arg(&fifo).status();
    assert!(status.expect("mkfifo runs").success(), "mkfifo");
    let message = opt.save_checkpoint(&fifo).unwrap_err().to_string();
    assert!(
        message.contains("a FIFO: a checkpoint is written only"),
        "{message}"
    );
    let message = opt.save_checkpoint(&dir).unwrap_err().to_string();
    assert!(message.contains("a directory"), "{message}");
    let dangling = dir.join("dangling");
    std::os::unix::fs::symlink(dir.join("nothing"), &dangling).expect("symlink");
    let message = opt.save_checkpoint(&dangling).unwrap_err().to_string();
    assert!(message.contains("a symbolic link to nothing"), "{message}");
    assert!(
        std::fs::symlink_metadata(&fifo)
            .unwrap()
            .file_type()
            .is_fifo()
    );
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 3, "nothing else written: {names:?}");
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

/// A save through a symbolic link replaces the regular file it leads to, keeping its
/// permissions, and leaves the link a link.
#[cfg(unix)]
#[test]
fn saving_through_a_link_replaces_its_target() {
    use std::os::unix::fs::PermissionsExt;
    let opt = stepped_adamw();
    let dir = scratch_dir("link-target");
    let target = dir.join("real.safetensors");
    std::fs::write(&target, b"an old checkpoint").expect("target");
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    let link = dir.join("latest.safetensors");
    std::os::unix::fs::symlink("real.safetensors", &link).expect("symlink");
    let chain = dir.join("chain.safetensors");
    std::os::unix::fs::symlink(&link, &chain).expect("symlink");

    opt.save_checkpoint(&chain).expect("save through two links");
    for path in [&link, &chain] {
        assert!(
            std::fs::symlink_metadata(path).unwrap().is_symlink(),
            "{path:?}"
        );
    }
    let metadata = std::fs::symlink_metadata(&target).unwrap();
    assert!(metadata.is_file());
    assert_eq!(metadata.permissions().mode() & 0o777, 0o640);
    assert_eq!(Checkpoint::load(&target).expect("load"), opt.checkpoint());
    assert_eq!(Checkpoint::load(&link).expect("load"), opt.checkpoint());
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 3, "no partial file left: {names:?}");
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

/// The answer of `f`, which must come within a minute: a regression fails instead of hanging.
fn promptly<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(f()));
    rx.recv_timeout(std::time::Duration::from_secs(60))
        .expect("no answer within 60 s: the checkpoint reader hangs")
}

/// Loading a FIFO waited for a writer forever, and a link to `/dev/zero` read until memory ran
/// out: only regular files are read.
#[cfg(unix)]
#[test]
fn loading_a_fifo_or_a_device_is_refused_promptly() {
    let dir = scratch_dir("special-sources");
    let fifo = dir.join("fifo.safetensors");
    let status = std::process::Command::new("mkfifo").arg(&fifo).status();
    assert!(status.expect("mkfifo runs").success(), "mkfifo");
    let zero = dir.join("zero.safetensors");
    std::os::unix::fs::symlink("/dev/zero", &zero).expect("symlink");
    for (path, kind) in [(fifo, "a FIFO"), (zero, "a character device")] {
        let message = promptly(move || Checkpoint::load(&path).unwrap_err().to_string());
        assert!(
            message.contains(&format!("cannot read: {kind}, not a regular file")),
            "{message}"
        );
    }
    let message = Checkpoint::load(&dir).unwrap_err().to_string();
    assert!(
        message.contains("a directory, not a regular file"),
        "{message}"
    );
    std::fs::remove_dir_all(&dir).expect("cleanup");
}
