//! The recording host against the host's rules, through the SDK's real glue.

use std::{
    io::{Read, Write},
    sync::atomic::{AtomicU32, Ordering},
};

use super::*;
use crate::{Request, Response, Worker};

/// An app whose behaviour each test picks with a closure.
struct With<F>(F);

impl<F> App for With<F>
where
    F: Fn(&mut Request<'_>, &mut Response<'_>) -> crate::Result + Send + Sync + 'static,
{
    fn handle(&self, req: &mut Request<'_>, resp: &mut Response<'_>) -> crate::Result {
        (self.0)(req, resp)
    }
}

fn app<F>(f: F) -> With<F>
where
    F: Fn(&mut Request<'_>, &mut Response<'_>) -> crate::Result + Send + Sync + 'static,
{
    With(f)
}

#[test]
fn the_app_sees_the_request_as_the_host_would_hand_it() {
    let resp = call(
        app(|req, resp| {
            let body = req.body_bytes(1 << 20)?;
            let headers: Vec<String> = req
                .headers()
                .map(|h| format!("{}={}", h.name, h.value_str().unwrap_or("?")))
                .collect();
            resp.body(format!(
                "{} {} {} {} {:?} {:?} {} {} {} {} {}|{}|{}",
                req.method(),
                req.target(),
                req.path(),
                req.query(),
                req.query_param("b"),
                req.content_length(),
                req.version().as_str(),
                req.remote_addr(),
                req.local_addr(),
                req.scheme(),
                req.request_id(),
                headers.join(","),
                String::from_utf8_lossy(&body),
            ))?;
            Ok(())
        }),
        TestRequest::post("/x/y?a=1&b=two")
            .header("X-One", "  1 ")
            .header("x-two", "2")
            .body("payload")
            .remote_addr("10.1.2.3:999")
            .scheme("https")
            .request_id("rid-7"),
    );
    assert_eq!(
        resp.text(),
        "POST /x/y?a=1&b=two /x/y a=1&b=two Some(\"two\") Some(7) HTTP/1.1 10.1.2.3:999 \
         127.0.0.1:8000 https rid-7|Host=localhost,X-One=1,x-two=2,Content-Length=7|payload"
    );
    assert_eq!(resp.outcome, Outcome::Done);
    assert_eq!(resp.kind, BodyKind::Whole);
    assert_eq!(resp.content_length, Some(resp.body.len() as u64));
}

#[test]
fn a_chunked_http10_request_and_a_body_that_fails() {
    let resp = call(
        app(|req, resp| {
            let mut text = format!("{:?} {} ", req.content_length(), req.version().as_str());
            match req.body().read_to_string(&mut text) {
                Ok(_) => text.push_str(" read"),
                Err(e) => text.push_str(&format!(" failed: {e}")),
            }
            resp.body(text)?;
            Ok(())
        }),
        TestRequest::post("/")
            .http10()
            .chunked()
            .body("part")
            .body_error("the client went away"),
    );
    assert_eq!(
        resp.text(),
        "None HTTP/1.0 part failed: the client went away"
    );
}

#[test]
#[should_panic(expected = "not the body's length")]
fn a_request_the_host_would_refuse_is_a_test_bug() {
    call(
        app(|_, _| Ok(())),
        TestRequest::post("/")
            .header("Content-Length", "3")
            .body("four"),
    );
}

#[test]
#[should_panic(expected = "not a valid header name")]
fn an_invalid_request_header_name_is_a_test_bug() {
    call(
        app(|_, _| Ok(())),
        TestRequest::get("/").header("bad name", "x"),
    );
}

#[test]
fn status_and_header_rules_are_the_hosts() {
    let resp = call(
        app(|_, resp| {
            for status in [99, 1000, 201] {
                let _ = resp.try_status(status);
            }
            for (name, value) in [("Bad Name", "x"), ("X-Split", "a\r\nInjected: yes")] {
                let _ = resp.try_header(name, value);
            }
            resp.header("X-Ok", " fine ")
                .header("Set-Cookie", "a=1")
                .header("set-cookie", "b=2");
            resp.body("made")?;
            // Everything after the body is refused.
            assert!(resp.try_status(202).is_err());
            assert!(resp.try_header("X-Late", "1").is_err());
            assert!(resp.body("again").is_err());
            assert!(resp.stream().write_all(b"more").is_err());
            Ok(())
        }),
        TestRequest::get("/"),
    );
    assert_eq!(resp.status, 201);
    assert_eq!(resp.text(), "made");
    assert_eq!(resp.header("x-ok"), Some("fine"));
    assert_eq!(
        resp.header_all("Set-Cookie"),
        [b"a=1".as_slice(), b"b=2".as_slice()]
    );
    let names: Vec<&str> = resp.headers.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["X-Ok", "Set-Cookie", "set-cookie"]);
    assert_eq!(
        resp.refused,
        [
            "status 99 is not a final status (200-999; 1xx are not supported)",
            "status 1000 is not a final status (200-999; 1xx are not supported)",
            "header \"Bad Name\": invalid header name",
            "header \"X-Split\": control character in header value",
            "status 202: the response has started; the status can no longer change",
            "header \"X-Late\": the response has started; headers can no longer be added",
            "a body: the response has already started",
            "a stream write: the response has ended",
        ]
    );
}

