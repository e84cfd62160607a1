//! The on-disk compile cache: one file per key, written atomically, and read only from a
//! directory and a file of this user's that no one else may write, checked (regular file, size,
//! format, version, key, checksum) when read. What the graph inside must pass before it is used
//! is in `check.rs`; docs/cache.md says what the cache trusts.

use super::owner::check_owner;
use super::regular_file::{open_regular, read_exactly};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

/// The first line of every entry file (`/2`: the graph alone, no PTX).
const MAGIC: &str = "optjit-cache/2";

/// The largest entry read or written: far more than any step's optimized graph, small enough
/// that a foreign file of any size costs no more memory than this.
pub(crate) const MAX_ENTRY_BYTES: u64 = 64 << 20;

/// What a cache entry holds: the optimized (extracted) graph in the IR's text form. Nothing
/// else: the fusion plan, the kernels and their code (PTX, machine code) are made again from
/// the checked graph, so that no code is ever read from the cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    /// The optimized graph, in the IR's text form.
    pub(crate) graph: String,
}

/// The result of looking a key up.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// The entry was there and passed every check.
    Hit(Entry),
    /// There is no entry for the key.
    Miss,
    /// There is a file but it cannot be read, is not to be trusted or fails a check: why,
    /// naming the file.
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

    /// Whether the directory may be used: it is missing (the first `store` creates it), or it
    /// is a directory (through symbolic links) that this user owns and no one else may write.
    /// The reason names the directory.
    pub(crate) fn check_dir(&self) -> Result<(), String> {
        let refused =
            |why: String| format!("{}: cache directory refused: {why}", self.dir.display());
        match std::fs::metadata(&self.dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(refused(format!("cannot read its metadata ({e})"))),
            Ok(m) if !m.is_dir() => Err(refused(format!(
                "{}, not a directory",
                super::regular_file::kind_of(&m)
            ))),
            Ok(m) => check_owner(&m).map_err(refused),
        }
    }

    /// Reads the entry of `key`: Miss if there is no file; Corrupt if the directory or the file
    /// is not to be trusted (see [`DiskCache::check_dir`]; the file must be a regular file, not
    /// a link, of this user's, that no one else may write, of at most [`MAX_ENTRY_BYTES`]), if
    /// it cannot be read, or if it fails any check (magic/format line, crate version ==
    /// `version`, stored key == key, checksum of the body, well-formed sections, truncated);
    /// Hit otherwise. Never blocks on a FIFO and never reads more than the file's size.
    pub(crate) fn load(&self, key: &str, version: &str) -> Lookup {
        let path = self.path(key);
        if let Err(why) = self.check_dir() {
            return Lookup::Corrupt(why);
        }
        let refused = |why: String| Lookup::Corrupt(format!("{}: refused: {why}", path.display()));
        let (file, metadata) = match open_regular(&path, false) {
            Ok(opened) => opened,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Lookup::Miss,
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => return refused(e.to_string()),
            Err(e) => return Lookup::Corrupt(format!("{}: cannot read ({e})", path.display())),
        };
        if let Err(why) = check_owner(&metadata) {
            return refused(why);
        }
        if metadata.len() > MAX_ENTRY_BYTES {
            return refused(format!(
                "{} bytes, more than the {MAX_ENTRY_BYTES} an entry may have",
                metadata.len()
            ));
        }
        let bytes = match read_exactly(file, metadata.len()) {
            Ok(bytes) => bytes,
            Err(e) => return Lookup::Corrupt(format!("{}: cannot read ({e})", path.display())),
        };
        match parse(&bytes, key, version) {
            Ok(entry) => Lookup::Hit(entry),
            Err(why) => Lookup::Corrupt(format!("{}: corrupt cache entry: {why}", path.display())),
        }
    }

    /// Writes the entry atomically: creates the directory (mode 0755 where there are modes)
    /// and checks it as [`DiskCache::check_dir`] does, writes a new temporary file (mode 0644)
    /// unique to this process and call in the same directory, then renames it over
    /// `<key>.optjit`. Two processes storing the same key at once both succeed (the last rename
    /// wins). On error the temporary file is removed.
    pub(crate) fn store(&self, key: &str, version: &str, entry: &Entry) -> std::io::Result<()> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let text = render(key, version, entry);
        if text.len() as u64 > MAX_ENTRY_BYTES {
            return Err(std::io::Error::other(format!(
                "{} bytes, more than the {MAX_ENTRY_BYTES} an entry may have",
                text.len()
            )));
        }
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o755);
        builder.create(&self.dir)?;
        self.check_dir()
            .map_err(|why| std::io::Error::new(std::io::ErrorKind::PermissionDenied, why))?;
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let tmp = self
            .dir
            .join(format!(".{key}.{}.{n}.{nanos}.tmp", std::process::id()));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o644);
        let result = options
            .open(&tmp)
            .and_then(|mut file| file.write_all(text.as_bytes()))
            .and_then(|()| std::fs::rename(&tmp, self.path(key)));
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }
}

