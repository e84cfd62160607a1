//! The command line every optimizer bench takes (`[-- WORKLOAD... --threads N]`) and the median
//! they report.

use optjit_cli::workload;

/// The workloads to run (every one when none is named) and the worker threads (2 by default).
pub fn parse() -> (Vec<&'static str>, usize) {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let threads = args
        .iter()
        .position(|a| a == "--threads")
        .and_then(|i| args.get(i + 1))
        .and_then(|t| t.parse().ok())
        .unwrap_or(2);
    let mut names: Vec<&'static str> = workload::NAMES
        .iter()
        .copied()
        .filter(|name| args.iter().any(|a| a == name))
        .collect();
    if names.is_empty() {
        names = workload::NAMES.to_vec();
    }
    (names, threads)
}

/// The median of `xs` (the upper one of an even count).
pub fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}