#[test]
fn head_and_204_get_no_body() {
    let hello = || app(|_, resp| Ok(resp.body("hello")?));
    let resp = call(hello(), TestRequest::head("/"));
    assert_eq!((resp.status, resp.text()), (200, String::new()));
    assert_eq!(resp.content_length, Some(5));

    let resp = call(
        app(|_, resp| Ok(resp.status(204).body("ignored")?)),
        TestRequest::get("/"),
    );
    assert_eq!((resp.status, resp.body.len()), (204, 0));
    assert_eq!(resp.content_length, None);

    let resp = call(
        app(|_, resp| {
            let mut out = resp.stream();
            out.write_all(b"a")?;
            out.write_all(b"b")?;
            Ok(())
        }),
        TestRequest::head("/"),
    );
    assert_eq!((resp.kind, resp.body.len()), (BodyKind::Stream, 0));
}

#[test]
fn a_stream_is_collected_part_by_part() {
    let resp = call(
        app(|_, resp| {
            let mut out = resp.stream();
            for part in ["one ", "", "two ", "three"] {
                out.write_all(part.as_bytes())?;
            }
            Ok(())
        }),
        TestRequest::get("/"),
    );
    assert_eq!(resp.kind, BodyKind::Stream);
    assert_eq!(resp.text(), "one two three");
    assert_eq!(
        resp.parts,
        [b"one ".to_vec(), b"two ".to_vec(), b"three".to_vec()]
    );
    assert_eq!(resp.content_length, None);
}

