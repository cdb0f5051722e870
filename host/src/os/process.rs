//! What the server does to its own processes: pid file, working directory,
//! umask, environment, user and group, and process titles.
//!
//! The master applies these before it binds (chdir, umask, env) or right after
//! (pid file); workers drop to `--user`/`--group` right after the fork, before
//! they load any app code, so no app code ever runs as root when asked not to.
//! The master keeps its identity so a HUP can still bind privileged ports.
//!
//! [`leave_child`] is how every forked child (a worker, a probe) ends: it
//! never returns into the master's code, whose stack and destructors it
//! shares after `fork`.

use std::{
    ffi::{CStr, CString},
    fs,
    io::{self, Write},
    path::{Path, PathBuf},
};

use nix::unistd::{Gid, Group, Pid, Uid, User};

/// A user and group to run workers as.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The user's name (for `initgroups`).
    pub name: CString,
    /// The user id.
    pub uid: Uid,
    /// The group id.
    pub gid: Gid,
}

/// Resolves `--user` and `--group` (names or numbers) to ids.
pub fn identity(user: Option<&str>, group: Option<&str>) -> Result<Option<Identity>, String> {
    let Some(user) = user else {
        if group.is_some() {
            return Err("--group needs --user".into());
        }
        return Ok(None);
    };
    let found = match user.parse::<u32>() {
        Ok(uid) => User::from_uid(Uid::from_raw(uid)),
        Err(_) => User::from_name(user),
    }
    .map_err(|e| format!("cannot look up user `{user}`: {e}"))?
    .ok_or_else(|| format!("no such user `{user}`"))?;
    let gid = match group {
        None => found.gid,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => Gid::from_raw(gid),
            Err(_) => {
                Group::from_name(g)
                    .map_err(|e| format!("cannot look up group `{g}`: {e}"))?
                    .ok_or_else(|| format!("no such group `{g}`"))?
                    .gid
            }
        },
    };
    Ok(Some(Identity {
        name: CString::new(found.name).map_err(|_| "invalid user name".to_owned())?,
        uid: found.uid,
        gid,
    }))
}

/// Becomes `id` (supplementary groups, group, then user); in a worker, after fork.
pub fn drop_to(id: &Identity) -> nix::Result<()> {
    if Uid::effective() == id.uid {
        return Ok(());
    }
    nix::unistd::initgroups(&id.name, id.gid)?;
    nix::unistd::setgid(id.gid)?;
    nix::unistd::setuid(id.uid)?;
    Ok(())
}

/// Parses a `--umask` value: octal, with or without a leading `0` or `0o`.
pub fn parse_umask(s: &str) -> Result<u32, String> {
    let digits = s.strip_prefix("0o").unwrap_or(s);
    u32::from_str_radix(digits, 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| format!("`{s}` is not an octal umask such as 022"))
}

/// Parses an `--env KEY=VALUE` value.
pub fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((key, value)) if !key.is_empty() && !key.contains('\0') && !value.contains('\0') => {
            Ok((key.to_owned(), value.to_owned()))
        }
        _ => Err(format!("`{s}` is not KEY=VALUE")),
    }
}

/// A pid file that is removed when dropped (unless handed over).
#[derive(Debug)]
pub struct PidFile {
    path: PathBuf,
    /// Whether dropping it removes the file (if it still names this process).
    remove_on_drop: bool,
}

impl PidFile {
    /// Writes this process's pid to `path` atomically (a temporary file, then
    /// rename); refuses when the file names another process that is alive.
    pub fn create(path: &Path) -> Result<PidFile, String> {
        Self::write(path, None)
    }

    /// Like [`PidFile::create`], for a new master taking over from the old
    /// one (binary upgrade): the file may name `predecessor`, which is alive
    /// and hands over to this process.
    pub fn take_over(path: &Path, predecessor: Pid) -> Result<PidFile, String> {
        Self::write(path, Some(predecessor))
    }

    fn write(path: &Path, predecessor: Option<Pid>) -> Result<PidFile, String> {
        let shown = path.display();
        if let Ok(text) = fs::read_to_string(path) {
            if let Ok(pid) = text.trim().parse::<i32>() {
                let alive = pid > 0
                    && pid != std::process::id() as i32
                    && Some(Pid::from_raw(pid)) != predecessor
                    && !matches!(
                        nix::sys::signal::kill(Pid::from_raw(pid), None),
                        Err(nix::errno::Errno::ESRCH)
                    );
                if alive {
                    return Err(format!(
                        "{shown} names process {pid}, which is running: is another host using it?"
                    ));
                }
            }
        }
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let write = || -> io::Result<()> {
            let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
            writeln!(tmp, "{}", std::process::id())?;
            tmp.as_file().sync_all()?;
            tmp.persist(path).map_err(|e| e.error)?;
            Ok(())
        };
        write().map_err(|e| format!("cannot write the pid file {shown}: {e}"))?;
        Ok(PidFile {
            path: path.to_path_buf(),
            remove_on_drop: true,
        })
    }

