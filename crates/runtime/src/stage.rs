//! The named stages of the compile pipeline, in order, the `OPTJIT_DUMP` selection of them, and
//! `OPTJIT_TIME`, which asks for their timings.

use std::fmt;

/// One step of the pipeline. The same names appear in dumps, `--emit`, snapshots and timings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stage {
    /// The traced graph, as the front end produced it.
    Trace,
    /// The IR verifier's verdict.
    Verify,
    /// The e-graph run (its report).
    Simplify,
    /// The cheapest graph extracted from the e-graph.
    Extract,
    /// The fusion plan: scalar program and kernel phases.
    Fuse,
    /// Target-neutral kernel IR, one kernel per phase.
    Lower,
    /// Cranelift IR of each kernel (CPU target).
    Clif,
    /// PTX of each kernel (CUDA target).
    Ptx,
    /// The loaded machine code.
    Load,
}

impl Stage {
    /// Every stage, in pipeline order.
    pub const ALL: [Stage; 9] = [
        Stage::Trace,
        Stage::Verify,
        Stage::Simplify,
        Stage::Extract,
        Stage::Fuse,
        Stage::Lower,
        Stage::Clif,
        Stage::Ptx,
        Stage::Load,
    ];

    /// The stage's name.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Trace => "trace",
            Stage::Verify => "verify",
            Stage::Simplify => "simplify",
            Stage::Extract => "extract",
            Stage::Fuse => "fuse",
            Stage::Lower => "lower",
            Stage::Clif => "clif",
            Stage::Ptx => "ptx",
            Stage::Load => "load",
        }
    }

    /// The stage called `name`.
    pub fn from_name(name: &str) -> Option<Stage> {
        Stage::ALL.into_iter().find(|s| s.name() == name)
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which stages to print, and where (`OPTJIT_DUMP=all|stage,...`, `OPTJIT_DUMP_DIR=path`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dump {
    /// Stages whose text is printed.
    pub stages: Vec<Stage>,
    /// Write one file per stage here instead of printing to stderr.
    pub dir: Option<std::path::PathBuf>,
}

impl Dump {
    /// Reads `OPTJIT_DUMP` and `OPTJIT_DUMP_DIR`; unknown stage names are reported once on
    /// stderr and ignored.
    pub fn from_env() -> Dump {
        let dir = std::env::var_os("OPTJIT_DUMP_DIR").map(Into::into);
        let Ok(list) = std::env::var("OPTJIT_DUMP") else {
            return Dump {
                stages: Vec::new(),
                dir,
            };
        };
        let mut stages = Vec::new();
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            match (name, Stage::from_name(name)) {
                ("all", _) => stages.extend(Stage::ALL),
                (_, Some(stage)) => stages.push(stage),
                (_, None) => {
                    let known: Vec<&str> = Stage::ALL.iter().map(|s| s.name()).collect();
                    eprintln!(
                        "optjit: OPTJIT_DUMP: unknown stage '{name}' (expected all or {})",
                        known.join(", ")
                    );
                }
            }
        }
        stages.sort();
        stages.dedup();
        Dump { stages, dir }
    }

    /// Whether `stage` is selected.
    pub fn wants(&self, stage: Stage) -> bool {
        self.stages.contains(&stage)
    }

    /// Prints (or writes) the text of `stage` for the rule `rule`.
    pub fn emit(&self, rule: &str, stage: Stage, text: &str) {
        if !self.wants(stage) {
            return;
        }
        let index = Stage::ALL.iter().position(|&s| s == stage).unwrap_or(0);
        match &self.dir {
            Some(dir) => {
                let path = dir.join(format!("{rule}.{index:02}-{stage}.txt"));
                if let Err(e) =
                    std::fs::create_dir_all(dir).and_then(|_| std::fs::write(&path, text))
                {
                    eprintln!(
                        "optjit: OPTJIT_DUMP_DIR: cannot write {}: {e}",
                        path.display()
                    );
                }
            }
            None => eprintln!("// ----- after {stage} ({rule}) -----\n{text}"),
        }
    }
}

/// Whether `OPTJIT_TIME` asks for the per-stage timing table: `1` does; unset, empty or `0`
/// does not. Any other value does not either, and is reported once on stderr.
pub(crate) fn times_from_env() -> bool {
    static WARNED: std::sync::Once = std::sync::Once::new();
    let (print, warning) = times_from(std::env::var_os("OPTJIT_TIME").as_deref());
    if let Some(warning) = warning {
        WARNED.call_once(|| eprintln!("optjit: {warning}"));
    }
    print
}

/// [`times_from_env`] for the value `value`, with the warning about an unknown one, if any.
fn times_from(value: Option<&std::ffi::OsStr>) -> (bool, Option<String>) {
    match value.map(|v| v.to_string_lossy()).as_deref() {
        Some("1") => (true, None),
        None | Some("" | "0") => (false, None),
        Some(other) => (
            false,
            Some(format!(
                "OPTJIT_TIME={other:?} is not one of 0, 1: stage times are not printed"
            )),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::times_from;
    use std::ffi::OsStr;

    #[test]
    fn optjit_time_is_one_or_zero_and_anything_else_is_reported() {
        assert_eq!(times_from(Some(OsStr::new("1"))), (true, None));
        for quiet in [None, Some(OsStr::new("")), Some(OsStr::new("0"))] {
            assert_eq!(times_from(quiet), (false, None), "{quiet:?}");
        }
        for unknown in ["yes", "true", "on", " 1"] {
            let (print, warning) = times_from(Some(OsStr::new(unknown)));
            assert!(!print, "{unknown}");
            let warning = warning.expect("a warning");
            assert!(
                warning.starts_with(&format!("OPTJIT_TIME={unknown:?} is not one of 0, 1")),
                "{warning}"
            );
        }
    }
}
