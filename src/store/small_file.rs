//! Small state kept outside the log (a poll's watermark, a channel's rotated refresh
//! token), written as durably as the log: a temp file synced, renamed over the old one,
//! and the directory synced, so a crash leaves the old file or the new one, whole.

use std::io::Write as _;
use std::path::Path;

/// Writes `bytes` to `path` durably; `private`: readable by the owner alone (credentials).
pub fn write_durably(path: &Path, bytes: &[u8], private: bool) -> std::io::Result<()> {
    let temp = path.with_extension("tmp");
    {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
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
    }
    std::fs::rename(&temp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}
