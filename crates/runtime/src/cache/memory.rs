//! The in-process cache: compiled steps by key, shared (`Arc`) by every optimizer of the same
//! rule, target and options.

use super::CacheKey;
use crate::pipeline::Compiled;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// The process-wide map from cache keys to compiled steps.
pub(crate) struct MemoryCache;

impl MemoryCache {
    fn map() -> &'static Mutex<HashMap<CacheKey, Arc<Compiled>>> {
        static MAP: OnceLock<Mutex<HashMap<CacheKey, Arc<Compiled>>>> = OnceLock::new();
        MAP.get_or_init(Default::default)
    }

    /// The step compiled under `key`, if any.
    pub(crate) fn get(key: &CacheKey) -> Option<Arc<Compiled>> {
        let map = Self::map().lock().unwrap_or_else(|e| e.into_inner());
        map.get(key).cloned()
    }

    /// Remembers `compiled` under `key` (a step compiled twice at once keeps the first).
    pub(crate) fn insert(key: CacheKey, compiled: Arc<Compiled>) -> Arc<Compiled> {
        let mut map = Self::map().lock().unwrap_or_else(|e| e.into_inner());
        map.entry(key).or_insert(compiled).clone()
    }
}
