//! Fuzz target: the chunked-body decoder.
//!
//! Decoding must never panic, and feeding the input in pieces (of a size and
//! into an output buffer size taken from the input) must give exactly the
//! same body, the same verdict and the same consumed length as all at once.
#![no_main]

use host::internals::http::body::{BodyError, ChunkedDecoder};
use libfuzzer_sys::fuzz_target;

/// Decodes `input` in pieces of `split` bytes into a buffer of `out_len`.
fn run(input: &[u8], split: usize, out_len: usize) -> (Vec<u8>, usize, Result<bool, BodyError>) {
    let mut decoder = ChunkedDecoder::new(1 << 20);
    let mut body = Vec::new();
    let mut buf = vec![0u8; out_len];
    let mut used = 0;
    while used < input.len() {
        let end = (used + split).min(input.len());
        let mut piece = &input[used..end];
        loop {
            match decoder.decode(piece, &mut buf) {
                Ok(d) => {
                    body.extend_from_slice(&buf[..d.written]);
                    used += d.consumed;
                    piece = &piece[d.consumed..];
                    if d.done {
                        return (body, used, Ok(true));
                    }
                    if piece.is_empty() || (d.consumed == 0 && d.written == 0) {
                        break;
                    }
                }
                Err(e) => return (body, used, Err(e)),
            }
        }
        if used < end {
            // The decoder refused to take bytes it was offered without being done.
            panic!("stalled at {used} of {}", input.len());
        }
    }
    (body, used, Ok(false))
}

fuzz_target!(|data: &[u8]| {
    let (control, input) = data.split_at(data.len().min(2));
    let split = 1 + *control.first().unwrap_or(&0) as usize;
    let out_len = 1 + *control.get(1).unwrap_or(&0) as usize;
    let whole = run(input, input.len().max(1), 1 << 16);
    let pieces = run(input, split, out_len);
    match (&whole.2, &pieces.2) {
        (Err(a), Err(b)) => assert_eq!(a, b),
        _ => assert_eq!(whole, pieces),
    }
});
