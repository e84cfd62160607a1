//! The on-disk compile cache: one file per key, written atomically, checked (format, version,
//! key, checksum) when read.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

/// The first line of every entry file.
const MAGIC: &str = "optjit-cache/1";

/// What a cache entry holds: the optimized (extracted) graph in the IR's text form, and the PTX
/// modules of a CUDA compile (empty for the CPU).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    /// The optimized graph, in the IR's text form.
    pub(crate) graph: String,
    /// The PTX modules, in order (empty for the CPU).
    pub(crate) ptx: Vec<String>,
}

/// The result of looking a key up.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// The entry was there and passed every check.
    Hit(Entry),
    /// There is no entry for the key.
    Miss,
    /// There is a file but it cannot be read or fails a check: why, naming the file.
    Corrupt(String),
}

/// A cache directory holding one `<key>.optjit` file per entry.
pub(crate) struct DiskCache {
    dir: PathBuf,
}

impl DiskCache {
    /// The cache in `dir` (created by the first `store`).
    pub(crate) fn new(dir: impl Into<PathBuf>) -> DiskCache {
        DiskCache { dir: dir.into() }
    }

    /// The file of `key` (a lowercase hex string, 32 chars): `<dir>/<key>.optjit`.
    pub(crate) fn path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.optjit"))
    }

    /// Reads the entry of `key`: Miss if there is no file; Corrupt if the file cannot be read or
    /// fails any check (magic/format line, crate version == `version`, stored key == key,
    /// checksum of the body, well-formed sections, truncated); Hit otherwise.
    pub(crate) fn load(&self, key: &str, version: &str) -> Lookup {
        let path = self.path(key);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Lookup::Miss,
            Err(e) => return Lookup::Corrupt(format!("{}: cannot read ({e})", path.display())),
        };
        match parse(&bytes, key, version) {
            Ok(entry) => Lookup::Hit(entry),
            Err(why) => Lookup::Corrupt(format!("{}: corrupt cache entry: {why}", path.display())),
        }
    }

    /// Writes the entry atomically: creates the directory, writes a temporary file unique to
    /// this process and call in the same directory, then renames it over `<key>.optjit`. Two
    /// processes storing the same key at once both succeed (the last rename wins). On error the
    /// temporary file is removed.
    pub(crate) fn store(&self, key: &str, version: &str, entry: &Entry) -> std::io::Result<()> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        std::fs::create_dir_all(&self.dir)?;
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let tmp = self
            .dir
            .join(format!(".{key}.{}.{n}.{nanos}.tmp", std::process::id()));
        let result = std::fs::write(&tmp, render(key, version, entry))
            .and_then(|()| std::fs::rename(&tmp, self.path(key)));
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }
}

/// FNV-1a over `bytes` twice with two different offset bases, as 32 lowercase hex chars: a hash
/// that is stable across Rust versions and platforms (std's hashers are not guaranteed to be).
pub(crate) fn stable_hash(bytes: &[u8]) -> String {
    let fnv = |mut h: u64| {
        for &b in bytes {
            h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        h
    };
    format!(
        "{:016x}{:016x}",
        fnv(0xcbf2_9ce4_8422_2325),
        fnv(0x8422_2325_cbf2_9ce4)
    )
}

/// The file text of `entry`.
fn render(key: &str, version: &str, entry: &Entry) -> String {
    let mut body = format!("== graph {}\n{}\n", entry.graph.len(), entry.graph);
    for ptx in &entry.ptx {
        body += &format!("== ptx {}\n{ptx}\n", ptx.len());
    }
    let checksum = stable_hash(body.as_bytes());
    format!(
        "{MAGIC}\nversion {version}\nkey {key}\nchecksum {checksum}\nlength {}\n{body}",
        body.len()
    )
}

/// Splits `text` at its first newline: the line and what follows.
fn line(text: &str) -> Result<(&str, &str), String> {
    text.split_once('\n')
        .ok_or_else(|| "truncated (a line is unterminated)".to_string())
}

/// The value of the header line `<name> <value>` at the start of `text`, and what follows.
fn field<'a>(text: &'a str, name: &str) -> Result<(&'a str, &'a str), String> {
    let (l, rest) = line(text)?;
    let value = l.strip_prefix(name).and_then(|v| v.strip_prefix(' '));
    value
        .map(|v| (v, rest))
        .ok_or_else(|| format!("expected a `{name}` line, found {l:?}"))
}

