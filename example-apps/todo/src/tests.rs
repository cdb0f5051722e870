//! The API through `app_sdk::testing`: two workers on one database file.

use app_sdk::testing::{TestClient, TestRequest, TestResponse, WorkerFacts};
use serde_json::{json, Value};

use super::*;

/// A database in a fresh directory, removed at the end.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Scratch {
        Scratch {
            dir: tempfile::tempdir().expect("a temporary directory"),
        }
    }

    /// Worker `id` of a pool serving this database.
    fn worker(&self, id: u32) -> TestClient {
        let facts = WorkerFacts {
            id,
            pid: 1000 + id,
            ..WorkerFacts::default()
        };
        TestClient::with_worker(Todos::at(self.dir.path().join("todo.db")), &facts)
            .expect("the todo app starts")
    }
}

fn json_of(resp: &TestResponse) -> Value {
    resp.json()
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", resp.text()))
}

#[test]
fn what_one_worker_writes_the_other_reads() {
    let scratch = Scratch::new();
    let (one, two) = (scratch.worker(1), scratch.worker(2));

    let created = one.call(TestRequest::post("/todos").json(&json!({ "title": " milk " })));
    assert_eq!(created.status, 201, "{}", created.text());
    assert_eq!(created.header("X-Worker-Id"), Some("1"));
    assert_eq!(
        created.header("Location"),
        Some(format!("/todos/{}", json_of(&created)["id"]).as_str())
    );
    let todo = json_of(&created);
    assert_eq!(todo["title"], "milk");
    assert_eq!(todo["done"], false);
    let id = todo["id"].as_i64().expect("an id");

    let read = two.call(TestRequest::get(format!("/todos/{id}")));
    assert_eq!(read.status, 200);
    assert_eq!(read.header("X-Worker-Id"), Some("2"));
    assert_eq!(read.header("X-Worker-Pid"), Some("1002"));
    assert_eq!(json_of(&read), todo);

    let patched =
        two.call(TestRequest::patch(format!("/todos/{id}")).json(&json!({ "done": true })));
    assert_eq!(patched.status, 200);
    assert_eq!(json_of(&patched)["done"], true);
    let listed = one.call(TestRequest::get("/todos"));
    assert_eq!(
        json_of(&listed),
        json!([{ "id": id, "title": "milk", "done": true }])
    );

    let deleted = one.call(TestRequest::delete(format!("/todos/{id}")));
    assert_eq!((deleted.status, deleted.body.len()), (204, 0));
    assert_eq!(
        two.call(TestRequest::get(format!("/todos/{id}"))).status,
        404
    );
    assert_eq!(
        two.call(TestRequest::delete(format!("/todos/{id}"))).status,
        404
    );
}

#[test]
fn bad_requests_are_refused_with_a_reason() {
    let scratch = Scratch::new();
    let client = scratch.worker(1);
    let refused = |req: TestRequest, status: u16| {
        let resp = client.call(req);
        assert_eq!(resp.status, status, "{}", resp.text());
        assert!(resp.outcome.is_done(), "{:?}", resp.outcome);
        json_of(&resp)["error"]
            .as_str()
            .expect("an error text")
            .to_owned()
    };
    let why = refused(TestRequest::post("/todos").body("{not json"), 400);
    assert!(why.starts_with("invalid JSON"), "{why}");
    refused(
        TestRequest::post("/todos").json(&json!({ "name": "x" })),
        400,
    );
    refused(
        TestRequest::post("/todos").json(&json!({ "title": "  " })),
        422,
    );
    let long = "x".repeat(MAX_TITLE + 1);
    refused(
        TestRequest::post("/todos").json(&json!({ "title": long })),
        422,
    );
    let huge = vec![b' '; MAX_BODY as usize + 1];
    refused(TestRequest::post("/todos").body(huge.clone()), 413);
    refused(TestRequest::post("/todos").body(huge).chunked(), 413);
    refused(TestRequest::get("/todos/abc"), 404);
    refused(TestRequest::get("/todos/12345"), 404);
    refused(TestRequest::get("/elsewhere"), 404);
    refused(TestRequest::patch("/todos/1").body("[]"), 400);
    let resp = client.call(TestRequest::put("/todos"));
    assert_eq!(resp.status, 405);
    assert_eq!(resp.header("Allow"), Some("GET, POST"));
}

#[test]
fn a_database_that_cannot_be_opened_fails_init() {
    let scratch = Scratch::new();
    let path = scratch.dir.path().join("missing-dir").join("todo.db");
    let err = TestClient::new(Todos::at(&path)).expect_err("init fails");
    assert!(
        err.to_string().contains("cannot open the database"),
        "{err}"
    );
}

#[test]
fn threads_share_the_pool() {
    let scratch = Scratch::new();
    let facts = WorkerFacts {
        threads: 4,
        ..WorkerFacts::default()
    };
    let client = TestClient::with_worker(Todos::at(scratch.dir.path().join("todo.db")), &facts)
        .expect("starts");
    std::thread::scope(|s| {
        for t in 0..4 {
            let client = &client;
            s.spawn(move || {
                for i in 0..10 {
                    let title = format!("t{t} i{i}");
                    let resp =
                        client.call(TestRequest::post("/todos").json(&json!({ "title": title })));
                    assert_eq!(resp.status, 201, "{}", resp.text());
                }
            });
        }
    });
    let all = json_of(&client.call(TestRequest::get("/todos")));
    assert_eq!(all.as_array().map(Vec::len), Some(40));
}
