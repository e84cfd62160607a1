//! The Cranelift emitter: a kernel becomes one CLIF function that walks a chunk table, with a
//! main loop of 4 independent f32x4 vectors, an f32x4 loop and a scalar tail per chunk.
//!
//! Cranelift's x86-64 backend has 128-bit vectors only, so the main loop handles 16 elements per
//! iteration as four independent vectors: more loads in flight and a quarter of the loop
//! overhead, which is what a memory-bound step needs from a 4-lane machine.

use crate::abi::ChunkAbi;
use crate::kernel::{self, Inst, Kernel, ReduceOp, ReduceScope};
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::immediates::Ieee32;
use cranelift_codegen::ir::{
    AbiParam, ExtFuncData, ExternalName, FuncRef, Function, InstBuilder, MemFlagsData, Signature,
    StackSlotData, StackSlotKind, Type, UserExternalName, UserFuncName, Value, types,
};
use cranelift_codegen::isa::{CallConv, TargetIsa};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use optjit_ir::{Binary, Cmp, DType, Unary, Walk};
use thiserror::Error;

/// The per-element functions that have no vector instruction, called lane by lane with the
/// signatures `(f32) -> f32` (`expf`, `logf`) and `(f32, f32) -> f32` (`powf`).
///
/// A function names `LIBCALLS[i]` as `UserExternalName { namespace: 0, index: i }`: a loader
/// must declare them first, in this order, so that their module function ids are `0, 1, 2`.
pub const LIBCALLS: &[&str] = &["optjit_expf", "optjit_logf", "optjit_powf"];

/// Independent f32x4 vectors per iteration of the main loop.
pub const UNROLL: usize = 4;

/// Bytes of one scalar in a record's splatted copy of its scalar row: the value in each of the
/// four lanes of an f32x4 (see `Emitter::body`).
const SPLAT_BYTES: usize = 16;

/// Lanes of the vector type (`f32x4`).
const LANES: usize = 4;

/// A kernel an emitter (Cranelift or PTX) cannot express.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[error("cannot emit kernel {kernel} for {target}: {reason}")]
pub struct EmitError {
    /// The kernel's name.
    pub kernel: String,
    /// The emitter's target: `cranelift` or `ptx`.
    pub target: &'static str,
    /// Why.
    pub reason: String,
}

/// Builds the Cranelift function of `kernel` for `isa`, with the [`ChunkAbi`] signature.
///
/// The function is not compiled or verified here (the loader does both); its text
/// (`function.display()`) is deterministic.
pub fn emit_clif(kernel: &Kernel, isa: &dyn TargetIsa) -> Result<Function, EmitError> {
    let fail = |reason: String| EmitError {
        kernel: kernel.name.clone(),
        target: "cranelift",
        reason,
    };
    kernel.validate().map_err(fail)?;
    if kernel.elem_dtype != DType::F32 {
        let dtype = kernel.elem_dtype;
        return Err(fail(format!(
            "{dtype} elements (the CPU backend is f32 only; f16 and bf16 run on CUDA)"
        )));
    }
    if isa.pointer_type() != types::I64 {
        return Err(fail("this emitter needs a 64-bit target".to_string()));
    }

    let call_conv = isa.default_call_conv();
    let mut signature = Signature::new(call_conv);
    for ty in [types::I64, types::I64, types::I64, types::I64] {
        signature.params.push(AbiParam::new(ty));
    }
    // Testcase names must be ASCII alphanumerics or '_'.
    let name: String = kernel
        .name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let mut func = Function::with_name_signature(UserFuncName::testcase(name), signature);
    let libcalls = import_libcalls(&mut func, kernel, call_conv);
    let mut fctx = FunctionBuilderContext::new();
    let mut b = FunctionBuilder::new(&mut func, &mut fctx);
    Emitter {
        kernel,
        libcalls,
        flags: MemFlagsData::new().with_notrap(),
    }
    .build(&mut b);
    b.seal_all_blocks();
    b.finalize(isa.frontend_config());
    Ok(func)
}

/// Imports the libcalls `kernel` uses, in [`LIBCALLS`] order.
fn import_libcalls(
    func: &mut Function,
    kernel: &Kernel,
    call_conv: CallConv,
) -> [Option<FuncRef>; 3] {
    let mut refs = [None; 3];
    for (index, refs_slot) in refs.iter_mut().enumerate() {
        let used = kernel
            .insts
            .iter()
            .any(|inst| libcall_of(inst) == Some(index));
        if !used {
            continue;
        }
        let arity = if index == 2 { 2 } else { 1 };
        let mut sig = Signature::new(call_conv);
        for _ in 0..arity {
            sig.params.push(AbiParam::new(types::F32));
        }
        sig.returns.push(AbiParam::new(types::F32));
        let signature = func.import_signature(sig);
        let name = func.declare_imported_user_function(UserExternalName::new(0, index as u32));
        *refs_slot = Some(func.import_function(ExtFuncData {
            name: ExternalName::user(name),
            signature,
            colocated: false,
            patchable: false,
        }));
    }
    refs
}

/// Whether `inst` compares two scalars (scalar slots or constants): the same for every element
/// (see `Emitter::body`).
fn invariant_compare(kernel: &Kernel, inst: &Inst) -> bool {
    let scalar = |v: kernel::Value| {
        matches!(
            kernel.insts[v.index()],
            Inst::Scalar { .. } | Inst::Const(_)
        )
    };
    matches!(*inst, Inst::Cmp(_, x, y) if scalar(x) && scalar(y))
}

/// The [`LIBCALLS`] index an instruction calls, if any.
fn libcall_of(inst: &Inst) -> Option<usize> {
    match inst {
        Inst::Unary(Unary::Exp, _) => Some(0),
        Inst::Unary(Unary::Log, _) => Some(1),
        Inst::Binary(Binary::Pow, ..) => Some(2),
        _ => None,
    }
}

