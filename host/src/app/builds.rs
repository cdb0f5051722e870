//! App builds: private, read-only, content-addressed snapshots of the library.
//!
//! Workers never load the operator's library path directly. On start and on
//! each reload the master copies the file into a private directory under a
//! name made from its SHA-256, read-only, so a build rewritten in place (by
//! `cp`, or by cargo's unlink-and-link) cannot crash running workers, and all
//! workers of a generation run the same bytes. The directory is removed when
//! the master exits.
//!
//! Nothing on disk can pull a live build from under the server: the master
//! holds every live snapshot open (a read-only, close-on-exec descriptor of
//! the very file it wrote), and workers and probes load it through that
//! descriptor, `/proc/self/fd/N`, inherited across the fork. A snapshot
//! directory removed by `systemd-tmpfiles`, a `/tmp` cleaner or an operator
//! costs nothing to the builds already taken, and the next snapshot (a
//! reload) goes into a new directory. A regular file held open was chosen
//! over a `memfd`: the snapshot stays visible under its name while it exists
//! (in `/proc/PID/maps`, to `perf` and `gdb`), content-addressed reuse keeps
//! working, and it needs no sealing to be read-only. Logs and `/status`
//! name a build by its hash and the operator's path, never by descriptor.
//! A child keeps only the descriptor of the build it loads
//! ([`Snapshots::close_except`]).

use std::{
    cell::{Cell, RefCell},
    collections::BTreeMap,
    fs,
    io::{self, Read, Write},
    os::{
        fd::{AsRawFd, OwnedFd},
        unix::fs::{MetadataExt, PermissionsExt},
    },
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
    /// The read-only private copy (its name, for people: it may be gone).
    pub snapshot: PathBuf,
    /// What workers and probes load: `/proc/self/fd/N`, the master's
    /// descriptor of the snapshot, inherited across the fork.
    pub fd_path: PathBuf,
    /// The stamp of the source file when it was copied.
    pub stamp: FileStamp,
}

impl Build {
    /// The app spec that loads this build's snapshot.
    pub fn spec(&self, original: &AppSpec) -> AppSpec {
        AppSpec {
            path: self.fd_path.clone(),
            name: original.name.clone(),
        }
    }
}

/// Where snapshot directories go, and what chose it (for error messages):
/// `$XDG_RUNTIME_DIR` when it names a directory, else the temp dir.
fn base_dir() -> (PathBuf, &'static str) {
    match std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_dir())
    {
        Some(dir) => (dir, "$XDG_RUNTIME_DIR"),
        None => (
            std::env::temp_dir(),
            "the temporary directory, $TMPDIR or /tmp",
        ),
    }
}

/// The private directory of snapshots, and the descriptors of live ones.
///
/// Interior mutability: the master (single-threaded) shares it by reference
/// between its rollout steps; nothing else ever sees it.
pub struct Snapshots {
    /// Where snapshot directories are made (`$XDG_RUNTIME_DIR` or the temp dir).
    base: PathBuf,
    /// The directory new snapshots go to.
    dir: RefCell<tempfile::TempDir>,
    /// Its device and inode when made: a directory of the same name that is
    /// not this one (it was removed, and someone made another) is not used.
    dir_id: Cell<(u64, u64)>,
    /// A read-only descriptor of each live snapshot, by its path.
    held: RefCell<BTreeMap<PathBuf, OwnedFd>>,
}

/// Makes a snapshot directory under `base`: (the directory, its device and inode).
fn make_dir(base: &Path) -> io::Result<(tempfile::TempDir, (u64, u64))> {
    let dir = tempfile::Builder::new()
        .prefix(&format!("{DIR_PREFIX}{}{DIR_MIDDLE}", std::process::id()))
        .tempdir_in(base)?;
    // Workers running as --user must reach the (read-only) snapshots.
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))?;
    let meta = fs::symlink_metadata(dir.path())?;
    Ok((dir, (meta.dev(), meta.ino())))
}

/// A read-only, close-on-exec descriptor of the file `file` is open on (the
/// same inode, whatever its path names by now).
fn reopen_read_only(file: &fs::File) -> io::Result<OwnedFd> {
    let fd = fs::File::open(format!("/proc/self/fd/{}", file.as_raw_fd()))?;
    Ok(OwnedFd::from(fd))
}

impl Snapshots {
    /// Creates the directory (under `$XDG_RUNTIME_DIR` if set, else the temp
    /// dir), first removing directories left by masters that were killed.
    ///
    /// A failure is one line naming the directory and the variable that
    /// chose it: the operator's environment is wrong (a read-only or full
    /// `$XDG_RUNTIME_DIR`), not the app, so start-up exits with
    /// [`crate::exit_code::STARTUP`], not [`crate::exit_code::APP_LOAD`].
    pub fn new() -> Result<Snapshots, String> {
        let (base, chosen_by) = base_dir();
        Snapshots::new_in(&base).map_err(|e| {
            format!(
                "cannot create the build snapshot directory in {} ({chosen_by}): {e}; point it at a writable directory",
                base.display()
            )
        })
    }

