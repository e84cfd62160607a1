//! Reading a checkpoint file (the layout is in `checkpoint_file.rs`) in one pass from its start,
//! trusting nothing: the header's length, its number of entries and of JSON values (bounded
//! before it is parsed, so that a header costs a bounded multiple of its size), its JSON, the
//! format, every entry's dtype, shape and byte range (the entries must tile the data exactly,
//! as safetensors requires, so the values read never take more memory than the data), the
//! checksum of the whole file (the header hashed first, the data as the entries are decoded),
//! canonical indices, and the ranges of the step count and the shapes.

use crate::checkpoint::{Checkpoint, GroupCheckpoint, MAX_STEPS};
use crate::checkpoint_file::{CHECKPOINT_FORMAT, checksum_text};
use optjit_ir::DType;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::io::Read;

/// The largest header a file may announce (as safetensors' own reader allows).
const MAX_HEADER_BYTES: u64 = 100_000_000;

/// The most entries a header may hold: a checkpoint of a model with a hundred thousand tensors
/// and their states has a few hundred thousand.
const MAX_ENTRIES: usize = 1 << 20;

/// The most JSON values a header may hold: an entry is a dozen (its object, dtype, shape and
/// offsets, a number per dimension), so this bound is met only by a header built to be large.
const MAX_JSON_VALUES: usize = 16 * MAX_ENTRIES;

/// What precedes the checksum's 16 hex digits in the header, exactly once.
const CHECKSUM_TAG: &[u8] = b"\"checksum\":\"xxh3_64:";

/// The largest element count of a tensor (as `Setup` allows).
const MAX_ELEMENTS: usize = isize::MAX as usize / 8;

/// The checkpoint in `bytes` (a whole file), or what is wrong with them.
pub(crate) fn parse(bytes: &[u8]) -> Result<Checkpoint, String> {
    read(&mut &bytes[..], bytes.len() as u64)
}

/// The checkpoint that `source` holds, a file of `file_len` bytes, read once from its start:
/// the header, then each entry's data straight into its values (hashed on the way), so that
/// nothing but the values is ever held whole.
pub(crate) fn read(source: &mut impl Read, file_len: u64) -> Result<Checkpoint, String> {
    if file_len < 8 {
        return Err(format!("{file_len} bytes: too short for a header length"));
    }
    let mut length_bytes = [0u8; 8];
    source
        .read_exact(&mut length_bytes)
        .map_err(|e| format!("the header length: {e}"))?;
    let length = u64::from_le_bytes(length_bytes);
    if length > MAX_HEADER_BYTES {
        return Err(format!(
            "the header length is {length} bytes, more than the {MAX_HEADER_BYTES} a checkpoint may have (a foreign file?)"
        ));
    }
    if length > file_len - 8 {
        return Err(format!(
            "the header length is {length} bytes, but only {} bytes follow it (a truncated file?)",
            file_len - 8
        ));
    }
    let data_len = usize::try_from(file_len - 8 - length)
        .map_err(|_| format!("{file_len} bytes: more than this machine can address"))?;
    let mut header = vec![0u8; length as usize];
    source
        .read_exact(&mut header)
        .map_err(|e| format!("the header: {e}"))?;
    check_header_size(&header)?;
    // The checksum covers the whole file, its own digits read as `0`s.
    let digits = checksum_at(&header)?;
    let mut hasher = xxhash_rust::xxh3::Xxh3Default::new();
    hasher.update(&length_bytes);
    hasher.update(&header[..digits]);
    hasher.update(&[b'0'; 16]);
    hasher.update(&header[digits + 16..]);
    let header = std::str::from_utf8(&header).map_err(|e| format!("header: not UTF-8: {e}"))?;
    let raw_checksum = format!("xxh3_64:{}", &header[digits..digits + 16]);
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
    let expected_checksum = text("checksum")?;
    if expected_checksum != raw_checksum {
        return Err(format!(
            "__metadata__.checksum is '{expected_checksum}', but the header's text holds {raw_checksum} (written otherwise than optjit writes it)"
        ));
    }
    let dtype = text("dtype")?;
    let dtype = DType::from_name(dtype)
        .filter(|d| matches!(d, DType::F32 | DType::F16 | DType::BF16))
        .ok_or(format!(
            "__metadata__.dtype is '{dtype}', expected f32, f16 or bf16"
        ))?;

    let mut entries = (header.iter())
        .filter(|(name, _)| *name != "__metadata__")
        .map(|(name, entry)| Entry::parse(name, entry, data_len))
        .collect::<Result<Vec<_>, String>>()?;
    check_tiling(&entries, data_len)?;
    entries.sort_unstable_by_key(|e| e.begin);
    for entry in &mut entries {
        entry.read(source, &mut hasher)?;
    }
    let checksum = checksum_text(hasher.digest());
    if expected_checksum != checksum {
        return Err(format!(
            "the file's checksum is {checksum}, the header says {expected_checksum} (the file is damaged)"
        ));
    }
    assemble(text("rule")?, dtype, entries)
}

