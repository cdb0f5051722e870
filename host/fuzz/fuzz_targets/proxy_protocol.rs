//! Fuzz target: the PROXY protocol header parser.
//!
//! Any input must give `Incomplete`, `Done` or `Invalid`, never a panic; a
//! `Done` header lies inside the input; and the bytes arriving in two reads
//! (split at a point taken from the input) must give the answer the whole
//! gives: the first part is `Incomplete` or already that answer, so the
//! caller, which calls again with all the bytes after each read, ends where
//! one read of everything would.
#![no_main]

use host::internals::http::proxy_protocol::{parse, Parsed, MAX_HEADER_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&split, input)) = data.split_first() else {
        return;
    };
    let whole = parse(input);
    match &whole {
        Parsed::Done { consumed, .. } => {
            assert!(*consumed <= input.len() && *consumed <= MAX_HEADER_LEN);
            // The header alone parses the same: nothing after it counted.
            assert_eq!(parse(&input[..*consumed]), whole);
        }
        // Waiting is only for what can still fit.
        Parsed::Incomplete => assert!(input.len() < MAX_HEADER_LEN),
        Parsed::Invalid(_) => {}
    }
    let cut = if input.is_empty() {
        0
    } else {
        usize::from(split) % input.len()
    };
    let first = parse(&input[..cut]);
    assert!(
        first == Parsed::Incomplete || first == whole,
        "first {cut} bytes gave {first:?}, all {} gave {whole:?}",
        input.len()
    );
});
