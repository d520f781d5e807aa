//! Whole-process figures for the benches that compare commands in one run: a command runs to
//! its end and the kernel's own accounting of it is read when it is reaped (`wait4`): user and
//! system CPU seconds and peak resident memory, with the wall time around it.

use std::io;
use std::process::{Command, ExitStatus};
use std::time::Instant;

/// What one finished process cost.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    pub user: f64,
    pub sys: f64,
    pub wall: f64,
    /// Peak resident set size, bytes.
    pub max_rss: u64,
    pub status: ExitStatus,
}

impl Usage {
    pub fn cpu(&self) -> f64 {
        self.user + self.sys
    }

    pub fn max_rss_mib(&self) -> f64 {
        self.max_rss as f64 / 1_048_576.0
    }
}

fn seconds(t: libc::timeval) -> f64 {
    t.tv_sec as f64 + t.tv_usec as f64 / 1e6
}

/// Runs `cmd` to its end and returns its usage; the caller sets its arguments and streams.
pub fn run(cmd: &mut Command) -> io::Result<Usage> {
    use std::os::unix::process::ExitStatusExt;
    let started = Instant::now();
    let child = cmd.spawn()?;
    let pid = libc::pid_t::try_from(child.id()).map_err(io::Error::other)?;
    let mut status = 0;
    // SAFETY: an all-zero `rusage` is a valid value of the plain C struct wait4 fills in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: `pid` is our own unreaped child, and both pointers are to live locals of the
        // types wait4 expects.
        let got = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if got == pid {
            break;
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
    Ok(Usage {
        user: seconds(usage.ru_utime),
        sys: seconds(usage.ru_stime),
        wall: started.elapsed().as_secs_f64(),
        // Linux reports ru_maxrss in KiB.
        max_rss: u64::try_from(usage.ru_maxrss).unwrap_or(0) * 1024,
        status: ExitStatus::from_raw(status),
    })
}