/// Refuses a header with more than [`MAX_ENTRIES`] entries or [`MAX_JSON_VALUES`] JSON values,
/// counted from its bytes before it is parsed (an object per `{`, a value per `[`, `,` or `:`;
/// such bytes inside strings count too, so the counts are upper bounds): parsed, a value takes
/// some tens of bytes, so a header of tiny entries would take far more memory than its size.
fn check_header_size(header: &[u8]) -> Result<(), String> {
    let count = |bytes: &[u8]| header.iter().filter(|b| bytes.contains(b)).count();
    let objects = count(b"{");
    // One object is the header, one `__metadata__`.
    if objects > MAX_ENTRIES + 2 {
        return Err(format!(
            "the header holds {} entries or more, more than the {MAX_ENTRIES} a checkpoint may have",
            objects - 2
        ));
    }
    let values = count(b"{[,:");
    if values > MAX_JSON_VALUES {
        return Err(format!(
            "the header holds {values} JSON values or more, more than the {MAX_JSON_VALUES} a checkpoint's {MAX_ENTRIES} entries may have"
        ));
    }
    Ok(())
}

/// Where the checksum's 16 hex digits are in `header`: after [`CHECKSUM_TAG`], which must occur
/// exactly once, and followed by the closing quote.
fn checksum_at(header: &[u8]) -> Result<usize, String> {
    let mut found = (header.windows(CHECKSUM_TAG.len()).enumerate())
        .filter(|(_, w)| *w == CHECKSUM_TAG)
        .map(|(at, _)| at + CHECKSUM_TAG.len());
    let at = found.next().ok_or(
        "header: no checksum (`\"checksum\":\"xxh3_64:` and 16 hex digits in __metadata__)",
    )?;
    if found.next().is_some() {
        return Err("header: more than one checksum".to_string());
    }
    let digits = header.get(at..at + 16).filter(|d| {
        d.iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
    });
    match digits.is_some() && header.get(at + 16) == Some(&b'"') {
        true => Ok(at),
        false => Err("header: the checksum is not 16 lowercase hex digits".to_string()),
    }
}

