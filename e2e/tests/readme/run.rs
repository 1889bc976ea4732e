//! Running one walkthrough with bash, on loopback, and cleaning up after it.
//!
//! The README uses fixed ports (8443, 9191, 4143, ...). Where unprivileged user and network
//! namespaces work (`unshare --net --map-root-user`, with `ip` to bring its loopback up),
//! each walkthrough gets a private loopback: the ports cannot collide with anything else
//! on the machine, and walkthroughs run in parallel. Otherwise they run on the host's
//! loopback, one at a time, after checking that the ports are free.
//!
//! bash runs in a process group of its own; the whole group (the controller, proxies and
//! the app the walkthrough started in the background) is killed when the run ends, pass
//! or fail.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Mutex,
    time::{Duration, Instant},
};

use std::os::unix::process::CommandExt;

use super::blocks::{self, Check};

/// Longest a walkthrough may take (it normally takes a few seconds).
const LIMIT: Duration = Duration::from_secs(240);

/// What a run produced.
pub(crate) struct Outcome {
    /// The checks, in order, with what each got (`None`: never ran).
    pub(crate) results: Vec<(Check, Option<String>)>,
    /// Commands that failed outside checks.
    pub(crate) errors: Vec<String>,
    /// bash's exit status (`None`: killed at the time limit).
    pub(crate) exit: Option<i32>,
    /// Everything the walkthrough printed (its background processes' logs included).
    pub(crate) output: String,
    /// The script as run.
    pub(crate) script: String,
    /// Where: "a private network namespace" or "the host's loopback".
    pub(crate) network: &'static str,
}

/// Serialises walkthroughs that share the host's loopback.
static HOST_LOOPBACK: Mutex<()> = Mutex::new(());

/// Runs `block` from the repository root with the binaries in `bin_dir` first on PATH.
pub(crate) fn walkthrough(block: &str, bin_dir: &Path, repo: &Path) -> Outcome {
    let tmp = tempfile::Builder::new()
        .prefix("vigil-walkthrough-")
        .tempdir()
        .unwrap_or_else(|e| panic!("temp dir: {e}"));
    let dir = tmp.path();
    let (body, checks) = blocks::script(block, &path_str(dir));
    let results_file = dir.join(".results");
    let errors_file = dir.join(".errors");
    let script = format!(
        "{}{body}",
        blocks::prelude(
            &path_str(bin_dir),
            &path_str(&results_file),
            &path_str(&errors_file)
        )
    );
    let script_file = dir.join(".walkthrough.sh");
    std::fs::write(&script_file, &script).unwrap_or_else(|e| panic!("writing the script: {e}"));
    let log = dir.join(".output");

    let private = private_network_available();
    let _serial = (!private).then(|| {
        let guard = HOST_LOOPBACK.lock().unwrap_or_else(|p| p.into_inner());
        ports_free(block);
        guard
    });
    let mut cmd = if private {
        let mut c = Command::new("unshare");
        c.args(["--net", "--map-root-user", "--", "sh", "-c"])
            .arg(r#"ip link set lo up && exec bash "$0""#)
            .arg(&script_file);
        c
    } else {
        let mut c = Command::new("bash");
        c.arg(&script_file);
        c
    };
    let out = std::fs::File::create(&log).unwrap_or_else(|e| panic!("log file: {e}"));
    let err = out.try_clone().unwrap_or_else(|e| panic!("log file: {e}"));
    cmd.current_dir(repo)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0);
    let mut child = Group(cmd.spawn().unwrap_or_else(|e| panic!("starting bash: {e}")));
    let exit = child.wait(LIMIT);
    drop(child);

    let read = |p: &PathBuf| std::fs::read_to_string(p).unwrap_or_default();
    let got: Vec<(usize, String)> = read(&results_file)
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let n = w.next()?.parse().ok()?;
            let _want = w.next()?;
            Some((n, w.next()?.to_string()))
        })
        .collect();
    let results = checks
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let g = got.iter().find(|(n, _)| *n == i).map(|(_, g)| g.clone());
            (c, g)
        })
        .collect();
    Outcome {
        results,
        errors: read(&errors_file).lines().map(str::to_string).collect(),
        exit,
        output: read(&log),
        script,
        network: if private {
            "a private network namespace"
        } else {
            "the host's loopback"
        },
    }
}

/// `unshare --net --map-root-user` works here and `ip` can bring the loopback up.
fn private_network_available() -> bool {
    Command::new("unshare")
        .args([
            "--net",
            "--map-root-user",
            "--",
            "ip",
            "link",
            "set",
            "lo",
            "up",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Panics, naming the port, if one the walkthrough uses (`127.0.0.1:PORT` in its text, the
/// controller's default 8443 and 9191, `http.server PORT`) is taken.
fn ports_free(block: &str) {
    let mut ports = vec![8443u16, 9191];
    let words = block.split(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == ':'));
    let mut after_http_server = false;
    for w in words.filter(|w| !w.is_empty()) {
        if let Some(p) = w.strip_prefix("127.0.0.1:").and_then(|p| p.parse().ok()) {
            ports.push(p);
        }
        if after_http_server && let Ok(p) = w.parse() {
            ports.push(p);
        }
        after_http_server = w == "http.server";
    }
    for p in ports {
        assert!(
            TcpListener::bind(("127.0.0.1", p)).is_ok(),
            "port {p} on 127.0.0.1 is in use, and the README's walkthroughs use it (this machine \
             has no private network namespaces for them: `unshare --net --map-root-user` or \
             `ip` is unavailable). Stop what listens there (`ss -ltnp 'sport = :{p}'`) and rerun"
        );
    }
}

fn path_str(p: &Path) -> String {
    p.display().to_string()
}

/// A process group, killed (SIGKILL) when dropped.
struct Group(Child);

impl Group {
    /// Waits up to `limit` for the group leader (bash); its exit code, `None` if it was
    /// still running or killed by a signal.
    fn wait(&mut self, limit: Duration) -> Option<i32> {
        let start = Instant::now();
        while start.elapsed() < limit {
            match self.0.try_wait() {
                Ok(Some(status)) => return status.code(),
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                Err(_) => return None,
            }
        }
        None
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        let pgid = nix::unistd::Pid::from_raw(i32::try_from(self.0.id()).unwrap_or(i32::MAX));
        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
        let _ = self.0.try_wait();
    }
}
