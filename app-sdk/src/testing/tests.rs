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
            resp.status(99).status(1000).status(201);
            resp.header("Bad Name", "x")
                .header("X-Split", "a\r\nInjected: yes")
                .header("X-Ok", " fine ")
                .header("Content-Length", "999")
                .header("Transfer-Encoding", "chunked")
                .header("Connection", "close")
                .header("Set-Cookie", "a=1")
                .header("set-cookie", "b=2");
            resp.body("made")?;
            // Everything after the body is refused.
            resp.status(202).header("X-Late", "1");
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
            "status 99 is not a final status (200-999)",
            "status 1000 is not a final status (200-999)",
            "invalid header name",
            "control character in header value",
            "the response has started; the status can no longer change",
            "the response has started; headers can no longer be added",
            "the response has already started",
            "the response has ended",
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
