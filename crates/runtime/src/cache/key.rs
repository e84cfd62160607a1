//! The cache key: a stable hash of the canonical graph text, the target and arch, the compiler
//! options that change code, and the cache version (optjit's version and the sources of the
//! crates whose output is cached). Tensor counts, sizes, groups and hyperparameter values are
//! data and never enter it.

use super::disk::stable_hash;
use crate::target::Target;
use optjit_ir::DType;
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

/// The key of the in-process cache: the settings that change code, and the graph's canonical
/// encoding (cheap to build: no text is formatted on a memory hit).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct CacheKey {
    /// See [`settings`].
    pub(crate) settings: String,
    /// [`optjit_ir::Graph::canonical_words`].
    pub(crate) graph: Vec<u64>,
}

/// Everything besides the graph that changes the generated code, as text: the cache version,
/// the target and arch, how tensors are stored, the rule selection and limits, and the FMA
/// contraction in force (the host's answer already resolved).
pub(crate) fn settings(
    target: Target,
    storage: DType,
    simplify: &SimplifyOptions,
    fma: bool,
) -> String {
    // Every field is named, so no two different settings print alike; the time limit is a
    // safety net that never changes a finished run's output, so it is left out.
    // Hyperparameter ranges decide which conditional rules fire (`name:range` pairs in name
    // order; names cannot hold spaces or colons).
    let ranges: Vec<String> = simplify
        .hyper_ranges
        .iter()
        .map(|(name, range)| format!("{name}:{range}"))
        .collect();
    format!(
        "version={} target={target} storage={storage} exact_only={} iter_limit={} node_limit={} hyper_ranges={} fma={fma}\n",
        cache_version(),
        simplify.exact_only,
        simplify.iter_limit,
        simplify.node_limit,
        ranges.join(" "),
    )
}

/// The name of an entry on disk: a stable hash of the settings and the graph's text form (the
/// text, unlike the in-process encoding, is a documented format that outlives a build).
pub(crate) fn disk_key(settings: &str, graph_text: &str) -> String {
    stable_hash(format!("{settings}{graph_text}").as_bytes())
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
        let key = |dtype, target, simplify: &SimplifyOptions, fma| {
            let text = graph(dtype);
            let s = settings(target, DType::F32, simplify, fma);
            (disk_key(&s, &text), s)
        };
        let base = key(DType::F32, Target::Cpu, &options, true);
        let exact = SimplifyOptions {
            exact_only: true,
            ..SimplifyOptions::default()
        };
        let others = [
            key(DType::F64, Target::Cpu, &options, true),
            key(DType::F32, Target::cuda(), &options, true),
            key(DType::F32, Target::Cpu, &exact, true),
            key(DType::F32, Target::Cpu, &options, false),
        ];
        for other in &others {
            assert_ne!(base.0, other.0);
        }
        let bf16 = settings(Target::cuda(), DType::BF16, &options, true);
        assert_ne!(bf16, key(DType::F32, Target::cuda(), &options, true).1);
        // The time limit never changes a finished run's output: same key.
        let slow = SimplifyOptions {
            time_limit: std::time::Duration::from_secs(60),
            ..SimplifyOptions::default()
        };
        assert_eq!(base, key(DType::F32, Target::Cpu, &slow, true));
        assert_eq!(base.0.len(), 32);
        assert!(cache_version().starts_with(env!("CARGO_PKG_VERSION")));
    }
}