/// What stays fixed while one function is built.
struct Emitter<'a> {
    kernel: &'a Kernel,
    libcalls: [Option<FuncRef>; 3],
    flags: MemFlagsData,
}

/// What [`Emitter::record_loop`] leaves the walk's setup block with.
struct RecordStart {
    /// The record's index.
    r: Value,
    /// The record's address in the table.
    record: Value,
    /// Its element count (rows in a column walk).
    len: Value,
    /// `r + 1`.
    next_record: Value,
    /// The partials argument.
    partials: Value,
    /// Each buffer's pointer.
    bases: Vec<Value>,
    /// The scalar row, when the kernel reads scalars.
    row: Option<Value>,
}

/// One element loop: its blocks, bound and shape.
struct Loop {
    head: cranelift_codegen::ir::Block,
    body: cranelift_codegen::ir::Block,
    /// Where the loop exits to, with the next index (or the next record).
    exit: cranelift_codegen::ir::Block,
    /// The loop runs while `i < bound`.
    bound: Value,
    /// Independent vectors (or scalars) per iteration.
    copies: usize,
    /// `F32X4` or `F32`.
    ty: Type,
}

impl Emitter<'_> {
    /// Emits the whole function body into `b` (blocks sealed by the caller).
    fn build(&self, b: &mut FunctionBuilder) {
        let kernel = self.kernel;
        let mf = self.flags;
        if kernel.walk == Walk::Columns {
            return self.build_columns(b);
        }
        let entry = b.create_block();
        let [rec_head, rec_body, rec_setup] = std::array::from_fn(|_| b.create_block());
        let [
            wide_head,
            wide_body,
            vec_head,
            vec_body,
            tail_head,
            tail_body,
        ] = std::array::from_fn(|_| b.create_block());
        let reductions = kernel.reductions();
        // Only a kernel that reduces has a block that writes partials between records.
        let rec_done = (!reductions.is_empty()).then(|| b.create_block());
        let exit = b.create_block();
        b.append_block_params_for_function_params(entry);
        for block in [rec_head, rec_body, rec_setup] {
            b.append_block_param(block, types::I64);
        }
        let accumulators = Accumulators::new(reductions.len());
        for block in [
            wide_head, wide_body, vec_head, vec_body, tail_head, tail_body,
        ] {
            b.append_block_param(block, types::I64);
            accumulators.append_params(b, block);
        }
        if let Some(rec_done) = rec_done {
            accumulators.append_params(b, rec_done);
        }

        let RecordStart {
            r,
            record: _,
            len,
            next_record,
            partials,
            bases,
            row,
        } = self.record_loop(b, [entry, rec_head, rec_body, rec_setup, exit]);
        // rec_setup(r), continued: the loop bounds.
        let wide_bound = b.ins().band_imm_s(len, !((UNROLL * LANES) as i64 - 1));
        let vec_bound = b.ins().band_imm_s(len, !(LANES as i64 - 1));
        let zero = b.ins().iconst(types::I64, 0);
        let mut start = vec![zero];
        start.extend(accumulators.zeros(b));
        b.ins().jump(wide_head, &args(&start));

        let loops = [
            Loop {
                head: wide_head,
                body: wide_body,
                exit: vec_head,
                bound: wide_bound,
                copies: UNROLL,
                ty: types::F32X4,
            },
            Loop {
                head: vec_head,
                body: vec_body,
                exit: tail_head,
                bound: vec_bound,
                copies: 1,
                ty: types::F32X4,
            },
            Loop {
                head: tail_head,
                body: tail_body,
                exit: rec_head,
                bound: len,
                copies: 1,
                ty: types::F32,
            },
        ];
        for l in &loops {
            b.switch_to_block(l.head);
            let params = b.block_params(l.head).to_vec();
            let (i, accs) = (params[0], &params[1..]);
            let more = b.ins().icmp(IntCC::UnsignedLessThan, i, l.bound);
            let mut inside = vec![i];
            inside.extend(accs);
            // The tail exits to the next record (through `rec_done` when the kernel reduces);
            // the vector loops hand their index on.
            let (exit, outside) = match (l.exit == rec_head, rec_done) {
                (true, None) => (rec_head, vec![next_record]),
                (true, Some(rec_done)) => (rec_done, accs.to_vec()),
                (false, _) => (l.exit, inside.clone()),
            };
            b.ins()
                .brif(more, l.body, &args(&inside), exit, &args(&outside));

            b.switch_to_block(l.body);
            let params = b.block_params(l.body).to_vec();
            let (i, accs) = (params[0], &params[1..]);
            let byte_offset = b.ins().ishl_imm_u(i, 2);
            let addresses: Vec<Value> = bases
                .iter()
                .map(|&base| b.ins().iadd(base, byte_offset))
                .collect();
            let accs = self.body(b, l, &addresses, row, accs);
            let lanes = if l.ty == types::F32 { 1 } else { LANES };
            let step = (l.copies * lanes) as i64;
            let mut next = vec![b.ins().iadd_imm_u(i, step)];
            next.extend(accs);
            b.ins().jump(l.head, &args(&next));
        }

        // rec_done(accs): the record's partials, then the next record.
        if let Some(rec_done) = rec_done {
            b.switch_to_block(rec_done);
            let accs = b.block_params(rec_done).to_vec();
            let row_bytes = (8 * reductions.len()) as i64;
            let offset = b.ins().imul_imm_u(r, row_bytes);
            let out = b.ins().iadd(partials, offset);
            for (slot, &op) in reductions.iter().enumerate() {
                let partial = accumulators.combine(b, op, slot, &accs);
                b.ins().store(mf, partial, out, (8 * slot) as i32);
            }
            b.ins().jump(rec_head, &[next_record.into()]);
        }

        b.switch_to_block(exit);
        b.ins().return_(&[]);
    }

    /// Emits the walk over records shared by both kinds of walk: `entry(table, begin, end,
    /// partials)` jumps to `rec_head(r)` for `r` in `begin..end`; `rec_body(r)` reads the
    /// record's length and skips an empty record before anything else is read; `setup(r)`,
    /// left current, loads the buffer pointers and (when the kernel reads scalars) the scalar
    /// row. `exit` is where the walk ends (left empty).
    fn record_loop(
        &self,
        b: &mut FunctionBuilder,
        blocks: [cranelift_codegen::ir::Block; 5],
    ) -> RecordStart {
        let kernel = self.kernel;
        let mf = self.flags;
        let [entry, rec_head, rec_body, setup, exit] = blocks;
        let record_bytes = (kernel.record_words() * 8) as i64;
        b.switch_to_block(entry);
        let params = b.block_params(entry).to_vec();
        let (table, begin, end, partials) = (params[0], params[1], params[2], params[3]);
        b.ins().jump(rec_head, &[begin.into()]);

        b.switch_to_block(rec_head);
        let r = b.block_params(rec_head)[0];
        let more = b.ins().icmp(IntCC::UnsignedLessThan, r, end);
        b.ins().brif(more, rec_body, &[r.into()], exit, &[]);

        b.switch_to_block(rec_body);
        let r = b.block_params(rec_body)[0];
        let offset = b.ins().imul_imm_u(r, record_bytes);
        let record = b.ins().iadd(table, offset);
        let len = b.ins().load(types::I64, mf, record, 0);
        let next_record = b.ins().iadd_imm_u(r, 1);
        b.ins()
            .brif(len, setup, &[r.into()], rec_head, &[next_record.into()]);

        b.switch_to_block(setup);
        let bases: Vec<Value> = (0..kernel.buffers.len())
            .map(|i| {
                let word = (ChunkAbi::BUFFERS_WORD + i) * 8;
                b.ins().load(types::I64, mf, record, word as i32)
            })
            .collect();
        // The scalar row, copied with every value splatted (see `body`).
        let uses_row = kernel
            .insts
            .iter()
            .any(|inst| matches!(inst, Inst::Scalar { .. }));
        let row = uses_row.then(|| {
            let word = ChunkAbi::SCALARS_WORD * 8;
            let row = b.ins().load(types::I64, mf, record, word as i32);
            let bytes = u32::try_from(SPLAT_BYTES * kernel.n_scalars).expect("validated");
            let splats = b.create_sized_stack_slot(StackSlotData::new(
                StackSlotKind::ExplicitSlot,
                bytes,
                SPLAT_BYTES.trailing_zeros() as u8,
            ));
            let copy = b.ins().stack_addr(types::I64, splats, 0);
            for slot in 0..kernel.n_scalars {
                let x = b.ins().load(types::F32, mf, row, (4 * slot) as i32);
                let splat = b.ins().splat(types::F32X4, x);
                let offset = (SPLAT_BYTES * slot) as i32;
                b.ins().store(mf.with_aligned(), splat, copy, offset);
            }
            copy
        });
        RecordStart {
            r,
            record,
            len,
            next_record,
            partials,
            bases,
            row,
        }
    }

    /// Emits the body of a column walk (see [`ChunkAbi`]): a record is `len` whole rows of one
    /// matrix, `stride` bytes apart, `width` columns each, walked row by row like an element
    /// walk (16 columns per iteration as four f32x4, then a scalar tail). Per-column values are
    /// added into the record's column partials as f32 (in the first half of their f64 slots,
    /// zero-filled by the caller) and widened to f64 in place at the end of the record;
    /// per-row partials fold each row's lanes in f64; the record's partial folds every lane at
    /// the end.
    fn build_columns(&self, b: &mut FunctionBuilder) {
        let kernel = self.kernel;
        let mf = self.flags;
        let reductions = kernel.reductions();
        let accumulators = Accumulators::new(reductions.len());
        let [entry, rec_head, rec_body, setup, exit] = std::array::from_fn(|_| b.create_block());
        let [
            row_head,
            col_head,
            col_body,
            tail_head,
            tail_body,
            row_done,
            rec_done,
        ] = std::array::from_fn(|_| b.create_block());
        let [widen_head, widen_body] = std::array::from_fn(|_| b.create_block());
        b.append_block_params_for_function_params(entry);
        for block in [rec_head, rec_body, setup, widen_head, widen_body] {
            b.append_block_param(block, types::I64);
        }
        // row_head/row_done(i, accs); col_*/tail_*(i, c, accs); rec_done(accs).
        for block in [row_head, col_head, col_body, tail_head, tail_body, row_done] {
            b.append_block_param(block, types::I64);
        }
        for block in [col_head, col_body, tail_head, tail_body] {
            b.append_block_param(block, types::I64);
        }
        for block in [
            row_head, col_head, col_body, tail_head, tail_body, row_done, rec_done,
        ] {
            accumulators.append_params(b, block);
        }

        let RecordStart {
            r: _,
            record,
            len,
            next_record,
            partials,
            bases,
            row,
        } = self.record_loop(b, [entry, rec_head, rec_body, setup, exit]);
        // setup(r), continued: stride, width, each slot's partials.
        let word = |i: usize| (i * 8) as i32;
        let extra = ChunkAbi::BUFFERS_WORD + kernel.buffers.len();
        let stride = b.ins().load(types::I64, mf, record, word(extra));
        let width = b.ins().load(types::I64, mf, record, word(extra + 1));
        let first = b.ins().load(types::I64, mf, record, word(extra + 2));
        let mut at = b.ins().ishl_imm_u(first, 3);
        let mut outs = Vec::with_capacity(reductions.len());
        for slot in 0..reductions.len() {
            outs.push(b.ins().iadd(partials, at));
            let size = match kernel.scope(slot) {
                ReduceScope::Record => b.ins().iconst(types::I64, 8),
                ReduceScope::Row => b.ins().ishl_imm_u(len, 3),
                ReduceScope::Column => b.ins().ishl_imm_u(width, 3),
            };
            at = b.ins().iadd(at, size);
        }
        let vec_bound = b.ins().band_imm_s(width, !((UNROLL * LANES) as i64 - 1));
        let zero = b.ins().iconst(types::I64, 0);
        let zeros = accumulators.zeros(b);
        let mut start = vec![zero];
        start.extend(&zeros);
        b.ins().jump(row_head, &args(&start));

        // row_head(i, accs): the next row, or the end of the record.
        b.switch_to_block(row_head);
        let params = b.block_params(row_head).to_vec();
        let more = b.ins().icmp(IntCC::UnsignedLessThan, params[0], len);
        let mut inside = vec![params[0], zero];
        inside.extend(&params[1..]);
        b.ins().brif(
            more,
            col_head,
            &args(&inside),
            rec_done,
            &args(&params[1..]),
        );

        let is_column = |slot: usize| kernel.scope(slot) == ReduceScope::Column;
        // The loops over a row's columns: 16 at a time, then one at a time.
        let loops = [
            (
                col_head,
                col_body,
                tail_head,
                vec_bound,
                Loop {
                    head: col_head,
                    body: col_body,
                    exit: tail_head,
                    bound: vec_bound,
                    copies: UNROLL,
                    ty: types::F32X4,
                },
            ),
            (
                tail_head,
                tail_body,
                row_done,
                width,
                Loop {
                    head: tail_head,
                    body: tail_body,
                    exit: row_done,
                    bound: width,
                    copies: 1,
                    ty: types::F32,
                },
            ),
        ];
        for (head, body, exit, bound, l) in &loops {
            b.switch_to_block(*head);
            let params = b.block_params(*head).to_vec();
            let more = b.ins().icmp(IntCC::UnsignedLessThan, params[1], *bound);
            let outside = match *exit == row_done {
                true => {
                    let mut v = vec![params[0]];
                    v.extend(&params[2..]);
                    v
                }
                false => params.clone(),
            };
            b.ins()
                .brif(more, *body, &args(&params), *exit, &args(&outside));

            b.switch_to_block(*body);
            let params = b.block_params(*body).to_vec();
            let (i, c) = (params[0], params[1]);
            let row_offset = b.ins().imul(i, stride);
            let column = b.ins().ishl_imm_u(c, 2);
            let offset = b.ins().iadd(row_offset, column);
            let addresses: Vec<Value> = bases.iter().map(|&p| b.ins().iadd(p, offset)).collect();
            let mut accs = self.body(b, l, &addresses, row, &params[2..]);
            for (slot, &op) in reductions.iter().enumerate() {
                if !is_column(slot) {
                    continue;
                }
                // Add this row's values into the record's f32 column sums; start again at 0.
                let out = b.ins().iadd(outs[slot], column);
                for copy in 0..l.copies {
                    let index = accumulators.index(slot, copy, l.ty);
                    let at = (copy * LANES * 4) as i32;
                    let old = b.ins().load(l.ty, mf, out, at);
                    let new = match op {
                        ReduceOp::SumSquares | ReduceOp::Sum => b.ins().fadd(old, accs[index]),
                        ReduceOp::MaxAbs => b.ins().fmax(old, accs[index]),
                    };
                    b.ins().store(mf, new, out, at);
                    accs[index] = zeros[index];
                }
            }
            let step = (l.copies * if l.ty == types::F32 { 1 } else { LANES }) as i64;
            let mut next = vec![i, b.ins().iadd_imm_u(c, step)];
            next.extend(accs);
            b.ins().jump(*head, &args(&next));
        }

        // row_done(i, accs): the row's partials, then the next row.
        b.switch_to_block(row_done);
        let params = b.block_params(row_done).to_vec();
        let (i, mut accs) = (params[0], params[1..].to_vec());
        for (slot, &op) in reductions.iter().enumerate() {
            if kernel.scope(slot) != ReduceScope::Row {
                continue;
            }
            let partial = accumulators.combine(b, op, slot, &accs);
            let row_at = b.ins().ishl_imm_u(i, 3);
            let out = b.ins().iadd(outs[slot], row_at);
            b.ins().store(mf, partial, out, 0);
            for copy in 0..UNROLL {
                let index = accumulators.index(slot, copy, types::F32X4);
                accs[index] = zeros[index];
            }
            let index = accumulators.index(slot, 0, types::F32);
            accs[index] = zeros[index];
        }
        let mut next = vec![b.ins().iadd_imm_u(i, 1)];
        next.extend(accs);
        b.ins().jump(row_head, &args(&next));

        // rec_done(accs): the record's partials, then its column sums widened to f64.
        b.switch_to_block(rec_done);
        let accs = b.block_params(rec_done).to_vec();
        for (slot, &op) in reductions.iter().enumerate() {
            if kernel.scope(slot) == ReduceScope::Record {
                let partial = accumulators.combine(b, op, slot, &accs);
                b.ins().store(mf, partial, outs[slot], 0);
            }
        }
        b.ins().jump(widen_head, &[width.into()]);
        // widen_head(c): columns c-1 down to 0, f32 at 4c to f64 at 8c (descending, so that no
        // f32 is overwritten before it is read).
        b.switch_to_block(widen_head);
        let c = b.block_params(widen_head)[0];
        b.ins()
            .brif(c, widen_body, &[c.into()], rec_head, &[next_record.into()]);
        b.switch_to_block(widen_body);
        let c = b.block_params(widen_body)[0];
        let below = b.ins().iadd_imm_s(c, -1);
        let narrow = b.ins().ishl_imm_u(below, 2);
        let wide = b.ins().ishl_imm_u(below, 3);
        for slot in (0..reductions.len()).filter(|&s| is_column(s)) {
            let from = b.ins().iadd(outs[slot], narrow);
            let x = b.ins().load(types::F32, mf, from, 0);
            let x = b.ins().fpromote(types::F64, x);
            let to = b.ins().iadd(outs[slot], wide);
            b.ins().store(mf, x, to, 0);
        }
        b.ins().jump(widen_head, &[below.into()]);

        b.switch_to_block(exit);
        b.ins().return_(&[]);
    }

    /// Emits `l.copies` independent instances of the kernel for the elements at `addresses`,
    /// instance k at byte offset `16 * k`: first every instance's loads, then each instance's
    /// arithmetic and stores, one instance after the other.
    ///
    /// Loads first: the instances of one iteration share cache lines, and a load issued after a
    /// store whose address matches it modulo 4 KiB is held back as if it depended on the store
    /// (4K aliasing). Tensors, states and gradients of the same size are usually allocated at
    /// the same offset within a page, so with per-instance load/store order every load but the
    /// first of each line waited: measured 2× slower on a 16M-element AdamW step. Computing the
    /// instances one after the other keeps register pressure to one instance's temporaries.
    ///
    /// Scalars come from the record's splatted copy of its scalar row (on the stack, made once
    /// per record by `record_loop`), each loaded where the instance first uses it, so that
    /// Cranelift folds the load into the arithmetic instruction as its memory operand. Loading
    /// and broadcasting each scalar in every instance cost two instructions per scalar (on
    /// AdamW, 13 of an instance's 33); splats held in registers across the loop were spilled
    /// (x86 has 16 vector registers). The scalar tail loop reads lane 0 of the same copy.
    ///
    /// A compare of two scalars (a condition made once per group, such as `weight_decay != 0`)
    /// is the same for every element: the first instance makes its mask and the others use it.
    /// (A mask made once per record would be held across the loop, and Cranelift sinks such a
    /// compare back into the loop anyway; one loaded from memory would not be known to be a
    /// mask, and a select on it would take three instructions instead of one blend.)
    ///
    /// Returns the accumulators with this iteration's reductions folded in (see
    /// [`Accumulators`]).
    fn body(
        &self,
        b: &mut FunctionBuilder,
        l: &Loop,
        addresses: &[Value],
        row: Option<Value>,
        accs: &[Value],
    ) -> Vec<Value> {
        let mut accs = accs.to_vec();
        let mf = self.flags;
        let vector_bytes = l.ty.bytes() as i32;
        let loads: Vec<Vec<Option<Value>>> = (0..l.copies)
            .map(|k| {
                let offset = vector_bytes * k as i32;
                let load = |inst: &Inst, b: &mut FunctionBuilder| match *inst {
                    Inst::Load { buffer } => {
                        Some(b.ins().load(l.ty, mf, addresses[buffer], offset))
                    }
                    _ => None,
                };
                self.kernel.insts.iter().map(|inst| load(inst, b)).collect()
            })
            .collect();
        // A compare of two scalars, made by the first instance, serves them all.
        let mut invariant: Vec<Option<Value>> = vec![None; self.kernel.insts.len()];
        for (k, loaded) in loads.iter().enumerate() {
            let offset = vector_bytes * k as i32;
            // A scalar is loaded where it is first used (see above), so `None` until then.
            let mut values: Vec<Option<Value>> = Vec::with_capacity(self.kernel.insts.len());
            for (index, (inst, &loaded)) in self.kernel.insts.iter().zip(loaded).enumerate() {
                if invariant[index].is_some() {
                    values.push(invariant[index]);
                    continue;
                }
                for x in inst.operands() {
                    if values[x.index()].is_none() {
                        let Inst::Scalar { slot } = self.kernel.insts[x.index()] else {
                            unreachable!("only scalars are loaded lazily")
                        };
                        let row = row.expect("the row is loaded when the kernel has scalars");
                        let offset = (SPLAT_BYTES * slot) as i32;
                        values[x.index()] =
                            Some(b.ins().load(l.ty, mf.with_aligned(), row, offset));
                    }
                }
                let v = |x: kernel::Value| values[x.index()].expect("defined above");
                let value = match *inst {
                    Inst::Load { .. } => loaded,
                    Inst::Scalar { .. } => None,
                    Inst::Const(c) => Some(constant(b, l.ty, c)),
                    Inst::Unary(u, a) => Some(self.unary(b, l.ty, u, v(a))),
                    Inst::Binary(op, x, y) => Some(self.binary(b, l.ty, op, v(x), v(y))),
                    Inst::Fma(x, y, z) => Some(b.ins().fma(v(x), v(y), v(z))),
                    Inst::Cmp(c, x, y) => {
                        let mask = compare(b, l.ty, float_cc(c), v(x), v(y));
                        if invariant_compare(self.kernel, inst) {
                            invariant[index] = Some(mask);
                        }
                        Some(mask)
                    }
                    Inst::Select(c, x, y) => Some(select(b, l.ty, v(c), v(x), v(y))),
                    Inst::Store { buffer, value } => {
                        b.ins().store(mf, v(value), addresses[buffer], offset);
                        // A store defines no value; its slot is never read.
                        None
                    }
                    Inst::Reduce { op, slot, value } => {
                        let acc = Accumulators::of_len(accs.len()).index(slot, k, l.ty);
                        accs[acc] = fold(b, op, accs[acc], v(value));
                        None
                    }
                };
                values.push(value);
            }
        }
        accs
    }

    fn unary(&self, b: &mut FunctionBuilder, ty: Type, op: Unary, x: Value) -> Value {
        match op {
            Unary::Neg => b.ins().fneg(x),
            Unary::Sqrt => b.ins().sqrt(x),
            Unary::Rsqrt => {
                let one = constant(b, ty, 1.0);
                let root = b.ins().sqrt(x);
                b.ins().fdiv(one, root)
            }
            Unary::Abs => b.ins().fabs(x),
            Unary::Sign => {
                // jnp.sign: 1 above zero, -1 below, x itself for ±0 and NaN (torch.sign's 0 for
                // NaN is a graph of compares and selects).
                let zero = constant(b, ty, 0.0);
                let one = constant(b, ty, 1.0);
                let minus_one = constant(b, ty, -1.0);
                let below = compare(b, ty, FloatCC::LessThan, x, zero);
                let above = compare(b, ty, FloatCC::GreaterThan, x, zero);
                let negative = select(b, ty, below, minus_one, x);
                select(b, ty, above, one, negative)
            }
            Unary::Exp => self.call(b, ty, 0, &[x]),
            Unary::Log => self.call(b, ty, 1, &[x]),
            Unary::Sin | Unary::Cos | Unary::Floor => {
                unreachable!("Kernel::validate rejects scalar-only ops")
            }
        }
    }

    fn binary(&self, b: &mut FunctionBuilder, ty: Type, op: Binary, x: Value, y: Value) -> Value {
        match op {
            Binary::Add => b.ins().fadd(x, y),
            Binary::Sub => b.ins().fsub(x, y),
            Binary::Mul => b.ins().fmul(x, y),
            Binary::Div => b.ins().fdiv(x, y),
            // Cranelift's fmin/fmax propagate NaN and order -0 below +0.
            Binary::Min => b.ins().fmin(x, y),
            Binary::Max => b.ins().fmax(x, y),
            // torch.pow: C's pow (the libcall), but sqrt for the exponent 0.5 and 1 / sqrt for
            // -0.5, as ATen computes them (they differ from pow at -inf and -0).
            Binary::Pow => {
                let general = self.call(b, ty, 2, &[x, y]);
                let root = b.ins().sqrt(x);
                let one = constant(b, ty, 1.0);
                let inverse_root = b.ins().fdiv(one, root);
                let half = constant(b, ty, 0.5);
                let minus_half = constant(b, ty, -0.5);
                let is_half = compare(b, ty, FloatCC::Equal, y, half);
                let is_minus_half = compare(b, ty, FloatCC::Equal, y, minus_half);
                let other = select(b, ty, is_minus_half, inverse_root, general);
                select(b, ty, is_half, root, other)
            }
        }
    }

    /// Calls libcall `index` on `args`: once for a scalar, lane by lane for a vector.
    fn call(&self, b: &mut FunctionBuilder, ty: Type, index: usize, args: &[Value]) -> Value {
        let Some(func) = self.libcalls[index] else {
            unreachable!("import_libcalls imports every libcall the kernel uses")
        };
        let call = |b: &mut FunctionBuilder, lane_args: &[Value]| {
            let inst = b.ins().call(func, lane_args);
            b.inst_results(inst)[0]
        };
        if ty == types::F32 {
            return call(b, args);
        }
        let mut result = args[0];
        for lane in 0..LANES as u8 {
            let lane_args: Vec<Value> =
                args.iter().map(|&a| b.ins().extractlane(a, lane)).collect();
            let r = call(b, &lane_args);
            result = b.ins().insertlane(result, r, lane);
        }
        result
    }
}

