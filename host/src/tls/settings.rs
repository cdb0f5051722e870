//! From the TLS flags to a rustls `ServerConfig`: the certificates (one
//! chosen per connection by SNI), client certificates, versions and ALPN.
//!
//! The master builds a [`TlsServer`] at start and again on each HUP; a
//! worker is forked with the one current then, so new connections meet the
//! new certificates once the reload has rolled, and open ones keep theirs.
//!
//! Choices, each for a reason:
//! - aws-lc-rs is the crypto provider: rustls's default, maintained by AWS,
//!   with assembly for X25519, P-256 and AES-GCM that is the fastest of the
//!   providers (handshake cost is what a TLS server spends most on), and a
//!   FIPS build if an operator needs one. It builds with a C compiler only.
//! - TLS 1.2 and 1.3 by default (`--tls-min-version 1.3` for 1.3 only);
//!   rustls has no renegotiation, no compression, and none of the old
//!   ciphers, so there is nothing to turn off.
//! - ALPN offers `http/1.1` only: a client that offers ALPN without it (an
//!   `h2`-only client) is refused in the handshake, as RFC 7301 asks, rather
//!   than answered in a protocol it did not choose. `h2` joins the list when
//!   the host speaks it.

use std::{path::PathBuf, sync::Arc, time::Duration};

use rustls::{
    server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier},
    sign::CertifiedKey,
    ServerConfig,
};

use crate::tls::certs::{load_pair, load_roots, Certificate};

/// The ALPN protocols offered, in order of preference.
pub const ALPN: &[&[u8]] = &[b"http/1.1"];
/// Default `--tls-handshake-timeout`, in seconds: a handshake that has not
/// completed by then is closed.
pub const DEFAULT_HANDSHAKE_TIMEOUT: u64 = 10;
/// Default `--tls-max-handshakes`: handshakes in progress one worker thread
/// holds; past it, a new connection closes the one whose handshake began
/// first (a client that stalls its handshake yields to one that completes).
pub const DEFAULT_MAX_HANDSHAKES: usize = 64;

/// Whether clients present certificates (`--client-cert`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ClientCert {
    /// None is asked for.
    None,
    /// Asked for; a client without one is served, one with a certificate
    /// `--ca-certs` does not vouch for is refused.
    Optional,
    /// Every client must present one `--ca-certs` vouches for.
    Required,
}

/// The lowest TLS version served (`--tls-min-version`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MinVersion {
    /// TLS 1.2 and 1.3.
    #[value(name = "1.2")]
    Tls12,
    /// TLS 1.3 only.
    #[value(name = "1.3")]
    Tls13,
}

/// The TLS flags, as the master reads files from them.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsOptions {
    /// Certificate chain files, paired in order with `keys`.
    pub certs: Vec<PathBuf>,
    /// Private key files.
    pub keys: Vec<PathBuf>,
    /// CA certificates that vouch for client certificates.
    pub ca_certs: Option<PathBuf>,
    /// Whether clients present certificates.
    pub client_cert: ClientCert,
    /// The lowest version served.
    pub min_version: MinVersion,
    /// How long a handshake may take.
    pub handshake_timeout: Duration,
    /// Most handshakes in progress per worker thread.
    pub max_handshakes: usize,
}

/// What a worker serves TLS with: the rustls configuration and the
/// certificates it was built from (for the log and `/metrics`).
#[derive(Debug)]
pub struct TlsServer {
    /// The configuration every TLS connection of the worker starts from.
    pub config: Arc<ServerConfig>,
    /// The certificates, the first being the default.
    pub certificates: Vec<Certificate>,
    /// How long a handshake may take.
    pub handshake_timeout: Duration,
    /// Most handshakes in progress per worker thread.
    pub max_handshakes: usize,
}

