//! The PTX emitter: a kernel becomes one `.entry` of a PTX module for an NVIDIA GPU, whose
//! blocks walk the chunk table ([`ChunkAbi`]) with a 4-element vector loop and a scalar tail.
//!
//! The text is built from typed virtual registers (`%p` predicates, `%r` 32-bit, `%rd` 64-bit,
//! `%f` f32), each written once where possible and declared with exact counts, so that the
//! module is deterministic and ptxas does the register allocation. Every kernel instruction is
//! preceded by a `// v3 = mul v1, v2` comment in the kernel IR's text form. Values computed
//! from constants alone are computed once per launch, from scalars once per record.
//!
//! A kernel with reductions also keeps one f32 accumulator per partial in every thread and, at
//! the end of each record, combines the block's accumulators in a fixed tree (warp shuffles,
//! then the warps in order through shared memory) into the record's f64 partials. A column
//! walk runs each record row by row with the whole block (see [`emit_ptx`]).
//!
//! Arithmetic matches the Cranelift emitter bit for bit except where noted on [`emit_ptx`]:
//! every add, sub and mul carries `.rn`, which forbids ptxas to contract them into an fma.

use crate::abi::ChunkAbi;
use crate::clif::EmitError;
use crate::kernel::{Inst, Kernel, ReduceOp, ReduceScope, Value};
use optjit_ir::{Binary, Cmp, DType, Unary, Walk};
use std::collections::BTreeMap;
use std::fmt::{self, Write};
use std::str::FromStr;

/// Threads per block the runtime launches an emitted entry with (the entry declares
/// `.maxntid 256, 1, 1`, so ptxas may assume no more; an entry with reductions declares
/// `.reqntid 256, 1, 1`, and the driver refuses to launch it with any other block size).
pub const PTX_BLOCK_THREADS: u32 = 256;

/// Threads per warp (the width of `shfl.sync`).
const WARP: u32 = 32;

/// Warps per block, each contributing one value per partial to a record's block reduction.
const WARPS: usize = (PTX_BLOCK_THREADS / WARP) as usize;

// The warps' values are read back 4 at a time (16-byte aligned `ld.shared.v4.f32`).
const _: () = assert!(WARPS.is_multiple_of(LANES));

/// The PTX ISA version of every module: 8.0 is accepted by ptxas 12.0 and later and by every
/// driver since CUDA 12.0, and has everything the emitter uses (`min.NaN` needs 7.0).
const PTX_VERSION: &str = "8.0";

/// Elements per vector access (`.v4.f32`, 16 bytes).
const LANES: usize = 4;

/// The GPU architecture a module targets (`.target`); the PTX also runs on later GPUs, which
/// the driver compiles it for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Arch {
    /// Ampere (A100), `sm_80`.
    #[default]
    Sm80,
    /// Hopper (H100, H200), `sm_90`.
    Sm90,
}

impl Arch {
    /// Every arch, oldest first.
    pub const ALL: &'static [Arch] = &[Arch::Sm80, Arch::Sm90];

    /// The name in `.target` and ptxas's `-arch` (`sm_80`).
    pub fn name(self) -> &'static str {
        match self {
            Arch::Sm80 => "sm_80",
            Arch::Sm90 => "sm_90",
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Arch {
    type Err = String;

    /// `sm_80` or `sm_90`, or just the number (`80`, `90`).
    fn from_str(s: &str) -> Result<Arch, String> {
        let number = s.strip_prefix("sm_").unwrap_or(s);
        match number {
            "80" => Ok(Arch::Sm80),
            "90" => Ok(Arch::Sm90),
            _ => {
                let names: Vec<&str> = Arch::ALL.iter().map(|a| a.name()).collect();
                Err(format!(
                    "unknown GPU arch '{s}': expected {} (or just the number)",
                    names.join(" or ")
                ))
            }
        }
    }
}

/// How [`emit_ptx`] emits a kernel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PtxOptions {
    /// The `.target` of the module.
    pub arch: Arch,
}

/// The name of `kernel`'s `.entry`: its name with every character other than an ASCII letter or
/// digit replaced by `_` (`adamw.phase0` becomes `adamw_phase0`), prefixed with `k` in the
/// cases that would not be a PTX identifier (empty, a leading digit, or just `_`).
pub fn ptx_entry_name(kernel: &Kernel) -> String {
    let name: String = kernel
        .name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if name.is_empty() || name == "_" || name.starts_with(|c: char| c.is_ascii_digit()) {
        format!("k{name}")
    } else {
        name
    }
}

/// Emits `kernel` as one complete PTX module for `options.arch`, with a single entry
/// [`ptx_entry_name`]`(kernel)` that follows [`ChunkAbi`]:
///
/// ```text
/// .visible .entry <name>(.param .u64 table, .param .u64 n_records, .param .u64 partials)
/// ```
///
/// Block `b` of a grid of `g` processes records `b, b + g, ...` below `n_records`, with up to
/// [`PTX_BLOCK_THREADS`] threads. Within a record, when every buffer pointer is aligned to 4
/// of its elements the threads take groups of 4 elements in turn (`ld/st.global.v4.f32`, or
/// `.v4.b16` for f16 and bf16 storage), and then single elements up to `len`; a misaligned
/// record is handled element by element. The text is deterministic.
///
/// Every entry takes `partials`, so that all share one launch signature; only a kernel with
/// reductions reads it. Such a kernel must be launched with exactly [`PTX_BLOCK_THREADS`]
/// threads (it declares `.reqntid`). Each thread folds the elements it handles, in the order
/// it handles them (the 4 lanes of a group in order), into one f32 accumulator per partial
/// (`mul.rn` then `add.rn` for a sum of squares, `add.rn` for a sum, `abs` then `max.NaN` for
/// a largest absolute value). At the end of a non-empty record the block combines its
/// accumulators in a fixed tree: within each warp with `shfl.sync.down` at offsets 16, 8, 4, 2
/// and 1, then thread 0 combines the 8 warps' values in warp order, through shared memory,
/// and stores the partial as an f64 to `partials[r * n + j]`. Sums combine the warps in f64
/// (each warp's f32 value converted exactly, then `add.rn.f64`); a largest absolute value
/// combines in f32 and converts (exact either way). The same inputs thus always give the same
/// partials, but not the CPU's: the fold order differs and a thread accumulates in f32.
///
/// A column walk ([`Walk::Columns`]) takes each record row by row with the whole block, thread
/// `t` taking columns `t, t + ntid, ...` (element by element, no vector path). Row partials
/// combine over the block as above at the end of each row, record partials at the end of the
/// record. A column partial is owned by its column's thread, which adds each value (squared,
/// or its absolute value, in f32 as above) to it in f64 in global memory, so column sums are
/// more precise than the CPU's f32 ones.
///
/// Results equal the CPU's bit for bit (IEEE, one rounding per instruction, subnormals kept)
/// except:
/// - `exp` is `ex2.approx.f32(x * log2(e))` and `log` is `lg2.approx.f32(x) * ln(2)`, not the
///   CPU's `expf`/`logf`. `exp` is within about 2 ulp for small `|x|`, but the rounding of
///   `x * log2(e)` is amplified with `|x|` (CUDA documents `2 + 1.2|x|` ulp for the same
///   sequence, `__expf`; 58 ulp measured at `x = -77` on an H200). `lg2.approx` has an
///   absolute error bound (about `2^-22`) near 1, so the relative error of `log` is unbounded
///   there (`log(1 - 2^-24)` comes out 7 times too small); elsewhere it is a few ulp.
/// - A NaN result is the canonical NaN `0x7fffffff` rather than a propagated payload.
///
/// With f16 or bf16 storage ([`Kernel::storage`]) a load widens exactly to f32 and a store
/// rounds to nearest even (`cvt.rn`, a NaN becoming the canonical one); the arithmetic is
/// the same f32 code.
///
/// Fails on a kernel that does not [`validate`](Kernel::validate), on storage other than f32,
/// f16 and bf16, and on `pow` (the rewrite stage turns `pow(x, 2)` and the like into arithmetic;
/// a general `pow` has no lowering yet).
pub fn emit_ptx(kernel: &Kernel, options: &PtxOptions) -> Result<String, EmitError> {
    let fail = |reason: String| EmitError {
        kernel: kernel.name.clone(),
        target: "ptx",
        reason,
    };
    kernel.validate().map_err(fail)?;
    if !matches!(kernel.elem_dtype, DType::F32 | DType::F16 | DType::BF16) {
        let dtype = kernel.elem_dtype;
        return Err(fail(format!(
            "{dtype} elements (this emitter stores f32, f16 and bf16)"
        )));
    }
    if let Some(reason) = kernel.insts.iter().find_map(unsupported) {
        return Err(fail(reason));
    }
    let mut body = Body::new(kernel);
    body.entry();
    Ok(module(kernel, options.arch, &body))
}

/// Why the emitter cannot lower `inst`, if it cannot.
fn unsupported(inst: &Inst) -> Option<String> {
    match *inst {
        Inst::Binary(op, ..) if binary_op(op).is_none() => Some(format!(
            "{} per element has no PTX lowering yet",
            op.mnemonic()
        )),
        Inst::Unary(u, _) if u.scalar_only() => Some(format!(
            "{} is scalar-only and has no PTX lowering",
            u.mnemonic()
        )),
        _ => None,
    }
}

/// The PTX instruction of a binary op, `None` for `pow`.
///
/// add, sub and mul carry `.rn`: without an explicit rounding modifier ptxas may fuse a mul
/// and an add into one fma, which rounds once where the CPU rounds twice.
///
/// `min.NaN`/`max.NaN` (sm_80, PTX 7.0) return NaN when either input is NaN and, per the PTX
/// ISA's semantics of floating-point `min`/`max` ("-0.0 < +0.0 here"), order -0 below +0:
/// they are IEEE 754-2019 `minimum`/`maximum` as the kernel IR defines them, so no fix-up is
/// emitted (checked bit for bit on an H200 over every pair of ±0, ±1, ±inf, NaN and
/// subnormals).
fn binary_op(op: Binary) -> Option<&'static str> {
    Some(match op {
        Binary::Add => "add.rn.f32",
        Binary::Sub => "sub.rn.f32",
        Binary::Mul => "mul.rn.f32",
        Binary::Div => "div.rn.f32",
        Binary::Min => "min.NaN.f32",
        Binary::Max => "max.NaN.f32",
        Binary::Pow => return None,
    })
}