    /// Leaves the file in place when dropped: a new master (binary upgrade)
    /// takes it over. Reading it at exit to see whose pid it holds would race
    /// with the new master writing it: the file read could be this
    /// process's, and the one removed the new master's.
    pub fn hand_over(&mut self) {
        self.remove_on_drop = false;
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        if !self.remove_on_drop {
            return;
        }
        // Only our own: a successor may already have written its pid.
        let ours = fs::read_to_string(&self.path)
            .ok()
            .and_then(|t| t.trim().parse::<u32>().ok())
            == Some(std::process::id());
        if ours {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Runs `body`, the whole life of a forked child, and leaves the process
/// with its exit code: never returns into the caller (the master's code), and
/// runs none of the master's destructors (its snapshots, pid file and socket
/// files belong to the live master).
///
/// A panic in host code is logged as one error line (message and location)
/// and ends the child with [`crate::exit_code::CHILD_PANICKED`]; the error
/// log writes each line at once, and standard output is flushed here.
pub fn leave_child(body: impl FnOnce() -> i32) -> ! {
    std::panic::set_hook(Box::new(|info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(no message)");
        let location = info
            .location()
            .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
            .unwrap_or_else(|| "an unknown place".into());
        let thread = std::thread::current();
        log::error!(
            "pid {}: host code panicked at {location} (thread {}): {}",
            std::process::id(),
            thread.name().unwrap_or("unnamed"),
            message.replace('\n', " ")
        );
    }));
    let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body))
        .unwrap_or(crate::exit_code::CHILD_PANICKED);
    let _ = io::stdout().flush();
    // SAFETY: `_exit` ends the process at once, as a forked child must:
    // no atexit handler or destructor of the master runs here.
    unsafe { libc::_exit(code) }
}

extern "C" {
    /// glibc's pointer to `argv[0]`; the argument strings follow it in memory.
    static mut program_invocation_name: *mut libc::c_char;
}

/// Sets what `ps` shows for this process (`/proc/self/cmdline`, and the
/// 15-byte `comm` name), by rewriting the memory of the original arguments,
/// as `setproctitle` does. The arguments were already copied by then.
pub fn set_title(title: &str) {
    let Ok(cmdline) = fs::read("/proc/self/cmdline") else {
        return;
    };
    // SAFETY: program_invocation_name is argv[0]; the kernel reports the
    // argument area as `cmdline.len()` bytes from there, all ours to write,
    // and nothing reads the original arguments after start-up.
    unsafe {
        let start = program_invocation_name as *mut u8;
        if start.is_null() || CStr::from_ptr(start.cast()).to_bytes().len() + 1 > cmdline.len() {
            return;
        }
        let room = cmdline.len() - 1;
        let n = title.len().min(room);
        std::ptr::copy_nonoverlapping(title.as_ptr(), start, n);
        std::ptr::write_bytes(start.add(n), 0, cmdline.len() - n);
    }
    let short: String = title.chars().filter(|c| *c != '\0').take(15).collect();
    if let Ok(name) = CString::new(short) {
        let _ = nix::sys::prctl::set_name(&name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn umask_and_env_values() {
        assert_eq!(parse_umask("022"), Ok(0o22));
        assert_eq!(parse_umask("0o027"), Ok(0o27));
        assert_eq!(parse_umask("7"), Ok(0o7));
        assert!(parse_umask("089").is_err());
        assert!(parse_umask("1000").is_err());
        assert_eq!(parse_env("A=b=c"), Ok(("A".into(), "b=c".into())));
        assert_eq!(parse_env("A="), Ok(("A".into(), String::new())));
        assert!(parse_env("=x").is_err());
        assert!(parse_env("novalue").is_err());
    }

    #[test]
    fn pid_file_refuses_a_live_process_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("host.pid");
        // A live process that is not us: our parent.
        fs::write(&path, format!("{}\n", std::os::unix::process::parent_id())).unwrap();
        assert!(PidFile::create(&path).unwrap_err().contains("is running"));
        // Unless it is the old master handing over to us.
        let parent = Pid::from_raw(std::os::unix::process::parent_id() as i32);
        let taken = PidFile::take_over(&path, parent).unwrap();
        std::mem::forget(taken);
        fs::write(&path, format!("{parent}\n")).unwrap();
        // A stale pid is replaced.
        fs::write(&path, format!("{}\n", i32::MAX)).unwrap();
        let file = PidFile::create(&path).unwrap();
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            format!("{}\n", std::process::id())
        );
        drop(file);
        assert!(!path.exists());
        // Handed over: left for the new master, whatever it names.
        let mut file = PidFile::create(&path).unwrap();
        file.hand_over();
        drop(file);
        assert!(path.exists());
    }
}
