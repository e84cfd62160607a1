//! The Cranelift emitter: a kernel becomes a function that walks the chunk table with a
//! 4 × f32x4 unrolled main loop, an f32x4 loop and a scalar tail.

use crate::kernel::{Inst, Kernel};
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{
    AbiParam, Endianness, ExtFuncData, ExternalName, FuncRef, Function, InstBuilder, MemFlagsData,
    Signature, Type, UserExternalName, UserFuncName, Value, types,
};
use cranelift_codegen::isa::TargetIsa;
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use optjit_ir::{Binary, Cmp, DType, Unary};
use thiserror::Error;

/// The chunk-table ABI of every generated CPU kernel:
///
/// ```text
/// extern "C" fn(table: *const u64, begin: u64, end: u64)
/// ```
///
/// `table` is an array of chunk records of [`ChunkAbi::record_words`] 64-bit words each:
///
/// | word | meaning |
/// | --- | --- |
/// | 0 | `len`: elements in this chunk (may be 0) |
/// | 1 | pointer to the chunk's group row of `kernel.n_scalars` f32 kernel scalars |
/// | 2 + i | pointer to element 0 of this chunk in buffer `i` (`kernel.buffers` order) |
///
/// The function processes records `begin..end`. Pointers need only 4-byte alignment.
pub struct ChunkAbi;

impl ChunkAbi {
    /// Words before the buffer pointers.
    pub const HEADER_WORDS: usize = 2;

    /// Words per record for a kernel with `n_buffers` buffers.
    pub fn record_words(n_buffers: usize) -> usize {
        Self::HEADER_WORDS + n_buffers
    }
}

/// Per-element functions without a vector instruction, called per lane. The loader declares
/// them first, in this order, so that `UserExternalName { namespace: 0, index: i }` names
/// `LIBCALLS[i]`.
pub const LIBCALLS: [&str; 3] = ["optjit_expf", "optjit_logf", "optjit_powf"];

/// Elements per iteration of the main loop: [`UNROLL`] independent f32x4 vectors.
pub const UNROLL: usize = 4;
const LANES: usize = 4;

/// A kernel the emitter cannot express.
#[derive(Debug, Error, PartialEq)]
#[error("cannot emit {kernel} for cranelift: {reason}")]
pub struct EmitError {
    /// The kernel's name.
    pub kernel: String,
    /// Why.
    pub reason: String,
}

/// The libcalls a function imported, by [`LIBCALLS`] index.
#[derive(Default)]
struct Libcalls([Option<FuncRef>; 3]);

/// What the body reads per element: buffer addresses and the chunk's uniform values.
struct Frame<'a> {
    kernel: &'a Kernel,
    /// Per buffer: the address of the element being processed.
    addresses: Vec<Value>,
    /// Per instruction: its uniform value (scalar slot or literal) in the loop's type.
    uniforms: Vec<Option<Value>>,
    libcalls: &'a Libcalls,
    ty: Type,
}