/// The checkpoint that `entries`, read and checked, hold for `rule` stored as `dtype`.
fn assemble(rule: &str, dtype: DType, mut entries: Vec<Entry<'_>>) -> Result<Checkpoint, String> {
    let mut steps = None;
    let mut shapes: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    let mut groups: BTreeMap<usize, GroupParts> = BTreeMap::new();
    let mut states: Vec<(usize, String, Vec<f32>)> = Vec::new();
    let mut tensor_steps: BTreeMap<usize, u64> = BTreeMap::new();
    let mut tensor_scalars: Vec<(usize, String, f64)> = Vec::new();
    for entry in &mut entries {
        let name = entry.name;
        let words: Vec<&str> = name.splitn(4, '.').collect();
        let index = |word: &str| {
            // Only canonical decimals, so that no two names mean the same entry.
            let index = word.parse::<usize>().ok();
            index
                .filter(|i| i.to_string() == word)
                .ok_or(format!("{name}: '{word}' is not an index"))
        };
        match words.as_slice() {
            ["steps"] => steps = Some(entry.scalar_u64()?),
            ["shape", t] => {
                shapes.insert(index(t)?, entry.shape_dims()?);
            }
            ["group", g, "tensors"] => {
                let tensors = entry.u64s()?.into_iter().map(|t| t as usize).collect();
                groups.entry(index(g)?).or_default().tensors = Some(tensors);
            }
            ["group", g, "hyper", key] => {
                let value = entry.scalar_f64()?;
                let group = groups.entry(index(g)?).or_default();
                group.hypers.insert(key.to_string(), value);
            }
            ["group", g, "scalar_state", key] => {
                let value = entry.scalar_f64()?;
                let group = groups.entry(index(g)?).or_default();
                group.scalar_states.insert(key.to_string(), value);
            }
            ["step", t] => {
                tensor_steps.insert(index(t)?, entry.scalar_u64()?);
            }
            ["scalar_state", t, key] => {
                tensor_scalars.push((index(t)?, key.to_string(), entry.scalar_f64()?));
            }
            ["state", t, ..] => {
                // The rest of the name, dots and all, is the state's.
                let key = &name[("state.".len() + t.len() + 1).min(name.len())..];
                if key.is_empty() {
                    return Err(format!("{name}: no state name after the tensor index"));
                }
                states.push((index(t)?, key.to_string(), entry.f32s()?));
            }
            _ => return Err(format!("{name}: not an entry of an optjit checkpoint")),
        }
    }

    let steps = steps.ok_or("no 'steps' entry")?;
    if steps > MAX_STEPS {
        return Err(format!(
            "steps: {steps}, more than the {MAX_STEPS} a step count may reach"
        ));
    }
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
    let tensor_steps = numbered("step.T", tensor_steps)?;
    if tensor_steps.len() != shapes.len() {
        return Err(format!(
            "step.T: {} step counts for {} tensors",
            tensor_steps.len(),
            shapes.len()
        ));
    }
    if let Some((t, &s)) = tensor_steps.iter().enumerate().find(|&(_, &s)| s > steps) {
        return Err(format!(
            "step.{t}: {s}, more than the optimizer's {steps} steps"
        ));
    }
    let mut tensor_scalar_states = vec![BTreeMap::new(); shapes.len()];
    for (t, key, value) in tensor_scalars {
        let Some(own) = tensor_scalar_states.get_mut(t) else {
            return Err(format!(
                "scalar_state.{t}.{key}: tensor {t} does not exist ({} tensors)",
                shapes.len()
            ));
        };
        own.insert(key, value);
    }
    Ok(Checkpoint {
        rule: rule.to_string(),
        dtype,
        steps,
        shapes,
        groups,
        tensors,
        tensor_steps,
        tensor_scalar_states,
    })
}