/// Checks the file `bytes` against `key` and `version` and reads the entry out of it.
fn parse(bytes: &[u8], key: &str, version: &str) -> Result<Entry, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| format!("not UTF-8 ({e})"))?;
    if text.is_empty() {
        return Err("truncated (the file is empty)".to_string());
    }
    let (magic, rest) = line(text)?;
    if magic != MAGIC {
        return Err(format!("wrong format line {magic:?} (expected {MAGIC:?})"));
    }
    let (v, rest) = field(rest, "version")?;
    if v != version {
        return Err(format!("written by version {v:?}, this is {version:?}"));
    }
    let (k, rest) = field(rest, "key")?;
    if k != key {
        return Err(format!("holds key {k:?}, not {key:?}"));
    }
    let (checksum, rest) = field(rest, "checksum")?;
    let (length, body) = field(rest, "length")?;
    let length: usize = length
        .parse()
        .map_err(|_| format!("bad length {length:?}"))?;
    if body.len() < length {
        return Err(format!(
            "truncated (body is {} bytes, expected {length})",
            body.len()
        ));
    }
    if body.len() > length {
        return Err(format!("{} bytes of trailing garbage", body.len() - length));
    }
    if stable_hash(body.as_bytes()) != checksum {
        return Err("checksum mismatch".to_string());
    }
    let mut sections = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        let (header, after) = line(rest)?;
        let parsed = header.strip_prefix("== ").and_then(|h| h.split_once(' '));
        let (kind, n) = parsed.ok_or_else(|| format!("bad section header {header:?}"))?;
        let n: usize = n
            .parse()
            .map_err(|_| format!("bad section header {header:?}"))?;
        let content = after
            .get(..n)
            .ok_or_else(|| format!("section {header:?} overruns"))?;
        rest = after
            .get(n..)
            .and_then(|r| r.strip_prefix('\n'))
            .ok_or_else(|| format!("section {header:?} is not newline-terminated"))?;
        sections.push((kind, content.to_string()));
    }
    let mut sections = sections.into_iter();
    let graph = match sections.next() {
        Some(("graph", graph)) => graph,
        _ => return Err("the first section is not the graph".to_string()),
    };
    let ptx = sections
        .map(|(kind, text)| match kind {
            "ptx" => Ok(text),
            other => Err(format!("unexpected section {other:?} after the graph")),
        })
        .collect::<Result<_, _>>()?;
    Ok(Entry { graph, ptx })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "0123456789abcdef0123456789abcdef";
    const VERSION: &str = "0.1.0+abcdef012345";

    /// A fresh, empty temp directory for `test`, removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(test: &str) -> TempDir {
            let dir =
                std::env::temp_dir().join(format!("optjit-disk-{}-{test}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn entry(graph: &str, ptx: &[&str]) -> Entry {
        Entry {
            graph: graph.to_string(),
            ptx: ptx.iter().map(|p| p.to_string()).collect(),
        }
    }

    fn sample() -> Entry {
        entry(
            "== graph 3\nx = ∑ y\n== ptx 0\n\n",
            &[".version 8.0\n== ptx 99", ""],
        )
    }

    #[test]
    fn round_trip() {
        let tmp = TempDir::new("round_trip");
        let cache = DiskCache::new(&tmp.0);
        assert_eq!(cache.path(KEY), tmp.0.join(format!("{KEY}.optjit")));
        let graph = "== not a header\nλ α → β\n\n==";
        for e in [
            entry(graph, &[]),
            entry(graph, &["ptx one\n"]),
            entry("", &["a", "== ptx 1\n"]),
            sample(),
        ] {
            cache.store(KEY, VERSION, &e).unwrap();
            assert_eq!(cache.load(KEY, VERSION), Lookup::Hit(e));
        }
    }

    #[test]
    fn miss_and_overwrite() {
        let tmp = TempDir::new("miss_and_overwrite");
        let cache = DiskCache::new(&tmp.0);
        assert_eq!(cache.load(KEY, VERSION), Lookup::Miss);
        cache.store(KEY, VERSION, &entry("old", &["p"])).unwrap();
        cache.store(KEY, VERSION, &entry("new", &[])).unwrap();
        assert_eq!(cache.load(KEY, VERSION), Lookup::Hit(entry("new", &[])));
    }

    #[test]
    fn corruption_is_detected_and_recovered() {
        let tmp = TempDir::new("corruption");
        let cache = DiskCache::new(&tmp.0);
        let path = cache.path(KEY);
        cache.store(KEY, VERSION, &sample()).unwrap();
        let good = std::fs::read(&path).unwrap();
        let body_start = good.windows(9).position(|w| w == b"\n== graph").unwrap() + 1;
        let flip = |i: usize| {
            let mut b = good.clone();
            b[i] ^= 0x01;
            b
        };
        let other_key = "fedcba9876543210fedcba9876543210";
        cache.store(other_key, VERSION, &sample()).unwrap();
        let other = std::fs::read(cache.path(other_key)).unwrap();
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (Vec::new(), "empty"),
            (good[..10].to_vec(), "truncated"),
            (good[..body_start].to_vec(), "truncated"),
            (good[..body_start + 5].to_vec(), "truncated"),
            (good[..good.len() - 1].to_vec(), "truncated"),
            ([&good[..], b"x"].concat(), "trailing garbage"),
            (flip(body_start + 15), "checksum"),
            (flip(2), "format line"),
            (
                flip(good.iter().position(|&b| b == b'k').unwrap()),
                "`key` line",
            ),
            (other, "holds key"),
            (b"\x00\x01garbage bytes\n\n".to_vec(), "format line"),
            ([&good[..body_start], b"\xff\xfe"].concat(), "not UTF-8"),
        ];
        for (bytes, what) in cases {
            std::fs::write(&path, &bytes).unwrap();
            match cache.load(KEY, VERSION) {
                Lookup::Corrupt(why) => {
                    assert!(
                        why.contains(&*path.to_string_lossy()) && why.contains(what),
                        "{what}: {why}"
                    )
                }
                other => panic!("{what}: {other:?}"),
            }
            cache.store(KEY, VERSION, &sample()).unwrap();
            assert_eq!(cache.load(KEY, VERSION), Lookup::Hit(sample()));
        }
        match cache.load(KEY, "9.9.9") {
            Lookup::Corrupt(why) => {
                assert!(
                    why.contains(&*path.to_string_lossy())
                        && why.contains(&format!("version {VERSION:?}")),
                    "{why}"
                )
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_sections_under_a_good_checksum() {
        let tmp = TempDir::new("bad_sections");
        let cache = DiskCache::new(&tmp.0);
        std::fs::create_dir_all(&tmp.0).unwrap();
        let cases = [
            ("", "first section is not the graph"),
            ("== ptx 1\nx\n", "first section is not the graph"),
            ("== graph 1\nx\n== foo 1\ny\n", "unexpected section"),
            ("== graph x\nx\n", "bad section header"),
            ("==graph 1\nx\n", "bad section header"),
            ("== graph 5\nab\n", "overruns"),
            ("== graph 1\nxy\n", "not newline-terminated"),
            ("== graph 1\nx", "not newline-terminated"),
            ("== graph 1\nx\n== ptx 0", "unterminated"),
        ];
        for (body, what) in cases {
            let header = format!(
                "{MAGIC}\nversion {VERSION}\nkey {KEY}\nchecksum {}\n",
                stable_hash(body.as_bytes())
            );
            std::fs::write(
                cache.path(KEY),
                format!("{header}length {}\n{body}", body.len()),
            )
            .unwrap();
            match cache.load(KEY, VERSION) {
                Lookup::Corrupt(why) => assert!(why.contains(what), "{body:?}: {why}"),
                other => panic!("{body:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn concurrent_stores_all_succeed() {
        let tmp = TempDir::new("concurrent");
        let entries: Vec<Entry> = (0..8)
            .map(|i| entry(&format!("graph {i}\n").repeat(1000), &["ptx"]))
            .collect();
        std::thread::scope(|s| {
            for e in &entries {
                let dir = &tmp.0;
                s.spawn(move || {
                    let cache = DiskCache::new(dir);
                    for _ in 0..10 {
                        cache.store(KEY, VERSION, e).unwrap();
                    }
                });
            }
        });
        match DiskCache::new(&tmp.0).load(KEY, VERSION) {
            Lookup::Hit(e) => assert!(entries.contains(&e)),
            other => panic!("{other:?}"),
        }
        let files: Vec<_> = std::fs::read_dir(&tmp.0)
            .unwrap()
            .map(|f| f.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(files, [format!("{KEY}.optjit")], "temporary files remain");
    }

    #[test]
    fn stable_hash_is_pinned() {
        assert_eq!(stable_hash(b""), "cbf29ce48422232584222325cbf29ce4");
        assert_eq!(stable_hash(b"optjit"), "eac69ac7188c095d12018bc1eb1ef798");
        let h = stable_hash(b"optjit!");
        assert!(
            h.len() == 32
                && h.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
        assert_ne!(h, stable_hash(b"optjit"));
        assert_ne!(stable_hash(b"a"), stable_hash(b"b"));
    }

    #[test]
    fn random_bytes_never_panic() {
        let tmp = TempDir::new("random");
        let cache = DiskCache::new(&tmp.0);
        std::fs::create_dir_all(&tmp.0).unwrap();
        let good = render(KEY, VERSION, &sample()).into_bytes();
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for i in 0..200 {
            let len = (next() % 300) as usize;
            let bytes: Vec<u8> = match i % 2 {
                // Pure noise, then a valid file with a few bytes changed and a random truncation.
                0 => (0..len).map(|_| next() as u8).collect(),
                _ => {
                    let mut b = good.clone();
                    for _ in 0..3 {
                        let at = (next() as usize) % b.len();
                        b[at] = next() as u8;
                    }
                    b.truncate((next() as usize) % (b.len() + 1));
                    b
                }
            };
            std::fs::write(cache.path(KEY), &bytes).unwrap();
            let _ = cache.load(KEY, VERSION);
        }
    }
}
