//! Whose a cache directory or entry is: the cache reads only what this user owns and no other
//! user may write, as ssh reads a key file (docs/cache.md). Only the owner and the mode bits are
//! looked at, so the rule holds for root too (root is refused another user's cache).

use std::fs::Metadata;

/// Refuses `metadata` (of a cache directory or entry) unless this process's effective user owns
/// it and neither its group nor other users may write it; the reason names what to change.
#[cfg(unix)]
pub(crate) fn check_owner(metadata: &Metadata) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    unsafe extern "C" {
        /// POSIX `geteuid`: always succeeds, touches no memory.
        safe fn geteuid() -> u32;
    }
    let me = geteuid();
    if metadata.uid() != me {
        return Err(format!(
            "owned by user {}, not by this user ({me})",
            metadata.uid()
        ));
    }
    let mode = metadata.mode() & 0o7777;
    let writers = match (mode & 0o020 != 0, mode & 0o002 != 0) {
        (false, false) => return Ok(()),
        (true, false) => "its group",
        (false, true) => "other users",
        (true, true) => "its group and other users",
    };
    Err(format!(
        "writable by {writers} (mode {mode:04o}; `chmod go-w` it to use it)"
    ))
}

/// Where files have no Unix owner and mode, nothing is checked.
#[cfg(not(unix))]
pub(crate) fn check_owner(_metadata: &Metadata) -> Result<(), String> {
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn only_mode_bits_that_let_others_write_are_refused() {
        let path = std::env::temp_dir().join(format!("optjit-owner-{}", std::process::id()));
        std::fs::write(&path, b"x").unwrap();
        let mode = |bits: u32| {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(bits)).unwrap();
            check_owner(&std::fs::metadata(&path).unwrap())
        };
        for ok in [0o600, 0o644, 0o755, 0o700, 0o444] {
            assert_eq!(mode(ok), Ok(()), "{ok:o}");
        }
        for (bad, who) in [
            (0o664, "its group ("),
            (0o646, "other users ("),
            (0o666, "its group and other users"),
            (0o777, "mode 0777"),
        ] {
            let why = mode(bad).unwrap_err();
            assert!(why.contains(who), "{bad:o}: {why}");
        }
        std::fs::remove_file(&path).unwrap();
    }
}
