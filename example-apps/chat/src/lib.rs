//! `chat`: a chat room per worker, over WebSocket.
//!
//! - `GET /` is a page that opens a WebSocket to `/ws` and shows what
//!   arrives; what you type is sent to everyone in the room (`/?name=N`
//!   joins as N; `/?say=TEXT` sends TEXT once connected).
//! - `GET /ws` (a WebSocket handshake) joins the room: every text message
//!   is broadcast to every connection of the worker as `name: text`
//!   (the name is `?name=…`, else `guest-<id>`). A client offering the
//!   `chat.v1` subprotocol gets it.
//! - `GET /echo` (a WebSocket handshake) echoes each message back as it came
//!   (text or binary): the benchmarks' and the protocol tests' peer.
//! - `POST /broadcast` sends its body, as text, to everyone in the room
//!   (an HTTP request reaching WebSocket clients): answers how many.
//! - Text `/close CODE REASON` closes the sender's connection with that code.
//! - Text `/panic` panics in `on_message` (the host closes with 1011).
//!
//! Rooms are per worker process: run it with `-w 1` to chat with everyone.
//!
//! Serve it with `host target/debug/libchat.so:app`.

use std::{
    collections::BTreeMap,
    sync::{Mutex, PoisonError},
};

use app_sdk::{export_app, App, Close, Message, Request, Response, WebSocket, WsId};

/// The page `GET /` serves.
const PAGE: &str = include_str!("page.html");

/// What the room knows of a connection.
struct Member {
    /// The name its messages are shown with.
    name: String,
    /// It is in the echo room, not the chat room.
    echo: bool,
}

/// The room: the connections of this worker, and who they are.
#[derive(Default)]
struct Chat {
    members: Mutex<BTreeMap<WsId, Member>>,
    /// Names given at the handshake, until `on_open` files them.
    joining: Mutex<BTreeMap<WsId, (String, bool)>>,
}

impl Chat {
    fn chatters(&self) -> Vec<WsId> {
        let members = self.members.lock().unwrap_or_else(PoisonError::into_inner);
        members
            .iter()
            .filter(|(_, m)| !m.echo)
            .map(|(id, _)| *id)
            .collect()
    }
}

impl App for Chat {
    fn handle(&self, req: &mut Request<'_>, resp: &mut Response<'_>) -> app_sdk::Result {
        match (req.method(), req.path()) {
            ("GET", "/") => {
                resp.header("Content-Type", "text/html; charset=utf-8")
                    .body(PAGE)?;
            }
            ("GET", path @ ("/ws" | "/echo")) => {
                let Some(ws) = req.websocket() else {
                    resp.status(426)
                        .header("Upgrade", "websocket")
                        .body("this is a WebSocket endpoint\n")?;
                    return Ok(());
                };
                let protocol = ws.protocols().find(|p| *p == "chat.v1");
                let id = resp.accept_websocket(protocol)?;
                let name = req
                    .query_param("name")
                    .map(|n| n.into_owned())
                    .unwrap_or_else(|| format!("guest-{id}"));
                self.joining
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(id, (name, path == "/echo"));
            }
            ("POST", "/broadcast") => {
                let body = req.body_bytes(64 * 1024)?;
                let text = String::from_utf8_lossy(&body);
                let sent = resp.websockets().broadcast(&self.chatters(), &*text)?;
                resp.body(format!("{sent}\n"))?;
            }
            _ => {
                resp.status(404).body("not found\n")?;
            }
        }
        Ok(())
    }

    fn on_open(&self, ws: &WebSocket<'_>) -> app_sdk::Result {
        let (name, echo) = self
            .joining
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&ws.id())
            .unwrap_or_else(|| (format!("guest-{}", ws.id()), false));
        let joined = format!("* {name} joined");
        self.members
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(ws.id(), Member { name, echo });
        if !echo {
            ws.broadcast(&self.chatters(), &*joined)?;
        }
        Ok(())
    }

    fn on_message(&self, ws: &WebSocket<'_>, msg: Message<'_>) -> app_sdk::Result {
        let (name, echo) = {
            let members = self.members.lock().unwrap_or_else(PoisonError::into_inner);
            match members.get(&ws.id()) {
                Some(m) => (m.name.clone(), m.echo),
                None => return Ok(()),
            }
        };
        if echo {
            ws.reply(msg)?;
            return Ok(());
        }
        let Message::Text(text) = msg else {
            ws.close_with(1003, "text only")?;
            return Ok(());
        };
        if let Some(rest) = text.strip_prefix("/close ") {
            let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
            ws.close_with(code.parse().unwrap_or(1000), reason)?;
            return Ok(());
        }
        if text == "/panic" {
            panic!("asked to panic");
        }
        ws.broadcast(&self.chatters(), &*format!("{name}: {text}"))?;
        Ok(())
    }

    fn on_close(&self, ws: &WebSocket<'_>, close: Close<'_>) {
        let gone = self
            .members
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&ws.id());
        if let Some(Member { name, echo: false }) = gone {
            let _ = ws.broadcast(
                &self.chatters(),
                &*format!("* {name} left ({})", close.code),
            );
        }
    }
}

