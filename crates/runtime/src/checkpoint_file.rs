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
//! | `state.T.NAME` | F32, the tensor's shape if it has as many values, else `[n]` | a state of tensor T |
//! | `step.T` | U64 `[]` | steps tensor T took (fewer than `steps` if it lacked a gradient at some) |
//! | `scalar_state.T.NAME` | F64 `[]` | a scalar state of tensor T's own (NAdam's `mu_product`) |
//!
//! `__metadata__` holds `format` (`optjit-checkpoint/2`), `rule`, `dtype` and `checksum`
//! (`xxh3_64:` and, in hex, the XXH3 64-bit hash of the whole file with these 16 hex digits
//! written as `0`s: the header is covered as well as the data). Reading is in
//! `checkpoint_read.rs`. The parameters themselves are not in a checkpoint: they are the
//! caller's. A save writes only regular files: it follows a symbolic link to a regular file
//! and replaces that file, and refuses anything else (a device, a FIFO, a directory, a link to
//! one of those or to nothing).

use crate::cache::regular_file::{kind_of, open_regular};
use crate::checkpoint::{Checkpoint, GroupCheckpoint};
use crate::checkpoint_read::{parse, read};
use optjit_ir::DType;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use thiserror::Error;

/// The `format` of the files this version writes and reads (`/2`: the checksum covers the
/// header too; files of `/1` are not read).
pub const CHECKPOINT_FORMAT: &str = "optjit-checkpoint/2";

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

impl Data<'_> {
    fn dtype(&self) -> &'static str {
        match self {
            Data::U64(_) => "U64",
            Data::F64(_) => "F64",
            Data::F32(_) => "F32",
        }
    }

    fn byte_len(&self) -> usize {
        match self {
            Data::U64(v) => 8 * v.len(),
            Data::F64(_) => 8,
            Data::F32(v) => 4 * v.len(),
        }
    }

    /// Hands the little-endian bytes to `sink`, a block at a time.
    fn emit(&self, sink: &mut impl FnMut(&[u8]) -> std::io::Result<()>) -> std::io::Result<()> {
        match self {
            Data::U64(v) => v.iter().try_for_each(|x| sink(&x.to_le_bytes())),
            Data::F64(x) => sink(&x.to_le_bytes()),
            Data::F32(v) => {
                let mut block = Vec::with_capacity(1 << 16);
                for values in v.chunks(1 << 14) {
                    block.clear();
                    values
                        .iter()
                        .for_each(|x| block.extend_from_slice(&x.to_le_bytes()));
                    sink(&block)?;
                }
                Ok(())
            }
        }
    }
}

/// What a file holds, borrowed: a [`Checkpoint`]'s contents, or an optimizer's states where
/// they lie (see [`crate::Optimizer::save_checkpoint`]). States of each tensor in name order.
pub(crate) struct CheckpointView<'a> {
    pub(crate) rule: &'a str,
    pub(crate) dtype: DType,
    pub(crate) steps: u64,
    pub(crate) shapes: &'a [Vec<usize>],
    pub(crate) groups: &'a [GroupCheckpoint],
    pub(crate) tensors: Vec<Vec<(&'a str, &'a [f32])>>,
    /// Per tensor, its step count.
    pub(crate) tensor_steps: Vec<u64>,
    /// Per tensor, its own scalar states by name.
    pub(crate) tensor_scalar_states: Vec<BTreeMap<String, f64>>,
}