/// The f32 instruction that combines two values of a reduction: accumulators with a term
/// (a square for a sum of squares, an absolute value for a largest one) and two threads'
/// accumulators. `max.NaN` keeps a NaN.
fn combine_op(op: ReduceOp) -> &'static str {
    match op {
        ReduceOp::SumSquares | ReduceOp::Sum => "add.rn.f32",
        ReduceOp::MaxAbs => "max.NaN.f32",
    }
}

/// The `setp` of a comparison: ordered (false on NaN) except `ne`, which is unordered
/// (`neu`: true on NaN, as in Rust and PyTorch).
fn compare_op(c: Cmp) -> &'static str {
    match c {
        Cmp::Lt => "setp.lt.f32",
        Cmp::Le => "setp.le.f32",
        Cmp::Gt => "setp.gt.f32",
        Cmp::Ge => "setp.ge.f32",
        Cmp::Eq => "setp.eq.f32",
        Cmp::Ne => "setp.neu.f32",
    }
}

/// An f32 as an exact PTX literal (`0f3F800000` for 1.0).
fn hex(x: f32) -> String {
    format!("0f{:08X}", x.to_bits())
}

/// The module text: header, entry signature, register declarations, body.
fn module(kernel: &Kernel, arch: Arch, body: &Body) -> String {
    let mut out = String::new();
    // `escape_default` keeps a stray newline in a name from ending the comment.
    let name = kernel.name.escape_default();
    let (buffers, scalars) = (kernel.buffers.len(), kernel.n_scalars);
    out.push_str("//\n");
    out.push_str(&format!(
        "// optjit kernel {name} for {arch}: {buffers} buffer(s), {scalars} scalar(s)\n"
    ));
    out.push_str("//\n");
    out.push_str(&format!(".version {PTX_VERSION}\n"));
    out.push_str(&format!(".target {arch}\n"));
    out.push_str(".address_size 64\n\n");
    out.push_str(&format!(".visible .entry {}(\n", ptx_entry_name(kernel)));
    out.push_str("    .param .u64 table,\n");
    out.push_str("    .param .u64 n_records,\n");
    out.push_str("    .param .u64 partials\n");
    out.push_str(")\n");
    let reductions = kernel.reductions().len();
    // The block reduction needs every warp full and present.
    let threads = if reductions > 0 { "reqntid" } else { "maxntid" };
    out.push_str(&format!(".{threads} {PTX_BLOCK_THREADS}, 1, 1\n"));
    out.push_str("{\n");
    out.push_str(&body.regs.declarations());
    if reductions > 0 {
        let n = WARPS * reductions;
        out.push_str(&format!(
            "    .shared .align 16 .f32 {WARP_PARTIALS}[{n}];\n"
        ));
    }
    out.push('\n');
    out.push_str(&body.text);
    out.push_str("}\n");
    out
}

/// A virtual register's name (`%f12`).
type Reg = String;

/// The register classes, in declaration order.
#[derive(Clone, Copy, Debug)]
enum Class {
    Pred,
    B16,
    B32,
    B64,
    F32,
    F64,
}

impl Class {
    const ALL: [Class; 6] = [
        Class::Pred,
        Class::B16,
        Class::B32,
        Class::B64,
        Class::F32,
        Class::F64,
    ];

    /// (`.reg` type, name prefix).
    fn spelling(self) -> (&'static str, &'static str) {
        match self {
            Class::Pred => (".pred", "%p"),
            Class::B16 => (".b16", "%h"),
            Class::B32 => (".b32", "%r"),
            Class::B64 => (".b64", "%rd"),
            Class::F32 => (".f32", "%f"),
            Class::F64 => (".f64", "%fd"),
        }
    }
}

/// Hands out fresh registers, numbered from 0 per class.
#[derive(Debug, Default)]
struct Regs {
    counts: [usize; Class::ALL.len()],
}

impl Regs {
    fn fresh(&mut self, class: Class) -> Reg {
        let n = &mut self.counts[class as usize];
        *n += 1;
        format!("{}{}", class.spelling().1, *n - 1)
    }

    /// `.reg .f32 %f<N>;` for every class in use, N the number handed out.
    fn declarations(&self) -> String {
        let mut out = String::new();
        for class in Class::ALL {
            let (ty, prefix) = class.spelling();
            match self.counts[class as usize] {
                0 => {}
                n => out.push_str(&format!("    .reg {ty} {prefix}<{n}>;\n")),
            }
        }
        out
    }
}

/// Labels of the entry's blocks.
const RECORD: &str = "$L_record";
const VECTOR: &str = "$L_vector";
const VECTOR_DONE: &str = "$L_vector_done";
const TAIL: &str = "$L_tail";
const REDUCE: &str = "$L_reduce";
const COMBINED: &str = "$L_combined";
const ROW: &str = "$L_row";
const COLUMN: &str = "$L_column";
const ROW_DONE: &str = "$L_row_done";
const ROW_COMBINED: &str = "$L_row_combined";
const RECORD_COMBINED: &str = "$L_record_combined";
const NEXT: &str = "$L_next";
const DONE: &str = "$L_done";

/// The shared array of a block reduction: `WARPS` f32 per partial, partial `j` of warp `w` at
/// index `WARPS * j + w`.
const WARP_PARTIALS: &str = "warp_partials";

/// What a record's element loops share: its length, buffer pointers and the values that are
/// the same for every element (constants and scalars).
struct Record {
    /// Global address of the record's first word.
    address: Reg,
    /// Elements, or rows in a column walk.
    len: Reg,
    /// Global address of element 0 per buffer, `None` for a buffer the kernel never touches.
    bases: Vec<Option<Reg>>,
    /// Register per value index, for constants and scalars.
    uniform: Vec<Option<Reg>>,
}

/// The thread's position in its block, as 64-bit values.
struct Threads {
    tid: Reg,
    ntid: Reg,
}

/// What a kernel with reductions keeps for the whole launch.
struct Reductions {
    /// The op of each partial slot.
    ops: Vec<ReduceOp>,
    /// Per slot, the thread's f32 accumulator (zeroed per record, updated in place).
    accumulators: Vec<Reg>,
    /// Global address of `partials`.
    partials: Reg,
    /// The thread is lane 0 of its warp.
    lane0: Reg,
    /// The thread is thread 0 of the block.
    first: Reg,
    /// Shared address of this warp's value of partial 0.
    warp_slot: Reg,
}

/// The entry body under construction: instructions and the registers they use.
struct Body<'a> {
    kernel: &'a Kernel,
    regs: Regs,
    text: String,
    /// Per buffer: the kernel loads it and never stores it (read through the
    /// non-coherent cache).
    read_only: Vec<bool>,
    /// Per buffer: how its elements are stored ([`Kernel::storage`]).
    storage: Vec<DType>,
    /// Set up by the entry for a kernel with reductions.
    reductions: Option<Reductions>,
    /// In a column walk, per partial slot: the address of the current column's partial, for
    /// the slots that cover a column.
    column_partials: Vec<Option<Reg>>,
}