/// The loop-carried accumulators of a kernel with `n` reductions: `UNROLL` f32x4 vectors per
/// reduction (slot j, copy k at `j * UNROLL + k`), then one f32 per reduction for the scalar
/// tail. The main loop folds copy k of its iteration into vector k, the f32x4 loop into vector
/// 0, the tail into the scalar; at the end of the record every lane and the scalar are widened
/// to f64 and folded in a fixed order, so a record's partial never depends on anything but its
/// values.
struct Accumulators {
    n: usize,
}

impl Accumulators {
    fn new(n: usize) -> Accumulators {
        Accumulators { n }
    }

    /// How many reductions a list of `len` accumulators carries.
    fn of_len(len: usize) -> Accumulators {
        Accumulators::new(len / (UNROLL + 1))
    }

    /// The accumulator that copy `copy` of a `ty` loop folds reduction `slot` into.
    fn index(&self, slot: usize, copy: usize, ty: Type) -> usize {
        match ty == types::F32 {
            true => self.n * UNROLL + slot,
            false => slot * UNROLL + copy,
        }
    }

    fn types(&self) -> impl Iterator<Item = Type> {
        let vectors = std::iter::repeat_n(types::F32X4, self.n * UNROLL);
        vectors.chain(std::iter::repeat_n(types::F32, self.n))
    }