impl CheckpointView<'_> {
    /// Every entry of the file, in the order of the data.
    fn entries(&self) -> Vec<(String, Vec<usize>, Data<'_>)> {
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
            let elems = self.shapes[t]
                .iter()
                .try_fold(1usize, |n, &d| n.checked_mul(d));
            for &(name, values) in states {
                let shape = match Some(values.len()) == elems {
                    true => self.shapes[t].clone(),
                    false => vec![values.len()],
                };
                entries.push((format!("state.{t}.{name}"), shape, Data::F32(values)));
            }
        }
        for (t, &steps) in self.tensor_steps.iter().enumerate() {
            entries.push((format!("step.{t}"), vec![], Data::U64(vec![steps])));
        }
        for (t, states) in self.tensor_scalar_states.iter().enumerate() {
            for (name, &value) in states {
                let key = format!("scalar_state.{t}.{name}");
                entries.push((key, vec![], Data::F64(value)));
            }
        }
        entries
    }

    /// Writes the file to `out` in one pass over the data, hashing the whole file on the way;
    /// the checksum in the header is left as zeros (as it is hashed) and its hex digits' offset
    /// in the file returned, for the caller to write the digest there ([`checksum_digits`]).
    fn write_to(&self, out: &mut impl Write) -> std::io::Result<(usize, u64)> {
        let entries = self.entries();
        let mut header = Map::new();
        let mut end = 0;
        for (name, shape, data) in &entries {
            let begin = end;
            end += data.byte_len();
            let entry =
                json!({"dtype": data.dtype(), "shape": shape, "data_offsets": [begin, end]});
            header.insert(name.clone(), entry);
        }
        let metadata = json!({
            "format": CHECKPOINT_FORMAT,
            "rule": self.rule,
            "dtype": self.dtype.name(),
            "checksum": checksum_text(0),
        });
        header.insert("__metadata__".into(), metadata);
        let mut text = Value::Object(header).to_string().into_bytes();
        // Pad with spaces so that the data starts 8-byte aligned, as safetensors writes it.
        text.resize(text.len().next_multiple_of(8), b' ');
        // Quotes inside JSON strings are escaped, so no name or value can hold this key and
        // value together: it is the checksum's.
        let tag = format!("\"checksum\":\"{}\"", checksum_text(0));
        let at = (text.windows(tag.len()))
            .position(|w| w == tag.as_bytes())
            .expect("the header holds the checksum");
        let digits = 8 + at + tag.len() - 1 - 16;
        let mut hasher = xxhash_rust::xxh3::Xxh3Default::new();
        let length = (text.len() as u64).to_le_bytes();
        hasher.update(&length);
        hasher.update(&text);
        out.write_all(&length)?;
        out.write_all(&text)?;
        for (_, _, data) in &entries {
            data.emit(&mut |bytes| {
                hasher.update(bytes);
                out.write_all(bytes)
            })?;
        }
        Ok((digits, hasher.digest()))
    }

    /// The file's bytes.
    fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::new();
        let (at, hash) = (self.write_to(&mut bytes)).expect("writing to memory cannot fail");
        bytes[at..at + 16].copy_from_slice(&checksum_digits(hash));
        bytes
    }

    /// Writes the file to `path`, replacing it only once the whole file is written and synced
    /// to disk (a crash leaves the old file or the new one, never half of one). Only a regular
    /// file is written or replaced ([`destination`]): a symbolic link to one is followed and
    /// the file it names replaced, keeping its permissions.
    pub(crate) fn save(&self, path: &Path) -> Result<(), CheckpointError> {
        static SAVES: AtomicUsize = AtomicUsize::new(0);
        let fail = |problem: String| CheckpointError {
            origin: path.display().to_string(),
            problem,
        };
        let (target, permissions) = destination(path).map_err(fail)?;
        let mut partial = target.as_os_str().to_owned();
        let save = SAVES.fetch_add(1, Ordering::Relaxed);
        partial.push(format!(".partial-{}-{save}", std::process::id()));
        let partial = PathBuf::from(partial);
        let written = (|| {
            // A new file, never one a link planted at this name leads to; a partial file a
            // crashed process of the same id left is replaced.
            let file = std::fs::File::create_new(&partial).or_else(|e| {
                match e.kind() == std::io::ErrorKind::AlreadyExists {
                    true => std::fs::remove_file(&partial)
                        .and_then(|()| std::fs::File::create_new(&partial)),
                    false => Err(e),
                }
            })?;
            let mut file = std::io::BufWriter::new(file);
            let (at, hash) = self.write_to(&mut file)?;
            let mut file = file.into_inner().map_err(|e| e.into_error())?;
            file.seek(std::io::SeekFrom::Start(at as u64))?;
            file.write_all(&checksum_digits(hash))?;
            if let Some(permissions) = permissions {
                file.set_permissions(permissions)?;
            }
            file.sync_all()
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&partial);
            return Err(fail(format!("cannot write {}: {e}", partial.display())));
        }
        // The target may have changed since it was looked at: never rename over anything but
        // a regular file.
        let replaced = match std::fs::symlink_metadata(&target) {
            Ok(m) if !m.is_file() => Err(format!(
                "{} became {}; not replaced",
                target.display(),
                kind_of(&m)
            )),
            _ => std::fs::rename(&partial, &target)
                .map_err(|e| format!("cannot replace {}: {e}", target.display())),
        };
        if let Err(problem) = replaced {
            let _ = std::fs::remove_file(&partial);
            return Err(fail(problem));
        }
        // Make the rename itself durable where directories can be synced (not on Windows).
        let parent = target.parent().filter(|p| !p.as_os_str().is_empty());
        if let Ok(dir) = std::fs::File::open(parent.unwrap_or(Path::new("."))) {
            let _ = dir.sync_all();
        }
        Ok(())
    }
}

