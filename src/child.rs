//! Child processes that end with whoever started them.
//!
//! A process held in a static is never dropped, and `kill_on_drop` does nothing for a parent
//! that is killed or interrupted: the kernel's parent-death signal (`PR_SET_PDEATHSIG`) is the
//! one mechanism that holds whatever way the parent ends. It follows the *thread* that spawned
//! the child, so spawn from a thread that lives as long as the child should (a runtime worker,
//! the main thread, or a thread kept for the purpose), never from a short-lived blocking thread.

/// The environment variable that makes a `wa-outbox` process die with its parent, for
/// supervisors that cannot set the parent-death signal themselves (node, Python test harnesses).
pub const DIE_WITH_PARENT_ENV: &str = "WA_OUTBOX_DIE_WITH_PARENT";

/// Arranges for the child a command spawns to be killed (SIGKILL) when the spawning thread
/// ends, and for it not to start at all if that parent is already gone. Chains like the
/// command's own builder methods.
pub trait DieWithParent {
    fn die_with_parent(&mut self) -> &mut Self;
}

impl DieWithParent for std::process::Command {
    fn die_with_parent(&mut self) -> &mut Self {
        use std::os::unix::process::CommandExt as _;
        // SAFETY: prctl and getppid are async-signal-safe; nothing else runs between fork and
        // exec.
        unsafe {
            self.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The parent died between fork and prctl: do not start an orphan.
                if libc::getppid() == 1 {
                    return Err(std::io::Error::other("the parent process is gone"));
                }
                Ok(())
            })
        }
    }
}

impl DieWithParent for tokio::process::Command {
    fn die_with_parent(&mut self) -> &mut Self {
        self.as_std_mut().die_with_parent();
        self
    }
}

/// Called first thing by the binary: with `WA_OUTBOX_DIE_WITH_PARENT=1`, this process is killed
/// when its parent ends (and exits now if the parent is already gone).
pub fn die_with_parent_if_asked() {
    if std::env::var_os(DIE_WITH_PARENT_ENV).is_none_or(|v| v != "1") {
        return;
    }
    // SAFETY: plain prctl/getppid calls on this process.
    unsafe {
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == 0 && libc::getppid() == 1 {
            std::process::exit(1);
        }
    }
}