    fn append_params(&self, b: &mut FunctionBuilder, block: cranelift_codegen::ir::Block) {
        for ty in self.types() {
            b.append_block_param(block, ty);
        }
    }

    /// Every accumulator's starting value (0, the identity of every [`ReduceOp`]).
    fn zeros(&self, b: &mut FunctionBuilder) -> Vec<Value> {
        self.types().map(|ty| constant(b, ty, 0.0)).collect()
    }

    /// The record's partial of reduction `slot`, as an f64.
    fn combine(&self, b: &mut FunctionBuilder, op: ReduceOp, slot: usize, accs: &[Value]) -> Value {
        let mut total = None;
        let mut add = |b: &mut FunctionBuilder, x: Value| {
            let x = b.ins().fpromote(types::F64, x);
            total = Some(match total {
                None => x,
                Some(t) => match op {
                    ReduceOp::SumSquares | ReduceOp::Sum => b.ins().fadd(t, x),
                    ReduceOp::MaxAbs => b.ins().fmax(t, x),
                },
            });
        };
        for copy in 0..UNROLL {
            let vector = accs[slot * UNROLL + copy];
            for lane in 0..LANES as u8 {
                let x = b.ins().extractlane(vector, lane);
                add(b, x);
            }
        }
        add(b, accs[self.n * UNROLL + slot]);
        total.expect("at least one accumulator")
    }
}