impl<'a> Body<'a> {
    fn new(kernel: &'a Kernel) -> Body<'a> {
        let touches = |i: usize, store: bool| {
            kernel.insts.iter().any(|inst| match *inst {
                Inst::Load { buffer } => !store && buffer == i,
                Inst::Store { buffer, .. } => store && buffer == i,
                _ => false,
            })
        };
        let read_only = (0..kernel.buffers.len())
            .map(|i| touches(i, false) && !touches(i, true))
            .collect();
        let storage = (0..kernel.buffers.len())
            .map(|b| kernel.storage(b))
            .collect();
        Body {
            kernel,
            regs: Regs::default(),
            text: String::new(),
            read_only,
            storage,
            reductions: None,
            column_partials: Vec::new(),
        }
    }

    fn reg(&mut self, class: Class) -> Reg {
        self.regs.fresh(class)
    }

    /// One instruction line (`;` added).
    fn ins(&mut self, args: fmt::Arguments<'_>) {
        writeln!(self.text, "    {args};").expect("writing to a String");
    }

    fn comment(&mut self, text: &str) {
        writeln!(self.text, "    // {}", text.escape_default()).expect("writing to a String");
    }

    fn label(&mut self, label: &str) {
        writeln!(self.text, "{label}:").expect("writing to a String");
    }

    /// The whole entry: parameters, constants, and the loop over records.
    fn entry(&mut self) {
        self.comment("parameters and thread coordinates");
        let param = self.reg(Class::B64);
        self.ins(format_args!("ld.param.u64 {param}, [table]"));
        let table = self.reg(Class::B64);
        self.ins(format_args!("cvta.to.global.u64 {table}, {param}"));
        let n_records = self.reg(Class::B64);
        self.ins(format_args!("ld.param.u64 {n_records}, [n_records]"));
        let r = self.special("%ctaid.x");
        let grid = self.special("%nctaid.x");
        let threads = Threads {
            tid: self.special("%tid.x"),
            ntid: self.special("%ntid.x"),
        };
        self.reductions = self.reduction_setup(&threads.tid);
        let mut constants = self.constants();
        self.uniform_ops(&mut constants);

        self.comment("for r = ctaid.x; r < n_records; r += nctaid.x");
        let none = self.reg(Class::Pred);
        self.ins(format_args!("setp.ge.u64 {none}, {r}, {n_records}"));
        self.ins(format_args!("@{none} bra.uni {DONE}"));
        self.label(RECORD);
        let record = self.record(&table, &r, constants);
        self.zero_accumulators();
        match self.kernel.walk {
            Walk::Elements => {
                let n4 = self.vector_loop(&record, &threads);
                let end = match self.reductions {
                    Some(_) => REDUCE,
                    None => NEXT,
                };
                self.tail_loop(&record, &n4, &threads, end);
                self.record_partials(&r);
            }
            Walk::Columns => self.column_walk(&record, &threads),
        }
        self.label(NEXT);
        self.ins(format_args!("add.u64 {r}, {r}, {grid}"));
        let more = self.reg(Class::Pred);
        self.ins(format_args!("setp.lt.u64 {more}, {r}, {n_records}"));
        self.ins(format_args!("@{more} bra.uni {RECORD}"));
        self.label(DONE);
        self.ins(format_args!("ret"));
    }

    /// A special register (`%tid.x`) widened to 64 bits.
    fn special(&mut self, name: &str) -> Reg {
        let narrow = self.reg(Class::B32);
        self.ins(format_args!("mov.u32 {narrow}, {name}"));
        let wide = self.reg(Class::B64);
        self.ins(format_args!("cvt.u64.u32 {wide}, {narrow}"));
        wide
    }

    /// The kernel's constants, materialized once per launch; indexed by value.
    fn constants(&mut self) -> Vec<Option<Reg>> {
        let kernel = self.kernel;
        let mut regs = vec![None; kernel.insts.len()];
        for (i, inst) in kernel.insts.iter().enumerate() {
            if let Inst::Const(c) = *inst {
                self.comment(&kernel.describe(i));
                let reg = self.reg(Class::F32);
                self.ins(format_args!("mov.f32 {reg}, {}", hex(c)));
                regs[i] = Some(reg);
            }
        }
        regs
    }

    /// Reads record `r`: skips to the next record when `len` is 0, otherwise loads the buffer
    /// pointers and the scalars the kernel uses. `uniform` comes with the constants set.
    fn record(&mut self, table: &str, r: &str, mut uniform: Vec<Option<Reg>>) -> Record {
        let kernel = self.kernel;
        let stride = kernel.record_words() * 8;
        let word = |w: usize| 8 * w;
        self.comment(&format!(
            "record r at table + {stride} * r: len, scalar row, {} buffer pointer(s)",
            kernel.buffers.len()
        ));
        let address = self.reg(Class::B64);
        self.ins(format_args!("mad.lo.u64 {address}, {r}, {stride}, {table}"));
        let len = self.reg(Class::B64);
        let src = at(&address, word(ChunkAbi::LEN_WORD));
        self.ins(format_args!("ld.global.nc.u64 {len}, {src}"));
        let empty = self.reg(Class::Pred);
        self.ins(format_args!("setp.eq.u64 {empty}, {len}, 0"));
        self.ins(format_args!("@{empty} bra.uni {NEXT}"));

        let mut bases = Vec::with_capacity(kernel.buffers.len());
        for (i, buffer) in kernel.buffers.iter().enumerate() {
            let touched = kernel.insts.iter().any(|inst| {
                matches!(*inst, Inst::Load { buffer } | Inst::Store { buffer, .. } if buffer == i)
            });
            if !touched {
                bases.push(None);
                continue;
            }
            let access = if self.read_only[i] {
                " (read-only)"
            } else {
                ""
            };
            self.comment(&format!("buffer {i}: {}{access}", buffer.buffer));
            let generic = self.reg(Class::B64);
            let src = at(&address, word(ChunkAbi::BUFFERS_WORD + i));
            self.ins(format_args!("ld.global.nc.u64 {generic}, {src}"));
            let base = self.reg(Class::B64);
            self.ins(format_args!("cvta.to.global.u64 {base}, {generic}"));
            bases.push(Some(base));
        }

        let slots: BTreeMap<usize, Vec<usize>> =
            kernel
                .insts
                .iter()
                .enumerate()
                .fold(BTreeMap::new(), |mut slots, (i, inst)| {
                    if let Inst::Scalar { slot } = *inst {
                        slots.entry(slot).or_insert_with(Vec::new).push(i);
                    }
                    slots
                });
        if !slots.is_empty() {
            self.comment("the scalar row");
            let generic = self.reg(Class::B64);
            let src = at(&address, word(ChunkAbi::SCALARS_WORD));
            self.ins(format_args!("ld.global.nc.u64 {generic}, {src}"));
            let row = self.reg(Class::B64);
            self.ins(format_args!("cvta.to.global.u64 {row}, {generic}"));
            for (slot, values) in slots {
                for &i in &values {
                    self.comment(&kernel.describe(i));
                }
                let reg = self.reg(Class::F32);
                let src = at(&row, 4 * slot);
                self.ins(format_args!("ld.global.nc.f32 {reg}, {src}"));
                for i in values {
                    uniform[i] = Some(reg.clone());
                }
            }
        }
        self.uniform_ops(&mut uniform);
        Record {
            address,
            len,
            bases,
            uniform,
        }
    }

    /// The vector loop over groups of 4 elements, `q = tid; q < n4; q += ntid`, with
    /// `n4 = len / 4` when every buffer pointer is aligned to 4 elements and 0 otherwise (the
    /// test is the same for every thread, so the branch does not diverge). Returns `n4`.
    fn vector_loop(&mut self, record: &Record, threads: &Threads) -> Reg {
        let Threads { tid, ntid } = threads;
        let len = &record.len;
        self.comment("vector path: n4 = len / 4 groups if every pointer is aligned to 4 elements");
        let groups = self.reg(Class::B64);
        self.ins(format_args!("shr.u64 {groups}, {len}, 2"));
        // Per element size, the bits of its buffers' pointers that must be 0.
        let mut lows = Vec::new();
        for bytes in [4, 2] {
            let bases: Vec<&Reg> = (record.bases.iter().zip(&self.storage))
                .filter_map(|(base, dtype)| base.as_ref().filter(|_| dtype.size_bytes() == bytes))
                .collect();
            let Some((first, rest)) = bases.split_first() else {
                continue;
            };
            let mut bits = (*first).clone();
            for base in rest {
                bits = self.op(Class::B64, "or.b64", &[&bits, base]);
            }
            let mask = (LANES * bytes - 1).to_string();
            lows.push(self.op(Class::B64, "and.b64", &[&bits, &mask]));
        }
        let n4 = match lows.split_first() {
            // A kernel that touches no buffer has nothing to align.
            None => groups,
            Some((first, rest)) => {
                let mut low = first.clone();
                for other in rest {
                    low = self.op(Class::B64, "or.b64", &[&low, other]);
                }
                let aligned = self.reg(Class::Pred);
                self.ins(format_args!("setp.eq.u64 {aligned}, {low}, 0"));
                let n4 = self.reg(Class::B64);
                self.ins(format_args!("selp.b64 {n4}, {groups}, 0, {aligned}"));
                n4
            }
        };
        self.comment("for q = tid.x; q < n4; q += ntid.x");
        let q = self.reg(Class::B64);
        self.ins(format_args!("mov.u64 {q}, {tid}"));
        self.block_loop(&q, &n4, ntid, [VECTOR, VECTOR_DONE], |body| {
            let addresses = body.addresses(record, |body, bytes| {
                let shift = (LANES * bytes).trailing_zeros();
                body.op(Class::B64, "shl.b64", &[q.as_str(), &shift.to_string()])
            });
            body.elements(LANES, &addresses, &record.uniform);
        });
        self.label(VECTOR_DONE);
        n4
    }

    /// The scalar loop over the elements the vector loop left, `i = 4 * n4 + tid; i < len;
    /// i += ntid`, continuing at `end`.
    fn tail_loop(&mut self, record: &Record, n4: &str, threads: &Threads, end: &str) {
        let Threads { tid, ntid } = threads;
        let len = &record.len;
        self.comment("scalar tail: for i = 4 * n4 + tid.x; i < len; i += ntid.x");
        let start = self.reg(Class::B64);
        self.ins(format_args!("shl.b64 {start}, {n4}, 2"));
        let i = self.reg(Class::B64);
        self.ins(format_args!("add.u64 {i}, {start}, {tid}"));
        self.block_loop(&i, len, ntid, [TAIL, end], |body| {
            let addresses = body.addresses(record, |body, bytes| {
                let shift = bytes.trailing_zeros().to_string();
                body.op(Class::B64, "shl.b64", &[i.as_str(), &shift])
            });
            body.elements(1, &addresses, &record.uniform);
        });
    }

    /// The loop `for (; x < bound; x += step) body`, `x` already holding its first value: a
    /// test that skips to `exit` (not emitted here), the `head` label, `body`, the increment and
    /// the back edge. The threads of a block share `bound` and `step` but not `x`, so the
    /// branches may diverge.
    fn block_loop(
        &mut self,
        x: &str,
        bound: &str,
        step: &str,
        [head, exit]: [&str; 2],
        body: impl FnOnce(&mut Self),
    ) {
        let skip = self.reg(Class::Pred);
        self.ins(format_args!("setp.ge.u64 {skip}, {x}, {bound}"));
        self.ins(format_args!("@{skip} bra {exit}"));
        self.label(head);
        body(self);
        self.ins(format_args!("add.u64 {x}, {x}, {step}"));
        let more = self.reg(Class::Pred);
        self.ins(format_args!("setp.lt.u64 {more}, {x}, {bound}"));
        self.ins(format_args!("@{more} bra {head}"));
    }

    /// For a kernel with reductions: the `partials` pointer, the thread's roles in the block
    /// reduction (lane 0 of a warp, thread 0 of the block), its warp's place in shared memory
    /// and one accumulator per partial. Emits nothing for a kernel without reductions.
    fn reduction_setup(&mut self, tid: &str) -> Option<Reductions> {
        let ops = self.kernel.reductions();
        if ops.is_empty() {
            return None;
        }
        let names: Vec<String> = ops
            .iter()
            .enumerate()
            .map(|(j, op)| format!("{j} {}", op.mnemonic()))
            .collect();
        self.comment(&format!("reductions: partials {}", names.join(", ")));
        let param = self.reg(Class::B64);
        self.ins(format_args!("ld.param.u64 {param}, [partials]"));
        let partials = self.reg(Class::B64);
        self.ins(format_args!("cvta.to.global.u64 {partials}, {param}"));
        let thread = self.reg(Class::B32);
        self.ins(format_args!("cvt.u32.u64 {thread}, {tid}"));
        let lane = self.reg(Class::B32);
        self.ins(format_args!("and.b32 {lane}, {thread}, {}", WARP - 1));
        let lane0 = self.reg(Class::Pred);
        self.ins(format_args!("setp.eq.u32 {lane0}, {lane}, 0"));
        let first = self.reg(Class::Pred);
        self.ins(format_args!("setp.eq.u32 {first}, {thread}, 0"));
        self.comment(&format!(
            "partial j of warp w at {WARP_PARTIALS}[{WARPS} * j + w], w = tid.x / {WARP}"
        ));
        let warp = self.reg(Class::B32);
        self.ins(format_args!(
            "shr.u32 {warp}, {thread}, {}",
            WARP.trailing_zeros()
        ));
        let shared = self.reg(Class::B32);
        self.ins(format_args!("mov.u32 {shared}, {WARP_PARTIALS}"));
        let warp_slot = self.reg(Class::B32);
        self.ins(format_args!("mad.lo.u32 {warp_slot}, {warp}, 4, {shared}"));
        let accumulators = ops.iter().map(|_| self.reg(Class::F32)).collect();
        Some(Reductions {
            ops,
            accumulators,
            partials,
            lane0,
            first,
            warp_slot,
        })
    }

    /// Zeroes the accumulators at the start of a record, for a kernel with reductions (0 is
    /// every op's identity: `0 + x = x`, and `max(0, |x|) = |x|`).
    fn zero_accumulators(&mut self) {
        let Some(reductions) = &self.reductions else {
            return;
        };
        let slots: Vec<usize> = (0..reductions.ops.len()).collect();
        self.zero_accumulators_of(&slots);
    }

    /// Zeroes the accumulators of partial slots `slots`.
    fn zero_accumulators_of(&mut self, slots: &[usize]) {
        let reductions = self.reductions.as_ref().expect("a kernel with reductions");
        let accumulators: Vec<Reg> = (slots.iter())
            .map(|&j| reductions.accumulators[j].clone())
            .collect();
        self.comment("accumulators = 0");
        for accumulator in accumulators {
            self.ins(format_args!("mov.f32 {accumulator}, {}", hex(0.0)));
        }
    }

    /// Adds one element `x` of a column walk to partial `slot` of its column (in global
    /// memory, in f64: see [`Body::column_walk`]).
    fn fold_column(&mut self, op: ReduceOp, slot: usize, x: &str) {
        let out = self.column_partials[slot]
            .clone()
            .expect("the column loop sets the column partials");
        let term = match op {
            ReduceOp::SumSquares => self.op(Class::F32, "mul.rn.f32", &[x, x]),
            ReduceOp::Sum => x.to_string(),
            ReduceOp::MaxAbs => self.op(Class::F32, "abs.f32", &[x]),
        };
        let wide = self.op(Class::F64, "cvt.f64.f32", &[&term]);
        let old = self.reg(Class::F64);
        self.ins(format_args!("ld.global.f64 {old}, [{out}]"));
        let new = match op {
            ReduceOp::SumSquares | ReduceOp::Sum => {
                self.op(Class::F64, "add.rn.f64", &[&old, &wide])
            }
            // max.f64 drops a NaN: put it back.
            ReduceOp::MaxAbs => {
                let larger = self.op(Class::F64, "max.f64", &[&old, &wide]);
                let nan = self.op(Class::Pred, "setp.nan.f64", &[&old, &wide]);
                let quiet = "0d7FF8000000000000";
                self.op(Class::F64, "selp.f64", &[quiet, &larger, &nan])
            }
        };
        self.ins(format_args!("st.global.f64 [{out}], {new}"));
    }

    /// Folds one element `x` into the thread's accumulator of partial `slot`, in place.
    fn fold(&mut self, op: ReduceOp, slot: usize, x: &str) {
        let reductions = self.reductions.as_ref().expect("a kernel with reductions");
        let accumulator = reductions.accumulators[slot].clone();
        let term = match op {
            ReduceOp::SumSquares => self.op(Class::F32, "mul.rn.f32", &[x, x]),
            ReduceOp::Sum => x.to_string(),
            ReduceOp::MaxAbs => self.op(Class::F32, "abs.f32", &[x]),
        };
        let combine = combine_op(op);
        self.ins(format_args!(
            "{combine} {accumulator}, {accumulator}, {term}"
        ));
    }

    /// The end of a non-empty record `r` of an element walk, for a kernel with reductions:
    /// every partial combined over the block and stored to `partials[r * n + j]`. Every thread
    /// of the block gets here (the record's loops exit to `$L_reduce`; only an empty record
    /// skips it, and `len` is the same for the whole block), as [`Body::block_combine`] needs.
    fn record_partials(&mut self, r: &str) {
        let Some(reductions) = &self.reductions else {
            return;
        };
        let (n, partials) = (reductions.ops.len(), reductions.partials.clone());
        self.label(REDUCE);
        self.comment(&format!("the record's partials at partials[r * {n} + j]"));
        let row = self.reg(Class::B64);
        self.ins(format_args!("mad.lo.u64 {row}, {r}, {}, {partials}", 8 * n));
        let destinations: Vec<String> = (0..n).map(|j| at(&row, 8 * j)).collect();
        let slots: Vec<usize> = (0..n).collect();
        self.block_combine(&slots, &destinations, COMBINED);
    }

    /// Combines the block's accumulators of each partial slot in `slots` in a fixed tree and
    /// stores the result as an f64 at the matching address of `destinations`: within each warp
    /// with `shfl.sync.down`, then thread 0 combines the warps in order through shared memory.
    /// Every thread of the block must get here together (both barriers wait for all), and
    /// `combined` is a label used once.
    fn block_combine(&mut self, slots: &[usize], destinations: &[String], combined: &str) {
        let reductions = self.reductions.take().expect("a kernel with reductions");
        let Reductions {
            ops,
            accumulators,
            lane0,
            first,
            warp_slot,
            ..
        } = &reductions;
        for &j in slots {
            let op = ops[j];
            let combine = combine_op(op);
            self.comment(&format!(
                "partial {j} ({}): within the warp, shfl.sync.down by 16, 8, 4, 2, 1",
                op.mnemonic()
            ));
            let mut value = accumulators[j].clone();
            let mut offset = WARP / 2;
            while offset > 0 {
                let other = self.reg(Class::F32);
                self.ins(format_args!(
                    "shfl.sync.down.b32 {other}, {value}, {offset}, {}, 0xffffffff",
                    WARP - 1
                ));
                value = self.op(Class::F32, combine, &[&value, &other]);
                offset /= 2;
            }
            self.comment("lane 0 stores the value of its warp");
            let slot = at(warp_slot, 4 * WARPS * j);
            self.ins(format_args!("@{lane0} st.shared.f32 {slot}, {value}"));
        }
        self.comment("wait until every warp has stored its values");
        self.ins(format_args!("bar.sync 0"));
        self.comment(&format!("thread 0: the {WARPS} warps in order, as f64"));
        self.ins(format_args!("@!{first} bra {combined}"));
        for (&j, destination) in slots.iter().zip(destinations) {
            let op = ops[j];
            self.comment(&format!("partial {j} ({})", op.mnemonic()));
            let warps = self.warp_values(j);
            let total = match op {
                // Exact in f32: the largest of the warps, then widened.
                ReduceOp::MaxAbs => {
                    let (head, rest) = warps.split_first().expect("at least one warp");
                    let mut total = head.clone();
                    for value in rest {
                        total = self.op(Class::F32, "max.NaN.f32", &[&total, value]);
                    }
                    self.op(Class::F64, "cvt.f64.f32", &[&total])
                }
                // Each warp's value widened exactly, summed in f64 in warp order.
                ReduceOp::SumSquares | ReduceOp::Sum => {
                    let wide: Vec<Reg> = warps
                        .iter()
                        .map(|value| self.op(Class::F64, "cvt.f64.f32", &[value]))
                        .collect();
                    let (head, rest) = wide.split_first().expect("at least one warp");
                    let mut total = head.clone();
                    for value in rest {
                        total = self.op(Class::F64, "add.rn.f64", &[&total, value]);
                    }
                    total
                }
            };
            self.ins(format_args!("st.global.f64 {destination}, {total}"));
        }
        self.label(combined);
        self.comment("the block may overwrite shared memory once thread 0 has read it");
        self.ins(format_args!("bar.sync 0"));
        self.reductions = Some(reductions);
    }

    /// A column-walk record (see [`ChunkAbi`]): `len` rows of `width` floats, `stride` bytes
    /// apart, walked row by row by the whole block, thread `t` taking columns `t, t + ntid,
    /// ...` of each row (a warp reads consecutive floats). At the end of each row the block
    /// combines the row partials ([`Body::block_combine`]), at the end of the record the
    /// record partials. A column partial belongs to the thread of its column, which adds each
    /// of the column's values to it in f64, in global memory: the caller zero-fills it, and no
    /// other thread touches it, so the order is fixed without atomics.
    fn column_walk(&mut self, record: &Record, threads: &Threads) {
        let kernel = self.kernel;
        let Threads { tid, ntid } = threads;
        let extra = ChunkAbi::BUFFERS_WORD + kernel.buffers.len();
        self.comment("column walk: the row stride in bytes, the width, the first partial");
        let [stride, width, first] = [0, 1, 2].map(|k| {
            let reg = self.reg(Class::B64);
            let src = at(&record.address, 8 * (extra + k));
            self.ins(format_args!("ld.global.nc.u64 {reg}, {src}"));
            reg
        });
        let outs = self.slot_outputs(&first, &record.len, &width);
        let scoped = |scope: ReduceScope| -> Vec<usize> {
            (0..outs.len())
                .filter(|&slot| kernel.scope(slot) == scope)
                .collect()
        };
        let (row_slots, column_slots, record_slots) = (
            scoped(ReduceScope::Row),
            scoped(ReduceScope::Column),
            scoped(ReduceScope::Record),
        );

        self.comment("for i = 0; i < len; i += 1 (the whole block, row by row)");
        let i = self.reg(Class::B64);
        self.ins(format_args!("mov.u64 {i}, 0"));
        self.label(ROW);
        let row_offset = self.reg(Class::B64);
        self.ins(format_args!("mul.lo.u64 {row_offset}, {i}, {stride}"));
        self.comment("for c = tid.x; c < width; c += ntid.x");
        let c = self.reg(Class::B64);
        self.ins(format_args!("mov.u64 {c}, {tid}"));
        self.block_loop(&c, &width, ntid, [COLUMN, ROW_DONE], |body| {
            let addresses = body.addresses(record, |body, bytes| {
                let shift = bytes.trailing_zeros().to_string();
                let column = body.op(Class::B64, "shl.b64", &[c.as_str(), &shift]);
                body.op(Class::B64, "add.u64", &[&row_offset, &column])
            });
            if !column_slots.is_empty() {
                body.comment("this column's partials: 8 * c bytes into each column slot");
                let at_column = body.op(Class::B64, "shl.b64", &[&c, "3"]);
                body.column_partials = vec![None; outs.len()];
                for &slot in &column_slots {
                    let address = body.op(Class::B64, "add.u64", &[&outs[slot], &at_column]);
                    body.column_partials[slot] = Some(address);
                }
            }
            body.elements(1, &addresses, &record.uniform);
        });
        self.label(ROW_DONE);
        if !row_slots.is_empty() {
            self.comment("the row's partials at 8 * i bytes into each row slot");
            let at_row = self.op(Class::B64, "shl.b64", &[&i, "3"]);
            let destinations: Vec<String> = (row_slots.iter())
                .map(|&slot| {
                    let address = self.op(Class::B64, "add.u64", &[&outs[slot], &at_row]);
                    at(&address, 0)
                })
                .collect();
            self.block_combine(&row_slots, &destinations, ROW_COMBINED);
            self.zero_accumulators_of(&row_slots);
        }
        self.ins(format_args!("add.u64 {i}, {i}, 1"));
        let more = self.reg(Class::Pred);
        self.ins(format_args!("setp.lt.u64 {more}, {i}, {}", record.len));
        self.ins(format_args!("@{more} bra.uni {ROW}"));
        if !record_slots.is_empty() {
            self.comment("the record's partials");
            let destinations: Vec<String> = record_slots
                .iter()
                .map(|&slot| at(&outs[slot], 0))
                .collect();
            self.block_combine(&record_slots, &destinations, RECORD_COMBINED);
        }
    }

    /// Where each partial slot of a column-walk record starts: `partials[first]` for slot 0,
    /// then each slot after the previous one's partials (1 for the record, `len` for its
    /// rows, `width` for its columns). Empty for a kernel without reductions.
    fn slot_outputs(&mut self, first: &str, len: &str, width: &str) -> Vec<Reg> {
        let kernel = self.kernel;
        let Some(reductions) = &self.reductions else {
            return Vec::new();
        };
        let (n, partials) = (reductions.ops.len(), reductions.partials.clone());
        self.comment("slot j's partials follow slot j - 1's: 1 per record, len or width");
        let mut at = self.reg(Class::B64);
        self.ins(format_args!("mad.lo.u64 {at}, {first}, 8, {partials}"));
        let mut outs = Vec::with_capacity(n);
        for slot in 0..n {
            outs.push(at.clone());
            if slot + 1 == n {
                break;
            }
            at = match kernel.scope(slot) {
                ReduceScope::Record => self.op(Class::B64, "add.u64", &[&at, "8"]),
                ReduceScope::Row | ReduceScope::Column => {
                    let count = match kernel.scope(slot) {
                        ReduceScope::Row => len,
                        _ => width,
                    };
                    self.op(Class::B64, "mad.lo.u64", &[count, "8", &at])
                }
            };
        }
        outs
    }

    /// The block's warps' values of partial `j`, read from shared memory 4 at a time.
    fn warp_values(&mut self, j: usize) -> Vec<Reg> {
        let values: Vec<Reg> = (0..WARPS).map(|_| self.reg(Class::F32)).collect();
        for (k, group) in values.chunks(LANES).enumerate() {
            let src = at(WARP_PARTIALS, 4 * (WARPS * j + LANES * k));
            let list = group.join(", ");
            self.ins(format_args!("ld.shared.v{LANES}.f32 {{{list}}}, {src}"));
        }
        values
    }

    /// `base + offset(bytes)` for every buffer the kernel touches, where `bytes` is the size
    /// of one of its elements; `offset` is asked once per size, when first needed.
    fn addresses(
        &mut self,
        record: &Record,
        mut offset: impl FnMut(&mut Self, usize) -> Reg,
    ) -> Vec<Option<Reg>> {
        let mut offsets: Vec<(usize, Reg)> = Vec::new();
        let mut addresses = Vec::with_capacity(record.bases.len());
        for (i, base) in record.bases.iter().enumerate() {
            let Some(base) = base else {
                addresses.push(None);
                continue;
            };
            let bytes = self.storage[i].size_bytes();
            let by = match offsets.iter().find(|(size, _)| *size == bytes) {
                Some((_, reg)) => reg.clone(),
                None => {
                    let reg = offset(self, bytes);
                    offsets.push((bytes, reg.clone()));
                    reg
                }
            };
            let address = self.reg(Class::B64);
            self.ins(format_args!("add.u64 {address}, {base}, {by}"));
            addresses.push(Some(address));
        }
        addresses
    }

    /// The kernel's instructions for `lanes` consecutive elements at `addresses` (1, or 4 with
    /// vector accesses): straight-line code, one instruction per lane, in kernel order, so
    /// every load comes before the first store (stores are last in a valid kernel). Values in
    /// `uniform` are shared by every lane and not recomputed.
    fn elements(&mut self, lanes: usize, addresses: &[Option<Reg>], uniform: &[Option<Reg>]) {
        let kernel = self.kernel;
        let mut values: Vec<Vec<Reg>> = Vec::with_capacity(kernel.insts.len());
        for (i, inst) in kernel.insts.iter().enumerate() {
            if let Some(reg) = &uniform[i] {
                values.push(vec![reg.clone(); lanes]);
                continue;
            }
            if matches!(inst, Inst::Scalar { .. } | Inst::Const(_)) {
                unreachable!("constants and scalars are uniform");
            }
            self.comment(&kernel.describe(i));
            let result: Vec<Reg> = match *inst {
                Inst::Load { buffer } => self.load(lanes, buffer, address(addresses, buffer)),
                Inst::Store { buffer, value } => {
                    let stored: Vec<&str> = values[value.index()].iter().map(|s| &**s).collect();
                    self.store(&stored, buffer, address(addresses, buffer));
                    Vec::new()
                }
                Inst::Reduce { op, slot, value } => {
                    for lane in &values[value.index()] {
                        match kernel.scope(slot) {
                            ReduceScope::Column => self.fold_column(op, slot, lane),
                            ReduceScope::Record | ReduceScope::Row => self.fold(op, slot, lane),
                        }
                    }
                    Vec::new()
                }
                _ => (0..lanes)
                    .map(|l| self.compute(inst, |v| &values[v.index()][l]))
                    .collect(),
            };
            values.push(result);
        }
    }

    /// Computes the instructions whose operands are all in `uniform` (constants, scalars and
    /// what was computed from them) once, rather than per element, and adds them to `uniform`.
    /// Called per launch with the constants and per record with the scalars too.
    fn uniform_ops(&mut self, uniform: &mut [Option<Reg>]) {
        let kernel = self.kernel;
        for (i, inst) in kernel.insts.iter().enumerate() {
            let computes = !inst.is_sink()
                && !matches!(
                    inst,
                    Inst::Load { .. } | Inst::Scalar { .. } | Inst::Const(_)
                );
            let ready = inst.operands().iter().all(|v| uniform[v.index()].is_some());
            if uniform[i].is_some() || !computes || !ready {
                continue;
            }
            self.comment(&kernel.describe(i));
            let reg = self.compute(inst, |v| uniform[v.index()].as_deref().expect("ready"));
            uniform[i] = Some(reg);
        }
    }

    /// One instance of an arithmetic instruction (not a load, store, scalar or constant), its
    /// operands named by `operand`.
    fn compute<'r>(&mut self, inst: &Inst, operand: impl Fn(Value) -> &'r str) -> Reg {
        match *inst {
            Inst::Unary(u, a) => self.unary(u, operand(a)),
            Inst::Binary(op, a, b) => {
                let op = binary_op(op).expect("emit_ptx rejects unsupported ops");
                self.op(Class::F32, op, &[operand(a), operand(b)])
            }
            Inst::Fma(a, b, c) => {
                let args = [operand(a), operand(b), operand(c)];
                self.op(Class::F32, "fma.rn.f32", &args)
            }
            Inst::Cmp(c, a, b) => self.op(Class::Pred, compare_op(c), &[operand(a), operand(b)]),
            // selp picks a when the predicate holds: `cond ? a : b`.
            Inst::Select(c, a, b) => {
                let args = [operand(a), operand(b), operand(c)];
                self.op(Class::F32, "selp.f32", &args)
            }
            Inst::Load { .. }
            | Inst::Store { .. }
            | Inst::Reduce { .. }
            | Inst::Scalar { .. }
            | Inst::Const(_) => {
                unreachable!("compute handles arithmetic only")
            }
        }
    }

