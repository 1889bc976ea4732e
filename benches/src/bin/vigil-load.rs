//! `vigil-load`: the benchmarks' load generator (see `vigil_benches::load`).
//!
//! ```text
//! vigil-load --addr 127.0.0.1:8080 --rate 1000 --conns 16 --duration 10s
//! vigil-load --addr 127.0.0.1:8443 --h2 --streams 25 --conns 4 --tls --ca roots.pem \
//!            --cert svid.pem --key key.pem --server-name localhost --json
//! ```
//!
//! Exits 1 when the run is invalid (failed requests, or the achieved rate more than 1 %
//! off the target).

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, sync::Arc, time::Duration};

use clap::Parser;
use vigil_benches::load::{LoadSpec, Protocol, Target, TlsClient, run};

/// Open-loop HTTP load without coordinated omission.
#[derive(Debug, Parser)]
#[command(name = "vigil-load", version, about)]
struct Cli {
    /// Where to connect.
    #[arg(long)]
    addr: SocketAddr,
    /// Request path.
    #[arg(long, default_value = "/")]
    path: String,
    /// Host header / :authority (default: the address).
    #[arg(long)]
    authority: Option<String>,
    /// Requests per second; omit for closed loop (maximum throughput).
    #[arg(long)]
    rate: Option<f64>,
    /// Connections.
    #[arg(long, default_value_t = 16)]
    conns: usize,
    /// HTTP/2 instead of HTTP/1.1.
    #[arg(long)]
    h2: bool,
    /// Requests in flight per HTTP/2 connection.
    #[arg(long, default_value_t = 1)]
    streams: usize,
    /// Measured duration.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Warm-up before measuring.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Use TLS (roots from --ca).
    #[arg(long, requires = "ca")]
    tls: bool,
    /// PEM roots that verify the server.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Client certificate chain (PEM) for mTLS.
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(long)]
    key: Option<PathBuf>,
    /// Name to verify in the server certificate.
    #[arg(long, default_value = "localhost")]
    server_name: String,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Open a new connection (and TLS handshake) for every request.
    #[arg(long)]
    fresh_connections: bool,
    /// Worker threads (1 keeps the generator on one core; pin it with taskset).
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

fn tls(cli: &Cli, h2: bool) -> anyhow::Result<Option<TlsClient>> {
    if !cli.tls {
        return Ok(None);
    }
    let read = |p: &PathBuf| {
        std::fs::read_to_string(p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))
    };
    let mut roots = rustls::RootCertStore::empty();
    if let Some(ca) = &cli.ca {
        for c in vigil_cert_authority::pemfile::decode_certs(&read(ca)?)? {
            roots.add(c)?;
        }
    }
    let builder =
        rustls::ClientConfig::builder_with_provider(vigil_cert_authority::tls::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(roots);
    let mut config = match (&cli.cert, &cli.key) {
        (Some(c), Some(k)) => builder.with_client_auth_cert(
            vigil_cert_authority::pemfile::decode_certs(&read(c)?)?,
            vigil_cert_authority::pemfile::decode_private_key(&read(k)?)?,
        )?,
        _ => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![if h2 {
        b"h2".to_vec()
    } else {
        b"http/1.1".to_vec()
    }];
    Ok(Some(TlsClient {
        config: Arc::new(config),
        server_name: rustls_pki_types::ServerName::try_from(cli.server_name.clone())?,
    }))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = (|| -> anyhow::Result<bool> {
        let spec = LoadSpec {
            target: Target {
                addr: cli.addr,
                path: cli.path.clone(),
                authority: cli
                    .authority
                    .clone()
                    .unwrap_or_else(|| cli.addr.to_string()),
                protocol: if cli.h2 {
                    Protocol::Http2
                } else {
                    Protocol::Http1
                },
                tls: tls(&cli, cli.h2)?,
            },
            rate: cli.rate,
            conns: cli.conns,
            streams: cli.streams,
            duration: cli.duration,
            warmup: cli.warmup,
            fresh_connections: cli.fresh_connections,
        };
        let rt = if cli.threads <= 1 {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
        } else {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(cli.threads)
                .enable_all()
                .build()?
        };
        let report = rt.block_on(run(&spec));
        if cli.json {
            println!("{}", serde_json::to_string(&report)?);
        } else {
            println!("{}", report.summary());
        }
        match report.valid() {
            Ok(()) => Ok(true),
            Err(why) => {
                eprintln!("invalid run: {why}");
                Ok(false)
            }
        }
    })();
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
