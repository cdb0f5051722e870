//! The access log: where lines go, and what each line says.
//!
//! The master opens the target before it forks (workers inherit the
//! descriptor, in append mode) and each worker writes one line per request
//! with a single `write`, so lines from many workers never interleave. The
//! format is Apache's combined format by default, a Gunicorn-style format
//! string of `%(atom)s` items, or JSON lines. Nothing here runs when the
//! access log is off.

use std::{
    fs::{File, OpenOptions},
    io,
    os::fd::{AsFd, OwnedFd},
    path::Path,
    str::FromStr,
};

/// Apache's combined format, in Gunicorn's atoms (the default).
pub const COMBINED: &str = r#"%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s""#;
/// The `--access-logformat` value that selects JSON lines.
pub const JSON: &str = "json";

/// Where access-log lines go.
#[derive(Debug)]
pub struct AccessLogTarget {
    fd: OwnedFd,
}

impl AccessLogTarget {
    /// Opens `--access-logfile PATH` for appending; `-` is standard output (a
    /// copy of it, so workers can point their own stdout elsewhere).
    pub fn open(path: &Path) -> io::Result<AccessLogTarget> {
        let fd = if path == Path::new("-") {
            io::stdout().as_fd().try_clone_to_owned()?
        } else {
            OwnedFd::from(OpenOptions::new().create(true).append(true).open(path)?)
        };
        Ok(AccessLogTarget { fd })
    }

    /// Writes one whole line with a single `write` (atomic for O_APPEND files).
    pub fn write_line(&self, line: &[u8]) {
        let _ = nix::unistd::write(&self.fd, line);
    }
}

impl From<File> for AccessLogTarget {
    fn from(file: File) -> Self {
        AccessLogTarget {
            fd: OwnedFd::from(file),
        }
    }
}

/// What the access log can say about one request.
///
/// An empty `method` means the request line is unknown (a request refused
/// before its head could be read): the method, path, version and request
/// line are then written `-` (`null` in JSON).
pub struct AccessEntry<'a> {
    /// The client address (the proxy's word when trusted).
    pub remote: &'a str,
    /// The method.
    pub method: &'a [u8],
    /// The request-target as received.
    pub target: &'a [u8],
    /// The path part of the target.
    pub path: &'a [u8],
    /// The query part of the target.
    pub query: &'a [u8],
    /// `HTTP/1.0` or `HTTP/1.1`.
    pub version: &'a str,
    /// The response status.
    pub status: u16,
    /// Body bytes sent.
    pub bytes: u64,
    /// Time from the complete request to the end of the response, in microseconds.
    pub micros: u64,
    /// The request id.
    pub request_id: &'a str,
    /// Finds a request header by (lower-case) name.
    pub request_header: &'a dyn Fn(&str) -> Option<&'a [u8]>,
    /// The app's response header lines (`Name: value\r\n` each).
    pub response_headers: &'a [u8],
    /// The time in Common Log Format (`24/Nov/2026:20:22:38 +0000`).
    pub clf_time: &'a str,
    /// The time in ISO 8601 for JSON (`2026-11-24T20:22:38Z`).
    pub iso_time: &'a str,
}

/// One item of a format string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Atom {
    /// Literal text.
    Text(String),
    /// `h` remote address.
    Remote,
    /// `l`, `u`: always `-`.
    Dash,
    /// `t` `[time]`.
    Time,
    /// `r` request line.
    RequestLine,
    /// `m` method.
    Method,
    /// `U` path.
    Path,
    /// `q` query.
    Query,
    /// `H` protocol.
    Version,
    /// `s` status.
    Status,
    /// `B` bytes; `b` bytes or `-`.
    Bytes {
        /// Write `-` for an empty body (`b`).
        dash_for_zero: bool,
    },
    /// `f` referer.
    Referer,
    /// `a` user agent.
    UserAgent,
    /// `D` microseconds; `M` milliseconds; `T` seconds; `L` decimal seconds.
    Duration(DurationUnit),
    /// `p` worker pid.
    Pid,
    /// `{name}i` request header.
    RequestHeader(String),
    /// `{name}o` response header.
    ResponseHeader(String),
    /// `{request_id}` or `R`: the request id.
    RequestId,
}

