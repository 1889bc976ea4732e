//! Counting a running process's work with valgrind's callgrind: how to launch a program
//! under it, zero and dump its counters while it runs (`callgrind_control`), and read a
//! dump's totals — instructions executed, and calls into the C allocator.
//!
//! Instruction counts do not depend on the clock, the other core's load or the CPU's
//! frequency: the same binary doing the same work counts (nearly) the same, which is what
//! a 2-core shared machine cannot give a timing. Allocator calls are counted from the
//! call graph callgrind records anyway (`calls=` lines under a `cfn=` naming `malloc`,
//! `calloc`, `realloc` or an aligned variant), so one run gives both figures.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

/// Why a count could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum CountError {
    /// `callgrind_control` could not run or failed.
    #[error("callgrind_control {command} {pid}: {detail}")]
    Control {
        /// `-z` or `-d`.
        command: &'static str,
        /// The process.
        pid: u32,
        /// What it said.
        detail: String,
    },
    /// No dump appeared for the process.
    #[error("no callgrind dump for process {pid} in {dir}")]
    NoDump {
        /// The process.
        pid: u32,
        /// Where dumps go.
        dir: PathBuf,
    },
    /// A dump has no `totals:` or `summary:` line.
    #[error("{file}: not a callgrind dump (no totals)")]
    Malformed {
        /// The dump.
        file: PathBuf,
    },
    /// Reading a dump failed.
    #[error("reading {file}: {source}")]
    Read {
        /// The dump.
        file: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// What a process did between a zero and a dump.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    /// Instructions executed (callgrind's `Ir`).
    pub instructions: u64,
    /// Calls to the C allocator's entry points.
    pub allocations: u64,
}

impl std::ops::Add for Counts {
    type Output = Self;
    fn add(self, o: Self) -> Self {
        Self {
            instructions: self.instructions + o.instructions,
            allocations: self.allocations + o.allocations,
        }
    }
}

impl std::iter::Sum for Counts {
    fn sum<I: Iterator<Item = Self>>(iter: I) -> Self {
        iter.fold(Self::default(), |a, b| a + b)
    }
}

/// The allocator's entry points whose calls count as allocations.
const ALLOCATORS: &[&str] = &[
    "malloc",
    "calloc",
    "realloc",
    "posix_memalign",
    "aligned_alloc",
    "memalign",
];

/// The program and arguments that run `program args` under callgrind, its dumps named
/// `<dir>/<name>.<pid>[.<n>]`, following forked children (nginx's worker). Counting
/// starts at once; [`zero`] before the work to measure.
pub fn wrap(dir: &Path, name: &str, program: &Path, args: &[String]) -> (PathBuf, Vec<String>) {
    wrap_with(dir, name, program, args, &[])
}

/// [`wrap`] with more callgrind options (`--demangle=no` for symbol names as linked).
/// `VIGIL_CALLGRIND_ARGS` adds more, split on whitespace: `--cache-sim=yes` makes every
/// dump count cache misses too (`D1mr`, `DLmr` …, per function in `callgrind_annotate`);
/// the counted figures are the same, `Ir` stays the dumps' first event.
pub fn wrap_with(
    dir: &Path,
    name: &str,
    program: &Path,
    args: &[String],
    options: &[&str],
) -> (PathBuf, Vec<String>) {
    let mut a = vec![
        "--tool=callgrind".to_string(),
        "--trace-children=yes".to_string(),
        format!("--callgrind-out-file={}/{name}.%p", dir.display()),
    ];
    a.extend(options.iter().map(|o| o.to_string()));
    if let Ok(extra) = std::env::var("VIGIL_CALLGRIND_ARGS") {
        a.extend(extra.split_whitespace().map(str::to_string));
    }
    a.push(program.display().to_string());
    a.extend(args.iter().cloned());
    (PathBuf::from("valgrind"), a)
}

/// Resets `pid`'s counters.
pub fn zero(pid: u32) -> Result<(), CountError> {
    control("-z", pid)
}

/// Dumps `pid`'s counters since the last zero, and reads them from `dir`; the counts and
/// the dump (for `callgrind_annotate`).
pub fn dump(pid: u32, dir: &Path) -> Result<(Counts, PathBuf), CountError> {
    let before = latest_dump(dir, pid).map(|(n, _)| n);
    control("-d", pid)?;
    match latest_dump(dir, pid) {
        Some((n, file)) if Some(n) != before => Ok((read(&file)?, file)),
        _ => Err(CountError::NoDump {
            pid,
            dir: dir.to_owned(),
        }),
    }
}

fn control(command: &'static str, pid: u32) -> Result<(), CountError> {
    let err = |detail: String| CountError::Control {
        command,
        pid,
        detail,
    };
    // `timeout`: vgdb waits for the process forever if it cannot reach it.
    let out = Command::new("timeout")
        .args(["60", "callgrind_control", command, &pid.to_string()])
        .output()
        .map_err(|e| err(e.to_string()))?;
    let text = String::from_utf8_lossy(&[out.stdout, out.stderr].concat()).into_owned();
    // Judge the tool's own lines only: its output also echoes the program's command line,
    // where "error" may be part of an argument.
    let failed = text.lines().any(|l| {
        let l = l.trim_start().to_ascii_lowercase();
        l.starts_with("error") || l.starts_with("vgdb error")
    });
    if !out.status.success() || failed {
        return Err(err(text.trim().to_string()));
    }
    Ok(())
}