/// `acc` with `x` folded in by `op`, lane by lane.
fn fold(b: &mut FunctionBuilder, op: ReduceOp, acc: Value, x: Value) -> Value {
    match op {
        ReduceOp::SumSquares => {
            let square = b.ins().fmul(x, x);
            b.ins().fadd(acc, square)
        }
        ReduceOp::Sum => b.ins().fadd(acc, x),
        ReduceOp::MaxAbs => {
            let magnitude = b.ins().fabs(x);
            b.ins().fmax(acc, magnitude)
        }
    }
}

/// Values as block-call arguments.
fn args(values: &[Value]) -> Vec<cranelift_codegen::ir::BlockArg> {
    values.iter().map(|&v| v.into()).collect()
}

fn float_cc(c: Cmp) -> FloatCC {
    match c {
        Cmp::Lt => FloatCC::LessThan,
        Cmp::Le => FloatCC::LessThanOrEqual,
        Cmp::Gt => FloatCC::GreaterThan,
        Cmp::Ge => FloatCC::GreaterThanOrEqual,
        Cmp::Eq => FloatCC::Equal,
        // Unordered or unequal: NaN != x holds, as in Rust and PyTorch.
        Cmp::Ne => FloatCC::NotEqual,
    }
}

/// `x` in every lane of `ty`.
fn constant(b: &mut FunctionBuilder, ty: Type, x: f32) -> Value {
    let s = b.ins().f32const(Ieee32::with_bits(x.to_bits()));
    if ty == types::F32 {
        s
    } else {
        b.ins().splat(ty, s)
    }
}