    /// `op d, args...` into a fresh register of `class`.
    fn op(&mut self, class: Class, op: &str, args: &[&str]) -> Reg {
        let d = self.reg(class);
        self.ins(format_args!("{op} {d}, {}", args.join(", ")));
        d
    }

    /// Loads `lanes` elements of `buffer` at `address`, as f32 (f16 and bf16 widen exactly).
    fn load(&mut self, lanes: usize, buffer: usize, address: &str) -> Vec<Reg> {
        let nc = if self.read_only[buffer] { ".nc" } else { "" };
        let dtype = self.storage[buffer];
        let (class, ty) = match dtype {
            DType::F16 | DType::BF16 => (Class::B16, "b16"),
            _ => (Class::F32, "f32"),
        };
        let regs: Vec<Reg> = (0..lanes).map(|_| self.reg(class)).collect();
        if lanes == 1 {
            self.ins(format_args!("ld.global{nc}.{ty} {}, [{address}]", regs[0]));
        } else {
            let list = regs.join(", ");
            self.ins(format_args!(
                "ld.global{nc}.v{lanes}.{ty} {{{list}}}, [{address}]"
            ));
        }
        match dtype {
            DType::F16 => (regs.iter())
                .map(|h| self.op(Class::F32, "cvt.f32.f16", &[h]))
                .collect(),
            // A bf16 is the high half of the f32 with the same value.
            DType::BF16 => {
                let zero = self.reg(Class::B16);
                self.ins(format_args!("mov.b16 {zero}, 0"));
                (regs.iter())
                    .map(|h| {
                        let bits = self.op(Class::B32, "mov.b32", &[&format!("{{{zero}, {h}}}")]);
                        self.op(Class::F32, "mov.b32", &[&bits])
                    })
                    .collect()
            }
            _ => regs,
        }
    }

