//! `vigil-proxy wait-ready`: block until the proxy's admin server answers `/ready` with
//! 200, or fail after a timeout. The injector runs it as the proxy container's `postStart`
//! hook when the cluster has no native sidecars: the kubelet starts the next container
//! (the app) only after the hook returns, so the app never runs before its proxy can
//! carry traffic.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use clap::Args;

/// Flags of `vigil-proxy wait-ready`.
#[derive(Clone, Debug, Args)]
pub struct WaitReadyArgs {
    /// The proxy's admin listener.
    #[arg(long, env = "VIGIL_PROXY_WAIT_ADMIN", default_value = "127.0.0.1:4191")]
    pub admin: SocketAddr,
    /// Give up after this long.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// Why waiting failed.
#[derive(Debug, thiserror::Error)]
#[error("the proxy at {admin} was not ready after {waited:?} (last: {last})")]
pub struct NotReady {
    /// The admin address.
    pub admin: SocketAddr,
    /// How long it waited.
    pub waited: Duration,
    /// The last answer or error.
    pub last: String,
}

/// Polls `/ready` every 100 ms.
pub fn wait(args: &WaitReadyArgs) -> Result<Duration, NotReady> {
    let start = Instant::now();
    loop {
        let last = match probe(args.admin) {
            Ok(200) => return Ok(start.elapsed()),
            Ok(code) => format!("HTTP {code}"),
            Err(e) => e.to_string(),
        };
        if start.elapsed() >= args.timeout {
            return Err(NotReady {
                admin: args.admin,
                waited: start.elapsed(),
                last,
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One `GET /ready`; the status code.
fn probe(admin: SocketAddr) -> std::io::Result<u16> {
    let mut s = TcpStream::connect_timeout(&admin, Duration::from_secs(1))?;
    s.set_read_timeout(Some(Duration::from_secs(1)))?;
    s.write_all(b"GET /ready HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
    let mut head = [0u8; 16];
    let n = s.read(&mut head)?;
    // "HTTP/1.1 200 ..."
    std::str::from_utf8(&head[..n])
        .ok()
        .and_then(|h| h.get(9..12))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other("not an HTTP response"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_out_when_nothing_listens_and_succeeds_on_200() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let err = wait(&WaitReadyArgs {
            admin: addr,
            timeout: Duration::from_millis(300),
        })
        .unwrap_err();
        assert_eq!(err.admin, addr);

        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            // First a 503 (not ready), then 200.
            for answer in [
                "HTTP/1.1 503 Service Unavailable\r\n\r\n",
                "HTTP/1.1 200 OK\r\n\r\nready",
            ] {
                let (mut c, _) = l.accept().unwrap();
                let mut buf = [0u8; 256];
                let _ = c.read(&mut buf).unwrap();
                c.write_all(answer.as_bytes()).unwrap();
            }
        });
        wait(&WaitReadyArgs {
            admin: addr,
            timeout: Duration::from_secs(10),
        })
        .unwrap();
        server.join().unwrap();
    }
}
