//! `optjit list`: every built-in optimizer and scheduler with its keyword arguments and
//! PyTorch defaults.

use optjit_optim::{KwargKind, SCHEDULERS, builtins, scheduler_kwargs};

/// The listing.
pub fn run() -> String {
    let mut out = String::from("optimizers:\n");
    for spec in builtins() {
        let kwargs: Vec<String> = spec
            .kwargs
            .iter()
            .map(|k| {
                let note = match k.kind {
                    KwargKind::Hyper(d)
                    | KwargKind::Pair(_, d)
                    | KwargKind::PairNoneFirst(_, d, _) => format!(" ({d})"),
                    KwargKind::Flag => " (compile-time)".to_string(),
                    KwargKind::Ignored => String::new(),
                };
                format!("{}={}{note}", k.name, k.default)
            })
            .collect();
        out.push_str(&format!(
            "  {:<6} {}  [{}]\n",
            spec.name,
            kwargs.join(", "),
            spec.reference
        ));
    }
    out.push_str("schedulers (torch.optim.lr_scheduler, as .step schedules; or a .step file):\n");
    for &name in SCHEDULERS {
        let kwargs: Vec<String> = scheduler_kwargs(name)
            .into_iter()
            .map(|(k, default)| format!("{k}={default}"))
            .collect();
        out.push_str(&format!("  {name:<28} {}\n", kwargs.join(", ")));
    }
    out
}
