//! Reading files that must be regular files (cache entries, checkpoints): the type is checked
//! before the file is opened (opening a FIFO would wait for a writer), the opened file is checked
//! again, and no more than the size seen is ever read (a device such as `/dev/zero` never ends).

use std::fs::{File, Metadata};
use std::io::Read;
use std::path::Path;

/// `O_NONBLOCK` where its value is the generic Linux one: a FIFO swapped in between the check of
/// the path and the `open` then fails the check of the opened file instead of blocking. Reads of
/// regular files ignore the flag. Elsewhere, only the check before the `open` guards.
#[cfg(unix)]
const O_NONBLOCK: i32 = if cfg!(all(
    any(target_os = "linux", target_os = "android"),
    not(any(
        target_arch = "mips",
        target_arch = "mips64",
        target_arch = "mips32r6",
        target_arch = "mips64r6",
        target_arch = "sparc",
        target_arch = "sparc64"
    ))
)) {
    0o4000
} else {
    0
};

/// What a path names, in words, for errors: `a FIFO`, `a character device`, ...
pub(crate) fn kind_of(metadata: &Metadata) -> &'static str {
    let kind = metadata.file_type();
    if kind.is_file() {
        return "a regular file";
    }
    if kind.is_dir() {
        return "a directory";
    }
    if kind.is_symlink() {
        return "a symbolic link";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if kind.is_fifo() {
            return "a FIFO";
        }
        if kind.is_char_device() {
            return "a character device";
        }
        if kind.is_block_device() {
            return "a block device";
        }
        if kind.is_socket() {
            return "a socket";
        }
    }
    "not a regular file"
}

/// Opens `path` for reading if it is a regular file (through symbolic links when `follow`, else
/// a link is refused), and returns the file and the metadata of the opened file. Errors of the
/// file system keep their kind (`NotFound` for a missing file); a file of another type is an
/// `InvalidData` error naming the type.
pub(crate) fn open_regular(path: &Path, follow: bool) -> std::io::Result<(File, Metadata)> {
    let before = match follow {
        true => std::fs::metadata(path)?,
        false => std::fs::symlink_metadata(path)?,
    };
    refuse_unless_regular(&before)?;
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(O_NONBLOCK);
    }
    let file = options.open(path)?;
    let opened = file.metadata()?;
    refuse_unless_regular(&opened)?;
    Ok((file, opened))
}

fn refuse_unless_regular(metadata: &Metadata) -> std::io::Result<()> {
    match metadata.is_file() {
        true => Ok(()),
        false => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{}, not a regular file", kind_of(metadata)),
        )),
    }
}

/// The whole of `file`, which had `len` bytes when opened: at most `len` bytes are read, and a
/// file that is shorter or longer by then (written meanwhile) is an error.
pub(crate) fn read_exactly(file: File, len: u64) -> std::io::Result<Vec<u8>> {
    let size = usize::try_from(len).map_err(|_| {
        std::io::Error::new(std::io::ErrorKind::OutOfMemory, "more than memory can hold")
    })?;
    let mut bytes = Vec::new();
    bytes
        .try_reserve_exact(size)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::OutOfMemory, e.to_string()))?;
    let mut file = file.take(len.saturating_add(1));
    file.read_to_end(&mut bytes)?;
    match bytes.len() == size {
        true => Ok(bytes),
        false => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "the file changed while it was read ({len} bytes when opened, {} read)",
                bytes.len()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn devices_and_directories_are_refused_before_reading() {
        let error = open_regular(Path::new("/dev/zero"), true).unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::InvalidData);
        assert!(error.to_string().contains("a character device"), "{error}");
        let error = open_regular(&std::env::temp_dir(), true).unwrap_err();
        assert!(error.to_string().contains("a directory"), "{error}");
        let missing = std::env::temp_dir().join("optjit-no-such-file-at-all");
        let error = open_regular(&missing, true).unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::NotFound);
    }

    #[test]
    fn reads_are_bounded_by_the_size_seen() {
        let path = std::env::temp_dir().join(format!("optjit-regular-{}", std::process::id()));
        std::fs::write(&path, b"0123456789").unwrap();
        let (file, metadata) = open_regular(&path, false).unwrap();
        assert_eq!(read_exactly(file, metadata.len()).unwrap(), b"0123456789");
        let (file, _) = open_regular(&path, false).unwrap();
        let error = read_exactly(file, 4).unwrap_err();
        assert!(error.to_string().contains("changed while"), "{error}");
        let (file, _) = open_regular(&path, false).unwrap();
        let error = read_exactly(file, 12).unwrap_err();
        assert!(error.to_string().contains("10 read"), "{error}");
        std::fs::remove_file(&path).unwrap();
    }
}
