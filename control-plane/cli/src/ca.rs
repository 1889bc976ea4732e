//! `vigil ca`: create the CA, issue SVIDs and bootstrap tokens, export the bundle, rotate.

use std::{
    fs,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use vigil_cert_authority::{
    CertificateAuthority, InitOptions, RootSource, SpiffeId, TrustDomain, keys::KeyAlgorithm,
    state::write_private_file, ttl::TtlPolicy,
};

/// Seconds a consumer of the SPIFFE bundle should wait before re-fetching it.
const BUNDLE_REFRESH_HINT_SECS: u64 = 300;

#[derive(Debug, Subcommand)]
pub(crate) enum CaCommand {
    /// Create a new CA (root, issuer, token key) in an empty state directory.
    Init(InitArgs),
    /// Issue an SVID: writes svid.pem (leaf + chain), key.pem (0600) and bundle.pem.
    Issue(IssueArgs),
    /// Mint a bootstrap token bound to one identity (local mode).
    Token(TokenArgs),
    /// Print the trust bundle.
    Bundle(BundleArgs),
    /// Rotate the issuer now, or start a root rotation with --root.
    Rotate(RotateArgs),
}

#[derive(Debug, Args)]
pub(crate) struct StateDirArg {
    /// CA state directory (created by `vigil ca init`, mode 0700).
    #[arg(long, env = "VIGIL_CA_STATE_DIR", value_name = "DIR")]
    state_dir: PathBuf,
}

#[derive(Debug, Args)]
pub(crate) struct RootArgs {
    /// Use this root certificate (PEM) instead of generating one. Needs --root-key.
    #[arg(long, value_name = "PEM", requires = "root_key")]
    root_cert: Option<PathBuf>,
    /// Private key (PEM, PKCS#8 or SEC1) of --root-cert.
    #[arg(long, value_name = "PEM", requires = "root_cert")]
    root_key: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct InitArgs {
    #[command(flatten)]
    state: StateDirArg,
    /// Trust domain of every identity this CA issues.
    #[arg(long, env = "VIGIL_TRUST_DOMAIN", default_value = "cluster.local", value_parser = crate::parse_trust_domain)]
    trust_domain: TrustDomain,
    #[command(flatten)]
    root: RootArgs,
    /// Curve of a generated root key.
    #[arg(long, default_value = "p256", value_parser = parse_key_algorithm, conflicts_with = "root_cert")]
    root_key_algorithm: KeyAlgorithm,
    /// Lifetime of a generated root.
    #[arg(long, default_value = "3650days", value_parser = humantime::parse_duration)]
    root_ttl: Duration,
    /// Lifetime of each issuer (intermediate); it is replaced before half life.
    #[arg(long, default_value = "7days", value_parser = humantime::parse_duration)]
    issuer_ttl: Duration,
}

#[derive(Debug, Args)]
pub(crate) struct IssueArgs {
    #[command(flatten)]
    state: StateDirArg,
    /// The identity to write into the SVID.
    #[arg(long, value_parser = parse_spiffe_id)]
    id: SpiffeId,
    /// SVID lifetime (5m ..= 24h; down to 1m with --allow-short-ttl).
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    ttl: Duration,
    /// Allow TTLs below 5 minutes (tests and demos of rotation).
    #[arg(long)]
    allow_short_ttl: bool,
    /// Directory to write svid.pem, key.pem and bundle.pem into (created if missing).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

#[derive(Debug, Args)]
pub(crate) struct TokenArgs {
    #[command(flatten)]
    state: StateDirArg,
    /// The identity the token proves.
    #[arg(long, value_parser = parse_spiffe_id)]
    id: SpiffeId,
    /// How long the token is valid.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    ttl: Duration,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum BundleFormat {
    /// PEM certificates.
    Pem,
    /// SPIFFE bundle (JWK set) JSON.
    Spiffe,
}

#[derive(Debug, Args)]
pub(crate) struct BundleArgs {
    #[command(flatten)]
    state: StateDirArg,
    /// Output format.
    #[arg(long, value_enum, default_value = "pem")]
    format: BundleFormat,
}

#[derive(Debug, Args)]
pub(crate) struct RotateArgs {
    #[command(flatten)]
    state: StateDirArg,
    /// Rotate the root: a new root and issuer; the old root stays in the bundle for one
    /// maximum SVID lifetime (24 h), then retires.
    #[arg(long)]
    root: bool,
    #[command(flatten)]
    new_root: RootArgs,
}

pub(crate) fn run(cmd: CaCommand) -> Result<()> {
    match cmd {
        CaCommand::Init(a) => init(a),
        CaCommand::Issue(a) => issue(a),
        CaCommand::Token(a) => token(a),
        CaCommand::Bundle(a) => bundle(a),
        CaCommand::Rotate(a) => rotate(a),
    }
}

fn init(a: InitArgs) -> Result<()> {
    let mut opts = InitOptions::new(a.trust_domain);
    opts.root_ttl = a.root_ttl;
    opts.issuer_ttl = a.issuer_ttl;
    opts.root = a
        .root
        .source()?
        .unwrap_or(RootSource::Generate(a.root_key_algorithm));
    let ca = CertificateAuthority::init(
        &a.state.state_dir,
        opts,
        TtlPolicy::default(),
        SystemTime::now(),
    )?;
    println!(
        "initialised CA for trust domain {} in {}",
        ca.trust_domain(),
        a.state.state_dir.display()
    );
    println!(
        "issuer valid until {}",
        humantime::format_rfc3339_seconds(ca.issuer_not_after())
    );
    Ok(())
}

fn issue(a: IssueArgs) -> Result<()> {
    let policy = if a.allow_short_ttl {
        TtlPolicy::default().allow_short()
    } else {
        TtlPolicy::default()
    };
    let mut ca = CertificateAuthority::open(&a.state.state_dir, policy)?;
    let now = SystemTime::now();
    ca.maintain(now)?;
    // The key is generated here, as a proxy would, and only its CSR reaches the CA.
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let csr = rcgen::CertificateParams::default().serialize_request(&key)?;
    let svid = ca.issue_at(csr.der(), &a.id, Some(a.ttl), now)?;

    fs::create_dir_all(&a.out).with_context(|| format!("cannot create {}", a.out.display()))?;
    write(&a.out.join("key.pem"), key.serialize_pem().as_bytes())?;
    write(&a.out.join("svid.pem"), svid.to_pem().as_bytes())?;
    write(&a.out.join("bundle.pem"), ca.bundle().to_pem().as_bytes())?;
    println!(
        "issued {} valid until {} -> {}",
        svid.id,
        humantime::format_rfc3339_seconds(svid.not_after),
        a.out.display()
    );
    Ok(())
}

fn token(a: TokenArgs) -> Result<()> {
    let ca = CertificateAuthority::open(&a.state.state_dir, TtlPolicy::default())?;
    if a.id.trust_domain_name() != ca.trust_domain().as_str() {
        bail!(
            "{} is not in this CA's trust domain {}",
            a.id,
            ca.trust_domain()
        );
    }
    let id = a.id.require_workload()?;
    if a.ttl.is_zero() {
        bail!("--ttl must be positive");
    }
    println!("{}", ca.token_key().mint(&id, a.ttl, SystemTime::now()));
    Ok(())
}

fn bundle(a: BundleArgs) -> Result<()> {
    let ca = CertificateAuthority::open(&a.state.state_dir, TtlPolicy::default())?;
    let bundle = ca.bundle();
    match a.format {
        BundleFormat::Pem => print!("{}", bundle.to_pem()),
        BundleFormat::Spiffe => println!("{}", bundle.to_spiffe_json(BUNDLE_REFRESH_HINT_SECS)?),
    }
    Ok(())
}

fn rotate(a: RotateArgs) -> Result<()> {
    let source = a.new_root.source()?;
    if source.is_some() && !a.root {
        bail!("--root-cert/--root-key are only used with --root");
    }
    let mut ca = CertificateAuthority::open(&a.state.state_dir, TtlPolicy::default())?;
    let now = SystemTime::now();
    if a.root {
        ca.rotate_root(source, now)?;
        println!(
            "new root is active; the previous root stays in the bundle until {} (one max SVID lifetime)",
            humantime::format_rfc3339_seconds(now + ca.ttl_policy().max())
        );
    } else {
        ca.rotate_issuer(now)?;
        let retired = ca.maintain(now)?.roots_retired;
        if retired > 0 {
            println!("retired {retired} old root(s)");
        }
    }
    println!(
        "issuer rotated; valid until {}; bundle holds {} root(s)",
        humantime::format_rfc3339_seconds(ca.issuer_not_after()),
        ca.bundle().roots().len()
    );
    Ok(())
}

impl RootArgs {
    fn source(&self) -> Result<Option<RootSource>> {
        let (Some(cert), Some(key)) = (&self.root_cert, &self.root_key) else {
            return Ok(None);
        };
        Ok(Some(RootSource::Supplied {
            cert_pem: read(cert)?,
            key_pem: read(key)?,
        }))
    }
}

fn read(path: &Path) -> Result<String> {
    fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

fn write(path: &Path, contents: &[u8]) -> Result<()> {
    write_private_file(path, contents).with_context(|| format!("cannot write {}", path.display()))
}

fn parse_spiffe_id(s: &str) -> Result<SpiffeId, String> {
    SpiffeId::parse(s).map_err(|e| e.to_string())
}

fn parse_key_algorithm(s: &str) -> Result<KeyAlgorithm, String> {
    s.parse()
}