/// Builds the Cranelift function for `kernel` (see [`ChunkAbi`]).
pub fn emit_clif(kernel: &Kernel, isa: &dyn TargetIsa) -> Result<Function, EmitError> {
    let fail = |reason: &str| EmitError {
        kernel: kernel.name.clone(),
        reason: reason.to_string(),
    };
    if kernel.elem_dtype != DType::F32 {
        return Err(fail(&format!(
            "{} elements (the CPU backend is f32 only)",
            kernel.elem_dtype
        )));
    }
    for inst in &kernel.insts {
        if let Inst::Unary(u, _) = inst
            && u.scalar_only()
        {
            return Err(fail(&format!("{} is scalar-only", u.mnemonic())));
        }
    }
    let pointer = isa.pointer_type();
    let call_conv = isa.default_call_conv();
    let mut signature = Signature::new(call_conv);
    signature.params.extend([
        AbiParam::new(pointer),
        AbiParam::new(types::I64),
        AbiParam::new(types::I64),
    ]);
    let name = UserFuncName::testcase(kernel.name.replace('.', "_"));
    let mut func = Function::with_name_signature(name, signature);
    let libcalls = import_libcalls(&mut func, kernel, call_conv);

    let mut fctx = FunctionBuilderContext::new();
    let mut b = FunctionBuilder::new(&mut func, &mut fctx);
    let mf = MemFlagsData::new().with_notrap();
    let record_bytes = (ChunkAbi::record_words(kernel.buffers.len()) * 8) as i64;

    let entry = b.create_block();
    let [
        rec_head,
        rec_body,
        unrolled_head,
        unrolled_body,
        vector_head,
        vector_body,
        tail_head,
        tail_body,
        exit,
    ] = std::array::from_fn(|_| b.create_block());
    b.append_block_params_for_function_params(entry);
    b.append_block_param(rec_head, types::I64);
    b.append_block_param(rec_body, types::I64);
    for block in [
        unrolled_head,
        unrolled_body,
        vector_head,
        vector_body,
        tail_head,
        tail_body,
    ] {
        b.append_block_param(block, types::I64);
    }

    b.switch_to_block(entry);
    let params = b.block_params(entry).to_vec();
    let (table, begin, end) = (params[0], params[1], params[2]);
    b.ins().jump(rec_head, &[begin.into()]);

    // Records begin..end.
    b.switch_to_block(rec_head);
    let r = b.block_params(rec_head)[0];
    let more = b.ins().icmp(IntCC::UnsignedLessThan, r, end);
    b.ins().brif(more, rec_body, &[r.into()], exit, &[]);

    b.switch_to_block(rec_body);
    let r = b.block_params(rec_body)[0];
    let record_offset = b.ins().imul_imm_s(r, record_bytes);
    let record = b.ins().iadd(table, record_offset);
    let len = b.ins().load(types::I64, mf, record, 0);
    let row = b.ins().load(pointer, mf, record, 8);
    let bases: Vec<Value> = (0..kernel.buffers.len())
        .map(|i| b.ins().load(pointer, mf, record, (16 + 8 * i) as i32))
        .collect();
    let mut scalar_uniforms = vec![None; kernel.insts.len()];
    let mut vector_uniforms = vec![None; kernel.insts.len()];
    for (i, inst) in kernel.insts.iter().enumerate() {
        let value = match inst {
            Inst::Scalar { slot } => b.ins().load(types::F32, mf, row, (4 * slot) as i32),
            Inst::Const(c) => b.ins().f32const(*c),
            _ => continue,
        };
        scalar_uniforms[i] = Some(value);
        vector_uniforms[i] = Some(b.ins().splat(types::F32X4, value));
    }
    let unrolled_end = b.ins().band_imm_s(len, !((UNROLL * LANES) as i64 - 1));
    let vector_end = b.ins().band_imm_s(len, !(LANES as i64 - 1));
    let zero = b.ins().iconst(types::I64, 0);
    b.ins().jump(unrolled_head, &[zero.into()]);

    // The element loops: (head, body, next head, end, elements per iteration, vectors, type).
    let loops = [
        (
            unrolled_head,
            unrolled_body,
            vector_head,
            unrolled_end,
            UNROLL * LANES,
            UNROLL,
            types::F32X4,
        ),
        (
            vector_head,
            vector_body,
            tail_head,
            vector_end,
            LANES,
            1,
            types::F32X4,
        ),
        (tail_head, tail_body, rec_head, len, 1, 1, types::F32),
    ];
    for (head, body, next, bound, step, copies, ty) in loops {
        b.switch_to_block(head);
        let i = b.block_params(head)[0];
        let more = b.ins().icmp(IntCC::SignedLessThan, i, bound);
        let next_arg = if next == rec_head {
            b.ins().iadd_imm_s(r, 1)
        } else {
            i
        };
        b.ins()
            .brif(more, body, &[i.into()], next, &[next_arg.into()]);

        b.switch_to_block(body);
        let i = b.block_params(body)[0];
        let byte_offset = b.ins().ishl_imm_u(i, 2);
        let addresses = bases
            .iter()
            .map(|&base| b.ins().iadd(base, byte_offset))
            .collect();
        let uniforms = if ty == types::F32 {
            scalar_uniforms.clone()
        } else {
            vector_uniforms.clone()
        };
        let frame = Frame {
            kernel,
            addresses,
            uniforms,
            libcalls: &libcalls,
            ty,
        };
        emit_body(&mut b, &frame, copies, mf);
        let i_next = b.ins().iadd_imm_s(i, step as i64);
        b.ins().jump(head, &[i_next.into()]);
    }

    b.switch_to_block(exit);
    b.ins().return_(&[]);
    b.seal_all_blocks();
    b.finalize(isa.frontend_config());
    Ok(func)
}

/// Imports the libcalls `kernel` needs.
fn import_libcalls(
    func: &mut Function,
    kernel: &Kernel,
    call_conv: cranelift_codegen::isa::CallConv,
) -> Libcalls {
    let mut libcalls = Libcalls::default();
    for inst in &kernel.insts {
        let (index, arity) = match inst {
            Inst::Unary(Unary::Exp, _) => (0, 1),
            Inst::Unary(Unary::Log, _) => (1, 1),
            Inst::Binary(Binary::Pow, ..) => (2, 2),
            _ => continue,
        };
        if libcalls.0[index].is_some() {
            continue;
        }
        let mut sig = Signature::new(call_conv);
        sig.params
            .extend(std::iter::repeat_n(AbiParam::new(types::F32), arity));
        sig.returns.push(AbiParam::new(types::F32));
        let signature = func.import_signature(sig);
        let name = func.declare_imported_user_function(UserExternalName::new(0, index as u32));
        let data = ExtFuncData {
            name: ExternalName::user(name),
            signature,
            colocated: false,
            patchable: false,
        };
        libcalls.0[index] = Some(func.import_function(data));
    }
    libcalls
}

