//! File modes for what the store keeps on disk. A SQLite database holds every user's
//! key fingerprints and token hashes: it is created 0600 and its directory 0700,
//! whatever the umask, and a copy left more open by an older version (SQLite itself
//! creates files 0644) is tightened at start, with a warning saying so.

use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use sqlx::sqlite::SqliteConnectOptions;

use crate::keys::escape;

/// Group and other bits: none may be set on private files and directories.
const OPEN_BITS: u32 = 0o077;

/// SQLite's companions of a database file. It creates them with the database file's
/// own mode, so a 0600 database gets 0600 ones; existing ones are tightened too.
const SIDE_FILES: [&str; 3] = ["-wal", "-shm", "-journal"];

#[derive(Debug, thiserror::Error)]
#[error("{path}: {action}: {source}")]
pub struct FileModeError {
    path: String,
    action: &'static str,
    source: std::io::Error,
}

fn failed(path: &Path, action: &'static str) -> impl FnOnce(std::io::Error) -> FileModeError {
    let path = escape(&path.display().to_string());
    move |source| FileModeError {
        path,
        action,
        source,
    }
}

/// Creates `dir` (and missing parents) with mode 0700 for the last component, or
/// removes group and other access from it if it already exists.
pub fn ensure_private_dir(dir: &Path) -> Result<(), FileModeError> {
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(failed(parent, "creating directory"))?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::AlreadyExists && dir.is_dir() => tighten(dir),
        Err(e) => Err(failed(dir, "creating directory")(e)),
    }
}

/// Removes group and other permission bits from an existing file or directory,
/// logging when it had any.
pub fn tighten(path: &Path) -> Result<(), FileModeError> {
    let mode = std::fs::metadata(path)
        .map_err(failed(path, "reading permissions"))?
        .permissions()
        .mode()
        & 0o7777;
    if mode & OPEN_BITS == 0 {
        return Ok(());
    }
    let tightened = mode & !OPEN_BITS;
    let shown = escape(&path.display().to_string());
    match std::fs::set_permissions(path, std::fs::Permissions::from_mode(tightened)) {
        Ok(()) => {
            tracing::warn!(
                path = %shown,
                was = format_args!("{mode:o}"),
                now = format_args!("{tightened:o}"),
                "tightened permissions: other users could read this"
            );
            Ok(())
        }
        // Someone else's file (a volume owned by root, say): refusing to start would
        // not make it private, so say what to fix and carry on.
        Err(e) if e.kind() == ErrorKind::PermissionDenied => {
            tracing::error!(
                path = %shown,
                mode = format_args!("{mode:o}"),
                "other users can read this and the gateway may not change its mode; run `chmod go-rwx` on it"
            );
            Ok(())
        }
        Err(e) => Err(failed(path, "restricting permissions")(e)),
    }
}

/// The database file a SQLite URL names, if it names one on disk (not `:memory:`).
pub(super) fn sqlite_file(url: &str) -> Option<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let (database, params) = rest.split_once('?').unwrap_or((rest, ""));
    let in_memory = database.is_empty()
        || database == ":memory:"
        || params.split('&').any(|p| p == "mode=memory");
    if in_memory {
        return None;
    }
    // sqlx's own parser, so the path (percent-decoding included) is the one it opens.
    let options = SqliteConnectOptions::from_str(url).ok()?;
    Some(options.get_filename().to_owned())
}

/// Before SQLite opens `url`: creates the database file 0600 if it is missing and
/// will be created (`mode=rwc`), and tightens it and its companions if they exist.
pub fn prepare_sqlite(url: &str) -> Result<(), FileModeError> {
    let Some(path) = sqlite_file(url) else {
        return Ok(());
    };
    let creates = url.contains("mode=rwc");
    if creates && !path.exists() {
        // SQLite would create it 0644 & ~umask; an empty file is a valid new database.
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(_) => {}
            // Another process (a second replica, the admin CLI) won the race; tighten
            // theirs below like any existing file.
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            // A missing directory is SQLite's error to report, with its own message.
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(failed(&path, "creating database file")(e)),
        }
    }
    let mut files = vec![path.clone()];
    for suffix in SIDE_FILES {
        let mut side = path.clone().into_os_string();
        side.push(suffix);
        files.push(PathBuf::from(side));
    }
    for file in files.iter().filter(|f| f.exists()) {
        tighten(file)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_urls_name_their_file() {
        assert_eq!(
            sqlite_file("sqlite:///var/lib/gw/gateway.db?mode=rwc"),
            Some(PathBuf::from("/var/lib/gw/gateway.db"))
        );
        assert_eq!(
            sqlite_file("sqlite://rel/x.db"),
            Some(PathBuf::from("rel/x.db"))
        );
        assert_eq!(sqlite_file("sqlite::memory:"), None);
        assert_eq!(sqlite_file("sqlite://?mode=memory"), None);
        assert_eq!(sqlite_file("postgres://db/gw"), None);
    }

    #[test]
    fn new_database_is_private_and_old_one_is_tightened() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("new.db");
        prepare_sqlite(&format!("sqlite://{}?mode=rwc", db.display())).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&db), 0o600);

        let old = dir.path().join("old.db");
        let wal = dir.path().join("old.db-wal");
        for f in [&old, &wal] {
            std::fs::write(f, b"").unwrap();
            std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        prepare_sqlite(&format!("sqlite://{}", old.display())).unwrap();
        assert_eq!(mode(&old), 0o600);
        assert_eq!(mode(&wal), 0o600);
    }

    #[test]
    fn private_dir_is_created_0700_and_tightened() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("a/b");
        ensure_private_dir(&data).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&data), 0o700);
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
        ensure_private_dir(&data).unwrap();
        assert_eq!(mode(&data), 0o700);
    }
}