/// An unlinked temporary file holding `bytes`.
fn temp_file(bytes: &[u8]) -> File {
    static N: AtomicU32 = AtomicU32::new(0);
    let path = std::env::temp_dir().join(format!(
        "app-sdk-testing-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .expect("a temporary file");
    let _ = std::fs::remove_file(&path);
    file.write_all(bytes).expect("write the temporary file");
    file
}

#[test]
fn a_file_body_is_read_and_a_short_file_cuts_the_response() {
    let resp = call(
        app(|_, resp| Ok(resp.file_range(&temp_file(b"0123456789"), 2, 5)?)),
        TestRequest::get("/"),
    );
    assert_eq!(
        (resp.kind, resp.text()),
        (BodyKind::File, "23456".to_owned())
    );
    assert_eq!(resp.content_length, Some(5));

    let resp = call(
        app(|_, resp| Ok(resp.file_range(&temp_file(b"abc"), 0, 10)?)),
        TestRequest::get("/"),
    );
    assert!(resp.cut_short);
    assert_eq!(resp.text(), "abc");
    assert_eq!(
        resp.outcome,
        Outcome::Failed("the file ended 7 bytes short of the 10 announced".into())
    );
}

#[derive(Debug)]
struct Outer(std::io::Error);
impl fmt::Display for Outer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("cannot load")
    }
}
impl std::error::Error for Outer {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

#[test]
fn errors_and_panics_are_answered_500_before_the_body_and_cut_it_short_after() {
    let resp = call(
        app(|_, resp| {
            resp.header("X-Gone", "1");
            Err(Outer(std::io::Error::other("disk on fire")).into())
        }),
        TestRequest::get("/"),
    );
    assert_eq!(resp.status, 500);
    assert_eq!(resp.text(), FAILED_BODY);
    assert_eq!(resp.header("x-gone"), None);
    assert_eq!(
        resp.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(
        resp.outcome,
        Outcome::Failed("cannot load: disk on fire".into())
    );

    let resp = call(app(|_, _| panic!("boom")), TestRequest::get("/"));
    assert_eq!(resp.status, 500);
    let Outcome::Panicked(message) = &resp.outcome else {
        panic!("{:?}", resp.outcome)
    };
    assert!(message.starts_with("boom (at "), "{message}");
    assert!(!resp.cut_short);

    let resp = call(
        app(|_, resp| {
            resp.stream().write_all(b"first")?;
            panic!("later")
        }),
        TestRequest::get("/"),
    );
    assert_eq!((resp.status, resp.text()), (200, "first".to_owned()));
    assert!(resp.cut_short);
    assert_eq!(
        resp.outcome.message().map(|m| m.starts_with("later")),
        Some(true)
    );
}

#[test]
fn no_body_is_an_empty_one() {
    let resp = call(
        app(|_, resp| {
            resp.status(302).header("Location", "/there");
            Ok(())
        }),
        TestRequest::get("/"),
    );
    assert_eq!((resp.status, resp.kind), (302, BodyKind::None));
    assert_eq!(resp.content_length, Some(0));
    assert_eq!(resp.header("location"), Some("/there"));
}

/// Keeps what `init` was told, and counts exits.
struct Facts {
    seen: String,
    exits: &'static AtomicU32,
}

impl App for Facts {
    fn init(&mut self, worker: &Worker<'_>) -> crate::Result {
        if worker.app_name == "refuse" {
            return Err("refused by init".into());
        }
        self.seen = format!(
            "{} {} {} {} {} {}",
            worker.id, worker.pid, worker.threads, worker.generation, worker.probe, worker.app_name
        );
        Ok(())
    }
    fn handle(&self, _req: &mut Request<'_>, resp: &mut Response<'_>) -> crate::Result {
        resp.body(&self.seen)?;
        Ok(())
    }
    fn exit(&self) {
        self.exits.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn worker_facts_reach_init_and_exit_runs_once() {
    static EXITS: AtomicU32 = AtomicU32::new(0);
    let facts = WorkerFacts {
        id: 3,
        pid: 42,
        threads: 4,
        generation: 2,
        probe: true,
        app_name: "admin".into(),
    };
    let client = TestClient::with_worker(
        Facts {
            seen: String::new(),
            exits: &EXITS,
        },
        &facts,
    )
    .expect("init");
    assert_eq!(
        client.call(TestRequest::get("/")).text(),
        "3 42 4 2 true admin"
    );
    assert_eq!(
        client.call(TestRequest::get("/")).text(),
        "3 42 4 2 true admin"
    );
    assert_eq!(EXITS.load(Ordering::SeqCst), 0);
    assert_eq!(client.exit(), Outcome::Done);
    assert_eq!(EXITS.load(Ordering::SeqCst), 1);

    let refused = TestClient::with_worker(
        Facts {
            seen: String::new(),
            exits: &EXITS,
        },
        &WorkerFacts {
            app_name: "refuse".into(),
            ..WorkerFacts::default()
        },
    );
    assert_eq!(
        refused.err(),
        Some(StartError::Failed("refused by init".into()))
    );
    // A failed init made no instance: nothing to exit.
    assert_eq!(EXITS.load(Ordering::SeqCst), 1);
}

#[test]
fn calls_from_several_threads_overlap_on_one_instance() {
    let client = TestClient::new(app(|req, resp| Ok(resp.body(req.path())?))).expect("init");
    std::thread::scope(|s| {
        for t in 0..4 {
            let client = &client;
            s.spawn(move || {
                for i in 0..50 {
                    let path = format!("/{t}/{i}");
                    assert_eq!(client.call(TestRequest::get(path.as_str())).text(), path);
                }
            });
        }
    });
}

#[test]
fn a_missing_library_is_a_load_error() {
    // SAFETY: nothing is loaded: the file does not exist.
    let err = unsafe { TestClient::load("/nonexistent/libnothing.so:app") }.unwrap_err();
    assert!(matches!(err, StartError::Load(_)), "{err}");
    assert_eq!(split_spec("a/lib.so:admin"), ("a/lib.so", "admin"));
    assert_eq!(split_spec("a/lib.so"), ("a/lib.so", "app"));
    assert_eq!(split_spec("./x:y/lib.so"), ("./x:y/lib.so", "app"));
}

#[cfg(feature = "testing-json")]
#[test]
fn json_in_and_out() {
    let resp = call(
        app(|req, resp| {
            let value: serde_json::Value = serde_json::from_slice(&req.body_bytes(1 << 20)?)?;
            let ct = req.header_str("content-type").unwrap_or("").to_owned();
            resp.body(serde_json::json!({ "got": value, "ct": ct }).to_string())?;
            Ok(())
        }),
        TestRequest::post("/").json(&serde_json::json!({ "n": 1 })),
    );
    let value: serde_json::Value = resp.json().expect("JSON");
    assert_eq!(
        value,
        serde_json::json!({ "got": { "n": 1 }, "ct": "application/json" })
    );
}

// ---------------------------------------------------------------------------
// The response rules, as `tests/integration/response_rules.rs` checks them
// through the host (with the `rules` app's routes as closures).

/// Reports `result` in the `X-Refused` response header when it is an error
/// (as the `rules` app does).
fn report(resp: &mut Response<'_>, result: std::io::Result<()>) {
    if let Err(e) = result {
        resp.header("X-Refused", e.to_string());
    }
}

/// The `rules` app's `/try-header`: adds `name: value` with `try_header`,
/// reports a refusal in `X-Refused`, and sends `done\n`.
fn try_header(name: &str, value: &str) -> TestResponse {
    let (name, value) = (name.to_owned(), value.to_owned());
    call(
        app(move |_, resp| {
            let result = resp.try_header(&name, &value);
            report(resp, result);
            resp.body("done\n")?;
            Ok(())
        }),
        TestRequest::get("/try-header"),
    )
}

/// The `rules` app's `/stream`: a stream of declared length `length` (or
/// of unknown length), writing `write` bytes of `a` three at a time and
/// stopping at the first refused write.
fn stream(length: Option<u64>, write: usize, req: TestRequest) -> TestResponse {
    call(
        app(move |_, resp| {
            let mut writer = match length {
                Some(n) => resp.stream_with_length(n),
                None => resp.stream(),
            };
            let mut left = write;
            while left > 0 {
                let part = left.min(3);
                if writer.write_all(&b"aaa"[..part]).is_err() {
                    break;
                }
                left -= part;
            }
            Ok(())
        }),
        req,
    )
}

#[test]
fn a_status_outside_200_to_999_is_refused() {
    for code in [0, 1, 100, 101, 199, 1000] {
        let resp = call(
            app(move |_, resp| {
                let result = resp.try_status(code);
                report(resp, result);
                resp.body("done\n")?;
                Ok(())
            }),
            TestRequest::get("/try-status"),
        );
        assert_eq!(resp.status, 200, "code {code}");
        let refused = resp.header("x-refused").unwrap_or_default();
        assert!(refused.contains("not a final status"), "{code}: {refused}");
        assert_eq!(
            resp.refused,
            [format!(
                "status {code} is not a final status (200-999; 1xx are not supported)"
            )]
        );
    }
    for code in [200, 299, 999] {
        let resp = call(
            app(move |_, resp| Ok(resp.status(code).body("done\n")?)),
            TestRequest::get("/try-status"),
        );
        assert_eq!((resp.status, resp.refused.len()), (code, 0));
    }
    // Chained, the refusal comes back from the body call: `?` makes it a 500.
    let resp = call(
        app(|_, resp| Ok(resp.status(1000).body("sent\n")?)),
        TestRequest::get("/status"),
    );
    assert_eq!((resp.status, resp.text()), (500, FAILED_BODY.to_owned()));
    assert!(
        resp.outcome
            .message()
            .is_some_and(|m| m.contains("status 1000 is not a final status")),
        "{:?}",
        resp.outcome
    );
    assert_eq!(resp.refused.len(), 1, "one refusal: {:?}", resp.refused);
}

#[test]
fn transfer_encoding_is_refused() {
    let resp = try_header("Transfer-Encoding", "chunked");
    assert_eq!(resp.status, 200);
    assert!(
        resp.header("x-refused")
            .is_some_and(|r| r.contains("the host frames the body")),
        "{resp:?}"
    );
    assert_eq!(resp.header("transfer-encoding"), None);
    assert_eq!(resp.content_length, Some(5));
    assert_eq!(
        resp.refused,
        ["header \"Transfer-Encoding\": the host frames the body (set Content-Length for a known length)"]
    );
    let resp = call(
        app(|_, resp| Ok(resp.header("transfer-encoding", "gzip").body("sent\n")?)),
        TestRequest::get("/header"),
    );
    assert_eq!(resp.status, 500);
}

#[test]
fn date_and_server_are_the_apps_to_set() {
    for (name, value) in [
        ("Server", "mine/1.0"),
        ("Date", "Thu, 01 Jan 2026 00:00:00 GMT"),
    ] {
        let resp = try_header(name, value);
        assert_eq!(resp.header("x-refused"), None, "{resp:?}");
        assert_eq!(
            resp.header_all(name),
            [value.as_bytes()],
            "the app's {name} is listed, replacing the host's"
        );
        assert!(resp.refused.is_empty(), "{:?}", resp.refused);
    }
}

#[test]
fn connection_close_is_honoured_keep_alive_accepted_others_refused() {
    for (value, closes) in [
        ("close", true),
        ("keep-alive", false),
        ("keep-alive, Close", true),
    ] {
        let resp = try_header("Connection", value);
        assert_eq!(resp.closes, closes, "{value}");
        assert_eq!(resp.header("x-refused"), None, "{value}: {resp:?}");
        assert_eq!(resp.header("connection"), None, "the host writes it");
        assert!(resp.refused.is_empty(), "{value}: {:?}", resp.refused);
    }
    for value in ["upgrade", "close, x-thing"] {
        let resp = try_header("Connection", value);
        assert!(!resp.closes, "{value}: refused, so not honoured");
        assert!(
            resp.header("x-refused")
                .is_some_and(|r| r.contains("close or keep-alive")),
            "{resp:?}"
        );
        assert_eq!(
            resp.refused,
            ["header \"Connection\": Connection may only be close or keep-alive"]
        );
    }
    // The host's 500 after a failure still closes as the app asked.
    let resp = call(
        app(|_, resp| {
            resp.header("Connection", "close");
            Err("no".into())
        }),
        TestRequest::get("/"),
    );
    assert_eq!((resp.status, resp.closes), (500, true));
}

#[test]
fn an_invalid_or_second_content_length_is_refused() {
    for value in ["five", "-1", "5, 5", "", "0x10", "99999999999999999999"] {
        let resp = try_header("Content-Length", value);
        assert!(
            resp.header("x-refused")
                .is_some_and(|r| r.contains("must be a number")),
            "{value}: {resp:?}"
        );
        assert_eq!(resp.content_length, Some(5), "{resp:?}");
        assert_eq!(
            resp.refused,
            ["header \"Content-Length\": Content-Length must be a number of bytes"]
        );
    }
    let resp = call(
        app(|_, resp| {
            resp.header("Content-Length", "5");
            let result = resp.try_header("Content-Length", "5");
            report(resp, result);
            resp.body("done\n")?;
            Ok(())
        }),
        TestRequest::get("/two-lengths"),
    );
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), "done\n");
    assert_eq!(
        resp.refused,
        ["a second Content-Length (5; the first was 5)"]
    );
    assert_eq!(
        resp.header("content-length"),
        None,
        "not listed: the framing"
    );
    assert_eq!(resp.content_length, Some(5));
}

#[test]
fn a_whole_body_must_match_the_apps_content_length() {
    let length = |length: &'static str, body: &'static str| {
        app(move |_, resp| Ok(resp.header("Content-Length", length).body(body)?))
    };
    let resp = call(length("5", "hello"), TestRequest::get("/length"));
    assert_eq!((resp.status, resp.text()), (200, "hello".to_owned()));
    assert_eq!(resp.content_length, Some(5));
    assert!(resp.refused.is_empty(), "{:?}", resp.refused);
    // A mismatch is refused, nothing of it sent; with `?` the call fails: 500.
    let resp = call(length("9", "hello"), TestRequest::get("/length"));
    assert_eq!((resp.status, resp.text()), (500, FAILED_BODY.to_owned()));
    assert_eq!(resp.content_length, Some(FAILED_BODY.len() as u64));
    let why = "the body is 5 bytes but the app set Content-Length: 9";
    assert_eq!(resp.refused, [why]);
    assert_eq!(resp.outcome, Outcome::Failed(why.into()));
    // Ignored by the app, the refusal still keeps the wrong body from the
    // client: the host answers 500 when the call returns (and says so).
    let ignored = |length: &'static str| {
        app(move |_, resp| {
            let _ = resp.header("Content-Length", length).body("hello");
            Ok(())
        })
    };
    let resp = call(ignored("2"), TestRequest::get("/length-ignored"));
    assert_eq!((resp.status, resp.text()), (500, FAILED_BODY.to_owned()));
    assert_eq!(
        resp.refused,
        [
            "the body is 5 bytes but the app set Content-Length: 2",
            "nothing was sent (the body is 0 bytes but the app set Content-Length: 2): answered 500",
        ]
    );
    assert_eq!(resp.outcome, Outcome::Done, "the handler returned Ok");
    // A header refused and ignored keeps the body from going out too: the
    // SDK fails the call.
    let resp = call(ignored("x"), TestRequest::get("/length-ignored"));
    assert_eq!(resp.status, 500);
    assert!(
        resp.outcome
            .message()
            .is_some_and(|m| m.starts_with("the host refused the response")),
        "{:?}",
        resp.outcome
    );
}

#[test]
fn a_204_refuses_the_apps_content_length_and_a_304_sends_it() {
    let resp = call(
        app(|_, resp| Ok(resp.status(204).header("Content-Length", "0").body("")?)),
        TestRequest::get("/"),
    );
    assert_eq!(resp.status, 500);
    assert_eq!(
        resp.refused,
        ["Content-Length: 0 on a 204 response, which has no body"]
    );
    let resp = call(
        app(|_, resp| {
            let mut out = resp.status(204).stream_with_length(0);
            assert!(out.write(b"x").is_err());
            Ok(())
        }),
        TestRequest::get("/"),
    );
    assert_eq!(resp.status, 500);
    assert_eq!(
        resp.refused,
        [
            "Content-Length on a 204 response, which has no body",
            "nothing was sent (Content-Length: 0 on a 204 response, which has no body): answered 500",
        ]
    );
    // A 304 may say how long the representation is: with no body, or a
    // body of that length (not sent).
    for send in [false, true] {
        let resp = call(
            app(move |_, resp| {
                resp.status(304).header("Content-Length", "1234");
                if send {
                    resp.body(vec![b'x'; 1234])?;
                }
                Ok(())
            }),
            TestRequest::get("/"),
        );
        assert_eq!((resp.status, resp.body.len()), (304, 0));
        assert_eq!(resp.content_length, Some(1234));
        assert!(resp.refused.is_empty(), "{:?}", resp.refused);
    }
}

#[test]
fn head_sends_the_apps_content_length_without_a_body() {
    // What a framework does on HEAD: the length of the GET's body, no body.
    for body in ["", "hello"] {
        let resp = call(
            app(move |_, resp| Ok(resp.header("Content-Length", "5").body(body)?)),
            TestRequest::head("/length"),
        );
        assert_eq!((resp.status, resp.body.len()), (200, 0));
        assert_eq!(resp.content_length, Some(5));
        assert!(resp.refused.is_empty(), "{:?}", resp.refused);
    }
    // Neither empty nor the length: refused; ignored, the head goes out alone.
    let resp = call(
        app(|_, resp| {
            let _ = resp.header("Content-Length", "5").body("four");
            Ok(())
        }),
        TestRequest::head("/length"),
    );
    assert_eq!((resp.status, resp.content_length), (200, Some(5)));
    assert_eq!(
        resp.refused,
        ["the body is 4 bytes but the app set Content-Length: 5"]
    );
    // A known-length stream on HEAD: the length, no body, nothing short.
    let resp = stream(Some(10), 0, TestRequest::head("/stream"));
    assert_eq!((resp.content_length, resp.body.len()), (Some(10), 0));
    assert!(!resp.cut_short && resp.refused.is_empty(), "{resp:?}");
}

#[test]
fn a_stream_of_known_length_is_not_chunked() {
    let resp = stream(Some(10), 10, TestRequest::get("/stream"));
    assert_eq!(
        (resp.kind, resp.content_length),
        (BodyKind::Stream, Some(10))
    );
    assert_eq!(resp.text(), "aaaaaaaaaa");
    assert_eq!(resp.parts.len(), 4);
    assert!(!resp.cut_short && resp.refused.is_empty(), "{resp:?}");
    // Without a length, the same stream is chunked.
    let resp = stream(None, 10, TestRequest::get("/stream"));
    assert_eq!((resp.kind, resp.content_length), (BodyKind::Stream, None));
    assert_eq!(resp.text(), "aaaaaaaaaa");
}

#[test]
fn a_stream_that_ends_short_is_cut_short() {
    let resp = stream(Some(10), 4, TestRequest::get("/stream"));
    assert_eq!(resp.content_length, Some(10));
    assert_eq!(resp.text(), "aaaa");
    assert!(resp.cut_short, "the host closes the connection");
    assert_eq!(
        resp.refused,
        ["the stream ended 6 bytes short of the app's Content-Length: 10: closing the connection"]
    );
    assert_eq!(resp.outcome, Outcome::Done);
}

#[test]
fn a_stream_write_past_the_length_is_refused() {
    let resp = stream(Some(4), 10, TestRequest::get("/stream"));
    assert_eq!(resp.text(), "aaa", "the refused write sent nothing");
    assert_eq!(
        resp.refused,
        [
            "a stream write of 3 bytes: only 1 of the app's Content-Length: 4 are left",
            // The stream then ended a byte short: the connection is closed.
            "the stream ended 1 bytes short of the app's Content-Length: 4: closing the connection",
        ]
    );
    assert!(resp.cut_short);
}

#[test]
fn a_file_must_match_the_apps_content_length() {
    let send = |length: &'static str| {
        let file = temp_file(b"twelve bytes");
        app(move |_, resp| Ok(resp.header("Content-Length", length).file(&file)?))
    };
    let resp = call(send("12"), TestRequest::get("/file"));
    assert_eq!((resp.status, resp.text()), (200, "twelve bytes".to_owned()));
    assert_eq!((resp.kind, resp.content_length), (BodyKind::File, Some(12)));
    let resp = call(send("5"), TestRequest::get("/file"));
    assert_eq!(resp.status, 500);
    assert_eq!(
        resp.refused,
        ["the body is 12 bytes but the app set Content-Length: 5"]
    );
}