/// The highest-numbered dump of `pid` in `dir` (`<name>.<pid>.<n>`), with its number.
fn latest_dump(dir: &Path, pid: u32) -> Option<(u32, PathBuf)> {
    let pid = pid.to_string();
    fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let mut parts = name.rsplitn(3, '.');
            let n = parts.next()?.parse::<u32>().ok()?;
            (parts.next()? == pid).then_some((n, e.path()))
        })
        .max_by_key(|(n, _)| *n)
}

/// The counts in the dump at `file`.
pub fn read(file: &Path) -> Result<Counts, CountError> {
    let text = fs::read_to_string(file).map_err(|source| CountError::Read {
        file: file.to_owned(),
        source,
    })?;
    parse(&text).ok_or_else(|| CountError::Malformed {
        file: file.to_owned(),
    })
}

/// The counts in a dump's text; `None` without a `totals:` or `summary:` line.
///
/// Names are compressed: the first `fn=`/`cfn=` of a function reads `cfn=(7) malloc`,
/// later ones `cfn=(7)`; a `calls=<count> ...` line follows each `cfn=`. Recursion
/// levels (`malloc'2`) are the same function.
pub fn parse(text: &str) -> Option<Counts> {
    let mut names = Names::default();
    let mut total = None;
    let mut allocations = 0u64;
    let mut callee_is_allocator = false;
    for line in text.lines() {
        if let Some(rest) = line
            .strip_prefix("fn=")
            .or_else(|| line.strip_prefix("cfn="))
        {
            let name = names.resolve(rest);
            if line.starts_with("cfn=") {
                let base = name.split('\'').next().unwrap_or(name);
                callee_is_allocator = ALLOCATORS.contains(&base);
            }
        } else if let Some(rest) = line.strip_prefix("calls=") {
            if callee_is_allocator {
                allocations += rest
                    .split_whitespace()
                    .next()
                    .and_then(|n| n.parse::<u64>().ok())
                    .unwrap_or(0);
            }
            callee_is_allocator = false;
        } else if let Some(rest) = line
            .strip_prefix("totals:")
            .or_else(|| line.strip_prefix("summary:"))
        {
            total = rest.split_whitespace().next()?.parse::<u64>().ok();
        }
    }
    Some(Counts {
        instructions: total?,
        allocations,
    })
}

/// The functions with costs in a dump whose object file is called `object` (its file
/// name, e.g. `vigil-proxy`): every `fn=` under an `ob=` naming it. With `--demangle=no`
/// these are the symbols as linked.
pub fn functions_in(text: &str, object: &str) -> std::collections::BTreeSet<String> {
    let (mut objects, mut functions) = (Names::default(), Names::default());
    let mut inside = false;
    let mut out = std::collections::BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("ob=") {
            let name = objects.resolve(rest);
            inside = Path::new(name).file_name().is_some_and(|f| f == object);
        } else if let Some(rest) = line.strip_prefix("cob=") {
            objects.resolve(rest);
        } else if let Some(rest) = line.strip_prefix("fn=") {
            let name = functions.resolve(rest);
            if inside && !name.is_empty() {
                out.insert(name.to_string());
            }
        } else if let Some(rest) = line.strip_prefix("cfn=") {
            functions.resolve(rest);
        }
    }
    out
}

/// Callgrind's compressed names (one table per kind: objects, functions): the first
/// mention reads `(7) name`, later ones `(7)`; uncompressed dumps give the name alone.
#[derive(Default)]
struct Names<'a>(std::collections::HashMap<&'a str, &'a str>);

