//! `vigil completions <shell>`: scripts the shells accept, naming the real subcommands and
//! flags; an unknown shell is a usage error.

#![allow(clippy::unwrap_used)]

use std::process::{Command, Output};

const VIGIL: &str = env!("CARGO_BIN_EXE_vigil");

fn vigil(args: &[&str]) -> Output {
    Command::new(VIGIL).args(args).output().unwrap()
}

#[test]
fn bash_loads_the_script_and_completes_subcommands_and_flags() {
    // Load it as a user would, then ask bash's completion function for candidates.
    let script = format!(
        "source <('{VIGIL}' completions bash) && complete -p vigil && \
         COMP_WORDS=(vigil qua) COMP_CWORD=1 COMP_LINE='vigil qua' COMP_POINT=9 && _vigil vigil qua vigil && echo \"${{COMPREPLY[@]}}\" && \
         COMP_WORDS=(vigil explain --kube) COMP_CWORD=2 COMP_LINE='vigil explain --kube' COMP_POINT=20 && _vigil vigil --kube explain && echo \"${{COMPREPLY[@]}}\""
    );
    let o = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("complete ") && lines[0].contains(" -F _vigil "),
        "{out}"
    );
    assert!(lines[0].ends_with(" vigil"), "{out}");
    assert_eq!(lines[1], "quarantine", "{out}");
    assert_eq!(lines[2], "--kubeconfig", "{out}");
}

#[test]
fn zsh_and_fish_scripts_name_the_commands() {
    let zsh = vigil(&["completions", "zsh"]);
    assert_eq!(zsh.status.code(), Some(0));
    let zsh = String::from_utf8_lossy(&zsh.stdout);
    assert!(zsh.starts_with("#compdef vigil"), "{zsh}");
    let fish = vigil(&["completions", "fish"]);
    assert_eq!(fish.status.code(), Some(0));
    let fish = String::from_utf8_lossy(&fish.stdout);
    for cmd in ["explain", "quarantine", "unquarantine", "completions"] {
        assert!(zsh.contains(&format!("'{cmd}:")), "zsh lacks {cmd}");
        assert!(fish.contains(&format!("-a \"{cmd}\"")), "fish lacks {cmd}");
    }
}

#[test]
fn an_unknown_shell_is_a_usage_error() {
    let o = vigil(&["completions", "tcsh"]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("invalid value 'tcsh'"), "{err}");
    assert!(o.stdout.is_empty());
}