/// An app answering what it sees of TLS, one line.
fn tls_reporter() -> impl App {
    app(|req, resp| {
        let line = match req.tls() {
            None => format!("{} none", req.scheme()),
            Some(t) => format!(
                "{} {} {} {:?} {:?} {:?}",
                req.scheme(),
                t.version(),
                t.cipher(),
                t.sni(),
                t.alpn(),
                t.client_subject()
            ),
        };
        resp.body(line)?;
        Ok(())
    })
}

#[test]
fn tls_facts_reach_the_app() {
    let client = TestClient::new(tls_reporter()).unwrap();
    let full = OwnedTlsInfo::new("TLSv1.3", "TLS13_AES_128_GCM_SHA256")
        .with_sni("a.test")
        .with_alpn("http/1.1")
        .with_client_subject("CN=alice,O=Example");
    let bare = OwnedTlsInfo::new("TLSv1.2", "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384");
    // (request, what the app says)
    let cases = [
        (TestRequest::get("/"), "http none"),
        (
            TestRequest::get("/").tls(full.clone()),
            "https TLSv1.3 TLS13_AES_128_GCM_SHA256 Some(\"a.test\") Some(\"http/1.1\") \
             Some(\"CN=alice,O=Example\")",
        ),
        (
            TestRequest::get("/").tls(bare),
            "https TLSv1.2 TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384 None None None",
        ),
        // A trusted proxy's word on the scheme wins over the connection's.
        (
            TestRequest::get("/").tls(full).scheme("http"),
            "http TLSv1.3 TLS13_AES_128_GCM_SHA256 Some(\"a.test\") Some(\"http/1.1\") \
             Some(\"CN=alice,O=Example\")",
        ),
        // TLS terminated by a proxy in front: https, but no facts.
        (TestRequest::get("/").scheme("https"), "https none"),
    ];
    for (req, said) in cases {
        assert_eq!(client.call(req).text(), said);
    }
}

