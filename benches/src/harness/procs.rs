//! The processes under test: started pinned to the SUT core, each in its own process
//! group, measured by the CPU time of their whole process tree, and always killed.
//!
//! CPU time comes from `/proc/<pid>/task/<tid>/schedstat` (nanoseconds on a CPU, per
//! thread), summed over every process in the tree (nginx's master forks its worker).
//! Clock ticks from `/proc/<pid>/stat` are 10 ms granules — too coarse for a 5 s run's
//! CPU time, but enough to split it: [`user_system_of`] gives the share spent in user
//! space (the proxy's own instructions) against the kernel's (sockets, wake-ups).
//!
//! Every started group is also listed in a process-wide registry, so a SIGINT or SIGTERM
//! to the harness (Ctrl-C in `make bench`) kills them too, not only `Drop`.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Mutex,
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{Signal, killpg},
    unistd::Pid,
};

/// Groups started and not yet killed.
static GROUPS: Mutex<Vec<i32>> = Mutex::new(Vec::new());

/// Why a process could not be started.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    /// Spawning failed (missing binary, ...).
    #[error("starting {name}: {source}")]
    Spawn {
        /// Which process.
        name: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// It exited before it was ready.
    #[error("{name} exited ({status}) before listening on {port}; its log:\n{log}")]
    Exited {
        /// Which process.
        name: String,
        /// Exit status.
        status: std::process::ExitStatus,
        /// The port it should have opened.
        port: u16,
        /// The end of its log.
        log: String,
    },
    /// It did not open its port in time.
    #[error("{name} did not listen on {port} within {secs} s; its log:\n{log}")]
    NotReady {
        /// Which process.
        name: String,
        /// The port.
        port: u16,
        /// How long we waited.
        secs: u64,
        /// The end of its log.
        log: String,
    },
}

/// One started process (and the group it leads).
#[derive(Debug)]
pub struct Proc {
    /// Name for logs and reports.
    pub name: String,
    child: Child,
    log: PathBuf,
}

impl Proc {
    /// Starts `program args`, pinned to `cpu` with `taskset` when given, stdout and
    /// stderr to `<log_dir>/<name>.log`.
    pub fn start(
        name: &str,
        program: &Path,
        args: &[String],
        cpu: Option<usize>,
        log_dir: &Path,
    ) -> Result<Self, ProcError> {
        let log = log_dir.join(format!("{name}.log"));
        let spawn_err = |source| ProcError::Spawn {
            name: name.to_string(),
            source,
        };
        let out = fs::File::create(&log).map_err(spawn_err)?;
        let err = out.try_clone().map_err(spawn_err)?;
        let mut cmd = match cpu {
            Some(cpu) => {
                let mut c = Command::new("taskset");
                c.arg("-c").arg(cpu.to_string()).arg(program);
                c
            }
            None => Command::new(program),
        };
        use std::os::unix::process::CommandExt;
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        let child = cmd.spawn().map_err(spawn_err)?;
        if let Ok(pid) = i32::try_from(child.id()) {
            GROUPS.lock().unwrap_or_else(|p| p.into_inner()).push(pid);
        }
        Ok(Self {
            name: name.to_string(),
            child,
            log,
        })
    }

    /// The leader's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until something accepts on `127.0.0.1:port`, failing early if the process
    /// exits.
    pub fn wait_listening(&mut self, port: u16) -> Result<(), ProcError> {
        self.wait_listening_within(port, Duration::from_secs(20))
    }

    /// [`Proc::wait_listening`] with another limit (a program under valgrind starts
    /// tens of times slower).
    pub fn wait_listening_within(&mut self, port: u16, limit: Duration) -> Result<(), ProcError> {
        let deadline = Instant::now() + limit;
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(ProcError::Exited {
                    name: self.name.clone(),
                    status,
                    port,
                    log: self.log_tail(),
                });
            }
            if Instant::now() >= deadline {
                return Err(ProcError::NotReady {
                    name: self.name.clone(),
                    port,
                    secs: limit.as_secs(),
                    log: self.log_tail(),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// CPU time used so far by the whole process tree.
    pub fn cpu(&self) -> Duration {
        Duration::from_nanos(tree(self.pid()).iter().map(|&p| process_cpu_ns(p)).sum())
    }

    /// The leader and every process it forked.
    pub fn pids(&self) -> Vec<u32> {
        tree(self.pid())
    }

    /// Proportional set size of the whole tree, bytes.
    pub fn pss(&self) -> u64 {
        tree(self.pid()).iter().filter_map(|&p| pss(p)).sum()
    }

    /// The last 2 KB of its log.
    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let start = text.len().saturating_sub(2048);
        let start = (start..text.len())
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(text.len());
        text[start..].to_string()
    }

    /// True while the leader runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
            GROUPS
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|&g| g != pid);
        }
        let _ = self.child.wait();
    }
}

