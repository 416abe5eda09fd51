//! Process hardening of the supervisor and the workers (issue 11): a worker holds its client's
//! data (device memory it copied, module images, kernel parameters), so neither it nor the
//! supervisor may be read (`/proc/PID/mem`), traced or dumped by other processes of its uid.

/// Marks this process non-dumpable (`PR_SET_DUMPABLE 0`) and reads the flag back: no core
/// file, no `ptrace` attach and no `/proc/PID/mem` for processes of the same uid without
/// `CAP_SYS_PTRACE`. Inherited by nothing: a re-executed worker sets it again itself.
///
/// # Errors
/// The OS error of `prctl`, or `Other` when the flag did not take.
pub fn make_non_dumpable() -> std::io::Result<()> {
    // SAFETY: PR_SET_DUMPABLE takes an integer argument and changes only this process's flag.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if dumpable() {
        return Err(std::io::Error::other("PR_SET_DUMPABLE 0 did not take"));
    }
    Ok(())
}

/// Whether this process is dumpable (`PR_GET_DUMPABLE`).
pub fn dumpable() -> bool {
    // SAFETY: PR_GET_DUMPABLE takes no pointer and only reads this process's flag.
    unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) != 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_takes_in_a_child_process() {
        // In a forked child, so that the test process itself stays dumpable.
        // SAFETY: the child only makes async-signal-safe calls (prctl) before _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork");
        if pid == 0 {
            let code = i32::from(make_non_dumpable().is_err() || dumpable());
            // SAFETY: ends the child without running the parent's exit handlers.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: waits for our own child; `status` is a valid out pointer.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
        assert!(dumpable(), "the test process is untouched");
    }
}
