//! Request bodies: the chunked decoder and the `Content-Length` counter.
//!
//! The decoder is a byte-level state machine (RFC 9112 §7.1) that can be fed
//! any split of its input, so the worker decodes straight from its socket
//! buffers into the app's buffer without copying or buffering whole chunks.
//! It is strict: a size with a sign, spaces or more than 16 digits, a line
//! ending that is not CRLF, over-long extensions or trailers, and trailer
//! fields that only a header section may carry ([`FORBIDDEN_TRAILERS`]) are
//! errors, never guesses. A body that ends too early is the caller's error to
//! report.

use super::token::is_tchar;

/// Most bytes of chunk extensions on one chunk-size line.
pub const DEFAULT_MAX_CHUNK_EXT: usize = 4096;
/// Most bytes of the trailer section.
pub const DEFAULT_MAX_TRAILERS: usize = 8192;
/// Most hex digits of a chunk size (16 fill a u64).
const MAX_SIZE_DIGITS: u8 = 16;

/// Fields a trailer section must not carry, refused with 400.
///
/// RFC 9110 §6.5.1: a field whose meaning is needed before the content is
/// processed cannot come after it: "those that describe message framing,
/// routing, authentication, request modifiers, response controls, or content
/// format". A recipient that merged such a trailer into the header section
/// (or an app or proxy that read it there) would act on a value the host did
/// not see when it framed and routed the request. The groups are those RFC
/// 7230 §4.1.2 spelled out, with the fields RFC 9110 names for each; the
/// names are matched without regard to case.
pub const FORBIDDEN_TRAILERS: [&str; 35] = [
    // Message framing (RFC 9112 §6; `Trailer`, RFC 9110 §6.6.2).
    "Content-Length",
    "Transfer-Encoding",
    "Trailer",
    // Connection management and routing (RFC 9110 §7.2, §7.6, §7.8).
    "Host",
    "Connection",
    "Keep-Alive",
    "Proxy-Connection",
    "Upgrade",
    "TE",
    // Request modifiers: controls (RFC 9110 §10.1, RFC 9111 §5), preconditions
    // (RFC 9110 §13.1), range requests (RFC 9110 §14.2).
    "Cache-Control",
    "Expect",
    "Max-Forwards",
    "Pragma",
    "Range",
    "If-Match",
    "If-None-Match",
    "If-Modified-Since",
    "If-Unmodified-Since",
    "If-Range",
    // Authentication (RFC 9110 §11) and cookies (RFC 6265).
    "Authorization",
    "Proxy-Authorization",
    "WWW-Authenticate",
    "Proxy-Authenticate",
    "Cookie",
    "Set-Cookie",
    // Response control data (RFC 9110 §10.2, RFC 9111 §5).
    "Age",
    "Date",
    "Expires",
    "Location",
    "Retry-After",
    "Vary",
    "Warning",
    // How to process the content (RFC 9110 §8.4, §8.3, §14.4; framing above).
    "Content-Encoding",
    "Content-Type",
    "Content-Range",
];

/// The longest name in [`FORBIDDEN_TRAILERS`]: a trailer name longer than
/// this is allowed without comparing it.
const LONGEST_FORBIDDEN: usize = {
    let mut longest = 0;
    let mut i = 0;
    while i < FORBIDDEN_TRAILERS.len() {
        if FORBIDDEN_TRAILERS[i].len() > longest {
            longest = FORBIDDEN_TRAILERS[i].len();
        }
        i += 1;
    }
    longest
};

/// The entry of [`FORBIDDEN_TRAILERS`] that `name` is, in any case.
fn forbidden_trailer(name: &[u8]) -> Option<&'static str> {
    FORBIDDEN_TRAILERS
        .iter()
        .find(|f| f.len() == name.len() && f.as_bytes().eq_ignore_ascii_case(name))
        .copied()
}

