//! Child processes of a test: output to a log file in the test's directory, killed (and reaped)
//! when dropped, so that a failing or panicking test never leaves an etcd or an API server behind.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running child process.
pub struct Process {
    /// Short name used in messages (`etcd`, `kube-apiserver`, `milo-webhook-a`).
    pub name: String,
    /// Where its standard output and error go.
    pub log: PathBuf,
    child: Option<Child>,
}

impl Process {
    /// Starts `command` with stdout and stderr appended to `<dir>/<name>.log`.
    pub fn spawn(name: &str, dir: &Path, mut command: Command) -> Self {
        let log = dir.join(format!("{name}.log"));
        let out = File::options()
            .create(true)
            .append(true)
            .open(&log)
            .expect("open a process log");
        let err = out.try_clone().expect("clone a log handle");
        command
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        // Should the test process itself be killed (a CI timeout, Ctrl-C), Drop never runs: the
        // kernel kills the child instead of leaving an etcd or an API server behind.
        // SAFETY: prctl(2) is async-signal-safe and touches no memory of the parent.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut command, || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({command:?}): {e}"));
        Self {
            name: name.to_owned(),
            log,
            child: Some(child),
        }
    }

    /// Its process id while it runs (for reading its memory from `/proc`).
    // Used by benches/cluster_envtest.rs, which shares this harness; no test needs it.
    #[allow(dead_code)]
    pub fn id(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Panics, with the log's tail, if the process has exited: a readiness wait calls it so that
    /// a process that failed to start is reported as such rather than as a timeout.
    pub fn assert_running(&mut self) {
        if let Some(child) = &mut self.child
            && let Ok(Some(status)) = child.try_wait()
        {
            panic!(
                "{} exited ({status}) while the test needed it; its log:\n{}",
                self.name,
                tail(&self.log, 60)
            );
        }
    }

    /// Sends SIGTERM and waits up to `timeout` for the exit; returns whether it exited in time
    /// (a process still running is then killed).
    pub fn terminate(&mut self, timeout: Duration) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        let pid = libc::pid_t::try_from(child.id()).expect("pid fits pid_t");
        // SAFETY: kill(2) with a pid of our own unreaped child and a valid signal number.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    /// Kills the process now (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The last `lines` lines of the log.
    pub fn tail(&self, lines: usize) -> String {
        tail(&self.log, lines)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The last `lines` lines of a file (empty when unreadable).
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
