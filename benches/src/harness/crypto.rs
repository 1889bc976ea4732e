//! In-memory rustls limits, measured in the same invocation as the proxies:
//!
//! - B5's ceiling: one core encrypting *and* decrypting a TLS 1.3 stream (what the two
//!   sidecars on the SUT core must do per byte), nothing else.
//! - B7's baseline: the server side of a full mTLS handshake (same certificates, same
//!   SPIFFE verifiers, same key-exchange group as the proxies), CPU per handshake.
//!
//! Both use the configurations from `vigil_cert_authority::tls`, the ones the proxy uses.

use std::{io::Read, io::Write, sync::Arc, time::Duration};

use rustls::{ClientConnection, Connection, ServerConnection, crypto::CryptoProvider};
use rustls_pki_types::ServerName;
use vigil_cert_authority::{tls, verify::NoRevocation};

use super::{
    certs::{Certs, server_id},
    procs::thread_cpu,
};

/// Connected, handshaken in-memory pair factory.
struct Pair {
    client: Arc<rustls::ClientConfig>,
    server: Arc<rustls::ServerConfig>,
}

impl Pair {
    fn new(certs: &Certs, provider: Arc<CryptoProvider>) -> anyhow::Result<Self> {
        let server = tls::server_config(
            &certs.server_creds(&provider)?,
            provider.clone(),
            Arc::new(NoRevocation),
            &[tls::ALPN_MESH],
        )?;
        let mut client = tls::client_config(
            &certs.client_creds(&provider)?,
            [server_id()],
            provider,
            Arc::new(NoRevocation),
            &[tls::ALPN_MESH],
        )?;
        // B7 is about full handshakes: one client config would otherwise resume.
        client.resumption = rustls::client::Resumption::disabled();
        Ok(Self {
            client: Arc::new(client),
            server: Arc::new(server),
        })
    }

    fn connections(&self) -> anyhow::Result<(Connection, Connection)> {
        let c = ClientConnection::new(self.client.clone(), ServerName::try_from("localhost")?)?;
        let s = ServerConnection::new(self.server.clone())?;
        Ok((Connection::Client(c), Connection::Server(s)))
    }
}

/// Moves every pending TLS record from `from` to `to` and processes it.
fn transfer(from: &mut Connection, to: &mut Connection, buf: &mut Vec<u8>) -> anyhow::Result<()> {
    buf.clear();
    while from.wants_write() {
        from.write_tls(buf)?;
    }
    feed(to, buf)
}

/// B7's baseline: server CPU per in-memory mTLS handshake, and the group negotiated.
pub fn server_handshake_cpu(
    certs: &Certs,
    provider: Arc<CryptoProvider>,
    n: u32,
) -> anyhow::Result<(Duration, String)> {
    let pair = Pair::new(certs, provider)?;
    let mut server_cpu = Duration::ZERO;
    let mut group = String::new();
    let mut out = Vec::new();
    for _ in 0..n {
        let (mut c, mut s) = pair.connections()?;
        loop {
            // Client to server (the client's work is not timed).
            out.clear();
            while c.wants_write() {
                c.write_tls(&mut out)?;
            }
            // The server reads, processes and answers: timed.
            let t = thread_cpu();
            feed(&mut s, &out)?;
            out.clear();
            while s.wants_write() {
                s.write_tls(&mut out)?;
            }
            server_cpu += thread_cpu() - t;
            feed(&mut c, &out)?;
            if !c.is_handshaking() && !s.is_handshaking() && !c.wants_write() {
                break;
            }
        }
        group = c
            .negotiated_key_exchange_group()
            .map_or("none".into(), |g| format!("{:?}", g.name()));
    }
    Ok((server_cpu / n.max(1), group))
}

fn feed(to: &mut Connection, mut data: &[u8]) -> anyhow::Result<()> {
    while !data.is_empty() {
        to.read_tls(&mut data)?;
        to.process_new_packets()?;
    }
    Ok(())
}

/// B5's ceiling: bytes per second one core encrypts and decrypts, and the cipher suite.
pub fn bulk_ceiling(
    certs: &Certs,
    provider: Arc<CryptoProvider>,
    budget: Duration,
) -> anyhow::Result<(f64, String)> {
    let pair = Pair::new(certs, provider)?;
    let (mut c, mut s) = pair.connections()?;
    let mut buf = Vec::new();
    while c.is_handshaking() || s.is_handshaking() {
        transfer(&mut c, &mut s, &mut buf)?;
        transfer(&mut s, &mut c, &mut buf)?;
    }
    let suite = c
        .negotiated_cipher_suite()
        .map_or("none".into(), |s| format!("{:?}", s.suite()));
    let chunk = vec![0u8; 64 * 1024];
    let mut sink = vec![0u8; 64 * 1024];
    let start = thread_cpu();
    let mut moved = 0u64;
    while thread_cpu() - start < budget {
        c.writer().write_all(&chunk)?;
        buf.clear();
        while c.wants_write() {
            c.write_tls(&mut buf)?;
        }
        // The server decrypts record by record, its plaintext drained as it goes (its
        // received-plaintext buffer is bounded).
        let mut rd = &buf[..];
        let mut got = 0;
        while !rd.is_empty() {
            s.read_tls(&mut rd)?;
            s.process_new_packets()?;
            loop {
                match s.reader().read(&mut sink) {
                    Ok(0) => break,
                    Ok(k) => got += k,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e.into()),
                }
            }
        }
        anyhow::ensure!(got == chunk.len(), "in-memory TLS lost data");
        moved += got as u64;
    }
    let secs = (thread_cpu() - start).as_secs_f64();
    Ok((moved as f64 / secs, suite))
}
