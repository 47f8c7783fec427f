//! A process held still with ptrace: every thread seized and interrupted, its memory, and
//! system calls run on its behalf. Dropping it detaches every thread, handing back any signal
//! that arrived meanwhile; a process that was stopped (SIGSTOP) stays stopped.

use std::{collections::BTreeMap, time::Duration};

use nix::{
    errno::Errno,
    sys::{
        ptrace,
        signal::Signal,
        wait::{WaitPidFlag, WaitStatus, waitpid},
    },
    unistd::Pid,
};

use super::{
    ClockPatchError,
    vdso::{Mapping, ProcMem, parse_maps},
};

/// How many times the thread list is re-read while seizing (threads may be starting).
const SEIZE_ROUNDS: usize = 16;
/// Single steps allowed to move a thread out of bytes about to be overwritten.
const MAX_STEPS: usize = 32;

pub struct StoppedProcess {
    pub pid: u32,
    pub mem: ProcMem,
    /// Seized threads, each with a signal to hand back at detach (None: nothing pending).
    threads: BTreeMap<i32, Option<Signal>>,
}

impl StoppedProcess {
    /// Seizes and stops every thread of `pid`.
    pub fn seize(pid: u32) -> Result<StoppedProcess, ClockPatchError> {
        let mem =
            ProcMem::open(&pid.to_string()).map_err(|e| gone_or("opening /proc/PID/mem", e))?;
        let mut p = StoppedProcess {
            pid,
            mem,
            threads: BTreeMap::new(),
        };
        for _ in 0..SEIZE_ROUNDS {
            let tids = thread_ids(pid)?;
            let new: Vec<i32> = tids
                .into_iter()
                .filter(|t| !p.threads.contains_key(t))
                .collect();
            if new.is_empty() {
                return if p.threads.is_empty() {
                    Err(ClockPatchError::Gone)
                } else {
                    Ok(p)
                };
            }
            for tid in new {
                p.seize_thread(tid)?;
            }
        }
        Err(ClockPatchError::Ptrace {
            op: "seizing threads (the process keeps starting new ones)",
            errno: Errno::EAGAIN,
        })
    }

    fn seize_thread(&mut self, tid: i32) -> Result<(), ClockPatchError> {
        let t = Pid::from_raw(tid);
        match ptrace::seize(t, ptrace::Options::empty()) {
            Ok(()) => {}
            // The thread exited between listing and seizing.
            Err(Errno::ESRCH) => return Ok(()),
            Err(errno) => {
                return Err(ClockPatchError::Ptrace {
                    op: "PTRACE_SEIZE",
                    errno,
                });
            }
        }
        self.threads.insert(tid, None);
        if let Err(errno) = ptrace::interrupt(t) {
            self.threads.remove(&tid);
            return if errno == Errno::ESRCH {
                Ok(())
            } else {
                Err(ClockPatchError::Ptrace {
                    op: "PTRACE_INTERRUPT",
                    errno,
                })
            };
        }
        self.wait_stop(tid)
    }

    /// Waits until `tid` reports a stop; a signal it reports is kept to hand back at detach.
    fn wait_stop(&mut self, tid: i32) -> Result<(), ClockPatchError> {
        match waitpid(Pid::from_raw(tid), Some(WaitPidFlag::__WALL)) {
            Ok(WaitStatus::Stopped(_, sig)) => {
                self.threads.insert(tid, Some(sig));
                Ok(())
            }
            Ok(WaitStatus::PtraceEvent(..) | WaitStatus::PtraceSyscall(_)) => Ok(()),
            Ok(_) | Err(Errno::ECHILD | Errno::ESRCH) => {
                self.threads.remove(&tid);
                if tid as u32 == self.pid {
                    Err(ClockPatchError::Gone)
                } else {
                    Ok(())
                }
            }
            Err(errno) => Err(ClockPatchError::Ptrace {
                op: "waitpid",
                errno,
            }),
        }
    }

    pub fn maps(&self) -> Result<Vec<Mapping>, ClockPatchError> {
        std::fs::read_to_string(format!("/proc/{}/maps", self.pid))
            .map(|t| parse_maps(&t))
            .map_err(|e| gone_or("reading /proc/PID/maps", e))
    }

    /// Instruction pointers of the stopped threads.
    pub fn thread_rips(&self) -> Vec<(i32, u64)> {
        self.threads
            .keys()
            .filter_map(|&t| ptrace::getregs(Pid::from_raw(t)).ok().map(|r| (t, r.rip)))
            .collect()
    }

    /// Single-steps every thread whose instruction pointer is inside one of `ranges` (open at
    /// the start: a thread at an entry is fine) until it is out.
    pub fn step_out_of(&mut self, ranges: &[(u64, u64)]) -> Result<(), ClockPatchError> {
        let inside = |rip: u64| ranges.iter().any(|&(s, e)| rip > s && rip < e);
        for (tid, rip) in self.thread_rips() {
            let mut rip = rip;
            for _ in 0..MAX_STEPS {
                if !inside(rip) {
                    break;
                }
                self.step(tid)?;
                match ptrace::getregs(Pid::from_raw(tid)) {
                    Ok(r) => rip = r.rip,
                    Err(_) => break,
                }
            }
            if inside(rip) {
                return Err(ClockPatchError::Busy);
            }
        }
        Ok(())
    }