/// A host older than revision 1 sends a request table that ends before
/// `tls`: whatever lies past it in memory, the app reads `None`.
#[test]
fn an_older_hosts_request_has_no_tls() {
    let client = TestClient::new(tls_reporter()).unwrap();
    let tls = OwnedTlsInfo::new("TLSv1.3", "TLS13_AES_128_GCM_SHA256");
    let resp = client.call_with(TestRequest::get("/").tls(tls), |raw| {
        raw.size = crate::abi::RAW_REQUEST_MIN as u32;
        // Past the old table: a pointer that must never be followed.
        raw.tls = std::ptr::dangling();
    });
    assert_eq!(resp.text(), "https none");
    assert_eq!(resp.outcome, Outcome::Done);
}

#[cfg(feature = "http")]
#[test]
fn the_http_request_carries_the_tls_facts() {
    let client = TestClient::new(app(|req, resp| {
        let parts = req.http_parts()?;
        let tls = parts.extensions.get::<OwnedTlsInfo>();
        resp.body(format!(
            "{} {:?}",
            parts.extensions.len(),
            tls.map(|t| (t.version(), t.sni()))
        ))?;
        Ok(())
    }))
    .unwrap();
    let tls = OwnedTlsInfo::new("TLSv1.3", "TLS13_CHACHA20_POLY1305_SHA256").with_sni("b.test");
    assert_eq!(
        client.call(TestRequest::get("/").tls(tls)).text(),
        "1 Some((\"TLSv1.3\", Some(\"b.test\")))"
    );
    assert_eq!(client.call(TestRequest::get("/")).text(), "0 None");
}

