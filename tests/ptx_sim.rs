//! The PTX of every built-in's kernels and of the hand-built kernels of `common::kernels`,
//! run in the PTX interpreter (`optjit-ptx-sim`) on the same chunk tables as the CPU code of
//! the same kernels: the two emitters must agree. Stores are bit-identical (except where the
//! PTX approximates exp and log), and reduction partials agree to 1e-4 (each target folds in
//! its own order, the CPU in f32 lanes). With tensors stored as bf16 or f16, the GPU's result
//! is the CPU's f32 result rounded once. This is how the GPU kernels run in CI, where there is
//! no GPU; `tests/cuda.rs` runs them on one.

mod common;

use optjit::ir::{DType, Unary, Walk};
use optjit::kernels_gen::{
    Arch, Inst, Kernel, PTX_BLOCK_THREADS, PtxOptions, emit_ptx, ptx_entry_name,
};
use optjit::{CompileOptions, CpuCodegen, compile, half};
use optjit_ptx_sim::{Device, Module};

/// Element counts of the records of an element walk: empty, shorter than a vector, not a
/// multiple of 4, and longer than one pass of a block's threads.
const LENS: [usize; 8] = [0, 1, 3, 4, 37, 256, 1027, 2050];
/// Values whose handling differs most between float implementations: signed zeros,
/// infinities, NaN, subnormals and values near overflow.
const SPECIAL: [f32; 9] = [
    0.0,
    -0.0,
    f32::INFINITY,
    f32::NEG_INFINITY,
    f32::NAN,
    1e-40,
    -1e-40,
    3e38,
    -3e38,
];

/// Blocks per launch: fewer than the records, so blocks walk several.
const GRID: usize = 3;

/// A small deterministic generator (splitmix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [lo, hi).
    fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * ((self.next() >> 40) as f32 / (1u64 << 24) as f32)
    }
}

/// One record: its buffers' contents (f32) and, in a column walk, its shape.
struct Record {
    len: usize,
    /// `(rows, cols)` of a column-walk record.
    shape: Option<(usize, usize)>,
    /// Start each buffer this many elements past a 16-byte boundary (the PTX scalar path).
    misaligned: usize,
    data: Vec<Vec<f32>>,
    row: usize,
}

/// The records for `kernel`, filled with values in [0.05, 1) (gradients signed).
fn records(kernel: &Kernel, rng: &mut Rng) -> Vec<Record> {
    let shapes: Vec<(usize, Option<(usize, usize)>)> = match kernel.walk {
        Walk::Columns => [(3, 5), (1, 300), (4, 17), (2, 260), (0, 8)]
            .iter()
            .map(|&(r, c)| (r * c, Some((r, c))))
            .collect(),
        _ => LENS.iter().map(|&n| (n, None)).collect(),
    };
    shapes
        .into_iter()
        .enumerate()
        .map(|(i, (len, shape))| {
            let data = (kernel.buffers.iter().enumerate())
                .map(|(k, b)| {
                    let signed = b.buffer == optjit::ir::Buffer::Grad;
                    let lo = if signed { -1.0 } else { 0.05 };
                    let mut values: Vec<f32> = (0..len).map(|_| rng.uniform(lo, 1.0)).collect();
                    // Two records (one misaligned: the PTX scalar path; one aligned: the vector
                    // path) start with every pair of special values in buffers 0 and 1
                    // (element i: SPECIAL[i % 9] and SPECIAL[i / 9]), and so on.
                    if len == 256 || len == 1027 {
                        let n = SPECIAL.len();
                        for (i, x) in values.iter_mut().take(n * n).enumerate() {
                            *x = SPECIAL[(i / n.pow(k as u32)) % n];
                        }
                    }
                    values
                })
                .collect();
            Record {
                len,
                shape,
                // 37 elements one past a boundary, 256 two past.
                misaligned: if shape.is_none() {
                    [0, 0, 0, 0, 1, 2, 0, 0][i]
                } else {
                    0
                },
                data,
                row: i % 2,
            }
        })
        .collect()
}

/// Random scalar rows: two rows of `n` values in [0.05, 1).
fn scalar_rows(n: usize, rng: &mut Rng) -> Vec<Vec<f32>> {
    (0..2)
        .map(|_| (0..n.max(1)).map(|_| rng.uniform(0.05, 1.0)).collect())
        .collect()
}

/// Partials per record (all zero-filled before a launch, as the runtimes do).
fn partial_counts(kernel: &Kernel, records: &[Record]) -> Vec<usize> {
    let n = kernel.reductions().len();
    records
        .iter()
        .map(|r| match r.shape {
            Some((rows, cols)) => kernel.column_walk_partials(rows, cols),
            None => n,
        })
        .collect()
}