    /// Runs one instruction of `tid`; signals arriving meanwhile are kept for the detach.
    fn step(&mut self, tid: i32) -> Result<(), ClockPatchError> {
        let t = Pid::from_raw(tid);
        for _ in 0..MAX_STEPS {
            ptrace::step(t, None).map_err(|errno| ClockPatchError::Ptrace {
                op: "PTRACE_SINGLESTEP",
                errno,
            })?;
            match waitpid(t, Some(WaitPidFlag::__WALL)) {
                Ok(WaitStatus::Stopped(_, Signal::SIGTRAP)) => return Ok(()),
                Ok(WaitStatus::Stopped(_, sig)) => {
                    self.threads.insert(tid, Some(sig));
                }
                Ok(WaitStatus::PtraceEvent(..) | WaitStatus::PtraceSyscall(_)) => {}
                Ok(_) | Err(_) => {
                    self.threads.remove(&tid);
                    return Err(ClockPatchError::Gone);
                }
            }
        }
        Err(ClockPatchError::Busy)
    }

    /// Runs system call `nr` with `args` in the process, at the `syscall` instruction at
    /// `syscall_insn`, and restores the thread's registers after. Returns the raw result.
    pub fn syscall(
        &mut self,
        syscall_insn: u64,
        nr: u64,
        args: [u64; 6],
    ) -> Result<i64, ClockPatchError> {
        let tid = self.injection_thread()?;
        let t = Pid::from_raw(tid);
        let saved = ptrace::getregs(t).map_err(|errno| ClockPatchError::Ptrace {
            op: "PTRACE_GETREGS",
            errno,
        })?;
        let mut regs = saved;
        regs.rip = syscall_insn;
        regs.rax = nr;
        // Not a system call being restarted: the kernel must not rewind or redo anything.
        regs.orig_rax = u64::MAX;
        (regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8, regs.r9) =
            (args[0], args[1], args[2], args[3], args[4], args[5]);
        ptrace::setregs(t, regs).map_err(|errno| ClockPatchError::Ptrace {
            op: "PTRACE_SETREGS",
            errno,
        })?;
        let stepped = self.step(tid);
        let result = ptrace::getregs(t).map(|r| r.rax as i64);
        // Restore even after a failed step, so the thread resumes where it was.
        let restored = ptrace::setregs(t, saved);
        stepped?;
        restored.map_err(|errno| ClockPatchError::Ptrace {
            op: "PTRACE_SETREGS (restore)",
            errno,
        })?;
        result.map_err(|errno| ClockPatchError::Ptrace {
            op: "PTRACE_GETREGS",
            errno,
        })
    }

    /// The thread that runs injected system calls: the leader if still there.
    fn injection_thread(&self) -> Result<i32, ClockPatchError> {
        let leader = self.pid as i32;
        if self.threads.contains_key(&leader) && ptrace::getregs(Pid::from_raw(leader)).is_ok() {
            return Ok(leader);
        }
        self.threads
            .keys()
            .copied()
            .find(|&t| ptrace::getregs(Pid::from_raw(t)).is_ok())
            .ok_or(ClockPatchError::Gone)
    }
}

impl Drop for StoppedProcess {
    fn drop(&mut self) {
        for (&tid, &sig) in &self.threads {
            // A thread that died meanwhile is already detached.
            let _ = ptrace::detach(Pid::from_raw(tid), sig);
        }
    }
}

/// The thread ids of `pid`.
fn thread_ids(pid: u32) -> Result<Vec<i32>, ClockPatchError> {
    let dir = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map_err(|e| gone_or("listing /proc/PID/task", e))?;
    Ok(dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect())
}

/// A missing /proc entry means the process is gone; anything else is an I/O error.
pub fn gone_or(op: &'static str, e: std::io::Error) -> ClockPatchError {
    match e.raw_os_error() {
        Some(libc::ENOENT | libc::ESRCH) => ClockPatchError::Gone,
        _ => ClockPatchError::io(op, e),
    }
}

/// How long [`wait_until_stopped`] waits for a SIGSTOP sent by the exec hook to take effect.
pub const STOP_WAIT: Duration = Duration::from_secs(2);

/// Waits until `pid` is in a stopped state ("T" in /proc/PID/stat); false if it is gone or
/// did not stop in time.
pub fn wait_until_stopped(pid: u32, limit: Duration) -> bool {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if super::is_stopped(pid) {
            return true;
        }
        if !std::path::Path::new(&format!("/proc/{pid}")).exists()
            || std::time::Instant::now() > deadline
        {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}
