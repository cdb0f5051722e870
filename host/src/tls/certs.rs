//! Certificates and keys: read from PEM files by the master, checked before
//! they serve, and summarised for the log and `/metrics`.
//!
//! The master reads the files (before any worker drops to `--user`, so a key
//! readable by root alone works) and workers inherit the parsed keys through
//! fork. A pair is checked as a whole before it replaces the running one
//! (at start and on HUP): the key must match the first certificate, each
//! certificate in the file must be signed by the next one (the chain is in
//! order, leaf first), and every certificate must be valid now. A pair that
//! fails is refused with a one-line reason naming the file.

use std::{path::Path, sync::Arc};

use rustls::{
    crypto::CryptoProvider,
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer},
    sign::CertifiedKey,
};
use x509_parser::{certificate::X509Certificate, extensions::GeneralName, prelude::FromDer};

/// Most certificates one chain file may hold (a leaf and its intermediates
/// are two or three; this only bounds a wrong file).
pub const MAX_CHAIN: usize = 16;

/// A certificate (with its chain) and its key, checked and ready to serve.
#[derive(Debug, Clone)]
pub struct Certificate {
    /// The chain and the key, as rustls signs with them.
    pub key: Arc<CertifiedKey>,
    /// The names the leaf is valid for (its DNS subject alternative names,
    /// lower case; wildcards as `*.example.com`), for SNI.
    pub names: Vec<String>,
    /// The leaf's subject (RFC 4514 form), for the log and `/metrics`.
    pub subject: String,
    /// The leaf's expiry, in seconds since the Unix epoch.
    pub not_after: i64,
    /// The certificate file it came from.
    pub file: String,
}

/// Reads the certificate chain `cert_file` and the private key `key_file`
/// (PEM), checks them as a pair at `now` (seconds since the epoch), and
/// returns them ready to serve, or why not in one line.
pub fn load_pair(
    cert_file: &Path,
    key_file: &Path,
    provider: &CryptoProvider,
    now: i64,
) -> Result<Certificate, String> {
    let shown = cert_file.display();
    let cert_pem = std::fs::read(cert_file).map_err(|e| format!("cannot read {shown}: {e}"))?;
    let key_pem =
        std::fs::read(key_file).map_err(|e| format!("cannot read {}: {e}", key_file.display()))?;
    let chain = parse_chain(&cert_pem).map_err(|e| format!("{shown}: {e}"))?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| format!("{}: no private key in PEM form ({e})", key_file.display()))?;
    let summary = check_chain(&chain, now).map_err(|e| format!("{shown}: {e}"))?;
    let key = CertifiedKey::from_der(chain, key, provider)
        .map_err(|e| format!("{} does not go with {shown}: {e}", key_file.display()))?;
    // `from_der` lets a key it cannot compare through; insist.
    key.keys_match()
        .map_err(|e| format!("{} does not go with {shown}: {e}", key_file.display()))?;
    Ok(Certificate {
        key: Arc::new(key),
        names: summary.names,
        subject: summary.subject,
        not_after: summary.not_after,
        file: shown.to_string(),
    })
}

/// Reads the CA certificates of `file` (PEM) that client certificates are
/// checked against (`--ca-certs`).
pub fn load_roots(file: &Path) -> Result<rustls::RootCertStore, String> {
    let shown = file.display();
    let pem = std::fs::read(file).map_err(|e| format!("cannot read {shown}: {e}"))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| format!("{shown}: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("{shown}: not a CA certificate rustls can use: {e}"))?;
    }
    if roots.is_empty() {
        return Err(format!("{shown}: no certificate in PEM form"));
    }
    Ok(roots)
}

/// The certificates of a PEM chain file, leaf first.
fn parse_chain(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let mut chain = Vec::new();
    for cert in CertificateDer::pem_slice_iter(pem) {
        chain.push(cert.map_err(|e| e.to_string())?);
        if chain.len() > MAX_CHAIN {
            return Err(format!("more than {MAX_CHAIN} certificates"));
        }
    }
    if chain.is_empty() {
        return Err("no certificate in PEM form".into());
    }
    Ok(chain)
}

/// What the checks learn of the leaf.
struct Summary {
    names: Vec<String>,
    subject: String,
    not_after: i64,
}

/// Checks a chain: every certificate parses and is valid at `now`, and each
/// is signed by the next (leaf first; the last may be an intermediate whose
/// issuer the client has).
fn check_chain(chain: &[CertificateDer<'_>], now: i64) -> Result<Summary, String> {
    let mut parsed = Vec::with_capacity(chain.len());
    for (i, der) in chain.iter().enumerate() {
        let (_, cert) = X509Certificate::from_der(der.as_ref())
            .map_err(|e| format!("certificate {} of the chain does not parse: {e}", i + 1))?;
        parsed.push(cert);
    }
    for (i, cert) in parsed.iter().enumerate() {
        let validity = cert.validity();
        let what = if i == 0 {
            "the certificate".to_owned()
        } else {
            format!("certificate {} of the chain ({})", i + 1, cert.subject())
        };
        if now > validity.not_after.timestamp() {
            return Err(format!("{what} expired on {}", validity.not_after));
        }
        if now < validity.not_before.timestamp() {
            return Err(format!(
                "{what} is not valid before {}",
                validity.not_before
            ));
        }
    }
    for pair in parsed.windows(2) {
        let (cert, issuer) = (&pair[0], &pair[1]);
        if cert.issuer() != issuer.subject() {
            return Err(format!(
                "the chain is out of order: {} is issued by {}, but the next certificate is {}",
                cert.subject(),
                cert.issuer(),
                issuer.subject()
            ));
        }
        cert.verify_signature(Some(issuer.public_key()))
            .map_err(|e| {
                format!(
                    "{} is not signed by the next certificate ({}): {e}",
                    cert.subject(),
                    issuer.subject()
                )
            })?;
    }
    let leaf = &parsed[0];
    let mut names = Vec::new();
    if let Ok(Some(san)) = leaf.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::DNSName(dns) = name {
                names.push(dns.to_ascii_lowercase());
            }
        }
    }
    Ok(Summary {
        names,
        subject: leaf.subject().to_string(),
        not_after: leaf.validity().not_after.timestamp(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_or_foreign_file_is_refused() {
        assert!(parse_chain(b"").is_err());
        assert!(parse_chain(b"hello\n").is_err());
        let key_only = b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        assert!(parse_chain(key_only).is_err());
    }
}
