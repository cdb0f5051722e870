//! RFC 9110 tokens: the characters header names (and methods, and chunk
//! extension names) are made of, looked up in a table.
//!
//! Every header an app adds is checked byte by byte on the request path, so
//! the check is one load per byte rather than a chain of comparisons.

/// `TCHAR[b]`: whether byte `b` is an RFC 9110 `tchar`
/// (`!#$%&'*+-.^_`|~`, digits and letters).
static TCHAR: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        b += 1;
    }
    table
};

/// Whether `b` is an RFC 9110 `tchar`.
#[inline]
pub fn is_tchar(b: u8) -> bool {
    TCHAR[usize::from(b)]
}

/// Whether `s` is a token: one or more `tchar`s (a valid header name).
#[inline]
pub fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_tchar(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tchars_are_the_rfc_9110_set() {
        let expected = |c: u8| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c);
        for b in 0..=255u8 {
            assert_eq!(is_tchar(b), expected(b), "byte {b}");
        }
        assert!(is_token(b"X-Request-Id"));
        assert!(!is_token(b""));
        assert!(!is_token(b"Bad Name"));
        assert!(!is_token(b"Bad:Name"));
    }
}