/// An axum handler takes the TLS facts from the request's extensions.
#[cfg(feature = "tower")]
#[test]
fn an_axum_handler_extracts_the_tls_facts() {
    use axum::{routing::get, Extension, Router};

    async fn who(tls: Option<Extension<OwnedTlsInfo>>) -> String {
        match tls {
            Some(Extension(t)) => format!("{} {:?}", t.version(), t.client_subject()),
            None => "plain".to_owned(),
        }
    }
    let client = TestClient::new(crate::tower::TowerApp::new(|| {
        Router::new().route("/", get(who))
    }))
    .unwrap();
    let tls =
        OwnedTlsInfo::new("TLSv1.3", "TLS13_AES_128_GCM_SHA256").with_client_subject("CN=bob");
    assert_eq!(
        client.call(TestRequest::get("/").tls(tls)).text(),
        "TLSv1.3 Some(\"CN=bob\")"
    );
    assert_eq!(client.call(TestRequest::get("/")).text(), "plain");
}

/// Accepts every handshake; `on_message` obeys: `panic`, `fail`, `close
/// CODE`, `bad-close` (a code the app may not send), else echoes; every
/// `on_close` is logged in `closes`.
#[derive(Default)]
struct Obey {
    closes: std::sync::Mutex<Vec<(WsId, u16, String)>>,
}