/// Why a body could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// A chunk size that is not 1+ hex digits.
    #[error("invalid chunk size")]
    InvalidChunkSize,
    /// A chunk size too large for 64 bits.
    #[error("chunk size too large")]
    ChunkSizeOverflow,
    /// A line not ended by CRLF (or data not followed by CRLF).
    #[error("chunk framing without CRLF")]
    MissingCrlf,
    /// Chunk extensions over [`DEFAULT_MAX_CHUNK_EXT`].
    #[error("chunk extensions too large")]
    ExtensionTooLarge,
    /// Trailers over [`DEFAULT_MAX_TRAILERS`].
    #[error("trailers too large")]
    TrailerTooLarge,
    /// A trailer line that is not `name: value`.
    #[error("invalid trailer field")]
    InvalidTrailer,
    /// A field in [`FORBIDDEN_TRAILERS`] (named) in the trailer section.
    #[error("{0} is not allowed in a trailer (RFC 9110 §6.5.1)")]
    ForbiddenTrailer(&'static str),
    /// More decoded bytes than the body limit allows.
    #[error("body larger than the limit")]
    TooLarge,
}

impl BodyError {
    /// The status to refuse a request with when this is found before the app is called.
    pub fn status(&self) -> u16 {
        match self {
            BodyError::TooLarge => 413,
            _ => 400,
        }
    }
}

/// Progress of one [`ChunkedDecoder::decode`] call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoded {
    /// Input bytes used.
    pub consumed: usize,
    /// Body bytes written to the output.
    pub written: usize,
    /// The last chunk and the trailers have been read.
    pub done: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading the hex digits of a chunk size.
    Size { size: u64, digits: u8 },
    /// Whitespace after the size, before `;`.
    SizeSpace { size: u64 },
    /// Inside chunk extensions.
    Extension { size: u64 },
    /// After the CR of a size line.
    SizeLf { size: u64 },
    /// Inside chunk data.
    Data { left: u64 },
    /// After the data, expecting CR.
    DataCr,
    /// After the data's CR, expecting LF.
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart,
    /// Inside a trailer field's name.
    TrailerName,
    /// Inside a trailer field's value.
    TrailerValue,
    /// After the CR of a trailer line.
    TrailerLf,
    /// After the CR of the final empty line.
    EndLf,
    /// The body ended.
    Done,
}

/// Decodes a chunked body incrementally.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    max_body: u64,
    total: u64,
    extension_len: usize,
    trailer_len: usize,
    /// The start of the trailer field name being read (as much as fits).
    name: [u8; LONGEST_FORBIDDEN],
    /// Length of that name so far (it may be longer than `name` holds).
    name_len: usize,
}

impl ChunkedDecoder {
    /// A decoder that allows at most `max_body` decoded bytes.
    pub fn new(max_body: u64) -> Self {
        ChunkedDecoder {
            state: State::Size { size: 0, digits: 0 },
            max_body,
            total: 0,
            extension_len: 0,
            trailer_len: 0,
            name: [0; LONGEST_FORBIDDEN],
            name_len: 0,
        }
    }

    /// Whether the whole body has been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes from `src` into `dst`, stopping when `dst` is full, `src` is
    /// used up, or the body ends (the bytes after it are left alone).
    pub fn decode(&mut self, src: &[u8], dst: &mut [u8]) -> Result<Decoded, BodyError> {
        let mut read = 0;
        let mut written = 0;
        while read < src.len() {
            match self.state {
                State::Done => break,
                State::Data { left } => {
                    let room = dst.len() - written;
                    if room == 0 {
                        break;
                    }
                    let n = (left.min((src.len() - read) as u64) as usize).min(room);
                    dst[written..written + n].copy_from_slice(&src[read..read + n]);
                    read += n;
                    written += n;
                    self.total += n as u64;
                    let left = left - n as u64;
                    self.state = if left == 0 {
                        State::DataCr
                    } else {
                        State::Data { left }
                    };
                }
                _ => {
                    self.step(src[read])?;
                    read += 1;
                }
            }
        }
        Ok(Decoded {
            consumed: read,
            written,
            done: self.state == State::Done,
        })
    }

