//! Staging a request: from the bytes a connection has received to a request
//! complete enough to call the app with.
//!
//! A request reaches the app only once its head is complete and valid and,
//! for a body up to `--body-buffer`, once the whole body arrived (a chunked
//! one decoded and checked, into the connection's [`crate::worker::conn::ReadAhead`]): a bad
//! request is refused here, never seen by the app. Larger bodies are read by
//! the app itself, through the exchange.

use crate::{
    config::ServeOptions,
    http::parse::{self, Framing, Parsed, RequestHead},
    websocket::handshake::{self, Checked},
    worker::conn::Conn,
};

/// Where a connection's next request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Staged {
    /// Nothing, or part of a request, has arrived: wait for more.
    Waiting,
    /// The request is invalid: refuse it with this status and close.
    Refused(u16),
    /// The request is complete, in `head` (and its small body in the connection).
    Ready,
}

/// Stages the next request buffered on `conn` into `head`. While it waits
/// (for the rest of the head or of a small body) the connection is marked
/// as reading, with `--header-timeout` to finish, and is sent
/// `100 Continue` when its request expects one before the body.
pub fn stage(conn: &mut Conn, head: &mut RequestHead, options: &ServeOptions) -> Staged {
    match parse::parse_head(conn.pending_input(), &options.limits, head) {
        Ok(Parsed::Partial) => {
            conn.begin_reading(options.header_timeout);
            return Staged::Waiting;
        }
        Err(e) => {
            log::debug!("bad request from {}: {e}", conn.peer());
            return Staged::Refused(e.status());
        }
        Ok(Parsed::Complete) => {}
    }
    if head.upgrade {
        match handshake::check(head, conn.pending_input()) {
            Checked::NotAsked => {}
            Checked::Valid(key) => head.websocket_key = key,
            Checked::Refused(status, why) => {
                log::debug!("bad WebSocket handshake from {}: {why}", conn.peer());
                return Staged::Refused(status);
            }
        }
    }
    let body_wait = match head.framing {
        Framing::Length(n) => {
            let available = conn.pending_input().len() - head.head_len;
            n > available as u64 && n <= options.body_buffer as u64
        }
        Framing::Chunked => match read_ahead_chunked(conn, head, options) {
            Ok(waiting) => waiting,
            Err(status) => return Staged::Refused(status),
        },
        Framing::None => false,
    };
    if body_wait {
        // Wait for the rest of the body before calling the app.
        if head.expect_continue {
            conn.send_continue();
        }
        conn.begin_reading(options.header_timeout);
        return Staged::Waiting;
    }
    Staged::Ready
}

/// Decodes what has arrived of a chunked body, up to --body-buffer, into the
/// connection's read-ahead body. `Ok(true)`: more is needed before the app
/// is called; `Err`: the status to refuse the request with.
fn read_ahead_chunked(
    conn: &mut Conn,
    head: &RequestHead,
    options: &ServeOptions,
) -> Result<bool, u16> {
    let buffer = options.body_buffer;
    let (input, pre) = conn.read_ahead(options.limits.max_body, buffer);
    let raw = &input[head.head_len..];
    loop {
        let fresh = &raw[pre.raw_used.min(raw.len())..];
        if pre.decoder.is_done() || pre.len == buffer || fresh.is_empty() {
            break;
        }
        match pre.decoder.decode(fresh, &mut pre.decoded[pre.len..]) {
            Ok(d) => {
                pre.raw_used += d.consumed;
                pre.len += d.written;
                if d.consumed == 0 && d.written == 0 {
                    break;
                }
            }
            Err(e) => {
                log::debug!("bad chunked body from {}: {e}", conn.peer());
                return Err(e.status());
            }
        }
    }
    Ok(!pre.decoder.is_done() && pre.len < buffer)
}