/// The chunk table of `records`, given each record's buffer addresses and each row's address.
fn table(
    kernel: &Kernel,
    records: &[Record],
    buffers: &[Vec<u64>],
    rows: &[u64],
    counts: &[usize],
) -> Vec<u64> {
    let mut words = Vec::new();
    let mut first = 0;
    for (r, record) in records.iter().enumerate() {
        words.push(record.shape.map_or(record.len, |(rows, _)| rows) as u64);
        words.push(rows[record.row]);
        words.extend(&buffers[r]);
        if let Some((_, cols)) = record.shape {
            // A column walk reads tensors only: one element size (see chunks.rs).
            let elem = kernel.storage(0).size_bytes() as u64;
            words.extend([cols as u64 * elem, cols as u64, first as u64]);
        }
        first += counts[r];
    }
    assert_eq!(words.len(), records.len() * kernel.record_words());
    words
}

/// What a run leaves: every record's buffers (as f32) and the partials.
struct Outcome {
    data: Vec<Vec<Vec<f32>>>,
    partials: Vec<f64>,
}

/// Runs `kernel`'s CPU code on `records`.
fn run_cpu(kernel: &Kernel, records: &[Record], rows: &[Vec<f32>]) -> Outcome {
    let codegen = CpuCodegen::host().expect("host ISA");
    let module = codegen
        .load(codegen.emit(std::slice::from_ref(kernel)).expect("emit"))
        .expect("load");
    // The CPU code needs no alignment: its buffers are the records' own copies.
    let mut data: Vec<Vec<Vec<f32>>> = records.iter().map(|r| r.data.clone()).collect();
    let addresses: Vec<Vec<u64>> = data
        .iter_mut()
        .map(|bufs| bufs.iter_mut().map(|v| v.as_mut_ptr() as u64).collect())
        .collect();
    let row_addresses: Vec<u64> = rows.iter().map(|r| r.as_ptr() as u64).collect();
    let counts = partial_counts(kernel, records);
    let words = table(kernel, records, &addresses, &row_addresses, &counts);
    let mut partials = vec![0.0f64; counts.iter().sum::<usize>().max(1)];
    // SAFETY: the table describes live buffers of the lengths given, rows of n_scalars values,
    // and partials sized for every record.
    unsafe {
        (module.fns[0])(
            words.as_ptr(),
            0,
            records.len() as u64,
            partials.as_mut_ptr(),
        )
    };
    Outcome { data, partials }
}

/// Encodes f32 values in a buffer's storage type.
fn encode(values: &[f32], storage: DType) -> Vec<u8> {
    match storage {
        DType::BF16 => values
            .iter()
            .flat_map(|&x| half::bf16::from_f32(x).to_le_bytes())
            .collect(),
        DType::F16 => values
            .iter()
            .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
            .collect(),
        _ => values.iter().flat_map(|x| x.to_le_bytes()).collect(),
    }
}

