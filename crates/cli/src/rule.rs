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

/// `chosen` with `schedule` in force: a PyTorch scheduler as JSON, `{"name": "StepLR", "kwargs":
/// {...}}` as golden files write it, or a `.step` file of `schedule` blocks, applied in file
/// order (scheduled values are computed in the step; a metric-driven schedule such as
/// `ReduceLROnPlateau` changes nothing unless metrics are reported). A schedule's own
/// hyperparameters take the values it declares.
pub fn with_schedule(mut chosen: Chosen, schedule: &str) -> Result<Chosen, String> {
    chosen.definition = match is_step_file(schedule) {
        true => step_file_schedules(&chosen.definition, Path::new(schedule))?,
        false => json_schedule(&chosen.definition, schedule)?,
    };
    for h in &chosen.definition.graph.hypers {
        chosen.hypers.entry(h.name.clone()).or_insert(h.default);
    }
    Ok(chosen)
}

/// `definition` with the PyTorch scheduler of `json` in force.
fn json_schedule(definition: &Definition, json: &str) -> Result<Definition, String> {
    let value: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("--schedule: not JSON: {e}"))?;
    refuse_duplicate_keys("--schedule", json)?;
    let name = value
        .get("name")
        .and_then(serde_json::Value::as_str)
        .ok_or("--schedule: expected {\"name\": \"StepLR\", \"kwargs\": {...}} or a .step file")?;
    let config = crate::golden::scheduler_config(name, value.get("kwargs"))
        .map_err(|e| format!("--schedule: {}", e.0))?;
    config
        .apply(definition)
        .map_err(|e| format!("--schedule: {e}"))
}

/// `definition` with the `schedule` blocks of the `.step` file at `path` in force, in file
/// order. The file holds schedules only: an optimizer block belongs to `--optimizer`.
fn step_file_schedules(definition: &Definition, path: &Path) -> Result<Definition, String> {
    let file = path.display().to_string();
    let source = std::fs::read_to_string(path)
        .map_err(|e| format!("--schedule {file}: cannot read: {e}"))?;
    let loaded = optjit_trace::step::load(&file, &source).map_err(|e| e.to_string())?;
    if loaded.optimizer.is_some() {
        return Err(format!(
            "--schedule {file}: the file has an `optimizer` block; give it as --optimizer (its \
             schedules come with it), or keep only `schedule` blocks in a --schedule file"
        ));
    }
    if loaded.schedules.is_empty() {
        return Err(format!("--schedule {file}: no `schedule` block"));
    }
    let mut scheduled = definition.clone();
    for schedule in &loaded.schedules {
        scheduled = schedule.apply(&scheduled).map_err(|e| e.to_string())?;
    }
    Ok(scheduled)
}

/// Refuses a JSON object (at any depth of `json`, valid JSON) that gives a key twice, naming
/// the key: serde_json keeps the last value silently, where one of the two was a mistake.
pub fn refuse_duplicate_keys(what: &str, json: &str) -> Result<(), String> {
    /// An open object (its keys so far, whether a key comes next, the last key) or array.
    enum Open {
        Object {
            keys: Vec<String>,
            key_next: bool,
            last: Option<String>,
        },
        Array,
    }
    let mut stack: Vec<Open> = Vec::new();
    let mut chars = json.char_indices();
    while let Some((start, c)) = chars.next() {
        match c {
            '{' => stack.push(Open::Object {
                keys: Vec::new(),
                key_next: true,
                last: None,
            }),
            '[' => stack.push(Open::Array),
            '}' | ']' => {
                stack.pop();
            }
            ',' | ':' => {
                if let Some(Open::Object { key_next, .. }) = stack.last_mut() {
                    *key_next = c == ',';
                }
            }
            '"' => {
                // The literal up to its closing quote, escapes skipped.
                let mut end = json.len();
                while let Some((i, c)) = chars.next() {
                    match c {
                        '\\' => {
                            chars.next();
                        }
                        '"' => {
                            end = i + 1;
                            break;
                        }
                        _ => {}
                    }
                }
                // The keys leading to the innermost open object (arrays left out).
                let path: Vec<&str> = stack[..stack.len().saturating_sub(1)]
                    .iter()
                    .filter_map(|open| match open {
                        Open::Object { last: Some(k), .. } => Some(k.as_str()),
                        _ => None,
                    })
                    .collect();
                let place = match path.is_empty() {
                    true => String::new(),
                    false => format!(" in {}", path.join(".")),
                };
                let Some(Open::Object {
                    keys,
                    key_next: true,
                    last,
                }) = stack.last_mut()
                else {
                    continue;
                };
                let key: String = serde_json::from_str(&json[start..end])
                    .map_err(|e| format!("{what}: not JSON: {e}"))?;
                if keys.contains(&key) {
                    return Err(format!("{what}: the key {key:?}{place} is given twice"));
                }
                keys.push(key.clone());
                *last = Some(key);
            }
            _ => {}
        }
    }
    Ok(())
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
