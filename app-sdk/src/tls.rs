//! What an app learns of the TLS session a request arrived on: the protocol
//! version, cipher suite, SNI name, ALPN protocol and the client
//! certificate's subject, when the host terminated TLS itself
//! (`--bind tls://…`).
//!
//! [`Request::tls`](crate::Request::tls) gives a borrowed [`TlsInfo`] (no
//! copy, valid for the call); [`OwnedTlsInfo`] is its owned, `Clone +
//! Send + Sync` copy, the one the `http` feature puts in an
//! [`http::Request`](https://docs.rs/http)'s extensions (so an axum
//! handler takes it as `Option<Extension<OwnedTlsInfo>>`) and the one
//! `testing::TestRequest::tls` takes.
//!
//! `None` means the host saw no TLS: a plain connection, TLS terminated by
//! a proxy in front (then [`Request::scheme`](crate::Request::scheme) may
//! still say `https`, as the trusted proxy says), or a host older than
//! app-sdk 0.2.1, which does not pass TLS facts (ABI revision 1).

use crate::abi::{read_table, RawTls, RAW_TLS_MIN};

/// The TLS facts of the connection a request arrived on, borrowed for the
/// call: what [`Request::tls`](crate::Request::tls) gives.
///
/// `None` there means the host saw no TLS: a plain connection, TLS
/// terminated by a proxy in front (then
/// [`Request::scheme`](crate::Request::scheme) may still say `https`, as the
/// trusted proxy says), or a host older than app-sdk 0.2.1, which passes no
/// TLS facts (ABI revision 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlsInfo<'a> {
    version: &'a str,
    cipher: &'a str,
    sni: &'a str,
    alpn: &'a str,
    client_subject: &'a str,
}

/// `Some(text)` unless `text` is empty (the ABI's "not sent").
fn present(text: &str) -> Option<&str> {
    (!text.is_empty()).then_some(text)
}

impl<'a> TlsInfo<'a> {
    /// Reads the host's TLS table, if it gave one.
    ///
    /// # Safety
    /// `p` is null or points at a live [`RawTls`], readable for the bytes
    /// its `size` says, whose strings live for `'a`
    /// ([`RawRequest::tls`](crate::abi::RawRequest::tls)'s contract).
    pub(crate) unsafe fn from_raw(p: *const RawTls<'a>) -> Option<TlsInfo<'a>> {
        if p.is_null() {
            return None;
        }
        // SAFETY: per the contract, a live size-prefixed table; one shorter
        // than RAW_TLS_MIN is refused, fields past it (none yet) are valid
        // when zero.
        let raw = unsafe { read_table(p, RAW_TLS_MIN) }?;
        Some(TlsInfo {
            version: raw.version.as_str(),
            cipher: raw.cipher.as_str(),
            sni: raw.sni.as_str(),
            alpn: raw.alpn.as_str(),
            client_subject: raw.client_subject.as_str(),
        })
    }

    /// The protocol version: `TLSv1.2` or `TLSv1.3`.
    pub fn version(&self) -> &'a str {
        self.version
    }

    /// The cipher suite's IANA name, e.g. `TLS13_AES_128_GCM_SHA256`.
    pub fn cipher(&self) -> &'a str {
        self.cipher
    }

    /// The server name the client asked for (SNI); `None` when it sent none
    /// (a client connecting by IP address sends none).
    pub fn sni(&self) -> Option<&'a str> {
        present(self.sni)
    }

    /// The application protocol agreed by ALPN (`http/1.1`); `None` when the
    /// client offered none.
    pub fn alpn(&self) -> Option<&'a str> {
        present(self.alpn)
    }

    /// The client certificate's subject, in RFC 4514 form (`CN=alice,O=Example`);
    /// `None` when the client sent no certificate. The host checked the
    /// certificate against its `--ca-certs` before the request was read.
    pub fn client_subject(&self) -> Option<&'a str> {
        present(self.client_subject)
    }

    /// An owned copy, for keeping past the call or sending to another thread.
    pub fn into_owned(self) -> OwnedTlsInfo {
        OwnedTlsInfo {
            version: self.version.to_owned(),
            cipher: self.cipher.to_owned(),
            sni: self.sni().map(str::to_owned),
            alpn: self.alpn().map(str::to_owned),
            client_subject: self.client_subject().map(str::to_owned),
        }
    }
}

/// An owned copy of a request's [`TlsInfo`] (`Clone + Send + Sync`): what
/// the `http` feature puts in an `http::Request`'s extensions (an axum
/// handler takes it as `Option<Extension<OwnedTlsInfo>>`), and what a test
/// gives `testing::TestRequest::tls` (feature `testing`).
///
/// ```
/// use app_sdk::OwnedTlsInfo;
///
/// let tls = OwnedTlsInfo::new("TLSv1.3", "TLS13_AES_128_GCM_SHA256")
///     .with_sni("example.test")
///     .with_alpn("http/1.1");
/// assert_eq!(tls.sni(), Some("example.test"));
/// assert_eq!(tls.client_subject(), None);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OwnedTlsInfo {
    version: String,
    cipher: String,
    sni: Option<String>,
    alpn: Option<String>,
    client_subject: Option<String>,
}