/// Refuses entries that overlap, leave gaps or leave data over (safetensors' own rule).
fn check_tiling(entries: &[Entry<'_>], data_len: usize) -> Result<(), String> {
    let mut ranges: Vec<(usize, usize, &str)> =
        entries.iter().map(|e| (e.begin, e.end, e.name)).collect();
    ranges.sort_unstable();
    let mut end = 0;
    for (begin, next_end, name) in ranges {
        if begin != end {
            return Err(format!(
                "{name}: its data starts at byte {begin}, expected {end} (entries must follow one another without gaps or overlaps)"
            ));
        }
        end = next_end;
    }
    match end == data_len {
        true => Ok(()),
        false => Err(format!(
            "the entries cover {end} bytes of data, the file holds {data_len}"
        )),
    }
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

/// One entry of the header, checked against the length of the data, and then its values.
struct Entry<'a> {
    name: &'a str,
    dtype: &'a str,
    shape: Vec<usize>,
    begin: usize,
    end: usize,
    values: Values,
}

/// An entry's values, decoded from little-endian bytes.
enum Values {
    Unread,
    U64(Vec<u64>),
    F64(Vec<f64>),
    F32(Vec<f32>),
}

impl<'a> Entry<'a> {
    fn parse(name: &'a str, entry: &'a Value, data_len: usize) -> Result<Entry<'a>, String> {
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
        if begin > end || end > data_len || Some(end - begin) != expected {
            let hint = match end > data_len {
                true => " (a truncated file?)",
                false => "",
            };
            return Err(format!(
                "{name}: data_offsets [{begin}, {end}] do not hold a {dtype} tensor of shape {shape:?} within the {data_len} bytes of data{hint}"
            ));
        }
        Ok(Entry {
            name,
            dtype,
            shape,
            begin,
            end,
            values: Values::Unread,
        })
    }

    /// Reads the entry's bytes, the next ones in `source`, into its values.
    fn read(
        &mut self,
        source: &mut impl Read,
        hasher: &mut xxhash_rust::xxh3::Xxh3Default,
    ) -> Result<(), String> {
        let size = if self.dtype == "F32" { 4 } else { 8 };
        let n = (self.end - self.begin) / size;
        let mut block = vec![0u8; (self.end - self.begin).min(1 << 16)];
        let (mut words, mut floats) = (Vec::new(), Vec::new());
        let reserved = match self.dtype {
            "F32" => floats.try_reserve_exact(n),
            _ => words.try_reserve_exact(n),
        };
        reserved.map_err(|e| format!("{}: {n} values: {e}", self.name))?;
        let mut left = self.end - self.begin;
        while left > 0 {
            let bytes = &mut block[..left.min(1 << 16)];
            source
                .read_exact(bytes)
                .map_err(|e| format!("{}: {e}", self.name))?;
            hasher.update(bytes);
            match size {
                4 => floats.extend(
                    bytes
                        .chunks_exact(4)
                        .map(|w| f32::from_le_bytes(w.try_into().expect("4 bytes"))),
                ),
                _ => words.extend(
                    bytes
                        .chunks_exact(8)
                        .map(|w| u64::from_le_bytes(w.try_into().expect("8 bytes"))),
                ),
            }
            left -= bytes.len();
        }
        self.values = match self.dtype {
            "F32" => Values::F32(floats),
            "F64" => Values::F64(words.into_iter().map(f64::from_bits).collect()),
            _ => Values::U64(words),
        };
        Ok(())
    }

    fn expect(&self, dtype: &str, scalar: bool) -> Result<(), String> {
        if self.dtype != dtype || (scalar && !self.shape.is_empty()) {
            let shape = if scalar { "[]" } else { "any shape" };
            return Err(format!(
                "{}: a {} tensor of shape {:?}, expected {dtype} of {shape}",
                self.name, self.dtype, self.shape
            ));
        }
        Ok(())
    }

    fn u64s(&mut self) -> Result<Vec<u64>, String> {
        self.expect("U64", false)?;
        match std::mem::replace(&mut self.values, Values::Unread) {
            Values::U64(v) => Ok(v),
            _ => unreachable!("read as its dtype"),
        }
    }

    fn scalar_u64(&mut self) -> Result<u64, String> {
        self.expect("U64", true)?;
        Ok(self.u64s()?[0])
    }

    fn scalar_f64(&mut self) -> Result<f64, String> {
        self.expect("F64", true)?;
        match &self.values {
            Values::F64(v) => Ok(v[0]),
            _ => unreachable!("read as its dtype"),
        }
    }

    fn f32s(&mut self) -> Result<Vec<f32>, String> {
        self.expect("F32", false)?;
        match std::mem::replace(&mut self.values, Values::Unread) {
            Values::F32(v) => Ok(v),
            _ => unreachable!("read as its dtype"),
        }
    }

    /// A tensor's shape, whose element count must stay addressable.
    fn shape_dims(&mut self) -> Result<Vec<usize>, String> {
        let dims: Vec<usize> = self.u64s()?.into_iter().map(|d| d as usize).collect();
        let count = dims.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
        match count.filter(|&n| n <= MAX_ELEMENTS) {
            Some(_) => Ok(dims),
            None => Err(format!(
                "{}: shape {dims:?} has more elements than memory can hold",
                self.name
            )),
        }
    }
}