impl App for Obey {
    fn handle(&self, req: &mut Request<'_>, resp: &mut Response<'_>) -> crate::Result {
        let offered = req.websocket().and_then(|ws| ws.protocols().next());
        resp.header("X-Cookie", "1");
        resp.accept_websocket(offered)?;
        resp.header("X-After", "2");
        Ok(())
    }

    fn on_message(&self, ws: &crate::WebSocket<'_>, msg: crate::Message<'_>) -> crate::Result {
        match msg.as_text() {
            Some("panic") => panic!("asked to"),
            Some("fail") => Err("asked to fail".into()),
            Some(close) if close.starts_with("close ") => {
                ws.close_with(close[6..].parse().unwrap_or(1000), "asked")?;
                Ok(())
            }
            Some("bad-close") => {
                let refused = ws.close_with(1005, "").unwrap_err().to_string();
                ws.reply(&*refused)?;
                Ok(())
            }
            _ => Ok(ws.reply(msg)?),
        }
    }

    fn on_close(&self, ws: &crate::WebSocket<'_>, close: crate::Close<'_>) {
        self.closes
            .lock()
            .unwrap()
            .push((ws.id(), close.code, close.reason.to_owned()));
    }
}

/// The `on_close` calls `obey` saw: (id, code, reason).
fn closes_of(obey: &std::sync::Arc<Obey>) -> Vec<(WsId, u16, String)> {
    obey.closes.lock().unwrap().clone()
}

/// `Obey` behind an `Arc`, so the test keeps a handle on what it logs.
struct Shared(std::sync::Arc<Obey>);