    /// Creates the directory under `base`.
    fn new_in(base: &Path) -> io::Result<Snapshots> {
        remove_stale(base);
        let (dir, id) = make_dir(base)?;
        Ok(Snapshots {
            base: base.to_path_buf(),
            dir: RefCell::new(dir),
            dir_id: Cell::new(id),
            held: RefCell::new(BTreeMap::new()),
        })
    }

    /// The directory's path.
    #[cfg(test)]
    pub fn path(&self) -> PathBuf {
        self.dir.borrow().path().to_path_buf()
    }

    /// The directory new snapshots go to: the one made before if it is still
    /// there, else a new one (logged). Builds already taken are held open and
    /// do not need it.
    fn live_dir(&self) -> io::Result<PathBuf> {
        let path = self.dir.borrow().path().to_path_buf();
        let intact = fs::symlink_metadata(&path)
            .is_ok_and(|m| m.is_dir() && (m.dev(), m.ino()) == self.dir_id.get());
        if intact {
            return Ok(path);
        }
        let (dir, id) = make_dir(&self.base)?;
        log::warn!(
            "the build snapshot directory {} was removed; new snapshots go to {} (running builds are held open and unaffected)",
            path.display(),
            dir.path().display()
        );
        self.dir_id.set(id);
        // The old name is not ours any more: whatever holds it now stays.
        let _ = self.dir.replace(dir).keep();
        Ok(self.dir.borrow().path().to_path_buf())
    }

    /// In a forked child: closes the descriptor of every snapshot but
    /// `keep`'s (the build the child loads; the others are the master's).
    pub fn close_except(&self, keep: &Build) {
        self.held
            .borrow_mut()
            .retain(|path, _| *path == keep.snapshot);
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
        let dir = self.live_dir()?;
        let mut tmp = tempfile::NamedTempFile::new_in(&dir)?;
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
        let snapshot = dir.join(format!("{hash}-{name}"));
        let mut held = self.held.borrow_mut();
        if !held.contains_key(&snapshot) {
            // Held by the descriptor of the file just written (not by its
            // name), then renamed into view: a reader never sees half a file.
            tmp.as_file()
                .set_permissions(fs::Permissions::from_mode(0o444))?;
            let fd = reopen_read_only(tmp.as_file())?;
            tmp.persist(&snapshot).map_err(|e| e.error)?;
            held.insert(snapshot.clone(), fd);
        }
        let fd_path = match held.get(&snapshot) {
            Some(fd) => PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd())),
            None => return Err(io::Error::other("the snapshot's descriptor is missing")),
        };
        Ok(Build {
            hash,
            snapshot,
            fd_path,
            stamp: after,
        })
    }

    /// Deletes a snapshot no generation uses any more, and closes its descriptor.
    pub fn remove(&self, build: &Build) {
        self.held.borrow_mut().remove(&build.snapshot);
        // Only in the current directory: an old one's name is not ours any more.
        if build.snapshot.starts_with(self.dir.borrow().path()) {
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
        let dir = snaps.path();
        drop(snaps);
        assert!(!dir.exists(), "the directory is removed with the master");
    }

    #[test]
    fn builds_outlive_their_directory_and_a_new_one_is_made() {
        let base = tempfile::tempdir().unwrap();
        let snaps = Snapshots::new_in(base.path()).unwrap();
        let src_dir = tempfile::tempdir().unwrap();
        let src = src_dir.path().join("libx.so");
        fs::write(&src, b"first").unwrap();
        let a = snaps.take(&src).unwrap();
        let first_dir = snaps.path();
        fs::remove_dir_all(&first_dir).unwrap();
        // The build is still there through its descriptor.
        assert_eq!(fs::read(&a.fd_path).unwrap(), b"first");
        assert!(a.fd_path.starts_with("/proc/self/fd/"));
        // A new snapshot goes to a new directory.
        fs::write(&src, b"second").unwrap();
        let b = snaps.take(&src).unwrap();
        assert_ne!(snaps.path(), first_dir);
        assert!(b.snapshot.starts_with(snaps.path()));
        assert_eq!(fs::read(&b.fd_path).unwrap(), b"second");
        assert_eq!(fs::read(&a.fd_path).unwrap(), b"first");
        // A directory made under the old name by someone else is left alone.
        fs::create_dir(&first_dir).unwrap();
        fs::write(&src, b"third").unwrap();
        let c = snaps.take(&src).unwrap();
        assert!(c.snapshot.starts_with(snaps.path()));
        assert!(!c.snapshot.starts_with(&first_dir));
        // Descriptors close with remove, or in a child with close_except.
        assert_eq!(snaps.held.borrow().len(), 3);
        snaps.close_except(&c);
        assert_eq!(snaps.held.borrow().len(), 1, "only c's stays open");
        assert_eq!(fs::read(&c.fd_path).unwrap(), b"third");
        snaps.remove(&c);
        assert!(snaps.held.borrow().is_empty());
        assert!(!c.snapshot.exists());
        drop(snaps);
        assert!(first_dir.exists(), "not ours: left as it is");
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
