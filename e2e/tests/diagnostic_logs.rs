//! Diagnostic logs carry colour codes only on a terminal: `vigil-controller` and
//! `vigil-proxy` write plain text into a pipe or a file, colours on a terminal (a pty from
//! `script`, the positive control that shows the check can fail), and none on a terminal
//! with `NO_COLOR` set. No root; loopback only, port 0.

#![allow(clippy::unwrap_used, clippy::print_stderr, clippy::panic)]

use std::{
    io::Read,
    os::unix::process::CommandExt,
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use vigil_e2e::mesh::{bin, have};

const ESC: u8 = 0x1b;

/// How the output is connected.
#[derive(Clone, Copy, Debug)]
enum Sink {
    Pipe,
    Terminal { no_color: bool },
}

/// Runs `program args` until `marker` appears in its diagnostics (or 60 s pass), and
/// returns them.
fn diagnostics(program: &Path, args: &[&str], sink: Sink, marker: &str) -> String {
    let pid_dir = tempfile::tempdir().unwrap();
    let pid_file = pid_dir.path().join("pid");
    let mut cmd = match sink {
        Sink::Pipe => {
            let mut c = Command::new(program);
            c.args(args).stdout(Stdio::null()).stderr(Stdio::piped());
            c
        }
        Sink::Terminal { .. } => {
            // `script` runs the command on a new pty, in a session of its own, and copies
            // what it writes to stdout. The command records its pid, so that it is killed
            // even where SIGHUP is ignored (under nohup, say).
            let line = std::iter::once(program.display().to_string())
                .chain(args.iter().map(|a| a.to_string()))
                .map(|w| format!("'{w}'"))
                .collect::<Vec<_>>()
                .join(" ");
            let line = format!("echo $$ > '{}'; exec {line}", pid_file.display());
            let mut c = Command::new("script");
            c.args(["-q", "-e", "-c", &line, "/dev/null"])
                .env("SHELL", "/bin/sh")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null());
            c
        }
    };
    match sink {
        Sink::Terminal { no_color: true } => cmd.env("NO_COLOR", "1"),
        _ => cmd.env_remove("NO_COLOR"),
    };
    cmd.process_group(0);
    let mut child = Group(cmd.spawn().unwrap(), pid_file);
    let mut out = match sink {
        Sink::Pipe => Box::new(child.0.stderr.take().unwrap()) as Box<dyn Read + Send>,
        Sink::Terminal { .. } => Box::new(child.0.stdout.take().unwrap()),
    };
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains(marker) {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(chunk) => seen.extend(chunk),
            Err(_) => panic!(
                "{marker:?} not seen ({sink:?}); output:\n{}",
                String::from_utf8_lossy(&seen)
            ),
        }
    }
    drop(child);
    String::from_utf8_lossy(&seen).into_owned()
}

/// Asserts colour codes exactly on a terminal without `NO_COLOR`.
fn colours_only_on_a_terminal(program: &Path, args: &[&str], marker: &str) {
    let piped = diagnostics(program, args, Sink::Pipe, marker);
    assert!(
        !piped.contains(ESC as char),
        "colour codes in a pipe:\n{piped:?}"
    );
    if !have("script") {
        eprintln!("`script` (util-linux) is missing: the terminal cases are not checked");
        return;
    }
    let tty = diagnostics(program, args, Sink::Terminal { no_color: false }, marker);
    assert!(
        tty.contains(ESC as char),
        "no colours on a terminal:\n{tty:?}"
    );
    let no_color = diagnostics(program, args, Sink::Terminal { no_color: true }, marker);
    assert!(
        !no_color.contains(ESC as char),
        "colour codes despite NO_COLOR:\n{no_color:?}"
    );
}

#[test]
fn controller_logs_are_plain_in_a_pipe() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("policy")).unwrap();
    let policy = dir.path().join("policy").display().to_string();
    // One state dir per run would be created anyway; share it (created on the first run).
    let state = dir.path().join("state").display().to_string();
    colours_only_on_a_terminal(
        &bin("vigil-controller"),
        &[
            "--local",
            &policy,
            "--state-dir",
            &state,
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
        ],
        "vigil-controller started",
    );
}

#[test]
fn proxy_logs_are_plain_in_a_pipe() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).display().to_string();
    for args in [
        vec!["ca", "init", "--state-dir", &p("ca")],
        vec![
            "ca",
            "issue",
            "--state-dir",
            &p("ca"),
            "--id",
            "spiffe://cluster.local/ns/demo/sa/logs",
            "--out",
            &p("svid"),
        ],
    ] {
        let out = Command::new(bin("vigil")).args(&args).output().unwrap();
        assert!(out.status.success(), "vigil {args:?}: {out:?}");
    }
    std::fs::write(p("policy.yaml"), "inbound: []\n").unwrap();
    colours_only_on_a_terminal(
        &bin("vigil-proxy"),
        &[
            "run",
            "--svid",
            &p("svid/svid.pem"),
            "--key",
            &p("svid/key.pem"),
            "--bundle",
            &p("svid/bundle.pem"),
            "--policy",
            &p("policy.yaml"),
            "--inbound",
            "127.0.0.1:0",
            "--outbound",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
        ],
        "vigil-proxy started",
    );
}

/// A process group, and the program `script` started in a session of its own (its pid in
/// the file, once written), both killed when dropped.
struct Group(Child, std::path::PathBuf);

impl Drop for Group {
    fn drop(&mut self) {
        use nix::{sys::signal, unistd::Pid};
        if let Some(pid) = std::fs::read_to_string(&self.1)
            .ok()
            .and_then(|p| p.trim().parse().ok())
        {
            let _ = signal::kill(Pid::from_raw(pid), signal::Signal::SIGKILL);
        }
        let pgid = Pid::from_raw(i32::try_from(self.0.id()).unwrap_or(i32::MAX));
        let _ = signal::killpg(pgid, signal::Signal::SIGKILL);
        let _ = self.0.wait();
    }
}
