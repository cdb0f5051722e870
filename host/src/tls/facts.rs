//! What a request learns of its connection's TLS session: the facts the
//! app sees through the SDK (version, cipher, SNI name, ALPN protocol, the
//! client certificate's subject), borrowed from the session for the call.

/// The TLS facts of the connection a request arrived on (`None` on a
/// plain connection). Empty strings stand for "not sent" (no SNI name, no
/// ALPN protocol, no client certificate).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TlsFacts<'a> {
    /// The protocol version: `TLSv1.2` or `TLSv1.3`.
    pub version: &'static str,
    /// The cipher suite's IANA name, e.g. `TLS13_AES_128_GCM_SHA256`.
    pub cipher: &'static str,
    /// The server name the client asked for (SNI), if it sent one.
    pub sni: &'a str,
    /// The application protocol agreed by ALPN (`http/1.1`), if any.
    pub alpn: &'a str,
    /// The client certificate's subject (RFC 4514 form), when the client sent one.
    pub client_subject: &'a str,
}