    /// Advances the framing state by one byte.
    fn step(&mut self, b: u8) -> Result<(), BodyError> {
        self.state = match self.state {
            State::Size { size, digits } => match b {
                b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                    if digits == MAX_SIZE_DIGITS {
                        return Err(BodyError::ChunkSizeOverflow);
                    }
                    let digit = (b as char).to_digit(16).unwrap_or(0) as u64;
                    let size = size
                        .checked_mul(16)
                        .and_then(|s| s.checked_add(digit))
                        .ok_or(BodyError::ChunkSizeOverflow)?;
                    State::Size {
                        size,
                        digits: digits + 1,
                    }
                }
                _ if digits == 0 => return Err(BodyError::InvalidChunkSize),
                b'\r' => State::SizeLf { size },
                b';' => self.begin_extension(size),
                b' ' | b'\t' => State::SizeSpace { size },
                b'\n' => return Err(BodyError::MissingCrlf),
                _ => return Err(BodyError::InvalidChunkSize),
            },
            State::SizeSpace { size } => match b {
                b' ' | b'\t' => State::SizeSpace { size },
                b';' => self.begin_extension(size),
                _ => return Err(BodyError::InvalidChunkSize),
            },
            State::Extension { size } => match b {
                b'\r' => State::SizeLf { size },
                b'\n' => return Err(BodyError::MissingCrlf),
                b'\t' | 0x20..=0x7e | 0x80..=0xff => {
                    self.extension_len += 1;
                    if self.extension_len > DEFAULT_MAX_CHUNK_EXT {
                        return Err(BodyError::ExtensionTooLarge);
                    }
                    State::Extension { size }
                }
                _ => return Err(BodyError::InvalidChunkSize),
            },
            State::SizeLf { size } => match b {
                b'\n' if size == 0 => State::TrailerStart,
                b'\n' => {
                    if self.total.saturating_add(size) > self.max_body {
                        return Err(BodyError::TooLarge);
                    }
                    State::Data { left: size }
                }
                _ => return Err(BodyError::MissingCrlf),
            },
            State::DataCr => match b {
                b'\r' => State::DataLf,
                _ => return Err(BodyError::MissingCrlf),
            },
            State::DataLf => match b {
                b'\n' => State::Size { size: 0, digits: 0 },
                _ => return Err(BodyError::MissingCrlf),
            },
            State::TrailerStart => match b {
                b'\r' => State::EndLf,
                b'\n' => return Err(BodyError::MissingCrlf),
                _ if is_tchar(b) => {
                    self.name_len = 0;
                    self.name_byte(b);
                    self.trailer_byte(State::TrailerName)?
                }
                _ => return Err(BodyError::InvalidTrailer),
            },
            State::TrailerName => match b {
                b':' => {
                    self.check_trailer_name()?;
                    self.trailer_byte(State::TrailerValue)?
                }
                _ if is_tchar(b) => {
                    self.name_byte(b);
                    self.trailer_byte(State::TrailerName)?
                }
                _ => return Err(BodyError::InvalidTrailer),
            },
            State::TrailerValue => match b {
                b'\r' => State::TrailerLf,
                b'\n' => return Err(BodyError::MissingCrlf),
                b'\t' | 0x20..=0x7e | 0x80..=0xff => self.trailer_byte(State::TrailerValue)?,
                _ => return Err(BodyError::InvalidTrailer),
            },
            State::TrailerLf => match b {
                b'\n' => State::TrailerStart,
                _ => return Err(BodyError::MissingCrlf),
            },
            State::EndLf => match b {
                b'\n' => State::Done,
                _ => return Err(BodyError::MissingCrlf),
            },
            State::Data { .. } | State::Done => self.state,
        };
        Ok(())
    }

    fn begin_extension(&mut self, size: u64) -> State {
        self.extension_len = 0;
        State::Extension { size }
    }

    /// Keeps byte `b` of a trailer field name (as much as a forbidden name needs).
    fn name_byte(&mut self, b: u8) {
        if let Some(slot) = self.name.get_mut(self.name_len) {
            *slot = b;
        }
        self.name_len += 1;
    }

    /// Refuses the trailer field name just read if it is forbidden there.
    fn check_trailer_name(&self) -> Result<(), BodyError> {
        match self.name.get(..self.name_len).and_then(forbidden_trailer) {
            Some(field) => Err(BodyError::ForbiddenTrailer(field)),
            None => Ok(()),
        }
    }

    fn trailer_byte(&mut self, next: State) -> Result<State, BodyError> {
        self.trailer_len += 1;
        if self.trailer_len > DEFAULT_MAX_TRAILERS {
            return Err(BodyError::TrailerTooLarge);
        }
        Ok(next)
    }
}

/// Counts down a `Content-Length` body.
#[derive(Debug, Clone, Copy)]
pub struct LengthBody {
    remaining: u64,
}

impl LengthBody {
    /// A body of `len` bytes.
    pub fn new(len: u64) -> Self {
        LengthBody { remaining: len }
    }

    /// How many of `available` bytes belong to the body; counts them as read.
    pub fn take(&mut self, available: usize) -> usize {
        let n = (available as u64).min(self.remaining) as usize;
        self.remaining -= n as u64;
        n
    }