impl App for Shared {
    fn handle(&self, req: &mut Request<'_>, resp: &mut Response<'_>) -> crate::Result {
        self.0.handle(req, resp)
    }
    fn on_message(&self, ws: &crate::WebSocket<'_>, msg: crate::Message<'_>) -> crate::Result {
        self.0.on_message(ws, msg)
    }
    fn on_close(&self, ws: &crate::WebSocket<'_>, close: crate::Close<'_>) {
        self.0.on_close(ws, close)
    }
}

#[test]
fn a_websocket_opens_echoes_and_closes_once_whoever_ends_it() {
    let obey = std::sync::Arc::new(Obey::default());
    let client = TestClient::new(Shared(obey.clone())).unwrap();
    let ws = client.websocket(TestRequest::get("/ws").header("Sec-WebSocket-Protocol", "v2, v1"));
    assert_eq!(ws.response.status, 101);
    assert_eq!(ws.opened, Some(Outcome::Done));
    assert_eq!(ws.protocol().as_deref(), Some("v2"));
    assert_eq!(
        ws.response.header("x-after"),
        Some("2"),
        "headers go into the 101"
    );
    let id = ws.id().unwrap();
    assert!(ws.send_text("hello").is_done());
    assert!(ws.send_binary(&[0, 1, 2]).is_done());
    assert_eq!(
        ws.received(),
        [Frame::Text("hello".into()), Frame::Binary(vec![0, 1, 2])]
    );
    ws.send_text("bad-close");
    assert_eq!(
        ws.received_texts(),
        ["a WebSocket send: close code 1005 may not be sent"]
    );
    // The client closes: on_close gets its code, once.
    assert!(ws.close(1000, "done").is_done());
    assert!(!ws.is_open());
    assert_eq!(closes_of(&obey), [(id, 1000, "done".to_owned())]);
    drop(ws);
    assert_eq!(closes_of(&obey).len(), 1, "not again when dropped");

    // The app closes: the client gets the frame, on_close the app's code.
    let ws = client.websocket(TestRequest::get("/ws"));
    ws.send_text("close 4000");
    assert_eq!(
        ws.received(),
        [Frame::Close {
            code: 4000,
            reason: "asked".into()
        }]
    );
    assert_eq!(ws.closed(), Some((4000, "asked".into())));
    assert_eq!(closes_of(&obey)[1].1, 4000);

    // A failed or panicking event: 1011 from the host.
    for (word, failed) in [("fail", "asked to fail"), ("panic", "asked to")] {
        let ws = client.websocket(TestRequest::get("/ws"));
        let outcome = ws.send_text(word);
        assert!(outcome.message().unwrap().contains(failed), "{outcome:?}");
        assert_eq!(ws.closed(), Some((1011, "internal error".into())));
        assert_eq!(closes_of(&obey).last().unwrap().1, 1011);
    }

    // A client that vanishes: 1006.
    let ws = client.websocket(TestRequest::get("/ws"));
    let id = ws.id().unwrap();
    drop(ws);
    assert_eq!(closes_of(&obey).last().unwrap(), &(id, 1006, String::new()));

    // The log of sends names every id, open or not.
    let sent = client.websocket_sent();
    assert!(sent.iter().all(|s| s.to.len() == 1));
    assert_eq!(sent[0].frame, Frame::Text("hello".into()));
}

#[test]
fn accepting_needs_a_handshake_sent_as_one() {
    let resp = call(Obey::default(), TestRequest::get("/ws"));
    assert_eq!(resp.status, 500);
    assert!(
        resp.refused[0].contains("send it with TestClient::websocket"),
        "{:?}",
        resp.refused
    );
    assert_eq!(resp.websocket, None);
}

#[test]
fn a_raw_upgrade_is_recorded_when_the_request_offers_it() {
    let echo = || {
        app(|_req, resp| {
            let mut stream = resp.upgrade("echo")?;
            let mut buf = [0u8; 4];
            loop {
                match stream.read(&mut buf)? {
                    0 => return Ok(()),
                    n => stream.write_all(&buf[..n])?,
                }
            }
        })
    };
    let offer = TestRequest::get("/raw")
        .header("Connection", "Upgrade")
        .header("Upgrade", "h2c, Echo")
        .raw_input("ping pong");
    let resp = call(echo(), offer.clone());
    assert_eq!(resp.status, 101);
    assert_eq!(resp.upgraded.as_deref(), Some("echo"));
    assert_eq!(resp.text(), "ping pong");
    assert_eq!(resp.parts.len(), 3, "written as read: 4 + 4 + 1 bytes");
    assert!(resp.outcome.is_done());

    let resp = call(echo(), TestRequest::get("/raw").raw_input("x"));
    assert_eq!(resp.status, 500);
    assert!(
        resp.refused[0].contains("the request asked for no upgrade"),
        "{:?}",
        resp.refused
    );
    let ws = call(
        app(|_req, resp| {
            resp.upgrade("websocket")?;
            Ok(())
        }),
        offer.header("Upgrade", "websocket"),
    );
    assert!(
        ws.refused[0].contains("use accept_websocket"),
        "{:?}",
        ws.refused
    );
}
