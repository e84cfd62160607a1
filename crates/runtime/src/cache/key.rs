//! The cache key: a stable hash of the canonical graph text, the target and arch, the compiler
//! options that change code, and the cache version (optjit's version and the sources of the
//! crates whose output is cached). Tensor counts, sizes, groups and hyperparameter values are
//! data and never enter it.

use super::disk::stable_hash;
use crate::target::Target;
use optjit_rewrite::SimplifyOptions;
use std::sync::OnceLock;

/// optjit's version, with a hash of the rewrite and kernel-generation sources: a build whose
/// rules, cost model, lowering or emitters differ never reads another build's entries.
pub(crate) fn cache_version() -> &'static str {
    static VERSION: OnceLock<String> = OnceLock::new();
    VERSION.get_or_init(|| {
        let sources: String = optjit_rewrite::SOURCES
            .iter()
            .chain(optjit_kernels_gen::SOURCES)
            .copied()
            .collect();
        let hash = stable_hash(sources.as_bytes());
        format!("{}+{}", env!("CARGO_PKG_VERSION"), &hash[..12])
    })
}

/// The key of compiling `graph_text` (the graph's text form) for `target` with these options;
/// `fma` is the contraction setting in force (the host's answer already resolved). The memory
/// cache uses the key text itself; the disk cache its [`stable_hash`] (see [`disk_key`]).
pub(crate) fn cache_key(
    graph_text: &str,
    target: Target,
    simplify: &SimplifyOptions,
    fma: bool,
) -> String {
    // Every field is named, so no two different settings print alike; the time limit is a
    // safety net that never changes a finished run's output, so it is left out.
    let settings = format!(
        "version={} target={target} exact_only={} iter_limit={} node_limit={} fma={fma}\n",
        cache_version(),
        simplify.exact_only,
        simplify.iter_limit,
        simplify.node_limit,
    );
    settings + graph_text
}

/// The file name of a key on disk: a stable hash of its text.
pub(crate) fn disk_key(key: &str) -> String {
    stable_hash(key.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use optjit_ir::{DType, Graph, Input, Op, Target as Out};

    fn graph(dtype: DType) -> String {
        let mut g = Graph::new("k");
        g.elem_dtype = dtype;
        let p = g.input(Input::Param);
        let grad = g.input(Input::Grad);
        let d = g.add(Op::Binary(optjit_ir::Binary::Sub), &[p, grad]);
        g.set_output(Out::Param, d);
        g.to_string()
    }

    #[test]
    fn everything_that_changes_code_changes_the_key() {
        let options = SimplifyOptions::default();
        let base = cache_key(&graph(DType::F32), Target::Cpu, &options, true);
        let exact = SimplifyOptions {
            exact_only: true,
            ..SimplifyOptions::default()
        };
        let others = [
            cache_key(&graph(DType::F64), Target::Cpu, &options, true),
            cache_key(&graph(DType::F32), Target::cuda(), &options, true),
            cache_key(&graph(DType::F32), Target::Cpu, &exact, true),
            cache_key(&graph(DType::F32), Target::Cpu, &options, false),
        ];
        for other in &others {
            assert_ne!(&base, other);
            assert_ne!(disk_key(&base), disk_key(other));
        }
        // The time limit never changes a finished run's output: same key.
        let slow = SimplifyOptions {
            time_limit: std::time::Duration::from_secs(60),
            ..SimplifyOptions::default()
        };
        assert_eq!(
            base,
            cache_key(&graph(DType::F32), Target::Cpu, &slow, true)
        );
        assert_eq!(disk_key(&base).len(), 32);
        assert!(cache_version().starts_with(env!("CARGO_PKG_VERSION")));
    }
}
