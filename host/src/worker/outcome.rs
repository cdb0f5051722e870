//! What one request's exchange came to, and the one decision that follows
//! from it: does the connection stay open for another request?
//!
//! Three kinds of facts decide it, each gathered where it is known: the
//! request head's own wish (its version and `Connection` field, as the parser
//! read them), the worker's state when the request was taken ([`Flags`]), and
//! what happened while the app handled it ([`Outcome`], reported by
//! [`crate::worker::exchange::Exchange::finish`]). [`keep_alive`] is the only
//! place that weighs them; the exchange asks it (with what it knows so far)
//! before writing the response head, so `Connection: close` is announced
//! whenever it can be, and the caller asks it again once the exchange ends.

/// The worker's state, as it bears on every connection's next request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flags {
    /// The worker is stopping (graceful stop, or the master is gone).
    pub stopping: bool,
    /// The worker asked to be replaced (--max-requests, --max-worker-memory,
    /// a timed-out request): it serves what it has and takes nothing new.
    pub retiring: bool,
    /// The worker lets this client go to an idle worker (it holds more
    /// connections than threads while its app is slow).
    pub shedding: bool,
    /// Keep-alive is disabled (`--keep-alive 0`).
    pub keep_alive_off: bool,
}

/// What happened during one exchange. Every field is a reason to close; the
/// default (all false) is an exchange with nothing against keeping the
/// connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The response status.
    pub status: u16,
    /// Body bytes sent.
    pub bytes_sent: u64,
    /// Raw bytes that arrived with the head and that the exchange used.
    pub pending_used: usize,
    /// Bytes read during the exchange that it used (the rest start the next request).
    pub staged_used: usize,
    /// The app asked for the connection to close (`Connection: close`).
    pub app_close: bool,
    /// The response is delimited by closing the connection (a stream to an
    /// HTTP/1.0 client).
    pub close_delimited: bool,
    /// The master asked the worker to stop while the app ran.
    pub stop_requested: bool,
    /// Part of the request body is still unread (the next request's start
    /// cannot be found).
    pub body_unread: bool,
    /// The client went away, or stalled past the I/O timeout.
    pub client_gone: bool,
    /// The response was cut short (the app panicked after it began, or a
    /// file ended before its announced length).
    pub cut_short: bool,
    /// The request ran past --timeout and was given up on.
    pub abandoned: bool,
    /// The worker retires right after this request (the app panicked,
    /// `--panic-policy retire`): the response says `Connection: close`.
    pub worker_retiring: bool,
    /// The app accepted a WebSocket handshake: the connection's id. The
    /// connection becomes a WebSocket one (not a reason to close).
    pub websocket: Option<u64>,
    /// The app switched the connection to another protocol
    /// ([`crate::worker::exchange::Exchange::upgrade`]): it was a raw byte
    /// stream for the rest of the call and never carries HTTP again.
    pub upgraded: bool,
}

impl Outcome {
    /// Whether anything that happened in the exchange closes the connection.
    fn closes(&self) -> bool {
        self.app_close
            || self.close_delimited
            || self.stop_requested
            || self.body_unread
            || self.client_gone
            || self.cut_short
            || self.abandoned
            || self.worker_retiring
            || self.upgraded
    }
}

/// Whether the connection stays open after this request: the head wished it
/// (`wish`: [`crate::http::parse::RequestHead::keep_alive`]), the worker's
/// state allows it, and nothing in the exchange rules it out.
pub fn keep_alive(wish: bool, flags: Flags, outcome: &Outcome) -> bool {
    wish && !(flags.stopping || flags.retiring || flags.shedding || flags.keep_alive_off)
        && !outcome.closes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::parse::{parse_head, Limits, Parsed, RequestHead};

    /// The head's wish, as the parser reads it from `head`.
    fn wish(head: &str) -> bool {
        let mut parsed = RequestHead::default();
        let result = parse_head(head.as_bytes(), &Limits::default(), &mut parsed);
        assert_eq!(result, Ok(Parsed::Complete), "{head:?}");
        parsed.keep_alive
    }

    const H11: &str = "GET / HTTP/1.1\r\nHost: t\r\n\r\n";
    const H11_CLOSE: &str = "GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    const H10: &str = "GET / HTTP/1.0\r\n\r\n";
    const H10_KEEP: &str = "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n";

    #[test]
    fn the_decision_table() {
        let none = Flags::default();
        let ok = Outcome::default();
        let flag = |f: fn(&mut Flags)| {
            let mut flags = Flags::default();
            f(&mut flags);
            flags
        };
        let fact = |f: fn(&mut Outcome)| {
            let mut outcome = Outcome::default();
            f(&mut outcome);
            outcome
        };
        let table: &[(&str, &str, Flags, Outcome, bool)] = &[
            ("HTTP/1.1 keeps by default", H11, none, ok, true),
            ("Connection: close", H11_CLOSE, none, ok, false),
            ("HTTP/1.0 closes by default", H10, none, ok, false),
            ("HTTP/1.0 keep-alive", H10_KEEP, none, ok, true),
            ("stopping", H11, flag(|f| f.stopping = true), ok, false),
            ("retiring", H11, flag(|f| f.retiring = true), ok, false),
            ("shedding", H11, flag(|f| f.shedding = true), ok, false),
            (
                "keep-alive off",
                H11,
                flag(|f| f.keep_alive_off = true),
                ok,
                false,
            ),
            (
                "keep-alive off, 1.0",
                H10_KEEP,
                flag(|f| f.keep_alive_off = true),
                ok,
                false,
            ),
            (
                "app asked to close",
                H11,
                none,
                fact(|o| o.app_close = true),
                false,
            ),
            (
                "close-delimited",
                H10_KEEP,
                none,
                fact(|o| o.close_delimited = true),
                false,
            ),
            (
                "stop while in the app",
                H11,
                none,
                fact(|o| o.stop_requested = true),
                false,
            ),
            (
                "body unread",
                H11,
                none,
                fact(|o| o.body_unread = true),
                false,
            ),
            (
                "client gone",
                H11,
                none,
                fact(|o| o.client_gone = true),
                false,
            ),
            ("cut short", H11, none, fact(|o| o.cut_short = true), false),
            ("abandoned", H11, none, fact(|o| o.abandoned = true), false),
            (
                "the worker retires after a panic",
                H11,
                none,
                fact(|o| o.worker_retiring = true),
                false,
            ),
            (
                "status and counts do not matter",
                H11,
                none,
                fact(|o| {
                    o.status = 500;
                    o.bytes_sent = 7;
                    o.pending_used = 3;
                    o.staged_used = 9;
                }),
                true,
            ),
            ("a closing head wins over everything", H10, none, ok, false),
        ];
        for (what, head, flags, outcome, expected) in table {
            assert_eq!(keep_alive(wish(head), *flags, outcome), *expected, "{what}");
        }
    }
}
