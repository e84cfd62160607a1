//! Cranelift JIT loading of generated kernels (filled in by the kernels-gen work).
