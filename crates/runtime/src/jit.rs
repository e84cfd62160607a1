//! Cranelift JIT loading: the host ISA, CLIF emission of every kernel, a JIT module that keeps
//! the machine code alive while its entry points are in use, and that machine code as text.
//!
//! The generated functions follow [`optjit_kernels_gen::ChunkAbi`]; kernels that compute
//! `exp`, `log` or `pow` call back into the Rust functions registered here under the names of
//! [`optjit_kernels_gen::LIBCALLS`].

use cranelift_codegen::control::ControlPlane;
use cranelift_codegen::ir::{AbiParam, Function, types};
use cranelift_codegen::isa::{OwnedTargetIsa, TargetIsa};
use cranelift_codegen::settings::{self, Configurable};
use cranelift_codegen::{CodegenError, Context, print_errors};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{FuncId, Linkage, Module, ModuleError};
use optjit_kernels_gen::{EmitError, Kernel, LIBCALLS};
use std::fmt;
use thiserror::Error;

/// The entry point of a loaded kernel (see [`optjit_kernels_gen::ChunkAbi`]): processes chunk
/// records `begin..end` of `table`, writing the partials of its reductions (if any) to
/// `partials`.
pub type KernelFn =
    unsafe extern "C" fn(table: *const u64, begin: u64, end: u64, partials: *mut f64);

/// Cranelift could not build or load code.
#[derive(Debug, Error)]
pub enum JitError {
    /// The host cannot be targeted (unsupported architecture or settings).
    #[error("cranelift cannot target this host: {message}")]
    Host {
        /// Cranelift's message.
        message: String,
    },
    /// A kernel has no CLIF form.
    #[error(transparent)]
    Emit(#[from] EmitError),
    /// Cranelift rejected or failed to compile a function.
    #[error("cranelift failed to compile {function}: {message}\n{clif}")]
    Compile {
        /// The function's name.
        function: String,
        /// Cranelift's message.
        message: String,
        /// The function's CLIF (annotated with the errors when the verifier failed).
        clif: String,
    },
    /// Declaring functions or finalizing the module failed.
    #[error("cranelift failed to {action}: {message}")]
    Module {
        /// What was being done.
        action: String,
        /// Cranelift's message.
        message: String,
    },
}

fn module_error(action: impl Into<String>, error: ModuleError) -> JitError {
    JitError::Module {
        action: action.into(),
        message: error.to_string(),
    }
}

/// Code generation for a CPU, optimizing for speed: the host's native ISA with every feature
/// the CPU has (AVX, FMA, ...), whose code can be loaded and run, or a named ISA, whose code
/// can only be printed. The Cranelift verifier runs in debug builds only.
pub struct CpuCodegen {
    isa: OwnedTargetIsa,
    /// Whether `isa` is the host's (only then may its code be loaded).
    host: bool,
}

impl fmt::Debug for CpuCodegen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CpuCodegen")
            .field("isa", &self.isa.triple().to_string())
            .field("fma", &self.has_fma())
            .finish()
    }
}

impl CpuCodegen {
    /// The host ISA, detected at run time.
    pub fn host() -> Result<CpuCodegen, JitError> {
        let builder = cranelift_native::builder().map_err(|message| JitError::Host {
            message: message.to_string(),
        })?;
        Self::finish(builder, true)
    }

    /// The ISA named `name` (e.g. `x86_64`) with exactly the features in `features` (Cranelift's
    /// names, e.g. `has_avx`), whatever the host: code to print (see
    /// [`CpuCodegen::disassemble`]), as the machine-code snapshots do, not to load.
    pub fn named(name: &str, features: &[&str]) -> Result<CpuCodegen, JitError> {
        let host = |message: String| JitError::Host { message };
        let mut builder = cranelift_codegen::isa::lookup_by_name(name)
            .map_err(|e| host(format!("{name}: {e}")))?;
        for feature in features {
            builder
                .enable(feature)
                .map_err(|e| host(format!("{name} feature {feature}: {e}")))?;
        }
        Self::finish(builder, false)
    }

    /// Finishes `builder` with the settings every kernel is compiled with.
    fn finish(
        builder: cranelift_codegen::isa::Builder,
        host: bool,
    ) -> Result<CpuCodegen, JitError> {
        let failed = |message: String| JitError::Host { message };
        let verifier = if cfg!(debug_assertions) {
            "true"
        } else {
            "false"
        };
        let mut flags = settings::builder();
        let settings = [
            ("opt_level", "speed"),
            ("enable_verifier", verifier),
            // cranelift-jit needs both: code is placed anywhere in the address space.
            ("is_pic", "false"),
            ("use_colocated_libcalls", "false"),
        ];
        for (name, value) in settings {
            flags
                .set(name, value)
                .map_err(|e| failed(format!("setting {name}={value}: {e}")))?;
        }
        let isa = builder
            .finish(settings::Flags::new(flags))
            .map_err(|e| failed(e.to_string()))?;
        Ok(CpuCodegen { isa, host })
    }

    /// The ISA kernels are emitted for.
    pub fn isa(&self) -> &dyn TargetIsa {
        &*self.isa
    }

