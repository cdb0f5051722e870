//! Fuzz target: the request-head parser.
//!
//! Any input must give `Complete`, `Partial` or an error, never a panic; a
//! complete head's spans must lie inside the head, and feeding a prefix of a
//! complete head must never give a different verdict than "wait".
#![no_main]

use host::internals::http::parse::{parse_head, Limits, Parsed, RequestHead};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let small = Limits {
        max_request_line: 64,
        max_headers: 8,
        max_field_size: 64,
        max_body: 1000,
    };
    for limits in [Limits::default(), small] {
        let mut head = RequestHead::default();
        if let Ok(Parsed::Complete) = parse_head(data, &limits, &mut head) {
            assert!(head.head_len <= data.len());
            let within = |s: app_sdk::abi::Span| (s.start + s.len) as usize <= head.head_len;
            assert!(
                within(head.method)
                    && within(head.target)
                    && within(head.path)
                    && within(head.query)
            );
            for h in &head.headers {
                assert!(within(h.name) && within(h.value));
            }
            // Every strict prefix of a complete head is "not yet" or an error
            // of the size limits, never a different complete head.
            for cut in [head.head_len / 2, head.head_len.saturating_sub(1)] {
                let mut partial = RequestHead::default();
                if let Ok(Parsed::Complete) = parse_head(&data[..cut], &limits, &mut partial) {
                    panic!("a prefix of {cut} bytes parsed as complete");
                }
            }
        }
    }
});