impl<'a> Names<'a> {
    fn resolve(&mut self, rest: &'a str) -> &'a str {
        match rest.split_once(") ") {
            Some((id, name)) if rest.starts_with('(') => {
                self.0.insert(id, name);
                name
            }
            _ if rest.starts_with('(') => self
                .0
                .get(rest.trim_end_matches(')'))
                .copied()
                .unwrap_or(""),
            _ => rest,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DUMP: &str = "\
version: 1
creator: callgrind-3.19.0
events: Ir
fn=(1) main
0 10
cfn=(2) malloc
calls=3 0
0 300
cfn=(3) work
calls=1 0
0 5000
cfn=(2)
calls=2 0
0 200
fn=(3)
0 4000
cfn=(4) calloc'2
calls=4 0
0 100
cfn=(5) malloc_usable_size
calls=9 0
0 90
fn=(2)
0 500
totals: 5610
";

    #[test]
    fn reads_instructions_and_allocator_calls_through_compressed_names() {
        assert_eq!(
            parse(DUMP),
            Some(Counts {
                instructions: 5610,
                allocations: 3 + 2 + 4,
            }),
            "malloc twice (once by id only), calloc at a recursion level; not malloc_usable_size"
        );
    }

    #[test]
    fn lists_the_functions_one_object_ran_through_compressed_names() {
        // Objects and functions have a table each; `cob=`/`cfn=` can name one first.
        let dump = "\
events: Ir
ob=(1) /usr/lib/x86_64-linux-gnu/libc.so.6
fn=(1) malloc
0 10
ob=(2) /work/target/release/vigil-proxy
fn=(2) _ZN11vigil_proxy4main17h0123456789abcdefE
0 5
cob=(1)
cfn=(1)
calls=1 0
0 10
cob=(2)
cfn=(3) _ZN5hyper5proto2h14role17haaaaaaaaaaaaaaaaE
calls=1 0
0 7
ob=(1)
fn=(4) free
0 3
ob=(2)
fn=(3)
0 7
fn=(5) jent_keccakp_chi
0 1
ob=(3) /tmp/other/vigil-proxy-old
fn=(6) not_this_one
0 1
totals: 44
";
        let got: Vec<String> = functions_in(dump, "vigil-proxy").into_iter().collect();
        assert_eq!(
            got,
            [
                "_ZN11vigil_proxy4main17h0123456789abcdefE",
                "_ZN5hyper5proto2h14role17haaaaaaaaaaaaaaaaE",
                "jent_keccakp_chi",
            ],
            "libc's malloc and free are another object, a function first named as a callee \
             is listed by its own costs, another binary's are not"
        );
        assert!(
            functions_in(dump, "vigil").is_empty(),
            "the file name, not a prefix"
        );
    }

    #[test]
    fn a_file_without_totals_is_not_a_dump() {
        assert_eq!(parse("events: Ir\nfn=(1) main\n0 10\n"), None);
        assert_eq!(parse("totals: lots\n"), None);
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("x.1.1");
        fs::write(&f, "hello").unwrap();
        assert!(matches!(read(&f), Err(CountError::Malformed { .. })));
    }

    /// A real process under callgrind: a shell that spins `n` times per line it reads.
    struct Spinner {
        child: std::process::Child,
        stdin: std::process::ChildStdin,
        stdout: std::io::BufReader<std::process::ChildStdout>,
    }

    impl Spinner {
        fn start(dir: &Path) -> Self {
            let script =
                "while read n; do i=0; while [ $i -lt $n ]; do i=$((i+1)); done; echo ok; done";
            let (prog, args) = wrap(
                dir,
                "spin",
                Path::new("/bin/sh"),
                &["-c".into(), script.into()],
            );
            let mut child = Command::new(prog)
                .args(args)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("valgrind runs (apt-get install valgrind)");
            let stdin = child.stdin.take().unwrap();
            let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
            let mut s = Self {
                child,
                stdin,
                stdout,
            };
            s.spin(1, 1); // started and answering
            s
        }

        fn spin(&mut self, lines: u32, n: u32) {
            use std::io::{BufRead, Write};
            for _ in 0..lines {
                writeln!(self.stdin, "{n}").unwrap();
                let mut answer = String::new();
                self.stdout.read_line(&mut answer).unwrap();
                assert_eq!(answer, "ok\n");
            }
        }
    }

    impl Drop for Spinner {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    #[test]
    fn counts_what_a_running_process_did_between_zero_and_dump() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spinner::start(dir.path());
        let pid = s.child.id();
        let mut measure = |lines, n| {
            zero(pid).unwrap();
            s.spin(lines, n);
            dump(pid, dir.path()).unwrap().0
        };
        let small = measure(10, 100);
        let large = measure(10, 2000);
        let again = measure(10, 100);
        assert!(small.instructions > 0, "{small:?}");
        assert!(
            large.instructions > 10 * small.instructions,
            "20× the loop is more than 10× the count: {small:?} {large:?}"
        );
        // Zeroing works: the same work counts the same again (within the shell's noise),
        // not the running total.
        let drift = again.instructions.abs_diff(small.instructions) as f64;
        assert!(
            drift < 0.05 * small.instructions as f64,
            "{small:?} then {again:?}"
        );
    }

    #[test]
    fn a_process_not_under_callgrind_is_an_error_not_a_zero() {
        let mut sleeper = Command::new("sleep").arg("30").spawn().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let err = dump(sleeper.id(), dir.path()).unwrap_err();
        let _ = sleeper.kill();
        let _ = sleeper.wait();
        assert!(
            matches!(err, CountError::Control { .. } | CountError::NoDump { .. }),
            "{err}"
        );
    }

    #[test]
    fn dumps_are_found_per_process_by_their_number() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["p.41.1", "p.41.12", "p.41.2", "p.411.30", "q.41", "p.41.x"] {
            fs::write(dir.path().join(name), "").unwrap();
        }
        let (n, file) = latest_dump(dir.path(), 41).unwrap();
        assert_eq!(
            (n, file.file_name().unwrap().to_str().unwrap()),
            (12, "p.41.12")
        );
        assert!(latest_dump(dir.path(), 7).is_none());
    }
}