/// Kills every group still registered (the signal handler's job).
pub fn kill_all() {
    let groups = std::mem::take(&mut *GROUPS.lock().unwrap_or_else(|p| p.into_inner()));
    for g in groups {
        let _ = killpg(Pid::from_raw(g), Signal::SIGKILL);
    }
}

/// CPU time of a set of processes.
pub fn cpu_of(procs: &[&Proc]) -> Duration {
    procs.iter().map(|p| p.cpu()).sum()
}

/// Clock ticks `procs` (whole trees, every thread) spent in user space and in the kernel
/// so far (`utime`, `stime` of `/proc/<pid>/stat`).
pub fn user_system_of(procs: &[&Proc]) -> (u64, u64) {
    pids_of(procs)
        .into_iter()
        .filter_map(|p| user_system(&fs::read_to_string(format!("/proc/{p}/stat")).ok()?))
        .fold((0, 0), |(u, s), (pu, ps)| (u + pu, s + ps))
}

/// `utime` and `stime` (fields 14 and 15) of a `/proc/<pid>/stat` line. The command name
/// (field 2) is in parentheses and may hold spaces and parentheses itself, so the fields
/// are counted from the last `)`.
fn user_system(stat: &str) -> Option<(u64, u64)> {
    let mut rest = stat
        .get(stat.rfind(')')? + 1..)?
        .split_whitespace()
        .skip(11);
    let user = rest.next()?.parse().ok()?;
    let system = rest.next()?.parse().ok()?;
    Some((user, system))
}

/// Times the threads of `procs` (whole trees) were switched onto a CPU so far.
pub fn switches_of(procs: &[&Proc]) -> u64 {
    pids_of(procs).into_iter().map(process_switches).sum()
}

/// Every process of `procs`' trees.
pub fn pids_of(procs: &[&Proc]) -> Vec<u32> {
    procs.iter().flat_map(|p| p.pids()).collect()
}

/// `pid` and all its descendants.
fn tree(pid: u32) -> Vec<u32> {
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        if let Ok(tasks) = fs::read_dir(format!("/proc/{p}/task")) {
            for t in tasks.flatten() {
                let children = fs::read_to_string(t.path().join("children")).unwrap_or_default();
                out.extend(
                    children
                        .split_whitespace()
                        .filter_map(|c| c.parse::<u32>().ok()),
                );
            }
        }
        i += 1;
    }
    out
}

/// Nanoseconds on a CPU of every thread of `pid`.
fn process_cpu_ns(pid: u32) -> u64 {
    schedstat_sum(pid, 0)
}

/// Times every thread of `pid` was switched onto a CPU (each wake-up or preemption it
/// came back from).
fn process_switches(pid: u32) -> u64 {
    schedstat_sum(pid, 2)
}

/// Field `i` of `/proc/<pid>/task/*/schedstat` (time on a CPU in ns, time waiting to
/// run in ns, times run), summed over the threads.
fn schedstat_sum(pid: u32, i: usize) -> u64 {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().nth(i)?.parse::<u64>().ok())
        .sum()
}

/// `Pss` from smaps_rollup, bytes.
pub fn pss(pid: u32) -> Option<u64> {
    let text = smaps_rollup(pid)?;
    rollup_field(&text, "Pss:")
}

/// `Pss_Anon` and `Pss_File` from smaps_rollup (heap and stacks; pages of mapped files,
/// mostly the program's own code), bytes.
pub fn pss_split(pid: u32) -> Option<(u64, u64)> {
    let text = smaps_rollup(pid)?;
    Some((
        rollup_field(&text, "Pss_Anon:")?,
        rollup_field(&text, "Pss_File:")?,
    ))
}

fn smaps_rollup(pid: u32) -> Option<String> {
    fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()
}

