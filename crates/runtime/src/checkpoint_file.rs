//! A [`Checkpoint`] as bytes and as a file, in the safetensors layout (so that Python's
//! `safetensors.numpy.load_file` reads it too): an 8-byte little-endian header length, a JSON
//! header naming each entry's dtype, shape and byte range, then the data. The entries:
//!
//! | name | dtype, shape | what |
//! | --- | --- | --- |
//! | `steps` | U64 `[]` | steps taken |
//! | `shape.T` | U64 `[rank]` | the shape of tensor T |
//! | `group.G.tensors` | U64 `[n]` | the tensors of param group G |
//! | `group.G.hyper.NAME` | F64 `[]` | a hyperparameter's value |
//! | `group.G.scalar_state.NAME` | F64 `[]` | a scalar state |
//! | `state.T.NAME` | F32, the tensor's shape (per element) or `[n]` | a state of tensor T |
//!
//! `__metadata__` holds `format` (`optjit-checkpoint/1`), `rule`, `dtype` and `checksum`
//! (`xxh3_64:` and the XXH3 64-bit hash of the data, in hex), which loading verifies, with every
//! length and range.

use crate::checkpoint::{Checkpoint, GroupCheckpoint};
use optjit_ir::DType;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use thiserror::Error;

/// The `format` of the files this version writes and reads.
pub const CHECKPOINT_FORMAT: &str = "optjit-checkpoint/1";

/// The largest header a file may announce (as safetensors' own reader allows).
const MAX_HEADER_BYTES: u64 = 100_000_000;

/// A checkpoint could not be written, read or understood.
#[derive(Debug, Error)]
#[error("{origin}: {problem}")]
pub struct CheckpointError {
    /// The file, or `checkpoint bytes`.
    pub origin: String,
    /// What is wrong, naming the entry.
    pub problem: String,
}

/// One entry's data, as the file stores it.
enum Data<'a> {
    U64(Vec<u64>),
    F64(f64),
    F32(&'a [f32]),
}

impl Checkpoint {
    /// The checkpoint as the bytes of a file (see the module's documentation).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut entries: Vec<(String, Vec<usize>, Data)> = Vec::new();
        entries.push(("steps".into(), vec![], Data::U64(vec![self.steps])));
        for (t, shape) in self.shapes.iter().enumerate() {
            let dims = shape.iter().map(|&d| d as u64).collect();
            entries.push((format!("shape.{t}"), vec![shape.len()], Data::U64(dims)));
        }
        for (g, group) in self.groups.iter().enumerate() {
            let tensors: Vec<u64> = group.tensors.iter().map(|&t| t as u64).collect();
            let n = tensors.len();
            entries.push((format!("group.{g}.tensors"), vec![n], Data::U64(tensors)));
            for (name, &value) in &group.hypers {
                entries.push((format!("group.{g}.hyper.{name}"), vec![], Data::F64(value)));
            }
            for (name, &value) in &group.scalar_states {
                let key = format!("group.{g}.scalar_state.{name}");
                entries.push((key, vec![], Data::F64(value)));
            }
        }
        for (t, states) in self.tensors.iter().enumerate() {
            let elems: usize = self.shapes[t].iter().product();
            for (name, values) in states {
                let shape = match values.len() == elems {
                    true => self.shapes[t].clone(),
                    false => vec![values.len()],
                };
                let data = Data::F32(values);
                entries.push((format!("state.{t}.{name}"), shape, data));
            }
        }

        let values: usize = self.tensors.iter().flatten().map(|(_, v)| v.len()).sum();
        let mut data = Vec::with_capacity(4 * values + 8 * (entries.len() + self.shapes.len()));
        let mut header = Map::new();
        for (name, shape, values) in entries {
            let begin = data.len();
            let dtype = match values {
                Data::U64(v) => {
                    v.iter()
                        .for_each(|x| data.extend_from_slice(&x.to_le_bytes()));
                    "U64"
                }
                Data::F64(x) => {
                    data.extend_from_slice(&x.to_le_bytes());
                    "F64"
                }
                Data::F32(v) => {
                    v.iter()
                        .for_each(|x| data.extend_from_slice(&x.to_le_bytes()));
                    "F32"
                }
            };
            let entry =
                json!({"dtype": dtype, "shape": shape, "data_offsets": [begin, data.len()]});
            header.insert(name, entry);
        }
        let metadata = json!({
            "format": CHECKPOINT_FORMAT,
            "rule": self.rule,
            "dtype": self.dtype.name(),
            "checksum": checksum(&data),
        });
        header.insert("__metadata__".into(), metadata);
        let mut text = Value::Object(header).to_string().into_bytes();
        // Pad with spaces so that the data starts 8-byte aligned, as safetensors writes it.
        text.resize(text.len().next_multiple_of(8), b' ');
        let mut bytes = Vec::with_capacity(8 + text.len() + data.len());
        bytes.extend_from_slice(&(text.len() as u64).to_le_bytes());
        bytes.extend_from_slice(&text);
        bytes.extend_from_slice(&data);
        bytes
    }

    /// Reads a checkpoint from the bytes of a file, verifying every entry's range and the
    /// checksum.
    pub fn from_bytes(bytes: &[u8]) -> Result<Checkpoint, CheckpointError> {
        parse(bytes).map_err(|problem| CheckpointError {
            origin: "checkpoint bytes".into(),
            problem,
        })
    }

    /// Writes the checkpoint to `path`, replacing it only once the whole file is written and
    /// flushed to disk (a crash leaves the old file or the new one, never half of one).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), CheckpointError> {
        let path = path.as_ref();
        let fail = |what: &str, e: std::io::Error| CheckpointError {
            origin: path.display().to_string(),
            problem: format!("cannot {what}: {e}"),
        };
        let mut partial = path.as_os_str().to_owned();
        partial.push(format!(".partial-{}", std::process::id()));
        let partial = std::path::PathBuf::from(partial);
        let written = (|| {
            let mut file = std::fs::File::create(&partial)?;
            file.write_all(&self.to_bytes())?;
            file.sync_all()
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&partial);
            return Err(fail(&format!("write {}", partial.display()), e));
        }
        std::fs::rename(&partial, path).map_err(|e| {
            let _ = std::fs::remove_file(&partial);
            fail("replace it", e)
        })
    }

    /// Reads the checkpoint file at `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<Checkpoint, CheckpointError> {
        let path = path.as_ref();
        let origin = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| CheckpointError {
            origin: origin.clone(),
            problem: format!("cannot read: {e}"),
        })?;
        parse(&bytes).map_err(|problem| CheckpointError { origin, problem })
    }
}

