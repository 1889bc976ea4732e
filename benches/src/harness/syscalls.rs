//! System calls made by a set of processes over a window: `perf stat` counting the
//! `raw_syscalls:sys_enter` tracepoint for them, switched on and off through perf's
//! control FIFOs (each command acknowledged) so the count covers exactly the window.
//!
//! The load runs count over their unmeasured warm-up (closed loop too, so at the same
//! saturation as the measured window): counting costs each system call a little, and the
//! timed window stays as it was. Needs `perf` and the kernel's tracepoints (root, or a
//! permissive `perf_event_paranoid`); where they are missing the count is absent — the
//! report prints `–` — never guessed.

use std::{
    fs::{File, OpenOptions},
    io::{Read, Write},
    os::unix::fs::OpenOptionsExt,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use nix::{sys::stat::Mode, unistd::mkfifo};

/// How long perf may take to switch its counters on or off.
const ACK_WITHIN: Duration = Duration::from_secs(5);

/// A `perf stat` attached to some processes, counting while enabled.
#[derive(Debug)]
pub struct Counter {
    perf: Child,
    ctl: File,
    ack: File,
    out: PathBuf,
    _dir: tempfile::TempDir,
}

impl Counter {
    /// Attaches to `pids` (every thread of each), counters off; `None` if perf cannot
    /// count them here.
    pub fn attach(pids: &[u32]) -> Option<Self> {
        if pids.is_empty() {
            return None;
        }
        let dir = tempfile::tempdir().ok()?;
        let (ctl_path, ack_path) = (dir.path().join("ctl"), dir.path().join("ack"));
        for p in [&ctl_path, &ack_path] {
            mkfifo(p, Mode::S_IRUSR | Mode::S_IWUSR).ok()?;
        }
        // Read-write on both ends: opening a FIFO so never blocks, whether perf opened its
        // end yet or not (or ever does).
        let open = |p: &PathBuf| {
            OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(nix::libc::O_NONBLOCK)
                .open(p)
        };
        let (ctl, ack) = (open(&ctl_path).ok()?, open(&ack_path).ok()?);
        let out = dir.path().join("stat.csv");
        let list = pids
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let perf = Command::new("perf")
            .args([
                "stat",
                "-x,",
                "--no-big-num",
                "-e",
                "raw_syscalls:sys_enter",
            ])
            .args(["--delay=-1", "--control"])
            .arg(format!(
                "fifo:{},{}",
                ctl_path.display(),
                ack_path.display()
            ))
            .args(["-p", &list, "-o"])
            .arg(&out)
            // Counting lasts as long as this `cat` of perf's standard input: closing it
            // ends perf (which then writes the counts) without a signal, which a caller
            // that handles SIGINT itself may have blocked for its children too.
            .args(["--", "cat"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let mut c = Self {
            perf,
            ctl,
            ack,
            out,
            _dir: dir,
        };
        // perf answers its first command only once it is attached and listening.
        c.command("disable").then_some(c)
    }

    /// Switches the counters on.
    pub fn enable(&mut self) -> bool {
        self.command("enable")
    }

    /// Switches the counters off and ends perf: the system calls counted while enabled.
    pub fn finish(mut self) -> Option<u64> {
        let off = self.command("disable");
        drop(self.perf.stdin.take());
        let deadline = Instant::now() + ACK_WITHIN;
        while self.perf.try_wait().ok()?.is_none() {
            if Instant::now() >= deadline {
                return None; // killed on drop
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        if !off {
            return None;
        }
        parse(&std::fs::read_to_string(&self.out).ok()?)
    }

    /// Sends `cmd` to perf and waits for its `ack`.
    fn command(&mut self, cmd: &str) -> bool {
        if self.ctl.write_all(format!("{cmd}\n").as_bytes()).is_err() {
            return false;
        }
        let deadline = Instant::now() + ACK_WITHIN;
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        while Instant::now() < deadline {
            match self.ack.read(&mut buf) {
                Ok(n) if n > 0 => {
                    // perf writes "ack\n" and the string's NUL.
                    got.extend_from_slice(&buf[..n]);
                    if got.contains(&b'\n') {
                        return got.starts_with(b"ack\n");
                    }
                }
                _ => {
                    if matches!(self.perf.try_wait(), Ok(Some(_))) {
                        return false;
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        }
        false
    }
}

impl Drop for Counter {
    fn drop(&mut self) {
        let _ = self.perf.kill();
        let _ = self.perf.wait();
    }
}

/// The count in perf's CSV output (`-x,`): the first field of the tracepoint's line;
/// `None` if it is missing or was `<not counted>` / `<not supported>`.
pub fn parse(csv: &str) -> Option<u64> {
    csv.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.contains("raw_syscalls:sys_enter"))
        .and_then(|l| l.split(',').next()?.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask};

    use super::*;

    #[test]
    fn parses_the_count_and_refuses_what_was_not_counted() {
        let counted = "# started on Sun Dec  6 06:33:36 2026\n\n408693,,raw_syscalls:sys_enter,2004831234,100.00,,\n";
        assert_eq!(parse(counted), Some(408_693));
        assert_eq!(
            parse("<not counted>,,raw_syscalls:sys_enter,0,100.00,,\n"),
            None
        );
        assert_eq!(
            parse("<not supported>,,raw_syscalls:sys_enter,0,100.00,,\n"),
            None
        );
        assert_eq!(parse("# started on ...\n"), None);
    }

    /// Nothing to attach to, or a process that does not exist (perf fails at once):
    /// no counter, and no wait beyond perf's own exit.
    #[test]
    fn refuses_what_it_cannot_attach_to() {
        assert!(Counter::attach(&[]).is_none());
        // Above the kernel's highest possible PID (2^22): never a process.
        let started = Instant::now();
        assert!(Counter::attach(&[4_194_305]).is_none());
        assert!(started.elapsed() < ACK_WITHIN * 2);
    }

    /// Where perf can count here (root, tracepoints), a process that makes a known
    /// number of system calls while enabled is counted that many times (and the lines'
    /// reads and writes), and not the ones it makes while disabled; where perf cannot,
    /// attaching says so (`None`) instead of counting nothing.
    #[test]
    fn counts_only_while_enabled() {
        // A child that makes 2,000 `getppid` calls on each line it reads.
        let mut child = Command::new("python3")
            .args([
                "-c",
                "import os,sys\nfor l in sys.stdin:\n    [os.getppid() for _ in range(2000)]\n    print('done', flush=True)\n",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let mut stdin = child.stdin.take().unwrap();
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut round = |stdin: &mut std::process::ChildStdin| {
            use std::io::BufRead;
            stdin.write_all(b"go\n").unwrap();
            stdin.flush().unwrap();
            let mut line = String::new();
            stdout.read_line(&mut line).unwrap();
            assert_eq!(line, "done\n");
        };
        // Whether perf can count the tracepoint here at all, asked of perf directly.
        let perf_counts = Command::new("perf")
            .args(["stat", "-x,", "-e", "raw_syscalls:sys_enter", "true"])
            .output()
            .is_ok_and(|o| {
                o.status.success() && parse(&String::from_utf8_lossy(&o.stderr)).is_some()
            });
        // As in the harness, whose signal thread has SIGINT and SIGTERM blocked in every
        // other thread, and so in the children they start (perf included).
        let mut blocked = SigSet::empty();
        blocked.add(Signal::SIGINT);
        blocked.add(Signal::SIGTERM);
        pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&blocked), None).unwrap();
        let attached = Counter::attach(&[child.id()]);
        pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(&blocked), None).unwrap();
        assert_eq!(attached.is_some(), perf_counts, "attach agrees with perf");
        let Some(mut counter) = attached else {
            let _ = child.kill();
            let _ = child.wait();
            return;
        };
        round(&mut stdin); // disabled: not counted
        assert!(counter.enable());
        round(&mut stdin);
        round(&mut stdin);
        let n = counter.finish().expect("a count");
        let _ = child.kill();
        let _ = child.wait();
        // 4,000 getppid calls plus reads and writes of the two lines; never the
        // disabled round's 2,000 on top of that.
        assert!((4_000..5_500).contains(&n), "counted {n}");
    }
}