    /// Whether fused multiply-add is a native instruction (x86-64 needs AVX and FMA; without
    /// them Cranelift calls `fmaf` per lane, which is correct but several times slower). The
    /// pipeline contracts multiply-adds only where this holds.
    pub fn has_fma(&self) -> bool {
        match self.isa.name() {
            "x64" => {
                let flags = self.isa.isa_flags();
                let on = |name: &str| {
                    flags
                        .iter()
                        .any(|f| f.name == name && f.as_bool() == Some(true))
                };
                on("has_avx") && on("has_fma")
            }
            "aarch64" => true,
            _ => false,
        }
    }

    /// The CLIF function of every kernel, in order.
    pub fn emit(&self, kernels: &[Kernel]) -> Result<Vec<Function>, JitError> {
        kernels
            .iter()
            .map(|k| Ok(optjit_kernels_gen::emit_clif(k, self.isa())?))
            .collect()
    }

    /// The machine code of each of `kernels` as Cranelift prints it, one text per kernel: the
    /// code [`CpuCodegen::load`] runs, compiled a second time with disassembly on.
    pub fn disassemble(&self, kernels: &[Kernel]) -> Result<Vec<String>, JitError> {
        let mut texts = Vec::with_capacity(kernels.len());
        for function in self.emit(kernels)? {
            let name = function.name.to_string();
            let mut ctx = Context::for_function(function);
            ctx.set_disasm(true);
            let compiled = ctx
                .compile(&*self.isa, &mut ControlPlane::default())
                .map_err(|e| JitError::Compile {
                    function: name.clone(),
                    message: e.inner.to_string(),
                    clif: e.func.display().to_string(),
                })?;
            let code = compiled.vcode.clone().unwrap_or_default();
            texts.push(format!("function {name}:\n{code}"));
        }
        Ok(texts)
    }

    /// Compiles `functions` into one fresh JIT module; [`CpuModule::fns`] holds their entry
    /// points in the order given.
    pub fn load(&self, functions: Vec<Function>) -> Result<CpuModule, JitError> {
        if !self.host {
            return Err(JitError::Host {
                message: format!(
                    "code for the named ISA {} is for printing only, not for loading here",
                    self.isa.triple()
                ),
            });
        }
        let mut builder =
            JITBuilder::with_isa(self.isa.clone(), cranelift_module::default_libcall_names());
        let symbols: [*const u8; 3] = [
            optjit_expf as *const u8,
            optjit_logf as *const u8,
            optjit_powf as *const u8,
        ];
        for (name, address) in LIBCALLS.iter().zip(symbols) {
            builder.symbol(*name, address);
        }
        let mut module = CpuModule {
            module: Some(JITModule::new(builder)),
            fns: Vec::new(),
        };
        let jit = module.module.as_mut().expect("just created");
        declare_libcalls(jit)?;

        let mut ids: Vec<FuncId> = Vec::with_capacity(functions.len());
        let mut ctx = jit.make_context();
        for (index, function) in functions.into_iter().enumerate() {
            let name = function.name.to_string();
            let symbol = format!("optjit_kernel{index}_{}", name.trim_start_matches('%'));
            let id = jit
                .declare_function(&symbol, Linkage::Local, &function.signature)
                .map_err(|e| module_error(format!("declare {symbol}"), e))?;
            ctx.func = function;
            if let Err(error) = jit.define_function(id, &mut ctx) {
                let (message, clif) = match error {
                    ModuleError::Compilation(CodegenError::Verifier(errors)) => (
                        format!("{} verifier error(s)", errors.0.len()),
                        print_errors::pretty_verifier_error(&ctx.func, None, errors),
                    ),
                    other => (other.to_string(), ctx.func.display().to_string()),
                };
                return Err(JitError::Compile {
                    function: name,
                    message,
                    clif,
                });
            }
            jit.clear_context(&mut ctx);
            ids.push(id);
        }
        jit.finalize_definitions()
            .map_err(|e| module_error("finalize the module", e))?;
        module.fns = ids
            .into_iter()
            .map(|id| {
                let code = jit.get_finalized_function(id);
                // SAFETY: the function was emitted with the ChunkAbi signature (three 64-bit
                // integer parameters, the host's default calling convention, no results),
                // which is `KernelFn`.
                unsafe { std::mem::transmute::<*const u8, KernelFn>(code) }
            })
            .collect();
        Ok(module)
    }
}

/// Declares [`LIBCALLS`] as imports, first and in order, so that their function ids are the
/// indices the emitter names them by.
fn declare_libcalls(jit: &mut JITModule) -> Result<(), JitError> {
    for (index, name) in LIBCALLS.iter().enumerate() {
        let arity = if *name == "optjit_powf" { 2 } else { 1 };
        let mut sig = jit.make_signature();
        sig.params
            .extend(std::iter::repeat_n(AbiParam::new(types::F32), arity));
        sig.returns.push(AbiParam::new(types::F32));
        let id = jit
            .declare_function(name, Linkage::Import, &sig)
            .map_err(|e| module_error(format!("declare {name}"), e))?;
        assert_eq!(
            id.as_u32() as usize,
            index,
            "libcall {name} must be function {index} of a fresh module"
        );
    }
    Ok(())
}

/// Loaded machine code and its entry points. Dropping it frees the code: the pointers in
/// [`CpuModule::fns`] are valid only while it lives.
pub struct CpuModule {
    /// `Some` until dropped.
    module: Option<JITModule>,
    /// One entry point per function given to [`CpuCodegen::load`], in that order.
    pub fns: Vec<KernelFn>,
}

