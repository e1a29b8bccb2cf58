//! One owner for the database: a command run as root works as the database's owner.
//!
//! Owns the switch: once the config and the password are read (root may read them), a root
//! process takes on the user and group that own the database file (or, before it exists, its
//! folder), so every file it writes beside the database (the database itself, its WAL, the
//! lock) stays readable and writable by the service's user. Nothing happens when not root, or
//! when the owner is root. Must not be called after a file was opened for the database.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Who owns what the database is (or will be) made of: the file, else its folder.
fn owner(db: &Path) -> Option<(u32, u32)> {
    let meta = match std::fs::metadata(db) {
        Ok(m) => m,
        Err(_) => std::fs::metadata(db.parent().filter(|p| !p.as_os_str().is_empty())?).ok()?,
    };
    Some((meta.uid(), meta.gid()))
}

/// Becomes the owner of `db` when running as root and that owner is someone else. Returns the
/// uid switched to.
pub fn become_database_owner(db: &Path) -> std::io::Result<Option<u32>> {
    // SAFETY: geteuid reads the process's effective uid.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let Some((uid, gid)) = owner(db) else {
        return Ok(None);
    };
    if uid == 0 {
        return Ok(None);
    }
    // SAFETY: setgroups/setgid/setuid take plain values; the order (groups, group, user)
    // drops root's rights last, as it must.
    unsafe {
        if libc::setgroups(0, std::ptr::null()) != 0
            || libc::setgid(gid) != 0
            || libc::setuid(uid) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(Some(uid))
}
