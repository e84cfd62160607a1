//! The optimizer a command names: a built-in (PyTorch class name and keyword arguments) or a
//! `.step` file (its optimizer, with the file's schedules in force), optionally with gradient
//! clipping fused in front.

use optjit_optim::{Kwarg, Kwargs};
use optjit_trace::Definition;
use std::collections::BTreeMap;
use std::path::Path;

/// An update rule ready to compile, with the hyperparameter values of the default group.
pub struct Chosen {
    /// The built-in's class name, or the `.step` optimizer's name.
    pub name: String,
    /// The update rule.
    pub definition: Definition,
    /// Hyperparameter values by name.
    pub hypers: BTreeMap<String, f64>,
}

/// Whether `optimizer` names a `.step` file rather than a built-in.
pub fn is_step_file(optimizer: &str) -> bool {
    optimizer.ends_with(".step")
}

/// `optimizer` (a built-in's name, or a path ending in `.step`) with `kwargs`, and
/// `clip_grad_norm_(max_norm)` fused in front when `clip_grad_norm` is given.
pub fn choose(
    optimizer: &str,
    kwargs: &Kwargs,
    clip_grad_norm: Option<f64>,
) -> Result<Chosen, String> {
    let mut chosen = match is_step_file(optimizer) {
        true => from_step_file(Path::new(optimizer), kwargs)?,
        false => {
            let c = optjit_optim::find(optimizer)
                .and_then(|spec| spec.configure(kwargs))
                .map_err(|e| e.to_string())?;
            Chosen {
                name: c.name.to_string(),
                definition: c.definition,
                hypers: c.hypers,
            }
        }
    };
    if let Some(max_norm) = clip_grad_norm {
        chosen.definition = optjit_trace::clip_grad_norm(&chosen.definition, max_norm)
            .map_err(|e| format!("--clip-grad-norm {max_norm}: {e}"))?;
        chosen
            .hypers
            .insert(optjit_trace::MAX_NORM.to_string(), max_norm);
    }
    Ok(chosen)
}

/// `chosen` with the PyTorch scheduler `json` in force: `{"name": "StepLR", "kwargs": {...}}`,
/// as golden files write it (scheduled values are computed in the step; a metric-driven
/// `ReduceLROnPlateau` changes nothing unless metrics are reported).
pub fn with_schedule(mut chosen: Chosen, json: &str) -> Result<Chosen, String> {
    let value: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("--schedule: not JSON: {e}"))?;
    let name = value
        .get("name")
        .and_then(serde_json::Value::as_str)
        .ok_or("--schedule: expected {\"name\": \"StepLR\", \"kwargs\": {...}}")?;
    let config = crate::golden::scheduler_config(name, value.get("kwargs"))
        .map_err(|e| format!("--schedule: {}", e.0))?;
    chosen.definition = config
        .apply(&chosen.definition)
        .map_err(|e| format!("--schedule: {e}"))?;
    for h in &chosen.definition.graph.hypers {
        chosen.hypers.entry(h.name.clone()).or_insert(h.default);
    }
    Ok(chosen)
}

/// The optimizer of the `.step` file at `path`, its schedules applied in file order, and
/// `kwargs` setting hyperparameters by name.
fn from_step_file(path: &Path, kwargs: &Kwargs) -> Result<Chosen, String> {
    let source = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    from_step_source(&path.display().to_string(), &source, kwargs)
}

/// The optimizer of `.step` source `source` (named `file` in errors), its schedules applied
/// in source order, and `kwargs` setting hyperparameters by name.
pub fn from_step_source(file: &str, source: &str, kwargs: &Kwargs) -> Result<Chosen, String> {
    let loaded = optjit_trace::step::load(file, source).map_err(|e| e.to_string())?;
    let mut definition = loaded.optimizer.ok_or_else(|| {
        format!("{file}: no `optimizer` block (a schedule alone has nothing to step)")
    })?;
    for schedule in &loaded.schedules {
        definition = schedule.apply(&definition).map_err(|e| e.to_string())?;
    }
    let mut hypers: BTreeMap<String, f64> = definition
        .graph
        .hypers
        .iter()
        .map(|h| (h.name.clone(), h.default))
        .collect();
    for (key, value) in kwargs {
        match (value, hypers.get_mut(key)) {
            (Kwarg::Number(x), Some(slot)) => *slot = *x,
            (_, None) => {
                let known: Vec<&str> = hypers.keys().map(String::as_str).collect();
                return Err(format!(
                    "{file}: '{key}' is not a hyperparameter (it has {})",
                    known.join(", ")
                ));
            }
            (other, Some(_)) => {
                return Err(format!("{file}: '{key}' must be a number, got {other}"));
            }
        }
    }
    Ok(Chosen {
        name: definition.graph.name.clone(),
        definition,
        hypers,
    })
}
