//! The event loop's side of its WebSocket connections: reading their
//! messages, calling the app for each event, delivering what the app
//! sends, their timers, and closing them.
//!
//! A connection becomes a WebSocket one when the app accepts its handshake
//! (the exchange answers `101`); it stays in the loop that accepted it. The
//! loop calls the app for its events one at a time, as it does requests, so
//! no thread is held between messages. Every connection that opened gets
//! exactly one `on_close`, whatever ended it: the loop queues it when the
//! connection goes ([`EventLoop::close`]) and calls it once nothing else is
//! in hand ([`EventLoop::ws_settle`]), so a close during a call never
//! re-enters the app.
//!
//! The rules a client is held to, and what breaking them costs it:
//! - a protocol error, text that is not UTF-8, or a message over
//!   `--websocket-max-message`: a close frame with `1002`, `1007` or
//!   `1009`, then the socket closes;
//! - silence: after `--websocket-ping-interval` a ping, and with no answer
//!   within `--websocket-ping-timeout` the socket closes (`1006`);
//! - not reading: once its unsent output passes twice the largest message
//!   (at least 1 MiB), or the socket takes nothing for the I/O timeout,
//!   the socket closes (`1006`), and the app's sends to it are dropped;
//! - a stopping or retiring worker closes its connections with `1001`
//!   after `--websocket-drain`.

use std::time::Instant;

use app_sdk::abi::{WS_BINARY, WS_CLOSE, WS_OPEN, WS_TEXT};
use nix::sys::epoll::{EpollEvent, EpollFlags};

use crate::{
    websocket::{
        ids,
        outbox::{Kind, Outgoing},
        session::{code, Read},
        settings::{CLOSE_WAIT, MESSAGES_PER_TURN},
    },
    worker::{call::EXCHANGE_IO_TIMEOUT, conn::Phase},
};

use super::EventLoop;

