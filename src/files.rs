//! Reading the local files an admin points licrenew at (config, password, catalog, policies).
//!
//! Owns one rule: such a file must be a regular file (symlinks followed) no larger than a cap,
//! and is read through that cap. A FIFO would hang a read, `/dev/zero` would fill memory, a
//! directory or a dangling link would be skipped silently elsewhere: each is refused here with
//! a message that says what the path is. Must not read beyond the cap.

use std::io::Read;
use std::path::Path;

/// Reads `path`, which must be a regular file of at most `cap` bytes. The error is a message
/// for the caller to put beside the file's name.
pub fn read_regular_file(path: &Path, cap: u64) -> Result<Vec<u8>, String> {
    let meta = std::fs::metadata(path).map_err(|e| match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => format!("a symlink to nothing readable ({e})"),
        _ => format!("cannot read: {e}"),
    })?;
    let ft = meta.file_type();
    if !ft.is_file() {
        let what = if ft.is_dir() {
            "a directory"
        } else {
            use std::os::unix::fs::FileTypeExt;
            if ft.is_fifo() {
                "a FIFO"
            } else if ft.is_char_device() || ft.is_block_device() {
                "a device"
            } else if ft.is_socket() {
                "a socket"
            } else {
                "not a regular file"
            }
        };
        return Err(format!("{what}, not a regular file"));
    }
    if meta.len() > cap {
        return Err(format!(
            "{} bytes, more than the {cap}-byte limit for this file",
            meta.len()
        ));
    }
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read: {e}"))?;
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // The file may grow between the check and the read: the cap holds all the same.
    file.take(cap + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() as u64 > cap {
        return Err(format!("more than the {cap}-byte limit for this file"));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_under_the_cap_are_read() {
        let dir = tempfile::tempdir().expect("tmp");
        let file = dir.path().join("f.toml");
        std::fs::write(&file, "x = 1\n").expect("write");
        let link = dir.path().join("link.toml");
        std::os::unix::fs::symlink(&file, &link).expect("symlink");
        let dangling = dir.path().join("dangling.toml");
        std::os::unix::fs::symlink(dir.path().join("nope"), &dangling).expect("symlink");
        let big = dir.path().join("big.toml");
        std::fs::write(&big, vec![b'#'; 2048]).expect("write");

        assert_eq!(read_regular_file(&file, 1024).expect("file"), b"x = 1\n");
        assert_eq!(read_regular_file(&link, 1024).expect("link"), b"x = 1\n");
        assert!(
            read_regular_file(&dangling, 1024)
                .expect_err("dangling")
                .contains("symlink")
        );
        assert!(
            read_regular_file(dir.path(), 1024)
                .expect_err("dir")
                .contains("a directory")
        );
        assert!(
            read_regular_file(Path::new("/dev/zero"), 1024)
                .expect_err("device")
                .contains("a device")
        );
        assert!(
            read_regular_file(&big, 1024)
                .expect_err("big")
                .contains("1024-byte limit")
        );
    }
}