fn decode(bytes: &[u8], storage: DType) -> Vec<f32> {
    match storage {
        DType::BF16 => bytes
            .chunks(2)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        DType::F16 => bytes
            .chunks(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        _ => bytes
            .chunks(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
    }
}

/// Runs `kernel`'s PTX in the interpreter on `records` (stored as the kernel says).
fn run_ptx(kernel: &Kernel, records: &[Record], rows: &[Vec<f32>]) -> Outcome {
    let ptx = emit_ptx(kernel, &PtxOptions { arch: Arch::Sm80 }).expect("emit ptx");
    let module = Module::parse(&ptx).unwrap_or_else(|e| panic!("{}: {e}\n{ptx}", kernel.name));
    let mut device = Device::default();
    let memory = &mut device.memory;
    let storage: Vec<DType> = (0..kernel.buffers.len())
        .map(|b| kernel.storage(b))
        .collect();
    let allocations: Vec<Vec<(u64, usize)>> = records
        .iter()
        .map(|r| {
            r.data
                .iter()
                .zip(&storage)
                .map(|(d, &s)| {
                    let skip = r.misaligned * s.size_bytes();
                    let mut bytes = vec![0u8; skip];
                    bytes.extend(encode(d, s));
                    (memory.upload(&bytes) + skip as u64, bytes.len() - skip)
                })
                .collect()
        })
        .collect();
    let addresses: Vec<Vec<u64>> = allocations
        .iter()
        .map(|bufs| bufs.iter().map(|&(a, _)| a).collect())
        .collect();
    let row_addresses: Vec<u64> = rows
        .iter()
        .map(|r| memory.upload(&encode(r, DType::F32)))
        .collect();
    let counts = partial_counts(kernel, records);
    let words = table(kernel, records, &addresses, &row_addresses, &counts);
    let table_bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    let table_address = memory.upload(&table_bytes);
    let n_partials = counts.iter().sum::<usize>().max(1);
    let partials_address = memory.upload(&vec![0u8; 8 * n_partials]);
    let params = [table_address, records.len() as u64, partials_address];
    device
        .launch(
            &module,
            &ptx_entry_name(kernel),
            GRID,
            PTX_BLOCK_THREADS as usize,
            &params,
        )
        .unwrap_or_else(|e| panic!("{}: {e}", kernel.name));
    let memory = &device.memory;
    let data = allocations
        .iter()
        .map(|bufs| {
            bufs.iter()
                .zip(&storage)
                .map(|(&(a, len), &s)| decode(&memory.read_host(a, len).expect("read"), s))
                .collect()
        })
        .collect();
    let partials = memory
        .read_host(partials_address, 8 * n_partials)
        .expect("read partials")
        .chunks(8)
        .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")))
        .collect();
    Outcome { data, partials }
}

/// Whether the kernel computes exp or log (approximated in PTX).
fn approximates(kernel: &Kernel) -> bool {
    kernel
        .insts
        .iter()
        .any(|i| matches!(i, Inst::Unary(Unary::Exp | Unary::Log, _)))
}

/// Bit-identical (any NaN equal to any NaN: payloads are not simulated), or within
/// `tolerance` relative when it is positive.
fn same(a: f32, b: f32, tolerance: f32) -> bool {
    (a.is_nan() && b.is_nan())
        || a.to_bits() == b.to_bits()
        || (tolerance > 0.0 && (a - b).abs() <= tolerance * a.abs().max(b.abs()))
}

/// Compares the CPU's outcome (f32 kernel, rounded to `storage` when given) with the PTX's.
fn compare(case: &str, kernel: &Kernel, cpu: &Outcome, ptx: &Outcome, storage: DType) {
    let tolerance: f32 = if approximates(kernel) { 1e-5 } else { 0.0 };
    for (r, (cpu_bufs, ptx_bufs)) in cpu.data.iter().zip(&ptx.data).enumerate() {
        for (b, (c, p)) in cpu_bufs.iter().zip(ptx_bufs).enumerate() {
            let stored = kernel.storage(b);
            for (i, (&x, &y)) in c.iter().zip(p).enumerate() {
                let x = match stored {
                    DType::BF16 | DType::F16 => decode(&encode(&[x], stored), stored)[0],
                    _ => x,
                };
                // Half storage where the PTX approximates: a rounding step of slack.
                let slack = match (stored, tolerance > 0.0) {
                    (DType::F32, _) | (_, false) => tolerance,
                    (_, true) => 1e-2,
                };
                assert!(
                    same(x, y, slack),
                    "{case} {} ({storage}): record {r} buffer {} element {i}: CPU {x:e} ({:#x}), PTX {y:e} ({:#x})",
                    kernel.name,
                    kernel.buffers[b].buffer.name(),
                    x.to_bits(),
                    y.to_bits()
                );
            }
        }
    }
    for (i, (&x, &y)) in cpu.partials.iter().zip(&ptx.partials).enumerate() {
        let ok = (x.is_nan() && y.is_nan())
            || x == y
            || (x - y).abs() <= 1e-4 * x.abs().max(y.abs()).max(1e-30);
        assert!(
            ok,
            "{case} {} ({storage}): partial {i}: CPU {x:e}, PTX {y:e}",
            kernel.name
        );
    }
}

/// The kernels of every built-in (FMA contracted, as on the GPU).
fn kernels() -> Vec<(&'static str, Kernel)> {
    let options = CompileOptions {
        fma: Some(true),
        ..CompileOptions::default()
    };
    let cases = common::snapshot_cases().into_iter();
    cases
        .chain(common::factored_cases())
        .flat_map(|(case, definition)| {
            let compiled = compile(&definition, &options).expect("compile");
            compiled.kernels.into_iter().map(move |k| (case, k))
        })
        .collect()
}

/// Runs `kernel` on the CPU and in the interpreter, stored as f32, bf16 and f16, and compares.
fn check(case: &str, kernel: &Kernel, rng: &mut Rng) {
    for storage in [DType::F32, DType::BF16, DType::F16] {
        let stored = Kernel {
            elem_dtype: storage,
            ..kernel.clone()
        };
        // The CPU runs in f32 on the values as stored, and its results are rounded once.
        let mut records = records(kernel, rng);
        for record in &mut records {
            for (b, data) in record.data.iter_mut().enumerate() {
                let dtype = stored.storage(b);
                *data = decode(&encode(data, dtype), dtype);
            }
        }
        let rows = scalar_rows(kernel.n_scalars, rng);
        let cpu = run_cpu(kernel, &records, &rows);
        let ptx = run_ptx(&stored, &records, &rows);
        compare(case, &stored, &cpu, &ptx, storage);
    }
}

#[test]
fn every_builtin_kernel_runs_as_on_the_cpu() {
    let mut rng = Rng(1);
    let kernels = kernels();
    assert!(kernels.len() > 30, "only {} kernels", kernels.len());
    for (case, kernel) in kernels {
        check(case, &kernel, &mut rng);
    }
}

#[test]
fn hand_built_kernels_run_as_on_the_cpu() {
    let mut rng = Rng(2);
    for (case, kernel) in common::kernels::all() {
        kernel.validate().expect("a valid kernel");
        check(case, &kernel, &mut rng);
    }
}

/// Each element op alone, on records that include signed zeros, infinities, NaN and
/// subnormals: the PTX gives the CPU's bits (exp and log to 1e-5).
#[test]
fn each_op_gives_the_cpu_bits_on_special_values() {
    let mut rng = Rng(3);
    for (case, kernel) in common::kernels::per_op() {
        kernel.validate().expect("a valid kernel");
        check(&case, &kernel, &mut rng);
    }
}