impl EventLoop<'_> {
    /// This loop's index among the worker's loops (0 in a single-threaded worker).
    pub(super) fn loop_index(&self) -> usize {
        self.member.as_ref().map_or(0, |m| m.index)
    }

    /// Connection `key` has just become a WebSocket one (its `101` is in
    /// its output): counts it, tells the app it is open, and reads what
    /// the client sent right behind its handshake.
    pub(super) fn ws_opened(&mut self, key: usize) {
        let now = Instant::now();
        let draining = self.stopping || self.retiring;
        let drain = self.serving.options.websocket.drain;
        let Some((session, _)) = self.conns.get_mut(key).and_then(|c| c.websocket()) else {
            return;
        };
        session.opened = true;
        if draining {
            session.drain_at = Some(now + drain);
        }
        let id = session.id;
        self.ws_ids.insert(id, key);
        self.serving.slot.websocket_opened();
        self.ws_want_write(key);
        self.ws_event(key, WS_OPEN, &[], 0);
        self.ws_read(key);
    }

    /// An epoll event on WebSocket connection `key`.
    pub(super) fn on_ws_ready(&mut self, key: usize, flags: EpollFlags) {
        if flags.contains(EpollFlags::EPOLLOUT) {
            self.ws_flush(key);
        }
        if flags.intersects(EpollFlags::EPOLLIN | EpollFlags::EPOLLHUP | EpollFlags::EPOLLERR) {
            self.ws_read(key);
        }
    }

    /// Reads and hands the app the messages connection `key` has, up to
    /// [`MESSAGES_PER_TURN`] (the rest on the loop's next turn), then
    /// writes what waits (pongs, replies) and sets its timer.
    pub(super) fn ws_read(&mut self, key: usize) {
        let mut messages = 0;
        loop {
            let Some((session, wire)) = self.conns.get_mut(key).and_then(|c| c.websocket()) else {
                return;
            };
            let read = session.read(wire);
            if !matches!(read, Read::Blocked) {
                session.last_seen = Instant::now();
                session.ping_sent = None;
            }
            match read {
                Read::Message { text, data } => {
                    let kind = if text { WS_TEXT } else { WS_BINARY };
                    self.serving.slot.count_websocket_message_in();
                    self.ws_event(key, kind, &data, 0);
                    messages += 1;
                    if messages >= MESSAGES_PER_TURN {
                        self.ws_again.push(key);
                        break;
                    }
                }
                Read::Control => {}
                Read::PeerClosed(code, reason) => {
                    session.close_report.get_or_insert((code, reason));
                }
                Read::Blocked => break,
                Read::Ended => {
                    self.close(key);
                    return;
                }
                Read::Failed(code, why) => {
                    self.ws_fail(key, code, why);
                    return;
                }
            }
        }
        self.ws_flush(key);
    }

    /// Reads on the connections left with messages unread last turn.
    pub(super) fn ws_read_again(&mut self) {
        for key in std::mem::take(&mut self.ws_again) {
            self.ws_read(key);
        }
    }

    /// Calls the app for one event of connection `key`; delivers what it
    /// sent. An open or message call that fails closes the connection with
    /// `1011`.
    fn ws_event(&mut self, key: usize, kind: u32, data: &[u8], code: u16) {
        let Some(conn) = self.conns.get(key) else {
            return;
        };
        let Some(id) = conn.ws_session().map(|s| s.id) else {
            return;
        };
        let (called, ok) = self
            .caller
            .event(kind, id, data, code, &mut self.port, Some(conn.fd()));
        self.last_call = called.call_time;
        self.panicked |= called.panicked;
        self.ws_deliver();
        if called.abandoned {
            // Past --timeout: the worker is being replaced.
            self.ws_abort(key, code::ABNORMAL, "the app ran past --timeout");
        } else if !ok {
            self.ws_begin_close(key, code::APP_FAILED, "internal error");
        }
        self.check_limits();
    }

    /// Delivers what the last call sent: to this loop's connections now,
    /// to another loop's through the team.
    pub(super) fn ws_deliver(&mut self) {
        if self.port.outbox.is_empty() {
            return;
        }
        let here = self.loop_index();
        for message in self.port.outbox.take() {
            let to = ids::loop_of(message.to);
            if to == here {
                self.ws_send_one(message);
            } else if let Some(member) = &self.member {
                member.team.forward(to, message);
            }
        }
    }

    /// Delivers the messages other loops' calls sent to this loop's connections.
    pub(super) fn ws_take_inbox(&mut self) {
        let Some(member) = &self.member else {
            return;
        };
        for message in member.team.inbox(member.index) {
            self.ws_send_one(message);
        }
    }

    /// Sends one message to its connection, if it is still open here.
    fn ws_send_one(&mut self, message: Outgoing) {
        let Some(&key) = self.ws_ids.get(&message.to) else {
            return;
        };
        let Some((session, wire)) = self.conns.get_mut(key).and_then(|c| c.websocket()) else {
            return;
        };
        let result = match message.kind {
            Kind::Close => {
                let (code, reason) = message.payload.split_at(2);
                let code = u16::from_be_bytes([code[0], code[1]]);
                let reason = std::str::from_utf8(reason).unwrap_or("");
                session.close(wire, code, reason, Instant::now() + CLOSE_WAIT)
            }
            _ if !session.can_send() => return,
            kind => {
                self.serving.slot.count_websocket_message_out();
                let payload = bytes::Bytes::from_owner(message.payload);
                session.send(wire, kind == Kind::Text, payload)
            }
        };
        self.ws_wrote(key, result);
    }

    /// Writes connection `key`'s waiting output.
    fn ws_flush(&mut self, key: usize) {
        let Some((session, wire)) = self.conns.get_mut(key).and_then(|c| c.websocket()) else {
            return;
        };
        let result = session.flush(wire);
        self.ws_wrote(key, result);
    }

    /// Settles connection `key` after a write: waits for the socket when
    /// output is left, closes it when its closing handshake is done, drops
    /// it when it cannot take its output; then sets its timer.
    fn ws_wrote(&mut self, key: usize, result: std::io::Result<bool>) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        match result {
            Ok(true) => {
                if let Some((session, _)) = conn.websocket() {
                    session.stalled_since = None;
                    if session.peer_done() {
                        self.close(key);
                        return;
                    }
                }
                if conn.wants_write() {
                    conn.set_wants_write(false);
                    let mut ev = EpollEvent::new(EpollFlags::EPOLLIN, key as u64);
                    if conn.registered() && self.epoll.modify(conn.fd(), &mut ev).is_err() {
                        self.close(key);
                        return;
                    }
                }
            }
            Ok(false) => {
                if let Some((session, _)) = conn.websocket() {
                    session.stalled_since.get_or_insert_with(Instant::now);
                }
                self.ws_want_write(key);
            }
            Err(e) => {
                log::debug!("closing the WebSocket of {}: {e}", conn.peer());
                self.ws_abort(key, code::ABNORMAL, "the client is not reading");
                return;
            }
        }
        self.ws_set_timer(key);
    }

    /// Watches connection `key` for writability too (output waits).
    fn ws_want_write(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.wants_write() {
            return;
        }
        conn.set_wants_write(true);
        if conn.registered() {
            let mut ev = EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLOUT, key as u64);
            if self.epoll.modify(conn.fd(), &mut ev).is_err() {
                self.close(key);
            }
        }
    }

    /// Sets connection `key`'s deadline to its session's next timer.
    fn ws_set_timer(&mut self, key: usize) {
        let ws = &self.serving.options.websocket;
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let Some(next) = conn
            .ws_session()
            .map(|s| s.next_timer(ws.ping_interval, ws.ping_timeout, EXCHANGE_IO_TIMEOUT))
        else {
            return;
        };
        // Nothing due: look again after a day (the sweep is cheap).
        let far = Instant::now() + std::time::Duration::from_secs(86_400);
        conn.set_deadline(next.unwrap_or(far));
    }

    /// Connection `key`'s timer is due at `now`: closes it when the client
    /// failed to answer (a close, a ping) or to read, begins the drain's
    /// close, or pings a quiet client.
    pub(super) fn ws_timer(&mut self, key: usize, now: Instant) {
        let ws = self.serving.options.websocket;
        let Some((session, wire)) = self.conns.get_mut(key).and_then(|c| c.websocket()) else {
            return;
        };
        if session.closing_until.is_some_and(|t| t <= now) {
            self.close(key);
        } else if session
            .stalled_since
            .is_some_and(|t| t + EXCHANGE_IO_TIMEOUT <= now)
        {
            self.ws_abort(
                key,
                code::ABNORMAL,
                "the client took nothing for the I/O timeout",
            );
        } else if session.closing_until.is_none() && session.drain_at.is_some_and(|t| t <= now) {
            self.ws_begin_close(key, code::GOING_AWAY, "the server is going away");
        } else if session
            .ping_sent
            .is_some_and(|t| t + ws.ping_timeout <= now)
        {
            self.ws_abort(key, code::ABNORMAL, "no answer to a ping");
        } else if session.ping_sent.is_none()
            && ws
                .ping_interval
                .is_some_and(|i| session.last_seen + i <= now)
        {
            let result = session.ping(wire, now);
            self.ws_wrote(key, result);
        } else {
            self.ws_set_timer(key);
        }
    }

    /// A stopping or retiring worker: each WebSocket connection closes
    /// with `1001` after `--websocket-drain`.
    pub(super) fn ws_drain(&mut self) {
        let at = Instant::now() + self.serving.options.websocket.drain;
        let keys: Vec<usize> = self.ws_ids.values().copied().collect();
        for key in keys {
            if let Some((session, _)) = self.conns.get_mut(key).and_then(|c| c.websocket()) {
                session.drain_at.get_or_insert(at);
            }
            self.ws_set_timer(key);
        }
    }

    /// Begins closing connection `key` with `code` and `reason`: the client
    /// has [`CLOSE_WAIT`] to answer.
    fn ws_begin_close(&mut self, key: usize, code: u16, reason: &str) {
        let Some((session, wire)) = self.conns.get_mut(key).and_then(|c| c.websocket()) else {
            return;
        };
        let result = session.close(wire, code, reason, Instant::now() + CLOSE_WAIT);
        self.ws_wrote(key, result);
    }

    /// The client broke a rule: sends it the close frame with `code` (as
    /// far as the socket takes it now) and closes the socket.
    fn ws_fail(&mut self, key: usize, code: u16, why: &'static str) {
        if let Some(conn) = self.conns.get_mut(key) {
            log::debug!(
                "closing the WebSocket of {} with {code}: {why}",
                conn.peer()
            );
            if let Some((session, wire)) = conn.websocket() {
                let _ = session.close(wire, code, why, Instant::now());
            }
        }
        self.close(key);
    }

    /// Closes connection `key` at once; the app learns `code` and `reason`
    /// unless a close was already under way.
    fn ws_abort(&mut self, key: usize, code: u16, reason: &str) {
        if let Some((session, _)) = self.conns.get_mut(key).and_then(|c| c.websocket()) {
            session
                .close_report
                .get_or_insert_with(|| (code, reason.to_owned()));
        }
        self.close(key);
    }

    /// A WebSocket connection is going ([`EventLoop::close`]): forgets its
    /// id, uncounts it, and owes the app its `on_close`.
    pub(super) fn ws_closing(&mut self, id: u64, opened: bool, report: Option<(u16, String)>) {
        self.ws_ids.remove(&id);
        if opened {
            self.serving.slot.websocket_closed();
            let (code, reason) = report.unwrap_or((code::ABNORMAL, String::new()));
            self.ws_closed.push_back((id, code, reason));
        }
    }

    /// Calls the app's `on_close` for the connections that went, in order,
    /// delivering what each call sends (which may close more).
    pub(super) fn ws_settle(&mut self) {
        while let Some((id, code, reason)) = self.ws_closed.pop_front() {
            let (called, _) =
                self.caller
                    .event(WS_CLOSE, id, reason.as_bytes(), code, &mut self.port, None);
            self.last_call = called.call_time;
            self.panicked |= called.panicked;
            self.ws_deliver();
        }
    }

    /// Whether connection `key` is a WebSocket one.
    pub(super) fn is_websocket(&self, key: usize) -> bool {
        self.conns
            .get(key)
            .is_some_and(|c| c.phase() == Phase::WebSocket)
    }
}
