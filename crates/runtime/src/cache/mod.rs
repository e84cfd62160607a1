//! The compile cache: a key that captures everything that changes the generated code (and
//! nothing else), an in-process map from keys to compiled steps, and the on-disk store of
//! optimized graphs and PTX (`OPTJIT_CACHE_DIR`, `OPTJIT_CACHE=off`).

mod disk;
mod key;
mod memory;

pub(crate) use disk::{DiskCache, Entry, Lookup};
pub(crate) use key::{CacheKey, cache_version, disk_key, settings};
pub(crate) use memory::MemoryCache;

use std::path::PathBuf;

/// Where compiled steps are remembered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheOptions {
    /// Reuse steps compiled earlier in this process.
    pub memory: bool,
    /// The directory of the on-disk cache, or `None` for no disk cache.
    pub dir: Option<PathBuf>,
}

impl CacheOptions {
    /// No caching at all.
    pub fn off() -> CacheOptions {
        CacheOptions {
            memory: false,
            dir: None,
        }
    }

    /// From the environment: `OPTJIT_CACHE=off` disables both caches; `OPTJIT_CACHE_DIR` names
    /// the directory, by default `$XDG_CACHE_HOME/optjit` or `$HOME/.cache/optjit` (no disk
    /// cache when neither variable is set).
    pub fn from_env() -> CacheOptions {
        if std::env::var("OPTJIT_CACHE").is_ok_and(|v| v == "off" || v == "0") {
            return CacheOptions::off();
        }
        let dir = std::env::var_os("OPTJIT_CACHE_DIR")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .or_else(|| {
                let xdg = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty());
                xdg.map(PathBuf::from)
                    .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
                    .map(|base| base.join("optjit"))
            });
        CacheOptions { memory: true, dir }
    }
}

/// Where a compiled step came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheUse {
    /// The whole pipeline ran.
    Compiled,
    /// Found in this process's memory cache: nothing ran.
    MemoryHit,
    /// Found on disk: the e-graph stages were skipped, the rest ran from the cached graph.
    DiskHit,
}