/// The `checksum` of `data`.
fn checksum(data: &[u8]) -> String {
    format!("xxh3_64:{:016x}", xxhash_rust::xxh3::xxh3_64(data))
}

fn parse(bytes: &[u8]) -> Result<Checkpoint, String> {
    let Some((length, rest)) = bytes.split_first_chunk::<8>() else {
        return Err(format!(
            "{} bytes: too short for a header length",
            bytes.len()
        ));
    };
    let length = u64::from_le_bytes(*length);
    if length > MAX_HEADER_BYTES || length > rest.len() as u64 {
        return Err(format!(
            "the header length is {length} bytes, but {} bytes follow it (a truncated or foreign file?)",
            rest.len()
        ));
    }
    let (header, data) = rest.split_at(length as usize);
    let header = std::str::from_utf8(header).map_err(|e| format!("header: not UTF-8: {e}"))?;
    let header: Map<String, Value> =
        serde_json::from_str(header.trim_end()).map_err(|e| format!("header: not JSON: {e}"))?;

    let metadata = header
        .get("__metadata__")
        .and_then(Value::as_object)
        .ok_or("header: no __metadata__")?;
    let text = |key: &str| {
        metadata
            .get(key)
            .and_then(Value::as_str)
            .ok_or(format!("__metadata__.{key}: missing, or not a string"))
    };
    let format = text("format")?;
    if format != CHECKPOINT_FORMAT {
        return Err(format!(
            "__metadata__.format is '{format}', expected '{CHECKPOINT_FORMAT}'"
        ));
    }
    let checksum = checksum(data);
    if text("checksum")? != checksum {
        return Err(format!(
            "the data's checksum is {checksum}, the header says {} (the file is corrupt)",
            text("checksum")?
        ));
    }
    let dtype = text("dtype")?;
    let dtype = DType::from_name(dtype)
        .filter(|d| matches!(d, DType::F32 | DType::F16 | DType::BF16))
        .ok_or(format!(
            "__metadata__.dtype is '{dtype}', expected f32, f16 or bf16"
        ))?;

    let mut steps = None;
    let mut shapes: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    let mut groups: BTreeMap<usize, GroupParts> = BTreeMap::new();
    let mut states: Vec<(usize, String, Vec<f32>)> = Vec::new();
    for (name, entry) in &header {
        if name == "__metadata__" {
            continue;
        }
        let entry = Entry::parse(name, entry, data)?;
        let words: Vec<&str> = name.splitn(4, '.').collect();
        let index = |word: &str| {
            word.parse::<usize>()
                .map_err(|_| format!("{name}: '{word}' is not an index"))
        };
        match words.as_slice() {
            ["steps"] => steps = Some(entry.scalar_u64(name)?),
            ["shape", t] => {
                let dims = entry.u64s(name)?.into_iter().map(|d| d as usize).collect();
                shapes.insert(index(t)?, dims);
            }
            ["group", g, "tensors"] => {
                let tensors = entry.u64s(name)?.into_iter().map(|t| t as usize).collect();
                groups.entry(index(g)?).or_default().tensors = Some(tensors);
            }
            ["group", g, "hyper", key] => {
                let value = entry.scalar_f64(name)?;
                let group = groups.entry(index(g)?).or_default();
                group.hypers.insert(key.to_string(), value);
            }
            ["group", g, "scalar_state", key] => {
                let value = entry.scalar_f64(name)?;
                let group = groups.entry(index(g)?).or_default();
                group.scalar_states.insert(key.to_string(), value);
            }
            ["state", t, ..] => {
                // State names never hold a dot: the rest of the name is the state's.
                let key = &name[("state.".len() + t.len() + 1).min(name.len())..];
                if key.is_empty() {
                    return Err(format!("{name}: no state name after the tensor index"));
                }
                states.push((index(t)?, key.to_string(), entry.f32s(name)?));
            }
            _ => return Err(format!("{name}: not an entry of an optjit checkpoint")),
        }
    }

    let steps = steps.ok_or("no 'steps' entry")?;
    let shapes = numbered("shape.T", shapes)?;
    let groups = numbered("group.G", groups)?
        .into_iter()
        .enumerate()
        .map(|(g, parts)| {
            Ok(GroupCheckpoint {
                tensors: parts
                    .tensors
                    .ok_or(format!("no 'group.{g}.tensors' entry"))?,
                hypers: parts.hypers,
                scalar_states: parts.scalar_states,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    let mut tensors = vec![BTreeMap::new(); shapes.len()];
    for (t, key, values) in states {
        let Some(own) = tensors.get_mut(t) else {
            return Err(format!(
                "state.{t}.{key}: tensor {t} does not exist ({} tensors)",
                shapes.len()
            ));
        };
        own.insert(key, values);
    }
    Ok(Checkpoint {
        rule: text("rule")?.to_string(),
        dtype,
        steps,
        shapes,
        groups,
        tensors,
    })
}

/// What the entries of one param group hold, collected in any order.
#[derive(Default)]
struct GroupParts {
    tensors: Option<Vec<usize>>,
    hypers: BTreeMap<String, f64>,
    scalar_states: BTreeMap<String, f64>,
}

/// The values of numbered entries (`what` names them), which must be numbered `0..n`.
fn numbered<T>(what: &str, entries: BTreeMap<usize, T>) -> Result<Vec<T>, String> {
    let n = entries.len();
    match entries.keys().enumerate().find(|&(i, &k)| i != k) {
        Some((i, _)) => Err(format!("{what}: entry {i} is missing ({n} others)")),
        None => Ok(entries.into_values().collect()),
    }
}

/// One entry of the header, checked against the data.
struct Entry<'a> {
    dtype: &'a str,
    shape: Vec<usize>,
    bytes: &'a [u8],
}

impl<'a> Entry<'a> {
    fn parse(name: &str, entry: &'a Value, data: &'a [u8]) -> Result<Entry<'a>, String> {
        let dtype = entry
            .get("dtype")
            .and_then(Value::as_str)
            .ok_or(format!("{name}: no dtype"))?;
        let size = match dtype {
            "U64" | "F64" => 8,
            "F32" => 4,
            other => return Err(format!("{name}: dtype {other}, expected U64, F64 or F32")),
        };
        let numbers = |key: &str| -> Result<Vec<usize>, String> {
            let list = entry.get(key).and_then(Value::as_array);
            list.and_then(|l| l.iter().map(|v| v.as_u64().map(|x| x as usize)).collect())
                .ok_or(format!("{name}: {key} must be a list of integers"))
        };
        let shape = numbers("shape")?;
        let offsets = numbers("data_offsets")?;
        let &[begin, end] = offsets.as_slice() else {
            return Err(format!("{name}: data_offsets must be [begin, end]"));
        };
        let count = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
        let expected = count.and_then(|n| n.checked_mul(size));
        if begin > end || end > data.len() || Some(end - begin) != expected {
            return Err(format!(
                "{name}: data_offsets [{begin}, {end}] do not hold a {dtype} tensor of shape {shape:?} within the {} bytes of data",
                data.len()
            ));
        }
        Ok(Entry {
            dtype,
            shape,
            bytes: &data[begin..end],
        })
    }

    fn expect(&self, name: &str, dtype: &str, scalar: bool) -> Result<(), String> {
        if self.dtype != dtype || (scalar && !self.shape.is_empty()) {
            let shape = if scalar { "[]" } else { "any shape" };
            return Err(format!(
                "{name}: a {} tensor of shape {:?}, expected {dtype} of {shape}",
                self.dtype, self.shape
            ));
        }
        Ok(())
    }

    fn u64s(&self, name: &str) -> Result<Vec<u64>, String> {
        self.expect(name, "U64", false)?;
        let words = self.bytes.chunks_exact(8);
        Ok(words
            .map(|w| u64::from_le_bytes(w.try_into().unwrap()))
            .collect())
    }

    fn scalar_u64(&self, name: &str) -> Result<u64, String> {
        self.expect(name, "U64", true)?;
        Ok(self.u64s(name)?[0])
    }

    fn scalar_f64(&self, name: &str) -> Result<f64, String> {
        self.expect(name, "F64", true)?;
        Ok(f64::from_le_bytes(self.bytes.try_into().unwrap()))
    }

    fn f32s(&self, name: &str) -> Result<Vec<f32>, String> {
        self.expect(name, "F32", false)?;
        let words = self.bytes.chunks_exact(4);
        Ok(words
            .map(|w| f32::from_le_bytes(w.try_into().unwrap()))
            .collect())
    }
}
