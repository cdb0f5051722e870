//! Fuzz target: the PROXY protocol header parser.
//!
//! Any input must give `Incomplete`, `Done` or `Invalid`, never a panic; a
//! `Done` header lies inside the input; and the bytes arriving in two reads
//! (split at a point taken from the input) must end where one read of all
//! of them does: the first part is `Incomplete`, or already the whole's
//! answer (a refusal, for whatever reason, or the same header), since the
//! caller calls again with all the bytes after each read.
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
    // (Two refusals may give different reasons: the first part shows less.)
    let agrees = match (&first, &whole) {
        (Parsed::Incomplete, _) | (Parsed::Invalid(_), Parsed::Invalid(_)) => true,
        (first, whole) => first == whole,
    };
    assert!(
        agrees,
        "first {cut} bytes gave {first:?}, all {} gave {whole:?}",
        input.len()
    );
});
