//! B7's socket floor: the smallest rustls server over TCP there is — one thread, blocking
//! sockets, no runtime, no proxy logic — with the sidecar's server configuration,
//! certificates and verifier (`vigil_cert_authority::tls::server_config`).
//!
//! B7 compares the inbound sidecar's CPU per handshake with the same handshake in memory,
//! which pays no socket work at all. This server pays exactly the socket work (accept,
//! the flights' reads and writes, the loopback TCP the kernel charges to the process,
//! waking up between flights) and nothing else, so its CPU per handshake over the same
//! client is the least any server on sockets can spend: the in-memory figure is the
//! crypto, this one the crypto plus the sockets, and a sidecar's own work is what it
//! adds to this one.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::Path,
    sync::Arc,
};

use rustls::{ServerConfig, ServerConnection};
use vigil_cert_authority::{tls, verify::NoRevocation};

use super::certs::Certs;

/// Serves mTLS handshakes on `addr` with the server SVID in `dir` (written by
/// [`super::certs::Certs::create`]) until the process ends.
pub fn serve(dir: &Path, addr: SocketAddr) -> anyhow::Result<()> {
    let config = config(dir)?;
    let listener = TcpListener::bind(addr)?;
    for stream in listener.incoming() {
        // A failed handshake ends its connection, not the server.
        let _ = stream
            .map_err(anyhow::Error::from)
            .and_then(|s| one(&config, s));
    }
    Ok(())
}

/// The sidecar's server configuration over the server SVID in `dir`.
fn config(dir: &Path) -> anyhow::Result<Arc<ServerConfig>> {
    let provider = super::bench_provider();
    let creds = Certs::load_server_creds(dir, &provider)?;
    Ok(Arc::new(tls::server_config(
        &creds,
        provider,
        Arc::new(NoRevocation),
        &[tls::ALPN_MESH],
    )?))
}

/// One connection: the handshake, its tickets, then reads until the client closes.
fn one(config: &Arc<ServerConfig>, mut sock: TcpStream) -> anyhow::Result<()> {
    sock.set_nodelay(true)?;
    let mut conn = ServerConnection::new(Arc::clone(config))?;
    while conn.is_handshaking() {
        conn.complete_io(&mut sock)?;
    }
    while conn.wants_write() {
        conn.write_tls(&mut sock)?;
    }
    let mut tls = rustls::Stream::new(&mut conn, &mut sock);
    let mut buf = [0u8; 1024];
    while tls.read(&mut buf)? > 0 {}
    tls.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::net::TcpStream;

    use rustls::ClientConnection;

    use super::*;

    /// A full handshake with `client`'s configuration; the ALPN the server chose.
    fn handshake(addr: SocketAddr, client: &crate::load::TlsClient) -> anyhow::Result<Vec<u8>> {
        let mut sock = TcpStream::connect(addr)?;
        let mut conn = ClientConnection::new(client.config.clone(), client.server_name.clone())?;
        while conn.is_handshaking() {
            conn.complete_io(&mut sock)?;
        }
        // The server's refusal of a client certificate arrives after the client's Finished.
        let mut tls = rustls::Stream::new(&mut conn, &mut sock);
        tls.write_all(b"x")?;
        tls.flush()?;
        sock.set_read_timeout(Some(std::time::Duration::from_millis(300)))?;
        let mut buf = [0u8; 16];
        match rustls::Stream::new(&mut conn, &mut sock).read(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => return Err(e.into()),
            _ => {}
        }
        Ok(conn.alpn_protocol().unwrap_or_default().to_vec())
    }

    /// A client that has no certificate to present.
    #[derive(Debug)]
    struct NoCert;

    impl rustls::client::ResolvesClientCert for NoCert {
        fn resolve(
            &self,
            _: &[&[u8]],
            _: &[rustls::SignatureScheme],
        ) -> Option<Arc<rustls::sign::CertifiedKey>> {
            None
        }

        fn has_certs(&self) -> bool {
            false
        }
    }

    #[test]
    fn serves_the_mesh_handshake_and_only_to_mesh_clients() {
        let dir = tempfile::tempdir().unwrap();
        let certs = Certs::create(dir.path()).unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], super::super::topology::free_port()));
        let path = dir.path().to_owned();
        std::thread::spawn(move || serve(&path, addr));
        let provider = super::super::bench_provider();
        let mesh = certs
            .spiffe_client(provider.clone(), &[tls::ALPN_MESH])
            .unwrap();
        let mut alpn = None;
        for _ in 0..100 {
            if let Ok(a) = handshake(addr, &mesh) {
                alpn = Some(a);
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert_eq!(
            alpn.as_deref(),
            Some(tls::ALPN_MESH),
            "a mesh client is served"
        );
        // A client without a certificate is refused, and the server goes on serving.
        let mut anonymous = (*mesh.config).clone();
        anonymous.client_auth_cert_resolver = Arc::new(NoCert);
        let anonymous = crate::load::TlsClient {
            config: Arc::new(anonymous),
            server_name: mesh.server_name.clone(),
        };
        assert!(
            handshake(addr, &anonymous).is_err(),
            "no client certificate"
        );
        assert_eq!(handshake(addr, &mesh).unwrap(), tls::ALPN_MESH);
    }
}