    /// Stores `lanes` (1 or 4 f32 registers) to `buffer` at `address`, rounded to nearest even
    /// for f16 and bf16.
    fn store(&mut self, lanes: &[&str], buffer: usize, address: &str) {
        let (ty, values): (&str, Vec<Reg>) = match self.storage[buffer] {
            dtype @ (DType::F16 | DType::BF16) => {
                let cvt = format!("cvt.rn.{}.f32", dtype.name());
                let narrow = lanes.iter().map(|x| self.op(Class::B16, &cvt, &[x]));
                ("b16", narrow.collect())
            }
            _ => ("f32", lanes.iter().map(|x| x.to_string()).collect()),
        };
        if let [value] = values.as_slice() {
            self.ins(format_args!("st.global.{ty} [{address}], {value}"));
        } else {
            let (n, list) = (values.len(), values.join(", "));
            self.ins(format_args!("st.global.v{n}.{ty} [{address}], {{{list}}}"));
        }
    }

    /// One lane of a unary op.
    fn unary(&mut self, u: Unary, x: &str) -> Reg {
        let one = hex(1.0);
        match u {
            Unary::Neg => self.op(Class::F32, "neg.f32", &[x]),
            Unary::Abs => self.op(Class::F32, "abs.f32", &[x]),
            Unary::Sqrt => self.op(Class::F32, "sqrt.rn.f32", &[x]),
            // Exactly 1 / sqrt(x), two roundings as on the CPU (rsqrt.approx is not IEEE).
            Unary::Rsqrt => {
                let root = self.op(Class::F32, "sqrt.rn.f32", &[x]);
                self.op(Class::F32, "div.rn.f32", &[&one, &root])
            }
            // 2^(x log2 e): approximate, see `emit_ptx`.
            Unary::Exp => {
                let log2_e = hex(std::f32::consts::LOG2_E);
                let scaled = self.op(Class::F32, "mul.rn.f32", &[x, &log2_e]);
                self.op(Class::F32, "ex2.approx.f32", &[&scaled])
            }
            // log2(x) ln 2: approximate, see `emit_ptx`.
            Unary::Log => {
                let log2 = self.op(Class::F32, "lg2.approx.f32", &[x]);
                let ln_2 = hex(std::f32::consts::LN_2);
                self.op(Class::F32, "mul.rn.f32", &[&log2, &ln_2])
            }
            // jnp.sign: 1 above zero, -1 below, x itself for ±0 and NaN.
            Unary::Sign => {
                let zero = hex(0.0);
                let below = self.op(Class::Pred, "setp.lt.f32", &[x, &zero]);
                let above = self.op(Class::Pred, "setp.gt.f32", &[x, &zero]);
                let negative = self.op(Class::F32, "selp.f32", &[&hex(-1.0), x, &below]);
                self.op(Class::F32, "selp.f32", &[&one, &negative, &above])
            }
            Unary::Sin | Unary::Cos | Unary::Floor => {
                unreachable!("emit_ptx rejects scalar-only ops")
            }
        }
    }
}