    /// Whether the whole body was read.
    pub fn is_done(&self) -> bool {
        self.remaining == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes all of `input` in one call with a large output buffer.
    fn decode_all(input: &[u8]) -> Result<(Vec<u8>, usize, bool), BodyError> {
        let mut d = ChunkedDecoder::new(u64::MAX);
        let mut out = vec![0u8; input.len() + 16];
        let r = d.decode(input, &mut out)?;
        out.truncate(r.written);
        Ok((out, r.consumed, r.done))
    }

    /// Decodes `input` fed in pieces of `split` bytes, into outputs of `out_len` bytes.
    fn decode_pieces(
        input: &[u8],
        split: usize,
        out_len: usize,
    ) -> Result<(Vec<u8>, usize, bool), BodyError> {
        let mut d = ChunkedDecoder::new(u64::MAX);
        let mut body = Vec::new();
        let mut consumed = 0;
        let mut buf = vec![0u8; out_len];
        while consumed < input.len() && !d.is_done() {
            let end = (consumed + split).min(input.len());
            let mut piece = &input[consumed..end];
            while !piece.is_empty() {
                let r = d.decode(piece, &mut buf)?;
                body.extend_from_slice(&buf[..r.written]);
                consumed += r.consumed;
                piece = &piece[r.consumed..];
                if r.done || (r.consumed == 0 && r.written == 0) {
                    break;
                }
            }
            if d.is_done() {
                break;
            }
        }
        Ok((body, consumed, d.is_done()))
    }

    /// Wikipedia's example, with a trailer field allowed in trailers (its
    /// `Expires` is response control data, which RFC 9110 §6.5.1 forbids there).
    const RFC_EXAMPLE: &[u8] =
        b"4\r\nWiki\r\n5;ext=1\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nX-Checksum: 1\r\n\r\n";

    #[test]
    fn decodes_the_wikipedia_example() {
        let (body, consumed, done) = decode_all(RFC_EXAMPLE).unwrap();
        assert!(done);
        assert_eq!(consumed, RFC_EXAMPLE.len());
        assert_eq!(body, b"Wikipedia in\r\n\r\nchunks.");
    }

    #[test]
    fn every_split_gives_the_same_result() {
        let inputs: [&[u8]; 3] = [
            RFC_EXAMPLE,
            b"1\r\na\r\n10\r\n0123456789abcdef\r\n0\r\n\r\n",
            b"3;a=b;c\r\nabc\r\n0\r\nX-A: 1\r\nX-B: two words\r\n\r\n",
        ];
        for input in inputs {
            let whole = decode_all(input).unwrap();
            for split in 1..input.len() {
                for out_len in [1, 2, 3, 64] {
                    let pieces = decode_pieces(input, split, out_len).unwrap();
                    assert_eq!(pieces, whole, "split {split}, out {out_len}");
                }
            }
        }
    }

    #[test]
    fn leaves_the_next_request_alone() {
        let input = b"2\r\nhi\r\n0\r\n\r\nGET / HTTP/1.1\r\n";
        let (body, consumed, done) = decode_all(input).unwrap();
        assert!(done);
        assert_eq!(body, b"hi");
        assert_eq!(&input[consumed..], b"GET / HTTP/1.1\r\n");
    }

    #[test]
    fn rejects_bad_framing() {
        let cases: &[(&[u8], BodyError)] = &[
            (b"x\r\n", BodyError::InvalidChunkSize),
            (b"-1\r\n", BodyError::InvalidChunkSize),
            (b"+1\r\n", BodyError::InvalidChunkSize),
            (b" 1\r\n", BodyError::InvalidChunkSize),
            (b"0x1\r\n", BodyError::InvalidChunkSize),
            (b"\r\n", BodyError::InvalidChunkSize),
            (b"1 x\r\n", BodyError::InvalidChunkSize),
            (b"1\n", BodyError::MissingCrlf),
            (b"1\rX", BodyError::MissingCrlf),
            (b"1\r\naX", BodyError::MissingCrlf),
            (b"1\r\na\rX", BodyError::MissingCrlf),
            (b"1;a\n", BodyError::MissingCrlf),
            (b"10000000000000000\r\n", BodyError::ChunkSizeOverflow),
            (b"0\r\nbad header\r\n\r\n", BodyError::InvalidTrailer),
            (b"0\r\n: v\r\n\r\n", BodyError::InvalidTrailer),
            (b"0\r\nX: v\n", BodyError::MissingCrlf),
            (b"0\r\n\n", BodyError::MissingCrlf),
            (b"0\r\n\rX", BodyError::MissingCrlf),
        ];
        for (input, want) in cases {
            assert_eq!(
                decode_all(input).err(),
                Some(*want),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn forbidden_trailer_fields_are_refused_in_any_case() {
        for field in FORBIDDEN_TRAILERS {
            for name in [
                field.to_owned(),
                field.to_ascii_lowercase(),
                field.to_ascii_uppercase(),
            ] {
                let input = format!("1\r\na\r\n0\r\nX-Ok: 1\r\n{name}: v\r\n\r\n");
                assert_eq!(
                    decode_all(input.as_bytes()).err(),
                    Some(BodyError::ForbiddenTrailer(field)),
                    "{name}"
                );
                // Fed a byte at a time, too.
                assert_eq!(
                    decode_pieces(input.as_bytes(), 1, 1).err(),
                    Some(BodyError::ForbiddenTrailer(field)),
                    "{name}, byte by byte"
                );
            }
        }
        let e = decode_all(b"0\r\ncontent-length: 1\r\n\r\n").unwrap_err();
        assert_eq!(e.status(), 400);
        assert_eq!(
            e.to_string(),
            "Content-Length is not allowed in a trailer (RFC 9110 §6.5.1)"
        );
    }

    #[test]
    fn other_trailer_fields_are_fine() {
        for name in [
            "X-Checksum",
            "Repr-Digest",
            "Server-Timing",
            // Prefixes, extensions and near misses of forbidden names.
            "Hos",
            "Hosts",
            "Content-Lengt",
            "Content-Length-X",
            "X-Host",
            "TE2",
            "If-Unmodified-Since-Long-Name-Over-The-Buffer",
        ] {
            let input = format!("1\r\na\r\n0\r\n{name}: v\r\n\r\n");
            let (body, _, done) =
                decode_all(input.as_bytes()).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(done && body == b"a", "{name}");
        }
        assert!(FORBIDDEN_TRAILERS
            .iter()
            .all(|f| f.len() <= LONGEST_FORBIDDEN));
    }

    #[test]
    fn sixteen_digit_sizes_are_fine() {
        let mut d = ChunkedDecoder::new(u64::MAX);
        let r = d.decode(b"000000000000000a\r\n", &mut [0u8; 4]).unwrap();
        assert_eq!(r.consumed, 18);
    }

    #[test]
    fn limits_extensions_trailers_and_body() {
        let mut ext = b"1;".to_vec();
        ext.extend(std::iter::repeat_n(b'x', DEFAULT_MAX_CHUNK_EXT + 1));
        assert_eq!(decode_all(&ext).err(), Some(BodyError::ExtensionTooLarge));

        let mut trailer = b"0\r\nX: ".to_vec();
        trailer.extend(std::iter::repeat_n(b'y', DEFAULT_MAX_TRAILERS));
        assert_eq!(decode_all(&trailer).err(), Some(BodyError::TrailerTooLarge));

        let mut d = ChunkedDecoder::new(5);
        assert!(d.decode(b"5\r\nhello\r\n", &mut [0u8; 16]).is_ok());
        assert_eq!(d.decode(b"1\r\n", &mut [0u8; 16]), Err(BodyError::TooLarge));
    }

    #[test]
    fn full_output_stops_without_losing_bytes() {
        let mut d = ChunkedDecoder::new(u64::MAX);
        let input = b"5\r\nhello\r\n0\r\n\r\n";
        let r = d.decode(input, &mut []).unwrap();
        assert_eq!(
            (r.consumed, r.written),
            (3, 0),
            "framing is consumed, data waits"
        );
        let mut out = [0u8; 2];
        let r2 = d.decode(&input[3..], &mut out).unwrap();
        assert_eq!((r2.consumed, r2.written), (2, 2));
        assert_eq!(&out, b"he");
    }

    #[test]
    fn length_body_counts_down() {
        let mut b = LengthBody::new(5);
        assert_eq!(b.take(3), 3);
        assert_eq!(b.take(10), 2);
        assert!(b.is_done());
        assert_eq!(b.take(10), 0);
    }
}