/// FNV-1a over `bytes` twice with two different offset bases, as 32 lowercase hex chars: a hash
/// that is stable across Rust versions and platforms (std's hashers are not guaranteed to be).
/// It names entries and catches accidental damage; anyone can recompute it, so it proves
/// nothing about who wrote an entry (that is the owner check's and `check.rs`'s job).
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
    let body = format!("== graph {}\n{}\n", entry.graph.len(), entry.graph);
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
    match sections.next() {
        Some((other, _)) => Err(format!("unexpected section {other:?} after the graph")),
        None => Ok(Entry { graph }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "0123456789abcdef0123456789abcdef";
    const VERSION: &str = "0.1.0+abcdef012345";

    /// A fresh, empty temp directory for `test` (mode 0755, whatever the umask), removed when
    /// dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(test: &str) -> TempDir {
            let dir =
                std::env::temp_dir().join(format!("optjit-disk-{}-{test}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            let mut builder = std::fs::DirBuilder::new();
            #[cfg(unix)]
            std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o755);
            builder.create(&dir).unwrap();
            TempDir(dir)
        }
    }

    /// Writes `bytes` to `path`, a new file of mode 0644 whatever the umask, or an old one.
    fn put(path: &std::path::Path, bytes: impl AsRef<[u8]>) {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o644);
        let mut file = options.open(path).unwrap();
        file.write_all(bytes.as_ref()).unwrap();
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn entry(graph: &str) -> Entry {
        Entry {
            graph: graph.to_string(),
        }
    }

    fn sample() -> Entry {
        entry("== graph 3\nx = ∑ y\n== ptx 0\n\n")
    }

    #[test]
    fn round_trip() {
        let tmp = TempDir::new("round_trip");
        let cache = DiskCache::new(&tmp.0);
        assert_eq!(cache.path(KEY), tmp.0.join(format!("{KEY}.optjit")));
        let graph = "== not a header\nλ α → β\n\n==";
        for e in [entry(graph), entry(""), entry("== ptx 1\n"), sample()] {
            cache.store(KEY, VERSION, &e).unwrap();
            assert_eq!(cache.load(KEY, VERSION), Lookup::Hit(e));
        }
    }

    #[test]
    fn miss_and_overwrite() {
        let tmp = TempDir::new("miss_and_overwrite");
        let cache = DiskCache::new(&tmp.0);
        assert_eq!(cache.load(KEY, VERSION), Lookup::Miss);
        cache.store(KEY, VERSION, &entry("old")).unwrap();
        cache.store(KEY, VERSION, &entry("new")).unwrap();
        assert_eq!(cache.load(KEY, VERSION), Lookup::Hit(entry("new")));
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
            put(&path, &bytes);
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
        let cases = [
            ("", "first section is not the graph"),
            ("== ptx 1\nx\n", "first section is not the graph"),
            ("== graph 1\nx\n== foo 1\ny\n", "unexpected section"),
            ("== graph 1\nx\n== ptx 1\ny\n", "unexpected section \"ptx\""),
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
            put(
                &cache.path(KEY),
                format!("{header}length {}\n{body}", body.len()),
            );
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
            .map(|i| entry(&format!("graph {i}\n").repeat(1000)))
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

    /// The answer of `f`, which must come within ten seconds (a FIFO opened for reading
    /// waits for a writer: a regression fails here instead of hanging the tests).
    fn promptly<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(f()));
        rx.recv_timeout(std::time::Duration::from_secs(10))
            .expect("no answer within 10 s: the reader hangs")
    }

    /// `load` refuses the entry with a reason holding `what` and the entry's path.
    fn refused(cache: &DiskCache, what: &str) {
        match cache.load(KEY, VERSION) {
            Lookup::Corrupt(why) => assert!(
                why.contains(&*cache.path(KEY).to_string_lossy()) && why.contains(what),
                "{what}: {why}"
            ),
            other => panic!("{what}: {other:?}"),
        }
    }

    #[cfg(unix)]
    #[test]
    fn what_other_users_could_write_is_refused() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let tmp = TempDir::new("owner");
        let cache = DiskCache::new(&tmp.0);
        let chmod = |path: &std::path::Path, mode: u32| {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap()
        };
        cache.store(KEY, VERSION, &sample()).unwrap();
        let path = cache.path(KEY);
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o644);
        assert_eq!(cache.load(KEY, VERSION), Lookup::Hit(sample()));

        chmod(&path, 0o666);
        refused(&cache, "refused: writable by its group and other users");
        chmod(&path, 0o620);
        refused(&cache, "refused: writable by its group (mode 0620");
        chmod(&path, 0o600);
        assert_eq!(cache.load(KEY, VERSION), Lookup::Hit(sample()));

        chmod(&tmp.0, 0o777);
        match cache.load(KEY, VERSION) {
            Lookup::Corrupt(why) => assert!(
                why.contains("cache directory refused: writable by its group and other users"),
                "{why}"
            ),
            other => panic!("{other:?}"),
        }
        let error = cache.store(KEY, VERSION, &sample()).unwrap_err();
        assert_eq!(
            error.kind(),
            std::io::ErrorKind::PermissionDenied,
            "{error}"
        );
        chmod(&tmp.0, 0o1777);
        assert!(cache.check_dir().is_err(), "sticky, but writable by others");
        chmod(&tmp.0, 0o755);
        assert_eq!(cache.load(KEY, VERSION), Lookup::Hit(sample()));

        // Root may hand a file to another user; then root is refused it (by owner, not mode).
        let me = std::fs::metadata(&path).unwrap().uid();
        if me == 0 {
            std::os::unix::fs::chown(&path, Some(4242), None).unwrap();
            refused(&cache, "refused: owned by user 4242, not by this user (0)");
            std::os::unix::fs::chown(&tmp.0, Some(4242), None).unwrap();
            assert!(
                cache
                    .check_dir()
                    .unwrap_err()
                    .contains("owned by user 4242")
            );
            std::os::unix::fs::chown(&tmp.0, Some(0), None).unwrap();
        }
        // A refused entry is replaced by the next store, which makes it this user's again.
        cache.store(KEY, VERSION, &sample()).unwrap();
        assert_eq!(cache.load(KEY, VERSION), Lookup::Hit(sample()));
        assert_eq!(std::fs::metadata(&path).unwrap().uid(), me);
    }

    #[cfg(unix)]
    #[test]
    fn special_files_are_refused_without_reading_them() {
        let tmp = TempDir::new("special");
        let cache = DiskCache::new(&tmp.0);
        let path = cache.path(KEY);

        // A link is refused whatever it points to: /dev/zero, or a good entry.
        std::os::unix::fs::symlink("/dev/zero", &path).unwrap();
        refused(&cache, "refused: a symbolic link, not a regular file");
        std::fs::remove_file(&path).unwrap();
        let elsewhere = tmp.0.join("elsewhere");
        put(&elsewhere, render(KEY, VERSION, &sample()));
        std::os::unix::fs::symlink(&elsewhere, &path).unwrap();
        refused(&cache, "a symbolic link");
        std::fs::remove_file(&path).unwrap();

        let status = std::process::Command::new("mkfifo").arg(&path).status();
        assert!(status.expect("mkfifo runs").success(), "mkfifo");
        let dir = tmp.0.clone();
        let lookup = promptly(move || DiskCache::new(dir).load(KEY, VERSION));
        match lookup {
            Lookup::Corrupt(why) => assert!(why.contains("refused: a FIFO"), "{why}"),
            other => panic!("{other:?}"),
        }
        std::fs::remove_file(&path).unwrap();

        std::fs::create_dir(&path).unwrap();
        refused(&cache, "refused: a directory");
        std::fs::remove_dir(&path).unwrap();

        // A sparse file larger than any entry is refused by its size, unread.
        let file = std::fs::File::create(&path).unwrap();
        file.set_len(MAX_ENTRY_BYTES + 1).unwrap();
        refused(&cache, &format!("{} bytes, more than", MAX_ENTRY_BYTES + 1));

        let huge = entry(&"x".repeat(MAX_ENTRY_BYTES as usize));
        let error = cache.store(KEY, VERSION, &huge).unwrap_err();
        assert!(error.to_string().contains("more than"), "{error}");
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
            put(&cache.path(KEY), &bytes);
            let _ = cache.load(KEY, VERSION);
        }
    }
}
