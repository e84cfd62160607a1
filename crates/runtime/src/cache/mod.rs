//! The compile cache: a key that captures everything that changes the generated code (and
//! nothing else), an in-process map from keys to compiled steps, and the on-disk store of
//! optimized graphs (`OPTJIT_CACHE_DIR`, `OPTJIT_CACHE=off`), read only from this user's files
//! and checked against the definition before use (docs/cache.md).

mod check;
mod disk;
mod key;
mod memory;
mod owner;
pub(crate) mod regular_file;

pub(crate) use check::{Samples, check_entry};
pub(crate) use disk::{DiskCache, Entry, Lookup};
pub(crate) use key::{CacheKey, cache_version, disk_key, settings};
pub(crate) use memory::MemoryCache;

use std::ffi::OsString;
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

    /// From the environment: `OPTJIT_CACHE=off` (or `0`) disables both caches, `on` (or `1`,
    /// or unset) keeps them, and any other value is reported on stderr (once) and keeps them;
    /// `OPTJIT_CACHE_DIR` names the directory, by default `$XDG_CACHE_HOME/optjit` or
    /// `$HOME/.cache/optjit` (no disk cache when neither variable is set).
    pub fn from_env() -> CacheOptions {
        static WARNED: std::sync::Once = std::sync::Once::new();
        let (options, warning) = CacheOptions::from_vars(|name| std::env::var_os(name));
        if let Some(warning) = warning {
            WARNED.call_once(|| eprintln!("optjit: {warning}"));
        }
        options
    }

    /// [`CacheOptions::from_env`] with the variables read through `var`, and the warning about
    /// an unknown `OPTJIT_CACHE` value, if any.
    fn from_vars(var: impl Fn(&str) -> Option<OsString>) -> (CacheOptions, Option<String>) {
        let mode = var("OPTJIT_CACHE");
        let mode = mode.as_ref().map(|v| v.to_string_lossy());
        let warning = match mode.as_deref() {
            Some("off" | "0") => return (CacheOptions::off(), None),
            None | Some("" | "on" | "1") => None,
            Some(other) => Some(format!(
                "OPTJIT_CACHE={other:?} is not one of off, 0, on, 1: the compile cache stays on"
            )),
        };
        let dir = var("OPTJIT_CACHE_DIR")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .or_else(|| {
                let xdg = var("XDG_CACHE_HOME").filter(|d| !d.is_empty());
                xdg.map(PathBuf::from)
                    .or_else(|| var("HOME").map(|h| PathBuf::from(h).join(".cache")))
                    .map(|base| base.join("optjit"))
            });
        (CacheOptions { memory: true, dir }, warning)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn from(vars: &[(&str, &str)]) -> (CacheOptions, Option<String>) {
        CacheOptions::from_vars(|name| {
            let found = vars.iter().find(|(n, _)| *n == name);
            found.map(|(_, v)| OsString::from(v))
        })
    }

    #[test]
    fn optjit_cache_values() {
        let home = [("HOME", "/home/u")];
        let on = CacheOptions {
            memory: true,
            dir: Some(PathBuf::from("/home/u/.cache/optjit")),
        };
        for value in [None, Some(""), Some("on"), Some("1")] {
            let mut vars = home.to_vec();
            vars.extend(value.map(|v| ("OPTJIT_CACHE", v)));
            assert_eq!(from(&vars), (on.clone(), None), "{value:?}");
        }
        for value in ["off", "0"] {
            let vars = [("OPTJIT_CACHE", value), home[0]];
            assert_eq!(from(&vars), (CacheOptions::off(), None), "{value}");
        }
        for value in ["of", "OFF", "false", "no"] {
            let (options, warning) = from(&[("OPTJIT_CACHE", value), home[0]]);
            assert_eq!(options, on, "{value}");
            let warning = warning.expect("a warning");
            assert!(
                warning.contains(&format!(
                    "OPTJIT_CACHE=\"{value}\" is not one of off, 0, on, 1"
                )),
                "{warning}"
            );
        }
        let (options, _) = from(&[("OPTJIT_CACHE_DIR", "/c"), ("XDG_CACHE_HOME", "/x")]);
        assert_eq!(options.dir, Some(PathBuf::from("/c")));
        let (options, _) = from(&[("XDG_CACHE_HOME", "/x"), home[0]]);
        assert_eq!(options.dir, Some(PathBuf::from("/x/optjit")));
        assert_eq!(from(&[]).0.dir, None);
    }
}
