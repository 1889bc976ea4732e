//! What can go wrong when a node starts, said so the reader knows what to do next.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use super::CNI_BIN_DIR;

/// Why a node could not be started.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// A program or package the node needs is not installed.
    #[error("{what} is missing: {hint}")]
    Missing {
        /// What.
        what: String,
        /// How to get it.
        hint: String,
    },
    /// An image archive does not exist.
    #[error(
        "image archive {0} does not exist: run `make images` (it writes vigil-controller.tar, vigil-proxy.tar and vigil-testapp.tar)"
    )]
    MissingImage(PathBuf),
    /// An image archive could not be imported.
    #[error("importing {archive} into containerd failed: {output}")]
    Import {
        /// The archive.
        archive: PathBuf,
        /// What ctr said.
        output: String,
    },
    /// A setup command failed.
    #[error("{command} failed: {output}")]
    Setup {
        /// The command.
        command: String,
        /// Its output.
        output: String,
    },
    /// The node did not become Ready in time.
    #[error(
        "node {name} did not become Ready in {waited:?} (its last condition: {condition}). The kubelet's last log lines ({log}):\n{kubelet_tail}"
    )]
    NotReady {
        /// The node.
        name: String,
        /// How long we waited.
        waited: Duration,
        /// The Ready condition's message, if any.
        condition: String,
        /// The kubelet's log file.
        log: PathBuf,
        /// Its last lines.
        kubelet_tail: String,
    },
}

pub(super) fn sh(args: &[&str]) -> Result<String, NodeError> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| NodeError::Setup {
            command: args.join(" "),
            output: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(NodeError::Setup {
            command: args.join(" "),
            output: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub(super) fn write(path: &Path, text: &str) -> Result<(), NodeError> {
    std::fs::write(path, text).map_err(|e| NodeError::Setup {
        command: format!("writing {}", path.display()),
        output: e.to_string(),
    })
}

/// Checks that every program the node runs is installed, naming the package if not.
pub(super) fn check_tools() -> Result<(), NodeError> {
    let tools = [
        ("containerd", "apt-get install containerd"),
        ("ctr", "apt-get install containerd"),
        ("runc", "apt-get install runc"),
        ("nsenter", "apt-get install util-linux"),
        ("setpriv", "apt-get install util-linux"),
        ("ip", "apt-get install iproute2"),
        ("iptables", "apt-get install iptables"),
        ("conntrack", "apt-get install conntrack"),
    ];
    for (tool, hint) in tools {
        let found = std::env::var_os("PATH")
            .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(tool).is_file()));
        if !found {
            return Err(NodeError::Missing {
                what: tool.into(),
                hint: hint.into(),
            });
        }
    }
    for plugin in ["bridge", "host-local", "loopback", "portmap"] {
        if !Path::new(CNI_BIN_DIR).join(plugin).is_file() {
            return Err(NodeError::Missing {
                what: format!("the CNI plugin {CNI_BIN_DIR}/{plugin}"),
                hint: "apt-get install containernetworking-plugins".into(),
            });
        }
    }
    Ok(())
}