/// Emits `copies` independent instances of the kernel body, instance k at element offset
/// `k * lanes`, one after the other: each instance's values die at its stores, which keeps
/// register pressure at that of one instance, and the out-of-order core overlaps them.
fn emit_body(b: &mut FunctionBuilder, frame: &Frame, copies: usize, mf: MemFlagsData) {
    let kernel = frame.kernel;
    let lane_bytes = frame.ty.bytes() as i32;
    for k in 0..copies {
        let offset = lane_bytes * k as i32;
        let mut values: Vec<Value> = Vec::with_capacity(kernel.insts.len());
        for (i, inst) in kernel.insts.iter().enumerate() {
            let v = |x: crate::kernel::Value| values[x.index()];
            let value = match *inst {
                Inst::Load { buffer } => b.ins().load(frame.ty, mf, frame.addresses[buffer], offset),
                Inst::Scalar { .. } | Inst::Const(_) => frame.uniforms[i].expect("uniform defined per record"),
                Inst::Unary(u, a) => unary(b, frame, u, v(a)),
                Inst::Binary(op, x, y) => binary(b, frame, op, v(x), v(y)),
                Inst::Fma(x, y, z) => b.ins().fma(v(x), v(y), v(z)),
                Inst::Cmp(c, x, y) => b.ins().fcmp(float_cc(c), v(x), v(y)),
                Inst::Select(c, x, y) => select(b, frame.ty, v(c), v(x), v(y)),
                Inst::Store { buffer, value } => {
                    b.ins().store(mf, v(value), frame.addresses[buffer], offset);
                    v(value)
                }
            };
            values.push(value);
        }
    }
}

fn float_cc(c: Cmp) -> FloatCC {
    match c {
        Cmp::Lt => FloatCC::LessThan,
        Cmp::Le => FloatCC::LessThanOrEqual,
        Cmp::Gt => FloatCC::GreaterThan,
        Cmp::Ge => FloatCC::GreaterThanOrEqual,
        Cmp::Eq => FloatCC::Equal,
        Cmp::Ne => FloatCC::NotEqual,
    }
}

/// A float of the loop's type holding `x` in every lane.
fn constant(b: &mut FunctionBuilder, ty: Type, x: f32) -> Value {
    let s = b.ins().f32const(x);
    if ty == types::F32 {
        s
    } else {
        b.ins().splat(ty, s)
    }
}

/// `cond ? x : y`, where `cond` is an fcmp result of the loop's type (a lane mask for vectors).
fn select(b: &mut FunctionBuilder, ty: Type, cond: Value, x: Value, y: Value) -> Value {
    if ty == types::F32 {
        return b.ins().select(cond, x, y);
    }
    let mask = b.ins().bitcast(
        ty,
        MemFlagsData::new().with_endianness(Endianness::Little),
        cond,
    );
    b.ins().bitselect(mask, x, y)
}

fn unary(b: &mut FunctionBuilder, frame: &Frame, op: Unary, x: Value) -> Value {
    let ty = frame.ty;
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
            // torch.sign: 1 above zero, -1 below, and x itself for ±0 and NaN.
            let zero = constant(b, ty, 0.0);
            let (one, minus_one) = (constant(b, ty, 1.0), constant(b, ty, -1.0));
            let below = b.ins().fcmp(FloatCC::LessThan, x, zero);
            let above = b.ins().fcmp(FloatCC::GreaterThan, x, zero);
            let partial = select(b, ty, below, minus_one, x);
            select(b, ty, above, one, partial)
        }
        Unary::Exp => per_lane(b, frame, 0, &[x]),
        Unary::Log => per_lane(b, frame, 1, &[x]),
        Unary::Sin | Unary::Cos | Unary::Floor => {
            unreachable!("scalar-only ops are rejected up front")
        }
    }
}

fn binary(b: &mut FunctionBuilder, frame: &Frame, op: Binary, x: Value, y: Value) -> Value {
    match op {
        Binary::Add => b.ins().fadd(x, y),
        Binary::Sub => b.ins().fsub(x, y),
        Binary::Mul => b.ins().fmul(x, y),
        Binary::Div => b.ins().fdiv(x, y),
        Binary::Min => b.ins().fmin(x, y),
        Binary::Max => b.ins().fmax(x, y),
        Binary::Pow => per_lane(b, frame, 2, &[x, y]),
    }
}

/// Calls libcall `index` on each lane of `args` (or once, in the scalar tail).
fn per_lane(b: &mut FunctionBuilder, frame: &Frame, index: usize, args: &[Value]) -> Value {
    let func = frame.libcalls.0[index].expect("libcall imported for every use");
    let call = |b: &mut FunctionBuilder, lane_args: &[Value]| {
        let inst = b.ins().call(func, lane_args);
        b.inst_results(inst)[0]
    };
    if frame.ty == types::F32 {
        return call(b, args);
    }
    let mut result = args[0];
    for lane in 0..LANES as u8 {
        let lane_args: Vec<Value> = args.iter().map(|&a| b.ins().extractlane(a, lane)).collect();
        let r = call(b, &lane_args);
        result = b.ins().insertlane(result, r, lane);
    }
    result
}
