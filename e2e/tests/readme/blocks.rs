//! The README's shell blocks: which are walkthroughs, and the script the test runs for one.
//!
//! Every ```` ```sh ```` (or `bash`) block is preceded by one of
//! - `<!-- walkthrough: NAME -->`: run by this test, as written;
//! - `<!-- not-run: REASON -->`: says why it cannot run here.
//!
//! In a walkthrough, a command whose trailing comment starts with an HTTP status or
//! `refused` (`curl -i URL   # 403: POST is not allowed`) is a **check**: the test records
//! what it got. After a `sleep` line (the README waiting for a change to apply) the next
//! check may repeat its command until it gets the promised answer, within a bound; every
//! other check is one attempt.

/// One fenced block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Block {
    /// The marker's name (`walkthrough: NAME`) or reason (`not-run: REASON`).
    pub(crate) marker: Marker,
    /// Line of the opening fence (1-based).
    pub(crate) line: usize,
    /// The block's text.
    pub(crate) text: String,
}

/// What precedes a shell block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Marker {
    Walkthrough(String),
    NotRun(String),
    /// Nothing: the test fails and says what to add.
    None,
}

/// A promised outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Check {
    /// The command as the README writes it (continuation lines joined).
    pub(crate) command: String,
    /// `200`, `403`, ... or `refused` (no HTTP response).
    pub(crate) want: String,
    /// Follows a `sleep`: may be retried until it matches.
    pub(crate) settles: bool,
}

/// Every shell block of `readme`, with its marker.
pub(crate) fn shell_blocks(readme: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut previous = "";
    let mut lines = readme.lines().enumerate();
    while let Some((i, line)) = lines.next() {
        let Some(info) = line.strip_prefix("```") else {
            if !line.trim().is_empty() {
                previous = line;
            }
            continue;
        };
        let mut text = String::new();
        for (_, l) in lines.by_ref() {
            if l.starts_with("```") {
                break;
            }
            text.push_str(l);
            text.push('\n');
        }
        let lang = info.split_whitespace().next().unwrap_or("");
        if matches!(lang, "sh" | "bash" | "shell" | "console") {
            out.push(Block {
                marker: marker(previous),
                line: i + 1,
                text,
            });
        }
        previous = "";
    }
    out
}

fn marker(line: &str) -> Marker {
    let inner = line
        .trim()
        .strip_prefix("<!--")
        .and_then(|l| l.strip_suffix("-->"))
        .map(str::trim);
    match inner.and_then(|l| l.split_once(':')) {
        Some(("walkthrough", name)) => Marker::Walkthrough(name.trim().to_string()),
        Some(("not-run", why)) => Marker::NotRun(why.trim().to_string()),
        _ => Marker::None,
    }
}

/// The block as bash runs it, and its checks. The only changes to the text: `cargo build`
/// and `export PATH=` lines are dropped (`prelude` puts the test's binaries first on
/// PATH instead), `/tmp/` becomes `tmp`, and checks are wrapped in `__walk_check`.
pub(crate) fn script(block: &str, tmp: &str) -> (String, Vec<Check>) {
    let mut out = String::new();
    let mut checks = Vec::new();
    let mut after_sleep = false;
    for line in logical_lines(block) {
        let trimmed = line.trim_start();
        if trimmed.starts_with("cargo build") || trimmed.starts_with("export PATH=") {
            out.push_str(&format!("# (walkthrough test) dropped: {line}\n"));
            continue;
        }
        let line = line.replace("/tmp/", &format!("{tmp}/"));
        let (command, comment) = split_comment(&line);
        if command.trim_start().starts_with("sleep ") {
            after_sleep = true;
        }
        match comment.and_then(promised) {
            Some(want) => {
                let n = checks.len();
                out.push_str(&format!(
                    "__walk_check {n} {want} {} {}\n",
                    u8::from(after_sleep),
                    command.trim()
                ));
                checks.push(Check {
                    command: command.trim().to_string(),
                    want,
                    settles: after_sleep,
                });
                after_sleep = false;
            }
            None => {
                out.push_str(&line);
                out.push('\n');
            }
        }
    }
    (out, checks)
}

/// Lines with `\`-continuations joined.
fn logical_lines(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        match line.strip_suffix('\\') {
            Some(head) => cur.push_str(head),
            None => {
                cur.push_str(line);
                out.push(std::mem::take(&mut cur));
            }
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// (command, comment) at the first ` #` outside quotes.
fn split_comment(line: &str) -> (&str, Option<&str>) {
    let (mut single, mut double) = (false, false);
    let bytes = line.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'\'' if !double => single = !single,
            b'"' if !single => double = !double,
            b'#' if !single && !double && (i == 0 || bytes[i - 1].is_ascii_whitespace()) => {
                return (&line[..i], Some(line[i + 1..].trim()));
            }
            _ => {}
        }
    }
    (line, None)
}

