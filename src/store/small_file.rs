//! Small state kept outside the log (a poll's watermark, a channel's rotated refresh
//! token), written as durably as the log: a temp file synced, renamed over the old one,
//! and the directory synced, so a crash leaves the old file or the new one, whole. The
//! temp file is the file's whole name and `.tmp`, one per file; callers serialize the
//! writes of any one file (each is written by one owner: the engine at start, the sync
//! book under its lock, a channel's poller or token).

use std::io::Write as _;
use std::path::Path;

/// Writes `bytes` to `path` durably; `private`: readable by the owner alone (credentials).
pub fn write_durably(path: &Path, bytes: &[u8], private: bool) -> std::io::Result<()> {
    let temp = temp_path(path);
    // One a crash left is removed first: opened as it is, it would keep its old mode,
    // and a credential meant for the owner alone could be renamed into place readable.
    match std::fs::remove_file(&temp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let written = (|| {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        if private {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(0o600);
        }
        #[cfg(not(unix))]
        let _ = private;
        let mut file = options.open(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)
    })();
    if let Err(e) = written {
        // A full disk's partial bytes are not left behind.
        let _ = std::fs::remove_file(&temp);
        return Err(e);
    }
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// The file a write goes to before its rename: the whole name and `.tmp`. Replacing the
/// extension instead gave `lockstep.meta`, `lockstep.settings` and `lockstep.sync` one
/// temp file, `lockstep.tmp`, so two of them written at once could rename each other's
/// half-written bytes into place.
fn temp_path(path: &Path) -> std::path::PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Files of one stem written at once, over and over: each ends whole, as its last
    /// write left it, and no write fails.
    #[test]
    fn files_sharing_a_stem_written_at_once_stay_whole() {
        let dir = tempfile::tempdir().unwrap();
        let names = ["lockstep.meta", "lockstep.settings", "lockstep.sync"];
        std::thread::scope(|scope| {
            for (n, name) in names.iter().enumerate() {
                let path = dir.path().join(name);
                scope.spawn(move || {
                    for round in 0..200 {
                        // Sizes differ by file and round, so a mix of two shows.
                        let text = format!("{name} {round} ").repeat(1 + (n * 7 + round) % 50);
                        write_durably(&path, text.as_bytes(), false)
                            .unwrap_or_else(|e| panic!("{name}, round {round}: {e}"));
                    }
                });
            }
        });
        for (n, name) in names.iter().enumerate() {
            let text = std::fs::read_to_string(dir.path().join(name)).unwrap();
            assert_eq!(text, format!("{name} 199 ").repeat(1 + (n * 7 + 199) % 50));
        }
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|f| !names.iter().any(|n| f == n))
            .collect();
        assert!(left.is_empty(), "temp files left: {left:?}");
    }

    /// A temp file a crash left, readable by all, does not lend its mode to a
    /// credential written after it.
    #[cfg(unix)]
    #[test]
    fn a_private_file_is_private_whatever_a_crash_left() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token-shop.json");
        std::fs::write(temp_path(&path), b"half").unwrap();
        std::fs::set_permissions(temp_path(&path), std::fs::Permissions::from_mode(0o644)).unwrap();
        write_durably(&path, b"{\"refresh\":\"secret\"}", true).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(std::fs::read(&path).unwrap(), b"{\"refresh\":\"secret\"}");
        assert!(!temp_path(&path).exists());
    }

    #[test]
    fn a_temp_file_keeps_the_whole_name() {
        assert_eq!(
            temp_path(Path::new("/d/lockstep.meta")),
            Path::new("/d/lockstep.meta.tmp")
        );
        assert_eq!(
            temp_path(Path::new("/d/poll-shop.eu.watermark")),
            Path::new("/d/poll-shop.eu.watermark.tmp")
        );
    }
}
