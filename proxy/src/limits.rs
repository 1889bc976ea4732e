//! Process limits the proxy sets for itself when it starts.
//!
//! The soft limit on open files is often 1024 while the hard limit is far higher (a
//! container runtime's default is 1048576): a proxy that keeps the soft limit runs out of
//! descriptors with about a thousand connections, after which it can open nothing — not a
//! policy file, not a connection to the app.

use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// Raises the soft limit on open files to the hard limit; returns (before, now).
pub fn raise_fd_limit() -> nix::Result<(u64, u64)> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    Ok((soft, getrlimit(Resource::RLIMIT_NOFILE)?.0))
}