/// The value of the `name` line (`Pss:       123 kB`) in bytes.
fn rollup_field(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

/// CPU time of the calling thread (for in-process measurements).
pub fn thread_cpu() -> Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map(Duration::from)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pss_splits_into_heap_and_mapped_files() {
        let me = std::process::id();
        let (anon, file) = pss_split(me).unwrap();
        let total = pss(me).unwrap();
        assert!(anon > 0 && file > 0, "anon {anon}, file {file}");
        // Read a moment apart: the parts add up to the total within a little drift.
        assert!(
            (anon + file).abs_diff(total) < 1 << 20,
            "anon {anon} + file {file} against {total}"
        );
        assert_eq!(pss_split(u32::MAX), None, "no such process");
    }

    #[test]
    fn measures_and_kills_a_process_tree() {
        let dir = tempfile::tempdir().unwrap();
        // A shell that forks a busy child: the tree's CPU must include the child's.
        let mut p = Proc::start(
            "busy",
            Path::new("/bin/sh"),
            &["-c".into(), "(while :; do :; done) & sleep 60".into()],
            None,
            dir.path(),
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(400));
        let before = p.cpu();
        std::thread::sleep(Duration::from_millis(400));
        let used = p.cpu() - before;
        assert!(
            used > Duration::from_millis(100),
            "the busy child's CPU is counted: {used:?}"
        );
        let members = tree(p.pid());
        assert!(members.len() >= 2, "{members:?}");
        assert!(p.running());
        drop(p);
        std::thread::sleep(Duration::from_millis(100));
        for m in members {
            let state = fs::read_to_string(format!("/proc/{m}/stat")).unwrap_or_default();
            assert!(
                state.is_empty() || state.contains(") Z "),
                "process {m} survived: {state}"
            );
        }
    }

    #[test]
    fn splits_cpu_time_into_user_and_kernel() {
        // Field 3 (state) follows the last `)`; utime and stime are fields 14 and 15.
        let line = "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 1 2 3 4 17 5 6 7 20 0 1 0";
        assert_eq!(user_system(line), Some((17, 5)));
        assert_eq!(user_system("4242 (x) S 1 2 3"), None, "truncated");
        assert_eq!(user_system("4242 x S"), None, "no command name");
        assert_eq!(
            user_system("4242 (x) S 1 4242 4242 0 -1 0 1 2 3 4 u 5"),
            None,
            "not a number"
        );

        let dir = tempfile::tempdir().unwrap();
        // A busy loop in the shell itself (user space) and one in `dd` from /dev/zero to
        // /dev/null (mostly system calls): the split tells them apart.
        let busy = |name: &str, script: &str| {
            let p = Proc::start(
                name,
                Path::new("/bin/sh"),
                &["-c".into(), script.into()],
                None,
                dir.path(),
            )
            .unwrap();
            // At least 30 ticks (however busy the machine is with other tests).
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                std::thread::sleep(Duration::from_millis(100));
                let (user, system) = user_system_of(&[&p]);
                if user + system >= 30 {
                    return (user, system);
                }
                assert!(Instant::now() < deadline, "{name}: {user} + {system} ticks");
            }
        };
        let (user, system) = busy("user", "while :; do :; done");
        assert!(
            user > 4 * system,
            "a shell loop: {user} user, {system} system"
        );
        // 1 MiB per system call: the kernel zeroing it is nearly all of the time. (With
        // one byte per call the calls' entries and exits are most of it, and the ticks
        // land on the user side of them about as often as on the kernel's: an AMD EPYC
        // VM read 136 user / 108 system ticks, 3 / 241 with 1 MiB.)
        let (user, system) = busy("system", "exec dd if=/dev/zero of=/dev/null bs=1M");
        assert!(system > 4 * user, "dd bs=1M: {user} user, {system} system");
    }

    #[test]
    fn counts_each_time_a_process_is_switched_in() {
        let dir = tempfile::tempdir().unwrap();
        // Waits for SIGUSR1, then sleeps 1 ms 300 times: each wake-up is a switch onto a CPU.
        let p = Proc::start(
            "sleeper",
            Path::new("/usr/bin/python3"),
            &[
                "-c".into(),
                "import signal,time\nsignal.signal(signal.SIGUSR1, lambda *a: None)\nsignal.pause()\nfor _ in range(300): time.sleep(0.001)\ntime.sleep(60)\n".into(),
            ],
            None,
            dir.path(),
        )
        .unwrap();
        // Until its handler is in place (SIGUSR1 is signal 10: bit 9 of `SigCgt`).
        let catches = || {
            let status = fs::read_to_string(format!("/proc/{}/status", p.pid())).unwrap();
            let cgt = status
                .lines()
                .find_map(|l| l.strip_prefix("SigCgt:"))
                .unwrap();
            u64::from_str_radix(cgt.trim(), 16).unwrap() & (1 << 9) != 0
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !catches() {
            assert!(Instant::now() < deadline, "python never set its handler");
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(200));
        let idle = switches_of(&[&p]);
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(
            switches_of(&[&p]),
            idle,
            "a blocked process is not switched in"
        );
        nix::sys::signal::kill(Pid::from_raw(p.pid() as i32), Signal::SIGUSR1).unwrap();
        // However slow the machine, the loop ends and python blocks again (sleep(60)).
        let deadline = Instant::now() + Duration::from_secs(30);
        while switches_of(&[&p]) - idle < 300 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(300));
        let woke = switches_of(&[&p]) - idle;
        assert!(
            (300..1000).contains(&woke),
            "{woke} switches for 300 sleeps"
        );
        assert_eq!(pids_of(&[&p]), vec![p.pid()]);
    }

    #[test]
    fn a_process_that_exits_is_reported_with_its_log() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = Proc::start(
            "dies",
            Path::new("/bin/sh"),
            &["-c".into(), "echo config error >&2; exit 3".into()],
            None,
            dir.path(),
        )
        .unwrap();
        let err = p.wait_listening(1).unwrap_err().to_string();
        assert!(
            err.contains("config error") && err.contains("dies"),
            "{err}"
        );
    }
}