impl fmt::Debug for CpuModule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CpuModule")
            .field("fns", &self.fns.len())
            .finish()
    }
}

impl Drop for CpuModule {
    fn drop(&mut self) {
        if let Some(module) = self.module.take() {
            // SAFETY: the entry points are owned by `self`; a caller that copied one out may
            // not call it after dropping the module (documented on the type), and no call can
            // be running while `&mut self` exists.
            unsafe { module.free_memory() };
        }
    }
}

// SAFETY: after `finalize_definitions` the module's code and data are immutable; `CpuModule`
// exposes no way to mutate the module, the entry points are plain function pointers that may
// be called from any thread, and the generated code keeps no state between calls.
unsafe impl Send for CpuModule {}
// SAFETY: as above: shared references only reach the immutable entry points.
unsafe impl Sync for CpuModule {}

extern "C" fn optjit_expf(x: f32) -> f32 {
    x.exp()
}

extern "C" fn optjit_logf(x: f32) -> f32 {
    x.ln()
}

extern "C" fn optjit_powf(x: f32, y: f32) -> f32 {
    x.powf(y)
}

#[cfg(test)]
mod tests {
    use super::*;
    use optjit_ir::{Binary, Buffer, BufferUse, Cmp, Unary};
    use optjit_kernels_gen::{ChunkAbi, Inst, ReduceOp, Value};

    const LENGTHS: [usize; 9] = [0, 1, 3, 15, 16, 17, 33, 1027, 4096 + 5];

    fn load(kernel: &Kernel) -> CpuModule {
        let codegen = CpuCodegen::host().expect("host isa");
        let functions = codegen.emit(std::slice::from_ref(kernel)).expect("emits");
        codegen.load(functions).expect("loads")
    }

    /// AdamW, one element: scalar slots are b1, 1-b1, b2, 1-b2, decay (1 - lr*wd), step_size
    /// (lr / bc1), bc2_sqrt, eps.
    fn adamw(fma: bool) -> Kernel {
        let v = Value;
        let mut insts = vec![
            Inst::Load { buffer: 0 }, // v0 p
            Inst::Load { buffer: 1 }, // v1 g
            Inst::Load { buffer: 2 }, // v2 m
            Inst::Load { buffer: 3 }, // v3 v
        ];
        insts.extend((0..8).map(|slot| Inst::Scalar { slot })); // v4..v11
        let mul = |a, b| Inst::Binary(Binary::Mul, v(a), v(b));
        if fma {
            insts.extend([
                mul(5, 1),                               // v12 (1-b1)*g
                Inst::Fma(v(4), v(2), v(12)),            // v13 m' = b1*m + ...
                mul(7, 1),                               // v14 (1-b2)*g
                mul(14, 1),                              // v15 (1-b2)*g*g
                Inst::Fma(v(6), v(3), v(15)),            // v16 v' = b2*v + ...
                Inst::Unary(Unary::Sqrt, v(16)),         // v17
                Inst::Binary(Binary::Div, v(17), v(10)), // v18
                Inst::Binary(Binary::Add, v(18), v(11)), // v19 denom
                mul(9, 13),                              // v20 step_size*m'
                Inst::Binary(Binary::Div, v(20), v(19)), // v21 update
                Inst::Unary(Unary::Neg, v(21)),          // v22
                Inst::Fma(v(0), v(8), v(22)),            // v23 p' = p*decay - update
                Inst::Store {
                    buffer: 0,
                    value: v(23),
                },
                Inst::Store {
                    buffer: 2,
                    value: v(13),
                },
                Inst::Store {
                    buffer: 3,
                    value: v(16),
                },
            ]);
        } else {
            insts.extend([
                mul(4, 2),                               // v12 b1*m
                mul(5, 1),                               // v13 (1-b1)*g
                Inst::Binary(Binary::Add, v(12), v(13)), // v14 m'
                mul(6, 3),                               // v15 b2*v
                mul(7, 1),                               // v16 (1-b2)*g
                mul(16, 1),                              // v17 (1-b2)*g*g
                Inst::Binary(Binary::Add, v(15), v(17)), // v18 v'
                Inst::Unary(Unary::Sqrt, v(18)),         // v19
                Inst::Binary(Binary::Div, v(19), v(10)), // v20
                Inst::Binary(Binary::Add, v(20), v(11)), // v21 denom
                mul(9, 14),                              // v22 step_size*m'
                Inst::Binary(Binary::Div, v(22), v(21)), // v23 update
                mul(0, 8),                               // v24 p*decay
                Inst::Binary(Binary::Sub, v(24), v(23)), // v25 p'
                Inst::Store {
                    buffer: 0,
                    value: v(25),
                },
                Inst::Store {
                    buffer: 2,
                    value: v(14),
                },
                Inst::Store {
                    buffer: 3,
                    value: v(18),
                },
            ]);
        }
        Kernel::elements(
            &format!("adamw{}.phase0", if fma { "_fma" } else { "" }),
            vec![
                BufferUse::new(Buffer::Param, true, true),
                BufferUse::new(Buffer::Grad, true, false),
                BufferUse::new(Buffer::State("exp_avg".into()), true, true),
                BufferUse::new(Buffer::State("exp_avg_sq".into()), true, true),
            ],
            8,
            insts,
        )
    }

