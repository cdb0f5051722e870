//! Fuzz target: the host's TLS driving code (`tls::session::Link`) fed
//! arbitrary bytes as a client's, through a real socket pair, in pieces.
//!
//! rustls parses the bytes; what is the host's own is the loop around it:
//! draining plaintext, feeding the socket's bytes, writing what rustls
//! answers, and telling the end of the stream from "nothing yet". It must
//! never panic, never spin (every call either consumes bytes, or says
//! `WouldBlock`, the end, or an error), and never yield application data:
//! no bytes can complete a handshake whose server random they never saw.
#![no_main]

use std::{
    io::{ErrorKind, Read, Write},
    os::{fd::AsFd, unix::net::UnixStream},
    sync::{Arc, OnceLock},
};

use host::internals::tls::session::TlsSession;
use libfuzzer_sys::fuzz_target;
use rustls::{
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer},
    ServerConfig,
};

/// A fixed self-signed certificate for `fuzz.test` (ECDSA P-256).
const CERT: &[u8] = include_bytes!("../tls/cert.pem");
const KEY: &[u8] = include_bytes!("../tls/key.pem");

fn config() -> &'static Arc<ServerConfig> {
    static CONFIG: OnceLock<Arc<ServerConfig>> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(CERT)
            .collect::<Result<_, _>>()
            .expect("the fuzz certificate");
        let key = PrivateKeyDer::from_pem_slice(KEY).expect("the fuzz key");
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("config");
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, data)) = data.split_first() else {
        return;
    };
    let split = usize::from(split).max(1);
    let (server, mut client) = UnixStream::pair().expect("a socket pair");
    server.set_nonblocking(true).expect("non-blocking");
    client.set_nonblocking(true).expect("non-blocking");
    let mut session = TlsSession::new(config()).expect("a session");
    let mut plaintext = Vec::new();
    let mut answer = [0u8; 65536];
    let mut failed = false;
    for piece in data.chunks(split) {
        if client.write_all(piece).is_err() {
            break;
        }
        // Each call consumes what is there or says why not; a bound that
        // can only be hit by a loop that spins.
        for _ in 0..=piece.len() + 2 {
            match session
                .link()
                .read_into(server.as_fd(), &mut plaintext, 16 * 1024)
            {
                Ok(0) => break,
                Ok(_) => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        // What the server answered (its flight, an alert) is read away, so
        // its writes never fill the pair.
        while matches!(client.read(&mut answer), Ok(n) if n > 0) {}
        if failed {
            break;
        }
    }
    if !failed {
        // The client's end of the stream.
        let _ = client.shutdown(std::net::Shutdown::Write);
        for _ in 0..4 {
            let _ = session
                .link()
                .read_into(server.as_fd(), &mut plaintext, 16 * 1024);
        }
        let _ = session.link().flush(server.as_fd());
    }
    assert!(
        plaintext.is_empty(),
        "application data without a handshake: {} bytes",
        plaintext.len()
    );
});
