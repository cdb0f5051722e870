//! A test CA and the certificates the TLS tests serve and present, made
//! with rcgen into a scratch directory (ECDSA P-256, as a real deployment's
//! would be), and the TLS client pieces the raw-socket tests use.
//!
//! `Pki::new(dir)` makes a CA (`ca.pem`); [`Pki::server`] a server
//! certificate for some names, its chain file (leaf, then an intermediate
//! CA) and its key; [`Pki::client`] a client certificate. Clients trust
//! `ca.pem` (curl `--cacert`, Python's `cafile`, `openssl -CAfile`).

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// A certificate file and its key file.
#[derive(Debug, Clone)]
pub struct Pair {
    /// The chain file (PEM, leaf first).
    pub cert: PathBuf,
    /// The key file (PEM).
    pub key: PathBuf,
    /// The base64 SHA-256 of the key's SubjectPublicKeyInfo, as Chromium's
    /// `--ignore-certificate-errors-spki-list` takes it.
    pub spki_sha256: String,
}

/// A test CA with an intermediate, in a directory.
pub struct Pki {
    dir: PathBuf,
    /// The root CA's certificate (PEM): what clients trust.
    pub ca: PathBuf,
    intermediate: CertifiedIssuer<'static, KeyPair>,
    /// Certificates made so far (for unique file names).
    made: std::cell::Cell<u32>,
}

impl Pki {
    /// A new CA (root and intermediate) whose files go in `dir`.
    pub fn new(dir: &Path) -> Pki {
        let mut root = CertificateParams::new(Vec::<String>::new()).expect("params");
        root.distinguished_name
            .push(DnType::CommonName, "host test root CA");
        root.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        root.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let root =
            CertifiedIssuer::self_signed(root, KeyPair::generate().expect("key")).expect("root CA");
        let mut mid = CertificateParams::new(Vec::<String>::new()).expect("params");
        mid.distinguished_name
            .push(DnType::CommonName, "host test intermediate CA");
        mid.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        mid.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let intermediate =
            CertifiedIssuer::signed_by(mid, KeyPair::generate().expect("key"), &root)
                .expect("intermediate CA");
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, root.pem()).expect("write ca.pem");
        Pki {
            dir: dir.to_path_buf(),
            ca,
            intermediate,
            made: std::cell::Cell::new(0),
        }
    }

    fn next_stem(&self, what: &str) -> PathBuf {
        let n = self.made.get() + 1;
        self.made.set(n);
        self.dir.join(format!("{what}-{n}"))
    }

    /// A server certificate for `names` (DNS names; its common name is the
    /// first), valid now.
    pub fn server(&self, names: &[&str]) -> Pair {
        self.server_with(names, |_| {})
    }

    /// A server certificate for `names`, its parameters changed by `change`
    /// first (an expired one, say).
    pub fn server_with(&self, names: &[&str], change: impl FnOnce(&mut CertificateParams)) -> Pair {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("params");
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().copied().unwrap_or("server"),
        );
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        change(&mut params);
        self.issue(params, "server")
    }

    /// A client certificate whose subject's common name is `cn`.
    pub fn client(&self, cn: &str) -> Pair {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(params, "client")
    }

    fn issue(&self, params: CertificateParams, what: &str) -> Pair {
        let key = KeyPair::generate().expect("key");
        let cert = params
            .signed_by(&key, &self.intermediate)
            .expect("certificate");
        let stem = self.next_stem(what);
        use base64::Engine;
        use rcgen::PublicKeyData;
        use sha2::Digest;
        let pair = Pair {
            cert: stem.with_extension("crt"),
            key: stem.with_extension("key"),
            spki_sha256: base64::engine::general_purpose::STANDARD
                .encode(sha2::Sha256::digest(key.subject_public_key_info())),
        };
        // The chain a server sends: the leaf, then the intermediate.
        std::fs::write(&pair.cert, cert.pem() + &self.intermediate.pem()).expect("write cert");
        std::fs::write(&pair.key, key.serialize_pem()).expect("write key");
        pair
    }

    /// A rustls client configuration that trusts this CA (for raw-socket tests).
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        use rustls::pki_types::{pem::PemObject, CertificateDer};
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(&self.ca).expect("ca.pem") {
            roots.add(cert.expect("ca cert")).expect("add root");
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        Arc::new(
            rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    }
}

/// Sends `request` over a TLS connection to `addr` (as `server_name`,
/// with `config`) and returns every byte the server sent until it closed.
pub fn exchange(
    addr: std::net::SocketAddr,
    config: Arc<rustls::ClientConfig>,
    server_name: &str,
    request: &[u8],
) -> std::io::Result<Vec<u8>> {
    use std::io::{Read, Write};
    let name = rustls::pki_types::ServerName::try_from(server_name.to_owned())
        .map_err(std::io::Error::other)?;
    let conn = rustls::ClientConnection::new(config, name).map_err(std::io::Error::other)?;
    let sock = std::net::TcpStream::connect(addr)?;
    sock.set_read_timeout(Some(std::time::Duration::from_secs(30)))?;
    let mut tls = rustls::StreamOwned::new(conn, sock);
    tls.write_all(request)?;
    tls.flush()?;
    let mut got = Vec::new();
    match tls.read_to_end(&mut got) {
        Ok(_) => Ok(got),
        // A server that closes without close_notify ends the stream too.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(got),
        Err(e) => Err(e),
    }
}

/// Starts the example app `app` on a TLS listener serving `pair` (first, so
/// it is `host.addr()`), with `extra` flags.
pub fn host(app: &str, pair: &Pair, extra: &[&str]) -> crate::Host {
    let cert = pair.cert.display().to_string();
    let key = pair.key.display().to_string();
    let mut args = vec![
        "-b",
        "tls://127.0.0.1:0",
        "--certfile",
        &cert,
        "--keyfile",
        &key,
    ];
    args.extend_from_slice(extra);
    crate::Host::app(app, &args)
}

/// curl over TLS to `path` on `addr` as `name` (resolved to the address,
/// so curl sends it as SNI), trusting `pki`'s CA, with `extra` options:
/// (exit code, body, stderr of `curl -v`).
pub fn curl(
    pki: &Pki,
    addr: std::net::SocketAddr,
    name: &str,
    path: &str,
    extra: &[&str],
) -> (i32, String, String) {
    let resolve = format!("{name}:{}:127.0.0.1", addr.port());
    let url = format!("https://{name}:{}{path}", addr.port());
    let ca = pki.ca.display().to_string();
    let mut args = vec!["-v", "--cacert", &ca, "--resolve", &resolve];
    args.extend_from_slice(extra);
    args.push(&url);
    crate::curl(&args)
}