impl TlsServer {
    /// Reads and checks every file the options name (at `now`, seconds
    /// since the epoch) and builds the configuration; or says, in one line,
    /// what is wrong.
    pub fn load(options: &TlsOptions, now: i64) -> Result<TlsServer, String> {
        if options.certs.is_empty() {
            return Err("TLS listeners need a certificate: --certfile and --keyfile".into());
        }
        if options.certs.len() != options.keys.len() {
            return Err(format!(
                "{} --certfile but {} --keyfile: give them in pairs, each key after its certificate",
                options.certs.len(),
                options.keys.len()
            ));
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut certificates = Vec::with_capacity(options.certs.len());
        for (cert, key) in options.certs.iter().zip(&options.keys) {
            certificates.push(load_pair(cert, key, &provider, now)?);
        }
        let versions: &[&rustls::SupportedProtocolVersion] = match options.min_version {
            MinVersion::Tls12 => rustls::ALL_VERSIONS,
            MinVersion::Tls13 => &[&rustls::version::TLS13],
        };
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(versions)
            .map_err(|e| format!("TLS versions: {e}"))?;
        let builder = match (options.client_cert, &options.ca_certs) {
            (ClientCert::None, _) => builder.with_no_client_auth(),
            (_, None) => {
                return Err("--client-cert optional|required needs --ca-certs".into());
            }
            (mode, Some(ca)) => {
                let roots = Arc::new(load_roots(ca)?);
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(roots, Arc::clone(&provider));
                let verifier = if mode == ClientCert::Optional {
                    verifier.allow_unauthenticated()
                } else {
                    verifier
                };
                let verifier = verifier
                    .build()
                    .map_err(|e| format!("--ca-certs {}: {e}", ca.display()))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let resolver = ByName::new(&certificates);
        let mut config = builder.with_cert_resolver(Arc::new(resolver));
        config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
        Ok(TlsServer {
            config: Arc::new(config),
            certificates,
            handshake_timeout: options.handshake_timeout,
            max_handshakes: options.max_handshakes,
        })
    }

    /// One line per certificate, for the log: its file, subject, names and expiry.
    pub fn describe(&self) -> Vec<String> {
        self.certificates
            .iter()
            .map(|c| {
                let expires = time::OffsetDateTime::from_unix_timestamp(c.not_after)
                    .map(|t| t.date().to_string())
                    .unwrap_or_else(|_| c.not_after.to_string());
                format!(
                    "TLS certificate {}: {} (names: {}), expires {expires}",
                    c.file,
                    c.subject,
                    if c.names.is_empty() {
                        "none".to_owned()
                    } else {
                        c.names.join(", ")
                    }
                )
            })
            .collect()
    }
}

/// Picks the certificate for a connection by the name it asks for (SNI):
/// the first certificate that names it exactly, else the first whose
/// wildcard covers it, else the first certificate (the default, which a
/// client without SNI also gets).
#[derive(Debug)]
struct ByName {
    /// Each certificate's names, in the order given.
    names: Vec<Vec<String>>,
    keys: Vec<Arc<CertifiedKey>>,
}

impl ByName {
    fn new(certificates: &[Certificate]) -> ByName {
        ByName {
            names: certificates.iter().map(|c| c.names.clone()).collect(),
            keys: certificates.iter().map(|c| Arc::clone(&c.key)).collect(),
        }
    }

    /// The index of the certificate for `sni`.
    fn pick(&self, sni: Option<&str>) -> usize {
        let Some(sni) = sni else { return 0 };
        let sni = sni.trim_end_matches('.');
        if let Some(i) = self
            .names
            .iter()
            .position(|names| names.iter().any(|n| n.eq_ignore_ascii_case(sni)))
        {
            return i;
        }
        self.names
            .iter()
            .position(|names| names.iter().any(|n| wildcard_covers(n, sni)))
            .unwrap_or(0)
    }
}

impl ResolvesServerCert for ByName {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.keys.get(self.pick(hello.server_name())).cloned()
    }
}

/// Whether the certificate name `pattern` (`*.example.com`) covers `name`:
/// the wildcard stands for exactly one label, as RFC 6125 has it.
fn wildcard_covers(pattern: &str, name: &str) -> bool {
    let Some(suffix) = pattern.strip_prefix("*.") else {
        return false;
    };
    match name.split_once('.') {
        Some((label, rest)) => !label.is_empty() && rest.eq_ignore_ascii_case(suffix),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_cover_one_label() {
        for (pattern, name, covers) in [
            ("*.example.com", "a.example.com", true),
            ("*.example.com", "A.Example.COM", true),
            ("*.example.com", "example.com", false),
            ("*.example.com", "a.b.example.com", false),
            ("*.example.com", ".example.com", false),
            ("example.com", "example.com", false),
            ("*.example.com", "aexample.com", false),
        ] {
            assert_eq!(wildcard_covers(pattern, name), covers, "{pattern} {name}");
        }
    }

    #[test]
    fn sni_picks_exact_then_wildcard_then_the_first() {
        let by = ByName {
            names: vec![
                vec!["default.test".into()],
                vec!["*.example.com".into()],
                vec!["api.example.com".into(), "other.test".into()],
            ],
            keys: Vec::new(),
        };
        for (sni, want) in [
            (None, 0),
            (Some("default.test"), 0),
            (Some("api.example.com"), 2),
            (Some("API.example.com."), 2),
            (Some("www.example.com"), 1),
            (Some("other.test"), 2),
            (Some("unknown.test"), 0),
        ] {
            assert_eq!(by.pick(sni), want, "{sni:?}");
        }
    }
}