export_app!(
    #[websocket]
    app = Chat::default()
);

#[cfg(test)]
mod tests {
    //! The chat through `app_sdk::testing`: each socket is a client.

    use app_sdk::testing::{Frame, TestClient, TestRequest};

    use super::*;

    fn chat() -> TestClient {
        TestClient::new(Chat::default()).expect("the app starts")
    }

    #[test]
    fn joining_and_talking_are_broadcast_to_the_room() {
        let client = chat();
        let ann = client.websocket(TestRequest::get("/ws?name=ann"));
        assert_eq!(ann.response.status, 101);
        assert_eq!(ann.received_texts(), ["* ann joined"]);
        let bob = client.websocket(TestRequest::get("/ws?name=bob"));
        assert_eq!(ann.received_texts(), ["* bob joined"]);
        assert_eq!(bob.received_texts(), ["* bob joined"]);

        assert!(ann.send_text("hello").is_done());
        assert_eq!(ann.received_texts(), ["ann: hello"]);
        assert_eq!(bob.received_texts(), ["ann: hello"]);

        // A client without a name is a guest, named after its id.
        let guest = client.websocket(TestRequest::get("/ws"));
        let id = guest.id().expect("accepted");
        assert_eq!(guest.received_texts(), [format!("* guest-{id} joined")]);

        assert!(bob.close(1000, "bye").is_done());
        assert_eq!(
            ann.received_texts(),
            [format!("* guest-{id} joined"), "* bob left (1000)".into()]
        );
    }

    #[test]
    fn the_echo_room_echoes_text_and_binary_and_hears_no_chat() {
        let client = chat();
        let echo = client.websocket(TestRequest::get("/echo"));
        let ann = client.websocket(TestRequest::get("/ws?name=ann"));
        echo.send_text("hi");
        echo.send_binary(&[0xff, 0]);
        assert_eq!(
            echo.received(),
            [Frame::Text("hi".into()), Frame::Binary(vec![0xff, 0])]
        );
        ann.send_text("anyone?");
        assert!(echo.received().is_empty(), "the echo room is apart");
        assert_eq!(ann.received_texts(), ["* ann joined", "ann: anyone?"]);
    }

    #[test]
    fn close_closes_the_sender_with_its_code_and_the_room_hears_it() {
        let client = chat();
        let ann = client.websocket(TestRequest::get("/ws?name=ann"));
        let bob = client.websocket(TestRequest::get("/ws?name=bob"));
        ann.received();
        bob.send_text("/close 4001 gone fishing");
        assert_eq!(
            bob.received(),
            [
                Frame::Text("* bob joined".into()),
                Frame::Close {
                    code: 4001,
                    reason: "gone fishing".into()
                }
            ]
        );
        assert_eq!(bob.closed(), Some((4001, "gone fishing".into())));
        assert_eq!(ann.received_texts(), ["* bob left (4001)"]);
        // Binary in the chat room is refused with 1003.
        ann.send_binary(b"\x00");
        assert_eq!(ann.closed(), Some((1003, "text only".into())));
    }

    #[test]
    fn a_panic_closes_with_1011_and_the_room_hears_it() {
        let client = chat();
        let ann = client.websocket(TestRequest::get("/ws?name=ann"));
        let bob = client.websocket(TestRequest::get("/ws?name=bob"));
        let outcome = bob.send_text("/panic");
        assert!(
            outcome
                .message()
                .is_some_and(|m| m.contains("asked to panic")),
            "{outcome:?}"
        );
        assert_eq!(bob.closed(), Some((1011, "internal error".into())));
        assert_eq!(
            ann.received_texts(),
            ["* ann joined", "* bob joined", "* bob left (1011)"]
        );
    }

    #[test]
    fn the_subprotocol_is_chosen_when_offered() {
        let client = chat();
        let offered = client
            .websocket(TestRequest::get("/ws").header("Sec-WebSocket-Protocol", "other, chat.v1"));
        assert_eq!(offered.protocol().as_deref(), Some("chat.v1"));
        let plain = client.websocket(TestRequest::get("/ws"));
        assert_eq!(plain.protocol(), None);
    }

    #[test]
    fn http_requests_post_to_the_room_and_a_plain_get_of_ws_is_426() {
        let client = chat();
        let ann = client.websocket(TestRequest::get("/ws?name=ann"));
        let echo = client.websocket(TestRequest::get("/echo"));
        ann.received();
        let resp = client.call(TestRequest::post("/broadcast").body("news"));
        assert_eq!((resp.status, resp.text().as_str()), (200, "1\n"));
        assert_eq!(ann.received_texts(), ["news"]);
        assert!(echo.received().is_empty());
        let sent = client.websocket_sent();
        assert_eq!(
            sent.last().map(|s| s.to.clone()),
            Some(vec![ann.id().unwrap()])
        );

        let resp = client.call(TestRequest::get("/ws"));
        assert_eq!(resp.status, 426);
        assert_eq!(resp.header("upgrade"), Some("websocket"));
        assert_eq!(client.call(TestRequest::get("/")).status, 200);
    }
}