/// `[base]` or `[base+offset]`.
fn at(base: &str, offset: usize) -> String {
    match offset {
        0 => format!("[{base}]"),
        _ => format!("[{base}+{offset}]"),
    }
}

/// The address register of a buffer a load or store uses (always loaded: it is touched).
fn address(addresses: &[Option<Reg>], buffer: usize) -> &str {
    addresses[buffer]
        .as_deref()
        .expect("every buffer a load or store uses has a pointer")
}

#[cfg(test)]
mod tests {
    use super::*;
    use optjit_ir::{Buffer, BufferUse};

    /// `param = min(param, grad * scalar 0) + 0.5`, plus a `ne` select.
    fn small() -> Kernel {
        let v = Value;
        Kernel::elements(
            "sgd.phase0",
            vec![
                BufferUse::new(Buffer::Param, true, true),
                BufferUse::new(Buffer::Grad, true, false),
            ],
            2,
            vec![
                Inst::Load { buffer: 0 },
                Inst::Load { buffer: 1 },
                Inst::Scalar { slot: 1 },
                Inst::Const(0.5),
                Inst::Binary(Binary::Mul, v(1), v(2)),
                Inst::Binary(Binary::Min, v(0), v(4)),
                Inst::Binary(Binary::Add, v(5), v(3)),
                Inst::Binary(Binary::Sub, v(6), v(0)),
                Inst::Cmp(Cmp::Ne, v(7), v(3)),
                Inst::Select(v(8), v(7), v(6)),
                Inst::Store {
                    buffer: 0,
                    value: v(9),
                },
            ],
        )
    }

    /// `param -= 0.5 * grad`, reducing `grad` to a sum of squares (partial 0) and the new
    /// param to a largest absolute value (partial 1), the reductions mixed with the store.
    fn reducing() -> Kernel {
        let v = Value;
        Kernel::elements(
            "norms.phase0",
            vec![
                BufferUse::new(Buffer::Param, true, true),
                BufferUse::new(Buffer::Grad, true, false),
            ],
            0,
            vec![
                Inst::Load { buffer: 0 },
                Inst::Load { buffer: 1 },
                Inst::Const(-0.5),
                Inst::Fma(v(1), v(2), v(0)),
                Inst::Reduce {
                    op: ReduceOp::SumSquares,
                    slot: 0,
                    value: v(1),
                },
                Inst::Store {
                    buffer: 0,
                    value: v(3),
                },
                Inst::Reduce {
                    op: ReduceOp::MaxAbs,
                    slot: 1,
                    value: v(3),
                },
            ],
        )
    }

    fn emit(kernel: &Kernel) -> String {
        emit_ptx(kernel, &PtxOptions::default()).expect("emits")
    }

    /// Whether some instruction line starts with `prefix` and ends with `suffix`.
    fn has_line(lines: &[&str], prefix: &str, suffix: &str) -> bool {
        lines
            .iter()
            .any(|l| l.starts_with(prefix) && l.ends_with(suffix))
    }

    /// The instruction lines, without comments, labels and declarations.
    fn instructions(text: &str) -> Vec<&str> {
        text.lines()
            .map(|line| line.split("//").next().unwrap_or("").trim())
            .filter(|line| line.ends_with(';') && !line.starts_with('.'))
            .collect()
    }

    #[test]
    fn entry_names_are_ptx_identifiers() {
        let mut kernel = small();
        kernel.name = "adamw.phase0".into();
        assert_eq!(ptx_entry_name(&kernel), "adamw_phase0");
        kernel.name = "my-rule.phase12".into();
        assert_eq!(ptx_entry_name(&kernel), "my_rule_phase12");
        kernel.name = "2step.phase0".into();
        assert_eq!(ptx_entry_name(&kernel), "k2step_phase0");
        kernel.name = "é".into();
        assert_eq!(ptx_entry_name(&kernel), "k_");
        kernel.name = "adamw.phase0".into();
        let text = emit(&kernel);
        assert!(text.contains(".visible .entry adamw_phase0(\n"), "{text}");
    }

    #[test]
    fn arches_parse_and_print() {
        assert_eq!("sm_80".parse::<Arch>(), Ok(Arch::Sm80));
        assert_eq!("80".parse::<Arch>(), Ok(Arch::Sm80));
        assert_eq!("sm_90".parse::<Arch>(), Ok(Arch::Sm90));
        assert_eq!("90".parse::<Arch>(), Ok(Arch::Sm90));
        assert_eq!(Arch::default(), Arch::Sm80);
        assert_eq!(PtxOptions::default().arch, Arch::Sm80);
        for &arch in Arch::ALL {
            assert_eq!(arch.to_string().parse::<Arch>(), Ok(arch));
        }
        assert_eq!(Arch::Sm90.to_string(), "sm_90");
        let err = "sm_75".parse::<Arch>().expect_err("unsupported arch");
        assert!(err.contains("'sm_75'"), "{err}");
        assert!(err.contains("sm_80 or sm_90"), "{err}");
        assert!("sm_".parse::<Arch>().is_err());
        assert!("SM_80".parse::<Arch>().is_err());
    }

    #[test]
    fn the_header_names_version_target_and_address_size() {
        for (arch, target) in [(Arch::Sm80, ".target sm_80"), (Arch::Sm90, ".target sm_90")] {
            let text = emit_ptx(&small(), &PtxOptions { arch }).expect("emits");
            let lines: Vec<&str> = text.lines().take(7).collect();
            assert_eq!(
                lines,
                [
                    "//",
                    &format!("// optjit kernel sgd.phase0 for {arch}: 2 buffer(s), 2 scalar(s)"),
                    "//",
                    ".version 8.0",
                    target,
                    ".address_size 64",
                    "",
                ],
                "{text}"
            );
            assert!(
                text.contains(concat!(
                    "(\n    .param .u64 table,\n    .param .u64 n_records,\n",
                    "    .param .u64 partials\n)\n.maxntid 256, 1, 1\n{\n"
                )),
                "{text}"
            );
            assert!(text.ends_with("    ret;\n}\n"), "{text}");
        }
    }