/// A comparison as a mask: an `i8` for a scalar, an all-ones/all-zeros `f32x4` for a vector
/// (the `i32x4` lane mask reinterpreted, so that `bitselect` sees one type).
fn compare(b: &mut FunctionBuilder, ty: Type, cc: FloatCC, x: Value, y: Value) -> Value {
    let mask = b.ins().fcmp(cc, x, y);
    if ty == types::F32 {
        mask
    } else {
        b.ins().bitcast(ty, MemFlagsData::new(), mask)
    }
}

/// `cond ? x : y` with `cond` from [`compare`].
fn select(b: &mut FunctionBuilder, ty: Type, cond: Value, x: Value, y: Value) -> Value {
    if ty == types::F32 {
        b.ins().select(cond, x, y)
    } else {
        b.ins().bitselect(cond, x, y)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cranelift_codegen::settings::{self, Configurable};
    use optjit_ir::{Buffer, BufferUse};

    fn isa() -> cranelift_codegen::isa::OwnedTargetIsa {
        let mut flags = settings::builder();
        flags.set("opt_level", "speed").expect("flag");
        cranelift_native::builder()
            .expect("host isa")
            .finish(settings::Flags::new(flags))
            .expect("isa")
    }

    /// Every per-element op once, feeding each other.
    fn every_op() -> Kernel {
        let v = kernel::Value;
        Kernel::elements(
            "every.phase0",
            vec![
                BufferUse::new(Buffer::Param, true, true),
                BufferUse::new(Buffer::Grad, true, false),
            ],
            1,
            vec![
                Inst::Load { buffer: 0 },
                Inst::Load { buffer: 1 },
                Inst::Scalar { slot: 0 },
                Inst::Const(0.5),
                Inst::Unary(Unary::Exp, v(0)),
                Inst::Unary(Unary::Log, v(1)),
                Inst::Binary(Binary::Pow, v(4), v(5)),
                Inst::Unary(Unary::Sign, v(6)),
                Inst::Binary(Binary::Min, v(7), v(2)),
                Inst::Binary(Binary::Max, v(8), v(3)),
                Inst::Unary(Unary::Rsqrt, v(9)),
                Inst::Fma(v(10), v(2), v(3)),
                Inst::Cmp(Cmp::Lt, v(11), v(1)),
                Inst::Select(v(12), v(11), v(0)),
                Inst::Store {
                    buffer: 0,
                    value: v(13),
                },
            ],
        )
    }

    #[test]
    fn emitted_functions_verify_and_print_deterministically() {
        let isa = isa();
        let kernel = every_op();
        let f = emit_clif(&kernel, &*isa).expect("emits");
        cranelift_codegen::verify_function(&f, isa.flags()).expect("verifies");
        let text = f.display().to_string();
        assert_eq!(
            text,
            emit_clif(&kernel, &*isa)
                .expect("emits")
                .display()
                .to_string()
        );
        assert!(
            text.starts_with("function %every_phase0(i64, i64, i64, i64)"),
            "{text}"
        );
        for (i, name) in LIBCALLS.iter().enumerate() {
            assert!(
                text.contains(&format!("u0:{i}")),
                "{name} imported as u0:{i}\n{text}"
            );
        }
        assert!(text.contains("bitselect"), "{text}");
        assert!(text.contains("fma"), "{text}");
        // Buffer pointers need only element alignment: the one aligned access is the scalars'
        // splatted copy on the stack.
        let splats = text
            .lines()
            .find_map(|line| line.trim().strip_suffix(" = stack_addr.i64 ss0"))
            .expect("the scalars are copied to the stack");
        for line in text.lines().filter(|line| line.contains("aligned")) {
            let address = line
                .split(", ")
                .last()
                .unwrap_or(line)
                .split(' ')
                .next_back();
            let address = address.unwrap_or_default().split('+').next();
            assert_eq!(
                address,
                Some(splats),
                "only the splats are aligned: {line}\n{text}"
            );
        }
    }

    extern "C" fn test_expf(x: f32) -> f32 {
        x.exp()
    }

    extern "C" fn test_logf(x: f32) -> f32 {
        x.ln()
    }

    extern "C" fn test_powf(x: f32, y: f32) -> f32 {
        x.powf(y)
    }

    /// Runs `kernel` (one record, no scalars, no reductions) over `buffers` in a JIT module of
    /// its own, with the libcalls bound to plain Rust.
    fn run(kernel: &Kernel, buffers: &mut [Vec<f32>]) {
        use cranelift_jit::{JITBuilder, JITModule};
        use cranelift_module::{Linkage, Module};
        let isa = isa();
        let function = emit_clif(kernel, &*isa).expect("emits");
        let mut builder = JITBuilder::with_isa(isa, cranelift_module::default_libcall_names());
        let symbols = [
            test_expf as *const u8,
            test_logf as *const u8,
            test_powf as *const u8,
        ];
        for (name, address) in LIBCALLS.iter().zip(symbols) {
            builder.symbol(*name, address);
        }
        let mut jit = JITModule::new(builder);
        // The libcalls first and in order: the emitter names them by index.
        for name in LIBCALLS {
            let mut sig = jit.make_signature();
            let arity = if *name == "optjit_powf" { 2 } else { 1 };
            sig.params
                .extend(std::iter::repeat_n(AbiParam::new(types::F32), arity));
            sig.returns.push(AbiParam::new(types::F32));
            jit.declare_function(name, Linkage::Import, &sig)
                .expect("declare");
        }
        let id = jit
            .declare_function("kernel", Linkage::Local, &function.signature)
            .expect("declare");
        let mut ctx = jit.make_context();
        ctx.func = function;
        jit.define_function(id, &mut ctx).expect("compiles");
        jit.finalize_definitions().expect("finalizes");
        type KernelFn = unsafe extern "C" fn(*const u64, u64, u64, *mut f64);
        // SAFETY: emitted with the ChunkAbi signature.
        let f: KernelFn = unsafe { std::mem::transmute(jit.get_finalized_function(id)) };
        let len = buffers[0].len();
        let row = [0f32; 1];
        let mut table = vec![len as u64, row.as_ptr() as u64];
        table.extend(buffers.iter_mut().map(|b| b.as_mut_ptr() as u64));
        // SAFETY: one record over live buffers of `len` elements each.
        unsafe { f(table.as_ptr(), 0, 1, std::ptr::null_mut()) };
        // SAFETY: nothing of the module is used after this.
        unsafe { jit.free_memory() };
    }

    /// `pow` per element on the CPU is `optjit_ir::eval_op`'s (the host's and the interpreter's),
    /// `torch.pow`: the exponents 0.5 and -0.5 are `sqrt` and `1 / sqrt` (`(-inf) ^ 0.5` is NaN,
    /// `(-0) ^ 0.5` is -0), other exponents the libcall; in the vector loops and the scalar
    /// tail: the same class, the same sign of zero, finite values to the libcall's rounding.
    #[test]
    fn pow_per_element_is_torch_pow_as_the_interpreter() {
        let v = kernel::Value;
        let kernel = Kernel::elements(
            "pow.phase0",
            vec![
                BufferUse::new(Buffer::Param, true, true),
                BufferUse::new(Buffer::Grad, true, false),
            ],
            0,
            vec![
                Inst::Load { buffer: 0 },
                Inst::Load { buffer: 1 },
                Inst::Binary(Binary::Pow, v(0), v(1)),
                Inst::Store {
                    buffer: 0,
                    value: v(2),
                },
            ],
        );
        let bases = [
            f32::NEG_INFINITY,
            f32::INFINITY,
            -0.0,
            0.0,
            f32::NAN,
            -4.0,
            4.0,
            2.0,
            0.25,
            1e-40,
        ];
        let exponents = [0.5, -0.5, 2.0, 1.5, -1.0, 0.0];
        // Every pair, then 9 more: 69 elements, so the 4 × f32x4 loop (64), the f32x4 loop (4)
        // and the scalar tail (the last one) all see special values.
        let more = [
            (f32::NEG_INFINITY, -0.5),
            (-0.0, 0.5),
            (-0.0, -0.5),
            (4.0, 0.5),
            (f32::NEG_INFINITY, 0.5),
            (f32::NAN, 0.5),
            (2.0, -0.5),
            (0.25, 0.5),
            (f32::NEG_INFINITY, 0.5),
        ];
        let (x, y): (Vec<f32>, Vec<f32>) = exponents
            .iter()
            .flat_map(|&e| bases.iter().map(move |&b| (b, e)))
            .chain(more)
            .unzip();
        assert_eq!(x.len(), 69);
        let mut buffers = [x.clone(), y.clone()];
        run(&kernel, &mut buffers);
        for ((&got, &base), &exponent) in buffers[0].iter().zip(&x).zip(&y) {
            let op = optjit_ir::Op::Binary(Binary::Pow);
            let want = optjit_ir::eval_op(&op, &[base.into(), exponent.into()]) as f32;
            // Special results exactly (the sign of a zero included), others to the libcall's
            // rounding.
            let agree = match want.is_finite() && want != 0.0 {
                true => (got - want).abs() <= 1e-6 * want.abs(),
                false => got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
            };
            assert!(agree, "pow({base}, {exponent}) = {got}, want {want}");
        }
        for i in [0, 64, 68] {
            assert!(
                buffers[0][i].is_nan(),
                "(-inf) ^ 0.5 is NaN as in torch (element {i})"
            );
        }
    }

    #[test]
    fn malformed_kernels_are_refused() {
        let isa = isa();
        let mut kernel = every_op();
        kernel.insts[4] = Inst::Unary(Unary::Sin, kernel::Value(0));
        let err = emit_clif(&kernel, &*isa).expect_err("scalar-only op");
        assert!(
            err.to_string().contains("sin is not a per-element op"),
            "{err}"
        );

        let mut kernel = every_op();
        kernel.insts[13] = Inst::Select(kernel::Value(11), kernel::Value(11), kernel::Value(0));
        let err = emit_clif(&kernel, &*isa).expect_err("float condition");
        assert!(err.to_string().contains("v11 is not a mask"), "{err}");

        let mut kernel = every_op();
        kernel.insts.push(Inst::Const(1.0));
        let err = emit_clif(&kernel, &*isa).expect_err("value after a store");
        assert!(err.to_string().contains("after a store"), "{err}");

        let mut kernel = every_op();
        kernel.buffers[1].read = false;
        let err = emit_clif(&kernel, &*isa).expect_err("unreadable buffer");
        assert!(err.to_string().contains("grad is not read"), "{err}");
    }
}
