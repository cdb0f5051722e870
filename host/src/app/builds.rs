//! App builds: private, read-only, content-addressed snapshots of the library.
//!
//! Workers never load the operator's library path directly. On start and on
//! each reload the master copies the file into a private directory under a
//! name made from its SHA-256, read-only, so a build rewritten in place (by
//! `cp`, or by cargo's unlink-and-link) cannot crash running workers, and all
//! workers of a generation run the same bytes. The directory is removed when
//! the master exits.

use std::{
    fs,
    io::{self, Read, Write},
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
};

use sha2::{Digest, Sha256};

use crate::app::AppSpec;

/// Snapshot directories are named `host-<master pid>-builds-<random>`.
const DIR_PREFIX: &str = "host-";
const DIR_MIDDLE: &str = "-builds-";

/// Removes snapshot directories whose master is no longer running (it was
/// killed before it could clean up).
fn remove_stale(base: &Path) {
    let Ok(entries) = fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(DIR_PREFIX))
            .and_then(|n| n.split_once(DIR_MIDDLE))
            .and_then(|(pid, _)| pid.parse::<i32>().ok())
        else {
            continue;
        };
        let alive = !matches!(
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
            Err(nix::errno::Errno::ESRCH)
        );
        if !alive && entry.path().is_dir() {
            // Snapshots are read-only files in a writable directory: removable.
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// Hex digits of the hash used to name builds in logs and file names.
pub const HASH_LEN: usize = 12;
/// Bytes copied (and hashed) at a time when a build is snapshotted.
const COPY_CHUNK: usize = 64 * 1024;

/// What identifies a file's version cheaply, without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
}

impl FileStamp {
    /// The stamp of the file at `path` (following links, as dlopen would).
    pub fn of(path: &Path) -> io::Result<FileStamp> {
        let m = fs::metadata(path)?;
        Ok(FileStamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
        })
    }
}

/// One snapshot of the app's library.
#[derive(Debug, Clone)]
pub struct Build {
    /// The first [`HASH_LEN`] hex digits of the file's SHA-256.
    pub hash: String,
    /// The read-only private copy workers load.
    pub snapshot: PathBuf,
    /// The stamp of the source file when it was copied.
    pub stamp: FileStamp,
}

impl Build {
    /// The app spec that loads this build's snapshot.
    pub fn spec(&self, original: &AppSpec) -> AppSpec {
        AppSpec {
            path: self.snapshot.clone(),
            name: original.name.clone(),
        }
    }
}

/// The private directory of snapshots.
pub struct Snapshots {
    dir: tempfile::TempDir,
}

impl Snapshots {
    /// Creates the directory (under `$XDG_RUNTIME_DIR` if set, else the temp
    /// dir), first removing directories left by masters that were killed.
    pub fn new() -> io::Result<Snapshots> {
        let base = std::env::var_os("XDG_RUNTIME_DIR")
            .map(PathBuf::from)
            .filter(|p| p.is_dir())
            .unwrap_or_else(std::env::temp_dir);
        remove_stale(&base);
        let dir = tempfile::Builder::new()
            .prefix(&format!("{DIR_PREFIX}{}{DIR_MIDDLE}", std::process::id()))
            .tempdir_in(base)?;
        // Workers running as --user must reach the (read-only) snapshots.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))?;
        Ok(Snapshots { dir })
    }

    /// The directory's path.
    #[cfg(test)]
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Copies `source` into a snapshot named by its content.
    ///
    /// Fails with `WouldBlock` when the file changed while it was read (a build
    /// still being written): try again later.
    pub fn take(&self, source: &Path) -> io::Result<Build> {
        let before = FileStamp::of(source)?;
        // Copy and hash in one pass through a small buffer: a whole library
        // read into memory would stay in the master's heap (and so in every
        // worker forked after it).
        let mut file = fs::File::open(source)?;
        let mut tmp = tempfile::NamedTempFile::new_in(self.dir.path())?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; COPY_CHUNK];
        let mut copied = 0u64;
        loop {
            let n = match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            hasher.update(&buf[..n]);
            tmp.write_all(&buf[..n])?;
            copied += n as u64;
        }
        let after = FileStamp::of(source)?;
        if before != after || copied != after.size {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                "the file changed while it was being copied",
            ));
        }
        let digest = hasher.finalize();
        let hash: String = digest
            .iter()
            .flat_map(|b| [b >> 4, b & 15])
            .take(HASH_LEN)
            .map(|n| char::from_digit(n as u32, 16).unwrap_or('0'))
            .collect();
        let name = source
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "app.so".into());
        let snapshot = self.dir.path().join(format!("{hash}-{name}"));
        if !snapshot.exists() {
            // Written under a temporary name, then renamed: a reader never sees half a file.
            tmp.as_file()
                .set_permissions(fs::Permissions::from_mode(0o444))?;
            tmp.persist(&snapshot).map_err(|e| e.error)?;
        }
        Ok(Build {
            hash,
            snapshot,
            stamp: after,
        })
    }

    /// Deletes a snapshot no generation uses any more.
    pub fn remove(&self, build: &Build) {
        if build.snapshot.starts_with(self.dir.path()) {
            let _ = fs::remove_file(&build.snapshot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_are_content_addressed_and_read_only() {
        let snaps = Snapshots::new().unwrap();
        let src_dir = tempfile::tempdir().unwrap();
        let src = src_dir.path().join("libx.so");
        fs::write(&src, b"first").unwrap();
        let a = snaps.take(&src).unwrap();
        assert_eq!(a.hash.len(), HASH_LEN);
        assert_eq!(fs::read(&a.snapshot).unwrap(), b"first");
        assert_eq!(
            fs::metadata(&a.snapshot).unwrap().permissions().mode() & 0o777,
            0o444
        );
        fs::write(&src, b"second").unwrap();
        let b = snaps.take(&src).unwrap();
        assert_ne!(a.hash, b.hash);
        assert_ne!(a.snapshot, b.snapshot);
        assert_eq!(
            fs::read(&a.snapshot).unwrap(),
            b"first",
            "old snapshot untouched"
        );
        fs::write(&src, b"first").unwrap();
        assert_eq!(snaps.take(&src).unwrap().snapshot, a.snapshot);
        let dir = snaps.path().to_path_buf();
        drop(snaps);
        assert!(!dir.exists(), "the directory is removed with the master");
    }

    #[test]
    fn directories_of_dead_masters_are_removed() {
        let base = tempfile::tempdir().unwrap();
        // No process has pid i32::MAX; this one is alive.
        let dead = base.path().join(format!("host-{}-builds-x", i32::MAX));
        let alive = base
            .path()
            .join(format!("host-{}-builds-y", std::process::id()));
        let other = base.path().join("unrelated");
        for d in [&dead, &alive, &other] {
            fs::create_dir(d).unwrap();
        }
        remove_stale(base.path());
        assert!(!dead.exists());
        assert!(alive.exists());
        assert!(other.exists());
    }
}