/// How a duration atom shows the time taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DurationUnit {
    /// Whole microseconds (`%(D)s`).
    Micros,
    /// Whole milliseconds (`%(M)s`).
    Millis,
    /// Whole seconds (`%(T)s`).
    Seconds,
    /// Seconds with six decimals (`%(L)s`).
    Decimal,
}

/// A parsed `--access-logformat`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessFormat {
    /// A format string of atoms.
    Atoms(Vec<Atom>),
    /// One JSON object per line.
    Json,
}

impl Default for AccessFormat {
    fn default() -> Self {
        COMBINED.parse().unwrap_or(AccessFormat::Json)
    }
}

impl FromStr for AccessFormat {
    type Err = String;

    /// `json`, or a string of text and `%(atom)s` items (Gunicorn's atoms).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == JSON {
            return Ok(AccessFormat::Json);
        }
        let mut atoms = Vec::new();
        let mut rest = s;
        while let Some(at) = rest.find("%(") {
            if at > 0 {
                atoms.push(Atom::Text(rest[..at].to_owned()));
            }
            let after = &rest[at + 2..];
            let end = after
                .find(")s")
                .ok_or_else(|| format!("unclosed `%(` in {s:?}: atoms look like %(h)s"))?;
            let name = &after[..end];
            atoms.push(atom(name).ok_or_else(|| format!("unknown access-log atom %({name})s"))?);
            rest = &after[end + 2..];
        }
        if !rest.is_empty() {
            atoms.push(Atom::Text(rest.to_owned()));
        }
        Ok(AccessFormat::Atoms(atoms))
    }
}

fn atom(name: &str) -> Option<Atom> {
    if let Some(header) = name.strip_prefix('{') {
        let (header, kind) = header.split_once('}')?;
        let header = header.to_ascii_lowercase();
        return match kind {
            "i" => Some(Atom::RequestHeader(header)),
            "o" => Some(Atom::ResponseHeader(header)),
            "" if header == "request_id" => Some(Atom::RequestId),
            _ => None,
        };
    }
    Some(match name {
        "h" => Atom::Remote,
        "l" | "u" => Atom::Dash,
        "t" => Atom::Time,
        "r" => Atom::RequestLine,
        "m" => Atom::Method,
        "U" => Atom::Path,
        "q" => Atom::Query,
        "H" => Atom::Version,
        "s" => Atom::Status,
        "B" => Atom::Bytes {
            dash_for_zero: false,
        },
        "b" => Atom::Bytes {
            dash_for_zero: true,
        },
        "f" => Atom::Referer,
        "a" => Atom::UserAgent,
        "D" => Atom::Duration(DurationUnit::Micros),
        "M" => Atom::Duration(DurationUnit::Millis),
        "T" => Atom::Duration(DurationUnit::Seconds),
        "L" => Atom::Duration(DurationUnit::Decimal),
        "p" => Atom::Pid,
        "R" => Atom::RequestId,
        _ => return None,
    })
}

impl AccessFormat {
    /// Appends the line for `e` to `out`, with its newline.
    pub fn write(&self, out: &mut Vec<u8>, e: &AccessEntry<'_>) {
        match self {
            AccessFormat::Atoms(atoms) => {
                for a in atoms {
                    write_atom(out, a, e);
                }
            }
            AccessFormat::Json => write_json(out, e),
        }
        out.push(b'\n');
    }
}