/// `200: ...` -> `200`; `refused: ...` -> `refused`.
fn promised(comment: &str) -> Option<String> {
    let word: String = comment
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .collect();
    let status = word.len() == 3 && word.bytes().all(|b| b.is_ascii_digit());
    (status || word == "refused").then_some(word)
}

/// Defines `__walk_check` and the error trap; `results` and `errors` are files the test
/// reads afterwards.
pub(crate) fn prelude(bin_dir: &str, results: &str, errors: &str) -> String {
    format!(
        r#"export PATH='{bin_dir}':"$PATH"
__walk_results='{results}'
__walk_errors='{errors}'
# Any command that fails outside a check or a condition is an error.
trap '__rc=$?; printf "%s  (exit %s)\n" "$BASH_COMMAND" "$__rc" >> "$__walk_errors"' ERR
# __walk_check N WANT SETTLES COMMAND...: runs COMMAND (curl -i), records N, WANT, GOT.
__walk_check() {{
    local n=$1 want=$2 settles=$3 got out rc tries=0
    shift 3
    while :; do
        rc=0
        out=$("$@" 2>"$__walk_results.stderr") || rc=$?
        if [ "$rc" -ne 0 ]; then
            got=refused
        else
            got=$(printf '%s\n' "$out" | sed -n 's/^HTTP\/[0-9.]* \([0-9][0-9][0-9]\).*/\1/p' | head -n 1)
            got=${{got:-no-status}}
        fi
        tries=$((tries + 1))
        if [ "$got" = "$want" ] || [ "$settles" = 0 ] || [ "$tries" -ge 100 ]; then
            break
        fi
        sleep 0.2
    done
    printf '$ %s\n%s\n%s\n[walkthrough check %s: got %s, the README promises %s (exit %s, %s attempt(s))]\n' \
        "$*" "$out" "$(tail -n 3 "$__walk_results.stderr")" "$n" "$got" "$want" "$rc" "$tries"
    printf '%s %s %s\n' "$n" "$want" "$got" >> "$__walk_results"
}}
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_and_languages() {
        let md = "intro\n\n<!-- walkthrough: one -->\n```sh\necho a\n```\n\n```sh\nls\n```\n<!-- not-run: needs a cluster -->\n\n```bash\nkubectl get pods\n```\n```yaml\na: 1\n```\n```\nplain\n```\n";
        let b = shell_blocks(md);
        assert_eq!(b.len(), 3, "{b:?}");
        assert_eq!(b[0].marker, Marker::Walkthrough("one".into()));
        assert_eq!(b[0].text, "echo a\n");
        assert_eq!(b[0].line, 4);
        assert_eq!(b[1].marker, Marker::None);
        assert_eq!(b[2].marker, Marker::NotRun("needs a cluster".into()));
    }

    #[test]
    fn checks_paths_and_dropped_lines() {
        let block = "cargo build --release -p x   # slow\nexport PATH=$PWD/target/release:$PATH\nrm -rf /tmp/w && cd /tmp/w\nvigil-proxy run --a 1 \\\n  --route 'x=y,#z' &\ncurl -i http://127.0.0.1:1/   # 200: allowed\ncurl -i -X POST http://127.0.0.1:1/ # 403: no\nvigil status  # both in sync\nsleep 1   # wait\ncurl -i http://127.0.0.1:1/   # refused: cut off\n";
        let (s, checks) = script(block, "/x/t");
        assert!(
            !s.contains("\ncargo build") && !s.contains("\nexport PATH"),
            "{s}"
        );
        assert!(s.contains("rm -rf /x/t/w && cd /x/t/w"), "{s}");
        assert!(
            s.contains("vigil-proxy run --a 1   --route 'x=y,#z' &"),
            "{s}"
        );
        assert!(s.contains("vigil status  # both in sync"), "{s}");
        assert_eq!(
            checks,
            [
                Check {
                    command: "curl -i http://127.0.0.1:1/".into(),
                    want: "200".into(),
                    settles: false
                },
                Check {
                    command: "curl -i -X POST http://127.0.0.1:1/".into(),
                    want: "403".into(),
                    settles: false
                },
                Check {
                    command: "curl -i http://127.0.0.1:1/".into(),
                    want: "refused".into(),
                    settles: true
                },
            ]
        );
        assert!(
            s.contains("__walk_check 2 refused 1 curl -i http://127.0.0.1:1/\n"),
            "{s}"
        );
    }
}