    /// Every register class in use is declared with the exact count: every register below
    /// it is used, and none at or above it.
    fn assert_registers_declared_exactly(text: &str) {
        for (ty, prefix) in [
            (".pred", "%p"),
            (".b32", "%r"),
            (".b64", "%rd"),
            (".f32", "%f"),
            (".f64", "%fd"),
        ] {
            let declared: usize = text
                .lines()
                .find_map(|l| l.trim().strip_prefix(&format!(".reg {ty} {prefix}<")))
                .and_then(|rest| rest.strip_suffix(">;"))
                .map_or(0, |count| count.parse().expect("a count"));
            let used = |n: usize| {
                text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '%'))
                    .any(|token| token == format!("{prefix}{n}"))
            };
            assert!((0..declared).all(used), "{ty}: {declared} declared\n{text}");
            assert!(!used(declared), "{ty}: {declared} declared\n{text}");
        }
    }

    #[test]
    fn output_is_deterministic_and_registers_are_declared_exactly() {
        let text = emit(&small());
        assert_eq!(text, emit(&small()));
        for ty in [".pred", ".b32", ".b64", ".f32"] {
            assert!(text.contains(&format!("    .reg {ty} ")), "{ty}\n{text}");
        }
        assert!(!text.contains(".f64"), "{text}");
        assert_registers_declared_exactly(&text);
    }

    #[test]
    fn add_sub_and_mul_always_round_to_nearest() {
        let text = emit(&small());
        let arithmetic: Vec<&str> = instructions(&text)
            .into_iter()
            .filter(|line| {
                let op = line.split_whitespace().next().unwrap_or("");
                ["add.", "sub.", "mul."].iter().any(|p| op.starts_with(p)) && op.ends_with(".f32")
            })
            .collect();
        // mul v1, v2; add v5, v3; sub v6, v0: once in the vector loop (4 lanes), once in the tail.
        assert_eq!(arithmetic.len(), 3 * 5, "{arithmetic:#?}");
        for line in arithmetic {
            assert!(line.contains(".rn.f32 "), "{line}");
        }
        assert!(text.contains("min.NaN.f32"), "{text}");
        assert!(!text.contains("fma"), "no contraction in the text\n{text}");
    }

    #[test]
    fn constants_are_exact_hex_literals() {
        let mut kernel = small();
        kernel.insts[3] = Inst::Const(0.1);
        let text = emit(&kernel);
        assert!(
            text.contains(&format!("mov.f32 %f0, 0f{:08X};", 0.1f32.to_bits())),
            "{text}"
        );
        assert!(text.contains("0f3DCCCCCD"), "{text}");
        // No decimal float literal in any instruction (comments show the kernel IR text).
        for line in instructions(&text) {
            let decimal = line.split([' ', ',', ';']).any(|token| {
                token.contains('.') && token.chars().next().is_some_and(|c| c.is_ascii_digit())
            });
            assert!(!decimal, "{line}");
        }
        assert!(text.contains("// v3 = const 0.1\n"), "{text}");
    }

    #[test]
    fn comparisons_are_ordered_except_ne() {
        let text = emit(&small());
        assert!(text.contains("setp.neu.f32"), "{text}");
        assert!(!text.contains("setp.ne.f32"), "{text}");
        let mut kernel = small();
        for (cmp, op) in [
            (Cmp::Lt, "setp.lt.f32"),
            (Cmp::Le, "setp.le.f32"),
            (Cmp::Gt, "setp.gt.f32"),
            (Cmp::Ge, "setp.ge.f32"),
            (Cmp::Eq, "setp.eq.f32"),
        ] {
            kernel.insts[8] = Inst::Cmp(cmp, Value(7), Value(3));
            let text = emit(&kernel);
            assert_eq!(text.matches(op).count(), 5, "{op}\n{text}");
            assert!(!text.contains(".neu"), "{text}");
        }
    }

    #[test]
    fn read_only_buffers_use_the_non_coherent_path() {
        let text = emit(&small());
        let lines = instructions(&text);
        let has = |prefix: &str| lines.iter().filter(|l| l.starts_with(prefix)).count();
        assert_eq!(
            has("ld.global.v4.f32 "),
            1,
            "param in the vector loop\n{text}"
        );
        assert_eq!(
            has("ld.global.nc.v4.f32 "),
            1,
            "grad in the vector loop\n{text}"
        );
        assert_eq!(has("st.global.v4.f32 "), 1, "{text}");
        assert_eq!(has("ld.global.f32 "), 1, "param in the tail\n{text}");
        assert_eq!(
            has("ld.global.nc.f32 "),
            2,
            "grad in the tail, scalar 1\n{text}"
        );
        assert_eq!(has("st.global.f32 "), 1, "{text}");
        // Only slot 1 of the row is read; 64-bit index arithmetic.
        assert!(text.contains("ld.global.nc.f32 %f1, [%rd"), "{text}");
        assert!(text.contains("+4];"), "{text}");
        assert!(text.contains("mad.lo.u64 "), "{text}");
        assert!(text.contains("shl.b64 "), "{text}");
        assert!(text.contains("and.b64 "), "alignment test\n{text}");
        assert!(text.contains("    // v4 = mul v1, v2\n"), "{text}");
        assert!(text.contains("    // store param, v9\n"), "{text}");
    }

    #[test]
    fn values_of_constants_and_scalars_are_computed_once() {
        let v = Value;
        let kernel = Kernel::elements(
            "hoist.phase0",
            vec![BufferUse::new(Buffer::Param, true, true)],
            1,
            vec![
                Inst::Load { buffer: 0 },
                Inst::Scalar { slot: 0 },
                Inst::Const(1.0),
                Inst::Binary(Binary::Sub, v(2), v(1)),
                Inst::Binary(Binary::Add, v(2), v(2)),
                Inst::Binary(Binary::Mul, v(0), v(3)),
                Inst::Fma(v(5), v(4), v(0)),
                Inst::Store {
                    buffer: 0,
                    value: v(6),
                },
            ],
        );
        let text = emit(&kernel);
        let (launch, rest) = text.split_once("$L_record:").expect("a record loop");
        let (record, elements) = rest.split_once("$L_vector:").expect("a vector loop");
        // `add v2, v2` per launch, `sub v2, v1` per record, the rest per element.
        assert_eq!(launch.matches("add.rn.f32").count(), 1, "{text}");
        assert_eq!(record.matches("sub.rn.f32").count(), 1, "{text}");
        assert!(!elements.contains("sub.rn.f32") && !elements.contains("add.rn.f32"));
        assert_eq!(elements.matches("mul.rn.f32").count(), 4 + 1, "{text}");
        assert_eq!(elements.matches("fma.rn.f32").count(), 4 + 1, "{text}");
    }

    #[test]
    fn a_kernel_without_scalars_reads_no_row() {
        let mut kernel = small();
        kernel.n_scalars = 0;
        kernel.insts[2] = Inst::Const(-2.0);
        let text = emit(&kernel);
        assert!(!text.contains("// the scalar row"), "{text}");
        // Record words 0 (len), 2 and 3 (buffers); never word 1.
        assert!(!text.contains("+8]"), "{text}");
        assert!(text.contains("+16]"), "{text}");
        assert!(text.contains("+24]"), "{text}");
        // The only scalar non-coherent load is grad's in the tail.
        assert_eq!(text.matches("ld.global.nc.f32 ").count(), 1, "{text}");
        assert!(text.contains(&hex(-2.0)), "{text}");
    }

    #[test]
    fn pow_is_refused() {
        let mut kernel = small();
        kernel.insts[5] = Inst::Binary(Binary::Pow, Value(0), Value(4));
        let err = emit_ptx(&kernel, &PtxOptions::default()).expect_err("pow");
        assert_eq!(
            err.to_string(),
            "cannot emit kernel sgd.phase0 for ptx: pow per element has no PTX lowering yet"
        );
    }

    #[test]
    fn other_dtypes_and_malformed_kernels_are_refused() {
        let mut kernel = small();
        kernel.elem_dtype = DType::F64;
        let err = emit_ptx(&kernel, &PtxOptions::default()).expect_err("f64");
        assert!(err.to_string().contains("f64 elements"), "{err}");
        assert_eq!(err.target, "ptx");

        let mut kernel = small();
        kernel.insts[4] = Inst::Unary(Unary::Floor, Value(1));
        let err = emit_ptx(&kernel, &PtxOptions::default()).expect_err("scalar-only op");
        assert!(
            err.to_string().contains("floor is not a per-element op"),
            "{err}"
        );

        let mut kernel = small();
        kernel.insts.push(Inst::Const(1.0));
        let err = emit_ptx(&kernel, &PtxOptions::default()).expect_err("after a store");
        assert!(err.to_string().contains("after a store"), "{err}");
    }

    #[test]
    fn unary_ops_follow_the_kernel_ir_semantics() {
        let mut kernel = small();
        let text_of = |kernel: &mut Kernel, u: Unary| {
            kernel.insts[5] = Inst::Unary(u, Value(4));
            emit(kernel)
        };
        let rsqrt = text_of(&mut kernel, Unary::Rsqrt);
        assert!(!rsqrt.contains("rsqrt.approx"), "{rsqrt}");
        assert!(
            rsqrt.contains("div.rn.f32 %f") && rsqrt.contains(", 0f3F800000, %f"),
            "{rsqrt}"
        );
        let exp = text_of(&mut kernel, Unary::Exp);
        assert!(exp.contains("ex2.approx.f32"), "{exp}");
        assert!(exp.contains(&hex(std::f32::consts::LOG2_E)), "{exp}");
        let log = text_of(&mut kernel, Unary::Log);
        assert!(log.contains("lg2.approx.f32"), "{log}");
        assert!(log.contains(&hex(std::f32::consts::LN_2)), "{log}");
        for text in [&rsqrt, &exp, &log] {
            assert!(!text.contains(".ftz"), "subnormals are kept\n{text}");
        }
        let sign = text_of(&mut kernel, Unary::Sign);
        assert!(sign.contains("setp.lt.f32"), "{sign}");
        assert!(sign.contains("setp.gt.f32"), "{sign}");
        assert!(sign.contains(&hex(-1.0)), "{sign}");
    }

    #[test]
    fn kernels_without_reductions_ignore_partials() {
        let text = emit(&small());
        assert!(text.contains("    .param .u64 partials\n)\n.maxntid 256, 1, 1\n"));
        for absent in [
            "[partials]",
            ".shared",
            "shfl",
            "bar.sync",
            "$L_reduce",
            ".reqntid",
        ] {
            assert!(!text.contains(absent), "{absent}\n{text}");
        }
        assert!(text.contains(" bra $L_next;\n$L_tail:\n"), "{text}");
    }

    #[test]
    fn reductions_are_emitted_deterministically() {
        let text = emit(&reducing());
        assert_eq!(text, emit(&reducing()));
        assert_registers_declared_exactly(&text);
        for arch in Arch::ALL {
            let other = emit_ptx(&reducing(), &PtxOptions { arch: *arch }).expect("emits");
            assert_eq!(other.replace(arch.name(), "sm_80"), text);
        }
        // Exactly 256 threads, 8 warps' f32 values per partial in shared memory.
        assert!(text.contains(")\n.reqntid 256, 1, 1\n{\n"), "{text}");
        assert!(!text.contains(".maxntid"), "{text}");
        assert!(
            text.contains("    .shared .align 16 .f32 warp_partials[16];\n\n"),
            "{text}"
        );
        assert!(text.contains("ld.param.u64 %rd7, [partials];"), "{text}");
    }

    #[test]
    fn every_element_is_folded_with_round_to_nearest() {
        let text = emit(&reducing());
        let (_, elements) = text.split_once("$L_vector:").expect("a vector loop");
        let (elements, block) = elements.split_once("$L_reduce:").expect("a reduction");
        let count = |op: &str| elements.matches(op).count();
        // Partial 0 squares grad, partial 1 takes |new param|: 4 lanes, then 1 in the tail.
        assert_eq!(count("mul.rn.f32 "), 4 + 1, "{elements}");
        assert_eq!(count("add.rn.f32 %f0, %f0, %f"), 4 + 1, "{elements}");
        assert_eq!(count("abs.f32 "), 4 + 1, "{elements}");
        assert_eq!(count("max.NaN.f32 %f1, %f1, %f"), 4 + 1, "{elements}");
        // Only the kernel's own fma: the square and the add are never contracted.
        assert_eq!(count("fma.rn.f32 "), 4 + 1, "{elements}");
        // Both accumulators start at 0 in every record, after the empty test.
        let (_, record) = text.split_once("$L_record:").expect("a record loop");
        let (record, _) = record.split_once("$L_vector:").expect("a vector loop");
        let zeroed = "    mov.f32 %f0, 0f00000000;\n    mov.f32 %f1, 0f00000000;\n";
        let empty = record.find("bra.uni $L_next").expect("the empty test");
        assert!(record.find(zeroed).is_some_and(|at| at > empty), "{record}");
        // The tail exits to the block reduction, which every thread reaches.
        assert!(elements.contains("bra $L_reduce;"), "{elements}");
        assert!(!elements.contains("$L_next"), "{elements}");
        assert!(block.contains("$L_next:"), "{block}");
    }

    #[test]
    fn the_block_reduction_is_a_fixed_tree() {
        let text = emit(&reducing());
        let (_, block) = text.split_once("$L_reduce:\n").expect("a reduction");
        let (block, _) = block.split_once("$L_next:").expect("the next record");
        let lines = instructions(block);
        // Per partial, the warp tree: shuffles by 16, 8, 4, 2, 1, each combined at once.
        let shuffles: Vec<&str> = lines
            .iter()
            .filter(|l| l.starts_with("shfl.sync.down.b32 "))
            .map(|l| l.split(", ").nth(2).expect("an offset"))
            .collect();
        assert_eq!(
            shuffles,
            ["16", "8", "4", "2", "1", "16", "8", "4", "2", "1"]
        );
        for line in lines.iter().filter(|l| l.starts_with("shfl")) {
            assert!(line.ends_with(", 31, 0xffffffff;"), "{line}");
        }
        assert_eq!(block.matches("add.rn.f32 ").count(), 5, "{block}");
        assert_eq!(block.matches("max.NaN.f32 ").count(), 5 + 7, "{block}");
        // Lane 0 of every warp stores; two barriers around thread 0's combine.
        let stores: Vec<&&str> = lines.iter().filter(|l| l.contains("st.shared")).collect();
        assert_eq!(
            stores,
            [
                &"@%p0 st.shared.f32 [%r8], %f37;",
                &"@%p0 st.shared.f32 [%r8+32], %f47;"
            ]
        );
        let (before, combine) = block.split_once("bar.sync 0;").expect("a first barrier");
        let (combine, after) = combine.split_once("bar.sync 0;").expect("a second barrier");
        assert!(before.contains("st.shared") && !after.contains("bar.sync"));
        assert!(combine.contains("@!%p1 bra $L_combined;"), "{combine}");
        assert!(combine.contains("\n$L_combined:\n"), "{combine}");
        // Thread 0: the warps in order; sums in f64, the largest absolute value in f32.
        let reads = instructions(combine)
            .into_iter()
            .filter(|l| l.starts_with("ld.shared.v4.f32 "))
            .map(|l| l.rsplit(' ').next().expect("an address"))
            .collect::<Vec<_>>();
        assert_eq!(
            reads,
            [
                "[warp_partials];",
                "[warp_partials+16];",
                "[warp_partials+32];",
                "[warp_partials+48];"
            ]
        );
        assert_eq!(combine.matches("cvt.f64.f32 ").count(), 8 + 1, "{combine}");
        assert_eq!(combine.matches("add.rn.f64 ").count(), 7, "{combine}");
        assert!(
            combine.contains("add.rn.f64 %fd8, %fd0, %fd1;"),
            "{combine}"
        );
        assert!(
            combine.contains("add.rn.f64 %fd14, %fd13, %fd7;"),
            "{combine}"
        );
        // partials[r * 2 + j]: the record's row of two f64s.
        assert!(text.contains("mad.lo.u64 %rd28, %rd3, 16, %rd8;"), "{text}");
        assert!(
            combine.contains("st.global.f64 [%rd28], %fd14;"),
            "{combine}"
        );
        assert!(
            combine.contains("st.global.f64 [%rd28+8], %fd15;"),
            "{combine}"
        );
    }

    #[test]
    fn a_reduction_of_a_uniform_value_is_folded_per_element() {
        // sum of the constant 1 counts the elements; the reduction is never hoisted.
        let kernel = Kernel::elements(
            "count.phase0",
            vec![],
            0,
            vec![
                Inst::Const(1.0),
                Inst::Reduce {
                    op: ReduceOp::Sum,
                    slot: 0,
                    value: Value(0),
                },
            ],
        );
        let text = emit(&kernel);
        let (_, elements) = text.split_once("$L_vector:").expect("a vector loop");
        let (elements, _) = elements.split_once("$L_reduce:").expect("a reduction");
        assert_eq!(
            elements.matches("add.rn.f32 %f0, %f0, %f1;").count(),
            4 + 1,
            "{text}"
        );
    }

    /// A column walk of `grad`: its sum per row (slot 0), its largest absolute value per
    /// column (slot 1) and its sum of squares over the record (slot 2).
    fn column_walk() -> Kernel {
        let reduce = |op, slot| Inst::Reduce {
            op,
            slot,
            value: Value(0),
        };
        Kernel {
            walk: optjit_ir::Walk::Columns,
            scopes: vec![ReduceScope::Row, ReduceScope::Column, ReduceScope::Record],
            name: "means.phase0".into(),
            elem_dtype: DType::F32,
            buffers: vec![BufferUse::new(Buffer::Grad, true, false)],
            n_scalars: 0,
            insts: vec![
                Inst::Load { buffer: 0 },
                reduce(ReduceOp::Sum, 0),
                reduce(ReduceOp::MaxAbs, 1),
                reduce(ReduceOp::SumSquares, 2),
            ],
        }
    }

    #[test]
    fn a_column_walk_reads_its_extra_words_and_places_each_scope() {
        let kernel = column_walk();
        let text = emit(&kernel);
        assert_registers_declared_exactly(&text);
        // 2 + 1 buffer words, then stride, width and first.
        assert_eq!(kernel.record_words(), 6);
        assert!(text.contains("mad.lo.u64 %rd9, %rd3, 48, %rd1;"), "{text}");
        for (word, reg) in [(24, "stride"), (32, "width"), (40, "first")] {
            let load = format!("[%rd9+{word}];");
            assert!(text.contains(&load), "{reg} at word {}\n{text}", word / 8);
        }
        let (_, walk) = text.split_once("$L_row:").expect("a row loop");
        let (row, rest) = walk.split_once("$L_row_done:").expect("a row end");
        let (row_end, record_end) = rest.split_once("bra.uni $L_row;").expect("a back edge");
        // In the column loop: element by element, the column's max in f64 in global memory
        // (NaN put back), the row sum in the thread's accumulator, nothing shuffled.
        let row = instructions(row);
        let loads = row
            .iter()
            .filter(|l| l.starts_with("ld.global.nc.f32 %f3, ["));
        assert_eq!(loads.count(), 1, "{row:?}");
        for op in ["ld.global.f64", "max.f64", "setp.nan.f64", "st.global.f64"] {
            assert_eq!(row.iter().filter(|l| l.starts_with(op)).count(), 1, "{op}");
        }
        assert!(row.contains(&"add.rn.f32 %f0, %f0, %f3;"), "{row:?}");
        assert!(
            !row.iter()
                .any(|l| l.contains("shfl") || l.contains("bar.sync"))
        );
        // At each row's end: slot 0 only, through the block, stored at 8 * i.
        assert_eq!(
            row_end.matches("shfl.sync.down.b32").count(),
            5,
            "{row_end}"
        );
        assert_eq!(row_end.matches("bar.sync 0;").count(), 2, "{row_end}");
        assert!(
            row_end.contains("[%r8], "),
            "slot 0's shared memory\n{row_end}"
        );
        assert!(row_end.contains("mov.f32 %f0, 0f00000000;"), "{row_end}");
        // At the record's end: slot 2 only (shared memory at 4 * 8 * 2 bytes).
        assert_eq!(record_end.matches("shfl.sync.down.b32").count(), 5);
        assert!(record_end.contains("[%r8+64], "), "{record_end}");
        assert!(record_end.contains("$L_record_combined:"));
        assert!(
            !text.contains("$L_vector"),
            "no vector path in a column walk"
        );
    }

    #[test]
    fn half_precision_is_stored_in_16_bits_and_computed_in_f32() {
        for (dtype, widen, narrow) in [
            (DType::F16, "cvt.f32.f16 %f", "cvt.rn.f16.f32 %h"),
            (DType::BF16, "mov.b32 %f", "cvt.rn.bf16.f32 %h"),
        ] {
            let mut kernel = small();
            kernel.elem_dtype = dtype;
            let text = emit(&kernel);
            assert_registers_declared_exactly(&text);
            let lines = instructions(&text);
            let count = |prefix: &str| lines.iter().filter(|l| l.starts_with(prefix)).count();
            // param and grad: one vector and one scalar load each, 4 + 1 lanes widened.
            assert_eq!(count("ld.global.v4.b16 "), 1, "{dtype}\n{text}");
            assert_eq!(count("ld.global.nc.v4.b16 "), 1, "{dtype}\n{text}");
            assert_eq!(count("ld.global.b16 ") + count("ld.global.nc.b16 "), 2);
            assert_eq!(count(widen), 2 * 5, "{dtype}\n{text}");
            assert_eq!(count(narrow), 5, "{dtype}\n{text}");
            assert_eq!(count("st.global.v4.b16 "), 1, "{dtype}\n{text}");
            assert_eq!(count("st.global.b16 "), 1, "{dtype}\n{text}");
            assert!(!text.contains(".f32 {"), "no f32 vector access\n{text}");
            // 4 elements of 2 bytes: the vector path needs 8-byte alignment, 8 bytes a group.
            assert!(has_line(&lines, "and.b64 ", ", 7;"));
            assert!(has_line(&lines, "shl.b64 ", ", 3;"));
            // The arithmetic stays f32.
            assert_eq!(count("mul.rn.f32 "), 5, "{dtype}\n{text}");
        }
    }

    #[test]
    fn scratch_buffers_stay_f32_under_half_precision_storage() {
        let mut kernel = small();
        kernel.elem_dtype = DType::BF16;
        kernel.buffers[1].buffer = Buffer::Temp(0);
        assert_eq!(kernel.storage(0), DType::BF16);
        assert_eq!(kernel.storage(1), DType::F32);
        let text = emit(&kernel);
        let lines = instructions(&text);
        // param in 16 bits, tmp0 in 32, and both 4-element aligned for the vector path.
        assert!(lines.iter().any(|l| l.starts_with("ld.global.v4.b16 ")));
        assert!(lines.iter().any(|l| l.starts_with("ld.global.nc.v4.f32 ")));
        assert!(has_line(&lines, "and.b64 ", ", 7;"));
        assert!(has_line(&lines, "and.b64 ", ", 15;"));
    }
}