fn num(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

fn or_dash(out: &mut Vec<u8>, v: Option<&[u8]>) {
    match v {
        Some(v) if !v.is_empty() => escape_into(out, v),
        _ => out.push(b'-'),
    }
}

fn write_atom(out: &mut Vec<u8>, a: &Atom, e: &AccessEntry<'_>) {
    if e.method.is_empty()
        && matches!(
            a,
            Atom::RequestLine | Atom::Method | Atom::Path | Atom::Version
        )
    {
        // The request line is unknown.
        out.push(b'-');
        return;
    }
    match a {
        Atom::Text(t) => out.extend_from_slice(t.as_bytes()),
        Atom::Remote => or_dash(out, Some(e.remote.as_bytes())),
        Atom::Dash => out.push(b'-'),
        Atom::Time => {
            out.push(b'[');
            out.extend_from_slice(e.clf_time.as_bytes());
            out.push(b']');
        }
        Atom::RequestLine => {
            escape_into(out, e.method);
            out.push(b' ');
            escape_into(out, e.target);
            out.push(b' ');
            out.extend_from_slice(e.version.as_bytes());
        }
        Atom::Method => escape_into(out, e.method),
        Atom::Path => escape_into(out, e.path),
        Atom::Query => escape_into(out, e.query),
        Atom::Version => out.extend_from_slice(e.version.as_bytes()),
        Atom::Status => num(out, u64::from(e.status)),
        Atom::Bytes { dash_for_zero } => {
            if e.bytes == 0 && *dash_for_zero {
                out.push(b'-');
            } else {
                num(out, e.bytes);
            }
        }
        Atom::Referer => or_dash(out, (e.request_header)("referer")),
        Atom::UserAgent => or_dash(out, (e.request_header)("user-agent")),
        Atom::Duration(unit) => match unit {
            DurationUnit::Micros => num(out, e.micros),
            DurationUnit::Millis => num(out, e.micros / 1000),
            DurationUnit::Seconds => num(out, e.micros / 1_000_000),
            DurationUnit::Decimal => {
                num(out, e.micros / 1_000_000);
                out.push(b'.');
                let frac = e.micros % 1_000_000;
                let digits = itoa::Buffer::new().format(frac).len();
                out.extend(std::iter::repeat_n(b'0', 6 - digits));
                num(out, frac);
            }
        },
        Atom::Pid => num(out, u64::from(std::process::id())),
        Atom::RequestHeader(name) => or_dash(out, (e.request_header)(name)),
        Atom::ResponseHeader(name) => or_dash(out, response_header(e.response_headers, name)),
        Atom::RequestId => or_dash(out, Some(e.request_id.as_bytes())),
    }
}

/// The value of the response header `name` among `Name: value\r\n` lines.
fn response_header<'a>(lines: &'a [u8], name: &str) -> Option<&'a [u8]> {
    lines.split(|&b| b == b'\n').find_map(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let colon = line.iter().position(|&b| b == b':')?;
        line[..colon]
            .eq_ignore_ascii_case(name.as_bytes())
            .then(|| line[colon + 1..].trim_ascii())
    })
}

fn write_json(out: &mut Vec<u8>, e: &AccessEntry<'_>) {
    let field = |out: &mut Vec<u8>, key: &str, first: bool| {
        if !first {
            out.push(b',');
        }
        out.push(b'"');
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(b"\":");
    };
    let string = |out: &mut Vec<u8>, v: &[u8]| {
        out.push(b'"');
        json_escape_into(out, v);
        out.push(b'"');
    };
    // What the request line says, or null when it is unknown.
    let known = |out: &mut Vec<u8>, v: &[u8]| {
        if e.method.is_empty() {
            out.extend_from_slice(b"null");
        } else {
            string(out, v);
        }
    };
    out.push(b'{');
    field(out, "time", true);
    string(out, e.iso_time.as_bytes());
    field(out, "remote", false);
    string(out, e.remote.as_bytes());
    field(out, "method", false);
    known(out, e.method);
    field(out, "path", false);
    known(out, e.path);
    field(out, "query", false);
    known(out, e.query);
    field(out, "version", false);
    known(out, e.version.as_bytes());
    field(out, "status", false);
    num(out, u64::from(e.status));
    field(out, "bytes", false);
    num(out, e.bytes);
    field(out, "duration_us", false);
    num(out, e.micros);
    field(out, "request_id", false);
    string(out, e.request_id.as_bytes());
    for (key, header) in [("referer", "referer"), ("user_agent", "user-agent")] {
        field(out, key, false);
        match (e.request_header)(header) {
            Some(v) => string(out, v),
            None => out.extend_from_slice(b"null"),
        }
    }
    field(out, "pid", false);
    num(out, u64::from(std::process::id()));
    out.push(b'}');
}

/// Copies `bytes`, escaping quotes, backslashes and non-printable bytes so a
/// client cannot forge log lines.
fn escape_into(out: &mut Vec<u8>, bytes: &[u8]) {
    for &b in bytes {
        match b {
            b'"' | b'\\' => out.extend_from_slice(&[b'\\', b]),
            0x20..=0x7e => out.push(b),
            _ => hex_escape(out, b'x', b),
        }
    }
}

