//! Cranelift JIT loading: the host ISA, CLIF emission of every kernel, and a JIT module that
//! keeps the machine code alive while its function pointers are in use.

use cranelift_codegen::ir::Function;
use cranelift_codegen::isa::{OwnedTargetIsa, TargetIsa};
use cranelift_codegen::settings::{self, Configurable};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{Linkage, Module};
use optjit_kernels_gen::{Kernel, LIBCALLS};
use thiserror::Error;

/// A generated kernel: `fn(table, begin, end)` over chunk records (see
/// `optjit_kernels_gen::ChunkAbi`).
pub type KernelFn = unsafe extern "C" fn(table: *const u64, begin: u64, end: u64);

/// Cranelift failed; carries the CLIF it was given.
#[derive(Debug, Error)]
#[error("{what}: {message}{}", if clif.is_empty() { String::new() } else { format!("\n{clif}") })]
pub struct JitError {
    /// What was being done.
    pub what: String,
    /// Cranelift's message.
    pub message: String,
    /// The function's CLIF, when one was involved.
    pub clif: String,
}

fn jit_error(what: impl Into<String>, message: impl ToString) -> JitError {
    JitError {
        what: what.into(),
        message: message.to_string(),
        clif: String::new(),
    }
}

/// Code generation for the host CPU.
pub struct CpuCodegen {
    isa: OwnedTargetIsa,
}

impl CpuCodegen {
    /// The host ISA with every feature the CPU has (AVX, FMA, ...), optimizing for speed.
    pub fn host() -> Result<CpuCodegen, JitError> {
        let mut flags = settings::builder();
        let settings = [
            ("opt_level", "speed"),
            (
                "enable_verifier",
                if cfg!(debug_assertions) {
                    "true"
                } else {
                    "false"
                },
            ),
            ("is_pic", "false"),
            ("use_colocated_libcalls", "false"),
        ];
        for (name, value) in settings {
            flags
                .set(name, value)
                .map_err(|e| jit_error(format!("setting {name}={value}"), e))?;
        }
        let builder =
            cranelift_native::builder().map_err(|e| jit_error("detecting the host ISA", e))?;
        let isa = builder
            .finish(settings::Flags::new(flags))
            .map_err(|e| jit_error("building the host ISA", e))?;
        Ok(CpuCodegen { isa })
    }

    /// The ISA kernels are emitted for.
    pub fn isa(&self) -> &dyn TargetIsa {
        &*self.isa
    }

    /// Whether fused multiply-add is a native instruction here (x86-64 needs AVX and FMA;
    /// otherwise Cranelift calls `fmaf`, which is correct but slow).
    pub fn has_fma(&self) -> bool {
        match self.isa.triple().architecture {
            target_lexicon::Architecture::X86_64 => {
                let flags = self.isa.isa_flags();
                let on = |name: &str| {
                    flags
                        .iter()
                        .any(|f| f.name == name && f.as_bool() == Some(true))
                };
                on("has_avx") && on("has_fma")
            }
            target_lexicon::Architecture::Aarch64(_) => true,
            _ => false,
        }
    }

    /// The CLIF of every kernel.
    pub fn emit(&self, kernels: &[Kernel]) -> Result<Vec<Function>, JitError> {
        kernels
            .iter()
            .map(|k| {
                optjit_kernels_gen::emit_clif(k, self.isa())
                    .map_err(|e| jit_error(format!("emitting {}", k.name), e))
            })
            .collect()
    }

    /// Compiles and loads `functions`; their pointers are in the order given.
    pub fn load(&self, functions: Vec<Function>) -> Result<CpuModule, JitError> {
        let mut builder =
            JITBuilder::with_isa(self.isa.clone(), cranelift_module::default_libcall_names());
        builder.symbol(LIBCALLS[0], optjit_expf as *const u8);
        builder.symbol(LIBCALLS[1], optjit_logf as *const u8);
        builder.symbol(LIBCALLS[2], optjit_powf as *const u8);
        let mut module = JITModule::new(builder);
        // The kernels name libcall i as function i: declare them first, in order.
        for (index, (name, arity)) in LIBCALLS.iter().zip([1, 1, 2]).enumerate() {
            let mut sig = module.make_signature();
            sig.params.extend(std::iter::repeat_n(
                cranelift_codegen::ir::AbiParam::new(cranelift_codegen::ir::types::F32),
                arity,
            ));
            sig.returns.push(cranelift_codegen::ir::AbiParam::new(
                cranelift_codegen::ir::types::F32,
            ));
            let id = module
                .declare_function(name, Linkage::Import, &sig)
                .map_err(|e| jit_error("declaring libcalls", e))?;
            assert_eq!(
                id.as_u32() as usize,
                index,
                "libcall {name} must be function {index}"
            );
        }
        let mut ids = Vec::with_capacity(functions.len());
        let mut ctx = module.make_context();
        for (k, function) in functions.into_iter().enumerate() {
            let name = format!("optjit_kernel_{k}");
            let id = module
                .declare_function(&name, Linkage::Local, &function.signature)
                .map_err(|e| jit_error(format!("declaring {name}"), e))?;
            ctx.func = function;
            if let Err(e) = module.define_function(id, &mut ctx) {
                let clif = ctx.func.display().to_string();
                return Err(JitError {
                    what: format!("compiling {name}"),
                    message: format!("{e:?}"),
                    clif,
                });
            }
            module.clear_context(&mut ctx);
            ids.push(id);
        }
        module
            .finalize_definitions()
            .map_err(|e| jit_error("finalizing", e))?;
        let fns = ids
            .into_iter()
            .map(|id| {
                let code = module.get_finalized_function(id);
                // SAFETY: the function was built with the KernelFn signature (ChunkAbi).
                unsafe { std::mem::transmute::<*const u8, KernelFn>(code) }
            })
            .collect();
        Ok(CpuModule {
            _module: module,
            fns,
        })
    }
}

/// Loaded machine code and its entry points. Dropping it leaks the code pages rather than free
/// them under a running caller (Cranelift frees JIT memory only on request).
pub struct CpuModule {
    _module: JITModule,
    /// One entry point per kernel, in kernel order.
    pub fns: Vec<KernelFn>,
}

// SAFETY: after `finalize_definitions` the JIT module is immutable executable memory; the
// function pointers may be called from any thread, and nothing mutates the module afterwards.
unsafe impl Send for CpuModule {}
// SAFETY: as above; shared references expose only the immutable function pointers.
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