    /// AdamW written as plain Rust, independently of the kernel IR.
    fn adamw_reference(s: &[f32], p: f32, g: f32, m: f32, v: f32) -> [f32; 3] {
        let (b1, one_b1, b2, one_b2, decay, step_size, bc2_sqrt, eps) =
            (s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]);
        let m = b1 * m + one_b1 * g;
        let v = b2 * v + one_b2 * g * g;
        let p = p * decay - step_size * m / (v.sqrt() / bc2_sqrt + eps);
        [p, m, v]
    }

    fn adamw_row(lr: f32, wd: f32, step: i32) -> Vec<f32> {
        let (b1, b2) = (0.9f32, 0.999f32);
        let bc1 = 1.0 - b1.powi(step);
        let bc2 = 1.0 - b2.powi(step);
        vec![
            b1,
            1.0 - b1,
            b2,
            1.0 - b2,
            1.0 - lr * wd,
            lr / bc1,
            bc2.sqrt(),
            1e-8,
        ]
    }

    /// Every op of the kernel IR: p' = select(lt(...), ..., ...) over exp, log, pow, sign,
    /// min, max, abs, rsqrt, neg, div, sub, fma, compares.
    fn every_op() -> Kernel {
        let v = Value;
        let insts = vec![
            Inst::Load { buffer: 0 },                // v0 x
            Inst::Load { buffer: 1 },                // v1 y
            Inst::Scalar { slot: 0 },                // v2 s0
            Inst::Scalar { slot: 1 },                // v3 s1
            Inst::Const(0.5),                        // v4
            Inst::Unary(Unary::Sign, v(0)),          // v5
            Inst::Binary(Binary::Min, v(0), v(1)),   // v6
            Inst::Binary(Binary::Max, v(0), v(1)),   // v7
            Inst::Cmp(Cmp::Lt, v(0), v(1)),          // v8
            Inst::Select(v(8), v(6), v(7)),          // v9 (x < y ? min : max)
            Inst::Unary(Unary::Abs, v(0)),           // v10
            Inst::Unary(Unary::Rsqrt, v(10)),        // v11
            Inst::Unary(Unary::Neg, v(11)),          // v12
            Inst::Unary(Unary::Exp, v(1)),           // v13
            Inst::Unary(Unary::Log, v(10)),          // v14
            Inst::Binary(Binary::Pow, v(10), v(1)),  // v15
            Inst::Binary(Binary::Sub, v(13), v(14)), // v16
            Inst::Binary(Binary::Div, v(15), v(2)),  // v17
            Inst::Fma(v(12), v(3), v(16)),           // v18
            Inst::Cmp(Cmp::Ge, v(0), v(4)),          // v19
            Inst::Select(v(19), v(17), v(18)),       // v20
            Inst::Cmp(Cmp::Ne, v(1), v(1)),          // v21 (y is NaN)
            Inst::Select(v(21), v(4), v(5)),         // v22
            Inst::Cmp(Cmp::Le, v(0), v(2)),          // v23
            Inst::Cmp(Cmp::Gt, v(1), v(3)),          // v24
            Inst::Cmp(Cmp::Eq, v(0), v(1)),          // v25
            Inst::Select(v(23), v(20), v(9)),        // v26
            Inst::Select(v(24), v(26), v(22)),       // v27
            Inst::Select(v(25), v(3), v(27)),        // v28
            Inst::Store {
                buffer: 0,
                value: v(28),
            },
            Inst::Store {
                buffer: 2,
                value: v(22),
            },
            Inst::Store {
                buffer: 3,
                value: v(9),
            },
            Inst::Store {
                buffer: 4,
                value: v(2),
            },
        ];
        Kernel::elements(
            "every.phase0",
            vec![
                BufferUse::new(Buffer::Param, true, true),
                BufferUse::new(Buffer::Grad, true, false),
                BufferUse::new(Buffer::State("sign".into()), false, true),
                BufferUse::new(Buffer::State("minmax".into()), false, true),
                BufferUse::new(Buffer::State("fill".into()), false, true),
            ],
            2,
            insts,
        )
    }

    /// IEEE 754-2019 minimum / maximum: NaN wins, -0 < +0.
    fn minimum(a: f32, b: f32) -> f32 {
        if a.is_nan() || b.is_nan() {
            f32::NAN
        } else if a == b {
            if a.is_sign_negative() { a } else { b }
        } else {
            a.min(b)
        }
    }

    fn maximum(a: f32, b: f32) -> f32 {
        if a.is_nan() || b.is_nan() {
            f32::NAN
        } else if a == b {
            if a.is_sign_positive() { a } else { b }
        } else {
            a.max(b)
        }
    }

    fn sign(x: f32) -> f32 {
        if x > 0.0 {
            1.0
        } else if x < 0.0 {
            -1.0
        } else {
            x
        }
    }

    /// The kernel IR evaluated in plain Rust f32 for one element: the stored values by buffer.
    fn interpret(kernel: &Kernel, loads: &[f32], row: &[f32]) -> Vec<Option<f32>> {
        let mut floats = vec![0.0f32; kernel.insts.len()];
        let mut masks = vec![false; kernel.insts.len()];
        let mut stored = vec![None; kernel.buffers.len()];
        for (i, inst) in kernel.insts.iter().enumerate() {
            let f = |v: Value| floats[v.index()];
            floats[i] = match *inst {
                Inst::Load { buffer } => loads[buffer],
                Inst::Scalar { slot } => row[slot],
                Inst::Const(c) => c,
                Inst::Unary(u, a) => match u {
                    Unary::Neg => -f(a),
                    Unary::Sqrt => f(a).sqrt(),
                    Unary::Rsqrt => 1.0 / f(a).sqrt(),
                    Unary::Exp => f(a).exp(),
                    Unary::Log => f(a).ln(),
                    Unary::Abs => f(a).abs(),
                    Unary::Sign => sign(f(a)),
                    other => panic!("{other:?} per element"),
                },
                Inst::Binary(op, a, b) => match op {
                    Binary::Add => f(a) + f(b),
                    Binary::Sub => f(a) - f(b),
                    Binary::Mul => f(a) * f(b),
                    Binary::Div => f(a) / f(b),
                    Binary::Min => minimum(f(a), f(b)),
                    Binary::Max => maximum(f(a), f(b)),
                    Binary::Pow => f(a).powf(f(b)),
                },
                Inst::Fma(a, b, c) => f(a).mul_add(f(b), f(c)),
                Inst::Cmp(c, a, b) => {
                    let (x, y) = (f(a), f(b));
                    masks[i] = match c {
                        Cmp::Lt => x < y,
                        Cmp::Le => x <= y,
                        Cmp::Gt => x > y,
                        Cmp::Ge => x >= y,
                        Cmp::Eq => x == y,
                        Cmp::Ne => x != y,
                    };
                    0.0
                }
                Inst::Select(c, a, b) => {
                    if masks[c.index()] {
                        f(a)
                    } else {
                        f(b)
                    }
                }
                Inst::Store { buffer, value } => {
                    stored[buffer] = Some(f(value));
                    0.0
                }
                // Checked by `reductions_fold_each_record_into_its_partials`.
                Inst::Reduce { .. } => 0.0,
            };
        }
        stored
    }

    /// Bitwise equality, any NaN equal to any NaN.
    fn same(a: f32, b: f32) -> bool {
        a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
    }

    /// Deterministic test data: special values first, then a spread of magnitudes.
    struct Data(u64);

    impl Data {
        fn next(&mut self, scale: f32) -> f32 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let unit = (self.0 >> 40) as f32 / (1u64 << 24) as f32; // [0, 1)
            (unit * 2.0 - 1.0) * scale
        }

        fn special(&mut self, i: usize, scale: f32) -> f32 {
            const SPECIAL: [f32; 10] = [
                f32::NAN,
                f32::INFINITY,
                f32::NEG_INFINITY,
                0.0,
                -0.0,
                1.0,
                -1.0,
                0.5,
                1e-40,
                -3e38,
            ];
            match (i * 7 + self.0 as usize % 3) % 23 {
                k if k < SPECIAL.len() => SPECIAL[k],
                _ => self.next(scale),
            }
        }
    }

    /// One chunk: its buffers (with a guard element on each side, so every pointer is offset by
    /// one float from the allocation) and its scalar row.
    struct Chunk {
        buffers: Vec<Vec<f32>>,
        before: Vec<Vec<f32>>,
        row: usize,
    }

    impl Chunk {
        fn len(&self) -> usize {
            self.buffers[0].len() - 2
        }
    }

    /// Builds the table over `chunks` (rows from `rows`) in the ChunkAbi layout.
    fn table(kernel: &Kernel, chunks: &mut [Chunk], rows: &[Vec<f32>]) -> Vec<u64> {
        let stride = ChunkAbi::record_words(kernel.buffers.len());
        let mut words = Vec::with_capacity(stride * chunks.len());
        for chunk in chunks.iter_mut() {
            words.push(chunk.len() as u64);
            words.push(rows[chunk.row].as_ptr() as u64);
            for buffer in &mut chunk.buffers {
                // One float in: 4-byte aligned, never 16-byte aligned with the allocation.
                words.push(buffer[1..].as_mut_ptr() as u64);
            }
        }
        assert_eq!(words.len(), stride * chunks.len());
        words
    }

    fn chunks(kernel: &Kernel, data: &mut Data, scales: &[f32], special: bool) -> Vec<Chunk> {
        LENGTHS
            .iter()
            .enumerate()
            .map(|(c, &len)| {
                let buffers: Vec<Vec<f32>> = (0..kernel.buffers.len())
                    .map(|b| {
                        (0..len + 2)
                            .map(|i| {
                                let scale = scales[b % scales.len()];
                                if special {
                                    data.special(i + b, scale)
                                } else {
                                    data.next(scale)
                                }
                            })
                            .collect()
                    })
                    .collect();
                Chunk {
                    before: buffers.clone(),
                    buffers,
                    row: c % 3,
                }
            })
            .collect()
    }

    /// Checks every element of `chunk` against `expected(row, loads) -> stored`, and that the
    /// guard elements and the buffers the kernel does not write are untouched.
    fn check_chunk(
        kernel: &Kernel,
        chunk: &Chunk,
        row: &[f32],
        expected: impl Fn(&[f32], &[f32]) -> Vec<Option<f32>>,
        close: impl Fn(f32, f32) -> bool,
    ) {
        let n = chunk.len();
        for (b, (after, before)) in chunk.buffers.iter().zip(&chunk.before).enumerate() {
            assert!(same(after[0], before[0]), "guard before buffer {b} written");
            assert!(
                same(after[n + 1], before[n + 1]),
                "guard after buffer {b} written"
            );
        }
        for i in 1..=n {
            let loads: Vec<f32> = chunk.before.iter().map(|b| b[i]).collect();
            let want = expected(row, &loads);
            for (b, want) in want.iter().enumerate() {
                let got = chunk.buffers[b][i];
                let want = want.unwrap_or(chunk.before[b][i]);
                assert!(
                    close(got, want),
                    "{}: len {n}, element {}, buffer {b}: got {got:?} ({:#x}), want {want:?} \
                     ({:#x}); inputs {loads:?}, row {row:?}",
                    kernel.name,
                    i - 1,
                    got.to_bits(),
                    want.to_bits(),
                );
            }
        }
    }

    /// Runs `kernel` over every test length and checks it against the IR interpreter, bit for bit.
    fn check_against_interpreter(kernel: &Kernel, rows: &[Vec<f32>], special: bool) {
        let module = load(kernel);
        let f = module.fns[0];
        let mut data = Data(7);
        let mut chunks = chunks(kernel, &mut data, &[1.0, 3.0], special);
        let words = table(kernel, &mut chunks, rows);
        // SAFETY: every record points at live buffers of its length and a row of n_scalars.
        unsafe { f(words.as_ptr(), 0, chunks.len() as u64, std::ptr::null_mut()) };
        for chunk in &chunks {
            let row = &rows[chunk.row];
            check_chunk(kernel, chunk, row, |r, l| interpret(kernel, l, r), same);
        }
    }

    /// Three scalar rows of AdamW: (lr, weight decay, step).
    fn adamw_rows() -> Vec<Vec<f32>> {
        vec![
            adamw_row(1e-3, 1e-2, 1),
            adamw_row(3e-4, 0.0, 10),
            adamw_row(1e-1, 0.1, 1000),
        ]
    }

    /// Runs `kernel` (an AdamW with or without FMA) over chunks of seeded data and checks every
    /// element against the plain-Rust AdamW with `agree`.
    fn check_adamw_against_plain_rust(
        kernel: &Kernel,
        seed: u64,
        agree: impl Fn(f32, f32) -> bool + Copy,
    ) {
        let rows = adamw_rows();
        let module = load(kernel);
        let mut data = Data(seed);
        let mut chunks = chunks(kernel, &mut data, &[1.0, 1.0, 0.1, 0.01], false);
        for chunk in &mut chunks {
            // exp_avg_sq is non-negative.
            for x in chunk.buffers[3]
                .iter_mut()
                .chain(chunk.before[3].iter_mut())
            {
                *x = x.abs();
            }
        }
        let words = table(kernel, &mut chunks, &rows);
        // SAFETY: every record points at live buffers of its length and a row of 8 scalars.
        unsafe { module.fns[0](words.as_ptr(), 0, chunks.len() as u64, std::ptr::null_mut()) };
        let reference = |row: &[f32], l: &[f32]| {
            let [p, m, v] = adamw_reference(row, l[0], l[1], l[2], l[3]);
            vec![Some(p), None, Some(m), Some(v)]
        };
        for chunk in &chunks {
            check_chunk(kernel, chunk, &rows[chunk.row], reference, agree);
        }
    }

    #[test]
    fn adamw_matches_plain_rust_bit_for_bit_without_fma() {
        let kernel = adamw(false);
        kernel.validate().expect("valid");
        check_adamw_against_plain_rust(&kernel, 1, same);
    }

    #[test]
    fn adamw_with_fma_is_exact_against_mul_add_and_close_to_plain_rust() {
        let kernel = adamw(true);
        kernel.validate().expect("valid");
        check_against_interpreter(&kernel, &adamw_rows(), false);
        // One rounding fewer per contraction: m' and v' cancel terms of about 0.1 and 0.01,
        // so the bound is absolute near zero and relative (a few ulps) elsewhere.
        let close = |a: f32, b: f32| (a - b).abs() <= 1e-6 * (1.0 + a.abs().max(b.abs()));
        check_adamw_against_plain_rust(&kernel, 2, close);
    }

    #[test]
    fn every_op_matches_the_interpreter_on_special_values() {
        let kernel = every_op();
        kernel.validate().expect("valid");
        let rows = vec![
            vec![0.5, -2.0],
            vec![f32::NAN, 0.0],
            vec![-0.0, f32::INFINITY],
        ];
        check_against_interpreter(&kernel, &rows, true);
        check_against_interpreter(&kernel, &rows, false);
    }

    #[test]
    fn sign_min_max_keep_zeros_and_nans() {
        // Every pair of special values through sign, min, max and a select, all vector paths.
        let specials = [
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            0.0,
            -0.0,
            1.0,
            -1.0,
            1e-40,
        ];
        let (mut xs, mut ys) = (Vec::new(), Vec::new());
        for &x in &specials {
            for &y in &specials {
                xs.push(x);
                ys.push(y);
            }
        }
        let kernel = every_op();
        let module = load(&kernel);
        let n = xs.len();
        let mut buffers: Vec<Vec<f32>> = vec![
            xs.clone(),
            ys.clone(),
            vec![7.0; n],
            vec![7.0; n],
            vec![7.0; n],
        ];
        let row = [0.25f32, -0.0];
        let mut words = vec![n as u64, row.as_ptr() as u64];
        words.extend(buffers.iter_mut().map(|b| b.as_mut_ptr() as u64));
        // SAFETY: one record over live buffers of n elements and a row of two scalars.
        unsafe { module.fns[0](words.as_ptr(), 0, 1, std::ptr::null_mut()) };
        for i in 0..n {
            let want = interpret(&kernel, &[xs[i], ys[i]], &row);
            for b in [0, 2, 3, 4] {
                let want = want[b].expect("stored");
                assert!(
                    same(buffers[b][i], want),
                    "x {:?} y {:?} buffer {b}: got {:?} want {want:?}",
                    xs[i],
                    ys[i],
                    buffers[b][i]
                );
            }
            assert!(same(
                buffers[2][i],
                if ys[i].is_nan() { 0.5 } else { sign(xs[i]) }
            ));
            let (lo, hi) = (minimum(xs[i], ys[i]), maximum(xs[i], ys[i]));
            assert!(same(buffers[3][i], if xs[i] < ys[i] { lo } else { hi }));
        }
    }

    #[test]
    fn sub_ranges_touch_only_their_records() {
        let kernel = adamw(false);
        let rows = vec![adamw_row(1e-3, 1e-2, 3); 3];
        let module = load(&kernel);
        let mut data = Data(3);
        let mut chunks = chunks(&kernel, &mut data, &[1.0, 1.0, 0.1, 0.01], false);
        let words = table(&kernel, &mut chunks, &rows);
        let (begin, end) = (3, 7);
        // SAFETY: as above; records begin..end exist.
        unsafe {
            module.fns[0](
                words.as_ptr(),
                begin as u64,
                end as u64,
                std::ptr::null_mut(),
            )
        };
        // An empty and a reversed range do nothing.
        // SAFETY: no record is visited.
        unsafe { module.fns[0](words.as_ptr(), 5, 5, std::ptr::null_mut()) };
        // SAFETY: as above.
        unsafe { module.fns[0](words.as_ptr(), 7, 2, std::ptr::null_mut()) };
        for (c, chunk) in chunks.iter().enumerate() {
            let inside = (begin..end).contains(&c);
            let changed = chunk
                .buffers
                .iter()
                .zip(&chunk.before)
                .any(|(a, b)| a.iter().zip(b).any(|(x, y)| !same(*x, *y)));
            assert_eq!(changed, inside && chunk.len() > 0, "record {c}");
        }
        // The rest, in two more calls, completes the step.
        // SAFETY: as above.
        unsafe { module.fns[0](words.as_ptr(), 0, begin as u64, std::ptr::null_mut()) };
        // SAFETY: as above.
        unsafe {
            module.fns[0](
                words.as_ptr(),
                end as u64,
                chunks.len() as u64,
                std::ptr::null_mut(),
            )
        };
        for chunk in &chunks {
            check_chunk(
                &kernel,
                chunk,
                &rows[chunk.row],
                |r, l| interpret(&kernel, l, r),
                same,
            );
        }
    }

    #[test]
    fn kernels_without_scalars_never_read_the_row() {
        let v = Value;
        // param = |grad| (a store of a load's function), state = 2.5 (a broadcast literal).
        let kernel = Kernel::elements(
            "copy.phase0",
            vec![
                BufferUse::new(Buffer::Param, false, true),
                BufferUse::new(Buffer::Grad, true, false),
                BufferUse::new(Buffer::State("fill".into()), false, true),
            ],
            0,
            vec![
                Inst::Load { buffer: 1 },
                Inst::Unary(Unary::Abs, v(0)),
                Inst::Const(2.5),
                Inst::Store {
                    buffer: 0,
                    value: v(1),
                },
                Inst::Store {
                    buffer: 2,
                    value: v(2),
                },
            ],
        );
        let module = load(&kernel);
        for n in LENGTHS {
            let grad: Vec<f32> = (0..n).map(|i| i as f32 - 7.5).collect();
            let (mut param, mut fill) = (vec![0.0f32; n], vec![0.0f32; n]);
            // A null row pointer: the kernel has no scalars, so it must not be read.
            let words = [
                n as u64,
                0,
                param.as_mut_ptr() as u64,
                grad.as_ptr() as u64,
                fill.as_mut_ptr() as u64,
            ];
            // SAFETY: one record over live buffers of n elements; no scalars are read.
            unsafe { module.fns[0](words.as_ptr(), 0, 1, std::ptr::null_mut()) };
            assert!(
                param.iter().zip(&grad).all(|(p, g)| *p == g.abs()),
                "len {n}"
            );
            assert!(fill.iter().all(|&x| x == 2.5), "len {n}");
        }
    }

    #[test]
    fn reductions_fold_each_record_into_its_partials() {
        let v = Value;
        // Three partials of grad (sum of squares, sum, max |x|) and a store beside them.
        let kernel = Kernel::elements(
            "reduce.phase0",
            vec![
                BufferUse::new(Buffer::Param, false, true),
                BufferUse::new(Buffer::Grad, true, false),
            ],
            0,
            vec![
                Inst::Load { buffer: 1 },
                Inst::Const(2.0),
                Inst::Binary(Binary::Mul, v(0), v(1)),
                Inst::Store {
                    buffer: 0,
                    value: v(2),
                },
                Inst::Reduce {
                    op: ReduceOp::SumSquares,
                    slot: 0,
                    value: v(0),
                },
                Inst::Reduce {
                    op: ReduceOp::Sum,
                    slot: 1,
                    value: v(0),
                },
                Inst::Reduce {
                    op: ReduceOp::MaxAbs,
                    slot: 2,
                    value: v(0),
                },
            ],
        );
        let module = load(&kernel);
        let mut data = Data(11);
        let grads: Vec<Vec<f32>> = LENGTHS
            .iter()
            .map(|&n| (0..n).map(|_| data.next(3.0)).collect())
            .collect();
        let mut params: Vec<Vec<f32>> = LENGTHS.iter().map(|&n| vec![0.0; n]).collect();
        // An empty record in the middle: its partials must keep what the caller put there.
        let mut words = Vec::new();
        for (k, (param, grad)) in params.iter_mut().zip(&grads).enumerate() {
            if k == 2 {
                words.extend([0, 0, 0, 0]);
            }
            words.extend([
                grad.len() as u64,
                0,
                param.as_mut_ptr() as u64,
                grad.as_ptr() as u64,
            ]);
        }
        let records = LENGTHS.len() + 1;
        let run = |words: &[u64]| {
            let mut partials = vec![-1.0f64; 3 * records];
            // SAFETY: every record points at live buffers of its length; `partials` holds a
            // row of 3 per record; no scalars are read.
            unsafe { module.fns[0](words.as_ptr(), 0, records as u64, partials.as_mut_ptr()) };
            partials
        };
        let partials = run(&words);
        assert_eq!(partials, run(&words), "the same inputs give the same bits");
        let mut rows = partials.chunks(3);
        for (k, grad) in grads.iter().enumerate() {
            if k == 2 {
                assert_eq!(rows.next(), Some(&[-1.0, -1.0, -1.0][..]), "empty record");
            }
            let row = rows.next().expect("a row per record");
            if grad.is_empty() {
                assert_eq!(row, &[-1.0, -1.0, -1.0][..], "a record of length 0");
                continue;
            }
            let squares: f64 = grad.iter().map(|&g| f64::from(g) * f64::from(g)).sum();
            let sum: f64 = grad.iter().map(|&g| f64::from(g)).sum();
            let magnitude: f64 = grad.iter().map(|&g| f64::from(g.abs())).fold(0.0, f64::max);
            // f32 accumulation over at most len / 16 values per lane.
            let tolerance = 1e-6 * (grad.len() as f64 / 16.0 + 1.0);
            let n = grad.len();
            assert!(
                (row[0] - squares).abs() <= tolerance * squares,
                "len {n}: {row:?} vs {squares}"
            );
            let abs_sum: f64 = grad.iter().map(|&g| f64::from(g.abs())).sum();
            assert!(
                (row[1] - sum).abs() <= tolerance * abs_sum,
                "len {n}: {row:?} vs {sum}"
            );
            assert_eq!(row[2], magnitude, "len {n}");
        }
        for (param, grad) in params.iter().zip(&grads) {
            assert!(param.iter().zip(grad).all(|(p, g)| *p == 2.0 * g));
        }

        // A NaN anywhere makes max_abs (and the sums) NaN.
        let mut grad = [1.0f32; 37];
        grad[20] = f32::NAN;
        let mut param = vec![0.0f32; 37];
        let words = [37, 0, param.as_mut_ptr() as u64, grad.as_ptr() as u64];
        let mut partials = [0.0f64; 3];
        // SAFETY: one record over live buffers of 37 elements and a row of 3 partials.
        unsafe { module.fns[0](words.as_ptr(), 0, 1, partials.as_mut_ptr()) };
        assert!(partials.iter().all(|p| p.is_nan()), "{partials:?}");
    }

    #[test]
    fn several_kernels_load_into_one_module_and_fma_is_detected() {
        let codegen = CpuCodegen::host().expect("host isa");
        if cfg!(target_arch = "x86_64") {
            let native = std::arch::is_x86_feature_detected!("avx")
                && std::arch::is_x86_feature_detected!("fma");
            assert_eq!(codegen.has_fma(), native);
        }
        let kernels = [adamw(false), every_op(), adamw(true)];
        let functions = codegen.emit(&kernels).expect("emits");
        let module = codegen.load(functions).expect("loads");
        assert_eq!(module.fns.len(), 3);
        let debug = format!("{module:?} {codegen:?}");
        assert!(debug.contains("fns: 3"), "{debug}");
    }

    #[test]
    fn emit_errors_are_reported_not_unwrapped() {
        let codegen = CpuCodegen::host().expect("host isa");
        let mut kernel = adamw(false);
        kernel.insts.push(Inst::Store {
            buffer: 1,
            value: Value(0),
        });
        let err = codegen.emit(&[kernel]).expect_err("grad is read-only");
        assert!(err.to_string().contains("grad is not written"), "{err}");
    }

    #[test]
    fn verifier_errors_come_with_the_clif() {
        if !cfg!(debug_assertions) {
            return; // The verifier is off in release builds; broken CLIF would not be caught.
        }
        let codegen = CpuCodegen::host().expect("host isa");
        let mut functions = codegen.emit(&[adamw(false)]).expect("emits");
        // Break the function: a block without a terminator.
        let f = &mut functions[0];
        let block = f.dfg.make_block();
        f.layout.append_block(block);
        match codegen.load(functions) {
            Err(JitError::Compile { clif, message, .. }) => {
                assert!(clif.contains("function %adamw_phase0"), "{clif}");
                assert!(!message.is_empty());
            }
            Err(other) => panic!("unexpected error {other}"),
            Ok(_) => panic!("the verifier runs in debug builds"),
        }
    }
}
