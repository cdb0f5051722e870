//! The `todo` app on the real binary with two workers: state written through
//! one worker is read through the other (SQLite, not per-worker memory).

use std::{collections::BTreeSet, io::Write};

use tests::{connect, eventually, raw, read_response, Host, Response, Scratch};

/// Sends one request with `body` (JSON) on a new connection; returns the response.
fn send(host: &Host, method: &str, path: &str, body: &str) -> Response {
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let bytes = raw(host.addr(), request.as_bytes());
    let mut responses = tests::parse_responses(&bytes);
    assert_eq!(
        responses.len(),
        1,
        "one response to {method} {path}, got {:?}",
        String::from_utf8_lossy(&bytes)
    );
    responses.remove(0)
}

/// The worker id and pid a response names.
fn served_by(resp: &Response) -> (String, String) {
    let id = resp.header("X-Worker-Id").expect("X-Worker-Id");
    let pid = resp.header("X-Worker-Pid").expect("X-Worker-Pid");
    (id.to_owned(), pid.to_owned())
}

/// Starts `todo` with two workers on a database in `scratch`.
fn start(scratch: &Scratch) -> Host {
    let db = scratch.file("todo.db");
    let app = tests::app_arg("todo");
    let mut host = Host::spawn_env(&["-w", "2", &app], &[("TODO_DB", &db)]);
    host.wait_listening_addr();
    host.wait_for_log("ready in", 2);
    host
}

#[test]
fn a_todo_written_through_one_worker_is_read_through_the_other() {
    let scratch = Scratch::new("todo-shared");
    let host = start(&scratch);

    let created = send(&host, "POST", "/todos", r#"{"title":"buy milk"}"#);
    assert_eq!(created.status, 201, "{}", created.text());
    let todo = created.json();
    let id = todo["id"].as_i64().expect("an id");
    assert_eq!(
        created.header("Location"),
        Some(format!("/todos/{id}").as_str())
    );
    let writer = served_by(&created);

    // Read it back until both workers have answered, the writer and the other.
    let path = format!("/todos/{id}");
    let seen = from_both_workers(&host, &path, |resp| {
        assert_eq!(resp.status, 200, "{}", resp.text());
        assert_eq!(resp.json(), todo);
    });
    assert!(seen.contains(&writer), "{writer:?} not in {seen:?}");
    let ids: BTreeSet<&String> = seen.iter().map(|(id, _)| id).collect();
    let pids: BTreeSet<&String> = seen.iter().map(|(_, pid)| pid).collect();
    assert_eq!((ids.len(), pids.len()), (2, 2), "{seen:?}");

    // A change through one is seen through every worker.
    let patched = send(&host, "PATCH", &path, r#"{"done":true}"#);
    assert_eq!(patched.status, 200, "{}", patched.text());
    from_both_workers(&host, "/todos", |resp| {
        assert_eq!(resp.status, 200, "{}", resp.text());
        assert_eq!(resp.json()[0]["done"], true, "{}", resp.text());
    });
}

/// GETs `path` until two workers have answered, checking each response;
/// returns the (worker id, pid) pairs that answered.
fn from_both_workers(
    host: &Host,
    path: &str,
    check: impl Fn(&Response),
) -> BTreeSet<(String, String)> {
    let mut seen = BTreeSet::new();
    eventually("both workers to answer", || {
        // Hold one connection open so the next request may go to the other
        // worker (an idle pool tends to hand every new one to the same).
        let mut held = connect(host.addr());
        held.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
            .expect("send");
        for resp in [read_response(&mut held), host.get(path)] {
            check(&resp);
            seen.insert(served_by(&resp));
        }
        (seen.len() >= 2).then_some(())
    });
    seen
}

#[test]
fn missing_todos_are_404_and_bad_json_is_400() {
    let scratch = Scratch::new("todo-errors");
    let host = start(&scratch);
    let missing = host.get("/todos/424242");
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["error"], "no such todo");
    let bad = send(&host, "POST", "/todos", "{\"title\": ");
    assert_eq!(bad.status, 400);
    assert!(
        bad.json()["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("invalid JSON")),
        "{}",
        bad.text()
    );
    assert_eq!(send(&host, "DELETE", "/todos/424242", "").status, 404);
    // Nothing was stored by the refused requests.
    assert_eq!(host.get("/todos").json(), serde_json::json!([]));
}