impl OwnedTlsInfo {
    /// TLS facts with a protocol version and a cipher suite, no SNI name,
    /// no ALPN protocol and no client certificate.
    pub fn new(version: impl Into<String>, cipher: impl Into<String>) -> OwnedTlsInfo {
        OwnedTlsInfo {
            version: version.into(),
            cipher: cipher.into(),
            sni: None,
            alpn: None,
            client_subject: None,
        }
    }

    /// With the server name the client asked for.
    pub fn with_sni(mut self, name: impl Into<String>) -> OwnedTlsInfo {
        self.sni = Some(name.into()).filter(|n| !n.is_empty());
        self
    }

    /// With the application protocol ALPN agreed.
    pub fn with_alpn(mut self, protocol: impl Into<String>) -> OwnedTlsInfo {
        self.alpn = Some(protocol.into()).filter(|p| !p.is_empty());
        self
    }

    /// With a client certificate whose subject is `subject` (RFC 4514 form).
    pub fn with_client_subject(mut self, subject: impl Into<String>) -> OwnedTlsInfo {
        self.client_subject = Some(subject.into()).filter(|s| !s.is_empty());
        self
    }

    /// The protocol version: `TLSv1.2` or `TLSv1.3`.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The cipher suite's IANA name.
    pub fn cipher(&self) -> &str {
        &self.cipher
    }

    /// The server name the client asked for (SNI), if it sent one.
    pub fn sni(&self) -> Option<&str> {
        self.sni.as_deref()
    }

    /// The application protocol agreed by ALPN, if any.
    pub fn alpn(&self) -> Option<&str> {
        self.alpn.as_deref()
    }

    /// The client certificate's subject (RFC 4514 form), if the client sent one.
    pub fn client_subject(&self) -> Option<&str> {
        self.client_subject.as_deref()
    }

    /// The borrowed view of these facts.
    pub fn as_info(&self) -> TlsInfo<'_> {
        TlsInfo {
            version: &self.version,
            cipher: &self.cipher,
            sni: self.sni.as_deref().unwrap_or(""),
            alpn: self.alpn.as_deref().unwrap_or(""),
            client_subject: self.client_subject.as_deref().unwrap_or(""),
        }
    }
}

impl From<TlsInfo<'_>> for OwnedTlsInfo {
    fn from(info: TlsInfo<'_>) -> OwnedTlsInfo {
        info.into_owned()
    }
}

#[cfg(test)]
mod tests {
    use abi_stable::std_types::RStr;

    use super::*;
    use crate::abi::size_u32;

    fn raw<'a>(sni: &'a str, alpn: &'a str, subject: &'a str) -> RawTls<'a> {
        RawTls {
            size: size_u32::<RawTls<'_>>(),
            _reserved: 0,
            version: RStr::from_str("TLSv1.3"),
            cipher: RStr::from_str("TLS13_AES_256_GCM_SHA384"),
            sni: RStr::from_str(sni),
            alpn: RStr::from_str(alpn),
            client_subject: RStr::from_str(subject),
        }
    }

    #[test]
    fn empty_text_reads_as_not_sent() {
        // (sni, alpn, subject) as the host sends them → what the app sees.
        type Seen<'a> = (Option<&'a str>, Option<&'a str>, Option<&'a str>);
        let cases: [((&str, &str, &str), Seen<'_>); 3] = [
            (("", "", ""), (None, None, None)),
            (
                ("a.test", "http/1.1", "CN=alice"),
                (Some("a.test"), Some("http/1.1"), Some("CN=alice")),
            ),
            (
                ("a.test", "", "CN=bob"),
                (Some("a.test"), None, Some("CN=bob")),
            ),
        ];
        for ((sni, alpn, subject), seen) in cases {
            let table = raw(sni, alpn, subject);
            // SAFETY: a live RawTls of this SDK's size, for the block.
            let info = unsafe { TlsInfo::from_raw(&table) }.unwrap();
            assert_eq!(info.version(), "TLSv1.3");
            assert_eq!(info.cipher(), "TLS13_AES_256_GCM_SHA384");
            assert_eq!((info.sni(), info.alpn(), info.client_subject()), seen);
            let owned = info.into_owned();
            assert_eq!(
                (owned.sni(), owned.alpn(), owned.client_subject()),
                seen,
                "owned"
            );
            assert_eq!(owned.as_info(), info);
        }
    }

    #[test]
    fn no_table_and_a_short_table_read_as_none() {
        // SAFETY: null is allowed.
        assert_eq!(unsafe { TlsInfo::from_raw(std::ptr::null()) }, None);
        let mut short = raw("", "", "");
        short.size = RAW_TLS_MIN as u32 - 1;
        // SAFETY: a live table; its size says it is too short, so nothing
        // past its size is read.
        assert_eq!(unsafe { TlsInfo::from_raw(&short) }, None);
    }

    #[test]
    fn the_builder_treats_empty_as_absent() {
        let tls = OwnedTlsInfo::new("TLSv1.2", "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256")
            .with_sni("")
            .with_alpn("h2")
            .with_client_subject("");
        assert_eq!(tls.sni(), None);
        assert_eq!(tls.alpn(), Some("h2"));
        assert_eq!(tls.client_subject(), None);
        assert_eq!(tls.version(), "TLSv1.2");
    }
}
