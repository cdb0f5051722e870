//! The process's resource limits: the open-files limit, raised at start-up.
//!
//! Every connection a worker holds is a descriptor, and a worker that runs
//! out cannot accept (see [`crate::worker::accept_pause`]). Many systems
//! start services with a soft `RLIMIT_NOFILE` of 1024 under a far higher
//! hard limit, which any process may raise itself to. The master raises its
//! soft limit to the hard one before it forks anything, so its workers
//! inherit it, and logs the figure, so an operator sees the ceiling the
//! server runs under.

use nix::sys::resource::{getrlimit, setrlimit, Resource, RLIM_INFINITY};

/// Where the kernel caps the open-files limit when the hard limit is
/// unlimited (`fs.nr_open`), which a soft limit cannot exceed.
const NR_OPEN_PATH: &str = "/proc/sys/fs/nr_open";

/// Raises the soft open-files limit to the hard one; returns the soft
/// limit before and after.
pub fn raise_open_files() -> nix::Result<(u64, u64)> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    let mut target = hard;
    if target == RLIM_INFINITY {
        // An unlimited soft limit is refused; the kernel's own cap is not.
        target = std::fs::read_to_string(NR_OPEN_PATH)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(soft);
    }
    if target <= soft {
        return Ok((soft, soft));
    }
    setrlimit(Resource::RLIMIT_NOFILE, target, hard)?;
    Ok((soft, target))
}

/// The log line for a raise from `before` to `after`.
pub fn describe(before: u64, after: u64) -> String {
    if before == after {
        format!("open files limit: {after} (the hard limit)")
    } else {
        format!("open files limit: {before} -> {after}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_says_the_figures() {
        assert_eq!(describe(1024, 524288), "open files limit: 1024 -> 524288");
        assert_eq!(describe(64, 64), "open files limit: 64 (the hard limit)");
    }
}