/// Where a save to `path` writes, and the permissions the new file takes: `path` itself if
/// nothing is there (default permissions) or a regular file is (its permissions); the regular
/// file a symbolic link leads to (through any number of links); an error naming what is there
/// otherwise. A device node, a FIFO, a socket or a directory is never replaced, nor a link to
/// one or to nothing.
fn destination(path: &Path) -> Result<(PathBuf, Option<std::fs::Permissions>), String> {
    let only = "a checkpoint is written only to a regular file, or through a link to one";
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((path.to_path_buf(), None)),
        Err(e) => Err(format!("cannot look at it: {e}")),
        Ok(m) if m.is_file() => Ok((path.to_path_buf(), Some(m.permissions()))),
        Ok(m) if m.is_symlink() => match std::fs::metadata(path) {
            Ok(target) if target.is_file() => {
                let resolved = std::fs::canonicalize(path)
                    .map_err(|e| format!("cannot follow the symbolic link: {e}"))?;
                Ok((resolved, Some(target.permissions())))
            }
            Ok(target) => Err(format!("a symbolic link to {}: {only}", kind_of(&target))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(format!("a symbolic link to nothing: {only}"))
            }
            Err(e) => Err(format!("cannot follow the symbolic link: {e}")),
        },
        Ok(m) => Err(format!("{}: {only}", kind_of(&m))),
    }
}

impl Checkpoint {
    /// The checkpoint as a file's contents.
    fn view(&self) -> CheckpointView<'_> {
        fn by_name(states: &BTreeMap<String, Vec<f32>>) -> Vec<(&str, &[f32])> {
            (states.iter())
                .map(|(n, v)| (n.as_str(), v.as_slice()))
                .collect()
        }
        CheckpointView {
            rule: &self.rule,
            dtype: self.dtype,
            steps: self.steps,
            shapes: &self.shapes,
            groups: &self.groups,
            tensors: self.tensors.iter().map(by_name).collect(),
            tensor_steps: self.tensor_steps.clone(),
            tensor_scalar_states: self.tensor_scalar_states.clone(),
        }
    }

    /// The checkpoint as the bytes of a file (see the module's documentation).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.view().to_bytes()
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
    /// synced to disk (a crash leaves the old file or the new one, never half of one).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), CheckpointError> {
        self.view().save(path.as_ref())
    }

    /// Reads the checkpoint file at `path`, decoding its data as it is read (only the values
    /// are held, never the whole file), verifying every entry's range and the checksum. Only a
    /// regular file (or a symbolic link to one) is read, and no more of it than its size when
    /// opened: a FIFO or a device is refused before anything is read from it.
    pub fn load(path: impl AsRef<Path>) -> Result<Checkpoint, CheckpointError> {
        let path = path.as_ref();
        let origin = path.display().to_string();
        let (file, metadata) = open_regular(path, true).map_err(|e| CheckpointError {
            origin: origin.clone(),
            problem: format!("cannot read: {e}"),
        })?;
        let len = metadata.len();
        let mut source = std::io::BufReader::new(file.take(len));
        read(&mut source, len).map_err(|problem| CheckpointError { origin, problem })
    }
}

/// The `checksum` of data whose XXH3 64-bit hash is `hash`.
pub(crate) fn checksum_text(hash: u64) -> String {
    format!("xxh3_64:{hash:016x}")
}

/// The 16 hex digits that end [`checksum_text`].
fn checksum_digits(hash: u64) -> [u8; 16] {
    let text = checksum_text(hash);
    text.as_bytes()[text.len() - 16..]
        .try_into()
        .expect("16 digits")
}