/// JSON string escaping; bytes outside printable ASCII become `\u00XX`.
fn json_escape_into(out: &mut Vec<u8>, bytes: &[u8]) {
    for &b in bytes {
        match b {
            b'"' | b'\\' => out.extend_from_slice(&[b'\\', b]),
            0x20..=0x7e => out.push(b),
            _ => {
                out.extend_from_slice(b"\\u00");
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(&[HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]);
            }
        }
    }
}

fn hex_escape(out: &mut Vec<u8>, kind: u8, b: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.extend_from_slice(&[b'\\', kind, HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry<'a>(headers: &'a dyn Fn(&str) -> Option<&'a [u8]>) -> AccessEntry<'a> {
        AccessEntry {
            remote: "127.0.0.1",
            method: b"GET",
            target: b"/x?\"y\"",
            path: b"/x",
            query: b"\"y\"",
            version: "HTTP/1.1",
            status: 200,
            bytes: 13,
            micros: 1_234_567,
            request_id: "abc123",
            request_header: headers,
            response_headers: b"Content-Type: text/plain\r\nX-Cache: hit\r\n",
            clf_time: "24/Nov/2026:20:22:38 +0000",
            iso_time: "2026-11-24T20:22:38Z",
        }
    }

    fn render(format: &str, e: &AccessEntry<'_>) -> String {
        let mut out = Vec::new();
        format.parse::<AccessFormat>().unwrap().write(&mut out, e);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn combined_is_the_default() {
        let ua = |n: &str| (n == "user-agent").then_some(&b"curl/8\n"[..]);
        let line = render(COMBINED, &entry(&ua));
        assert_eq!(
            line,
            "127.0.0.1 - - [24/Nov/2026:20:22:38 +0000] \"GET /x?\\\"y\\\" HTTP/1.1\" 200 13 \"-\" \"curl/8\\x0a\"\n"
        );
        assert_eq!(AccessFormat::default(), COMBINED.parse().unwrap());
    }

    #[test]
    fn every_atom() {
        let none = |_: &str| None;
        let line = render(
            "%(m)s %(U)s %(q)s %(H)s %(s)s %(B)s %(D)s %(M)s %(T)s %(L)s %(R)s %({x-cache}o)s %({x-missing}i)s",
            &entry(&none),
        );
        assert_eq!(
            line,
            "GET /x \\\"y\\\" HTTP/1.1 200 13 1234567 1234 1 1.234567 abc123 hit -\n"
        );
        assert!("%(zz)s".parse::<AccessFormat>().is_err());
        assert!("%(h".parse::<AccessFormat>().is_err());
    }

    #[test]
    fn an_unknown_request_line_is_a_dash() {
        let none = |_: &str| None;
        let mut e = entry(&none);
        (e.method, e.target, e.path, e.query, e.version) = (b"", b"", b"", b"", "");
        e.status = 400;
        assert_eq!(
            render(COMBINED, &e),
            "127.0.0.1 - - [24/Nov/2026:20:22:38 +0000] \"-\" 400 13 \"-\" \"-\"\n"
        );
        assert_eq!(render("%(m)s %(U)s %(H)s %(s)s", &e), "- - - 400\n");
        let line = render("json", &e);
        assert!(
            line.contains("\"method\":null,\"path\":null,\"query\":null,\"version\":null"),
            "{line}"
        );
    }

    #[test]
    fn json_lines_are_valid_json() {
        let none = |_: &str| None;
        let line = render("json", &entry(&none));
        assert!(
            line.starts_with("{\"time\":\"2026-11-24T20:22:38Z\",\"remote\":\"127.0.0.1\""),
            "{line}"
        );
        assert!(line.contains("\"query\":\"\\\"y\\\"\""), "{line}");
        assert!(
            line.contains("\"status\":200,\"bytes\":13,\"duration_us\":1234567"),
            "{line}"
        );
        assert!(line.contains("\"referer\":null"), "{line}");
        assert!(line.ends_with("}\n"));
    }
}
