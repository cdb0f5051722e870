//! `app_sdk::testing` on the built libraries: `TestClient::load` runs the
//! very file the host would serve, in this process, through the same ABI,
//! and refuses what the host refuses.

use app_sdk::testing::{Outcome, StartError, TestClient, TestRequest, WorkerFacts};
use tests::app_lib;

/// Loads `lib<name>.so:<export>` as worker 1.
fn load(name: &str, export: &str) -> Result<TestClient, StartError> {
    let spec = format!("{}:{export}", app_lib(name).display());
    // SAFETY: the workspace's own example libraries, built by
    // `cargo build --workspace`; every export named here is an app root or
    // (abi-mismatch) a data object larger than a root's head.
    unsafe { TestClient::load(&spec) }
}

#[test]
fn a_built_library_is_called_as_the_host_calls_it() {
    let crash = load("crash", "app").expect("the crash app loads");
    let resp = crash.call(TestRequest::get("/panic"));
    assert_eq!(resp.status, 500);
    assert!(
        matches!(&resp.outcome, Outcome::Panicked(m) if m.starts_with("boom (at ")),
        "{:?}",
        resp.outcome
    );
    assert_eq!(crash.call(TestRequest::get("/")).text(), "ok\n");
    assert_eq!(crash.exit(), Outcome::Done);

    let stream = load("stream", "bytes").expect("the stream app's `bytes` export loads");
    let resp = stream.call(TestRequest::get("/?n=300&file=1"));
    assert_eq!(resp.body.len(), 300);
    assert_eq!(resp.body[251..254], [0, 1, 2]);
}

#[test]
fn an_app_built_against_the_first_0_2_sdk_loads_and_is_told_its_worker() {
    let spec = format!("{}:app", app_lib("compat-app-0-2-0").display());
    let facts = WorkerFacts {
        id: 7,
        generation: 3,
        ..WorkerFacts::default()
    };
    // SAFETY: the workspace's compatibility fixture, an export_app! root.
    let client = unsafe { TestClient::load_with(&spec, &facts) }.expect("the 0.2.0 app loads");
    let home = client.call(TestRequest::get("/")).text();
    assert!(
        home.starts_with("built against app-sdk 0.2.0\nworker 7 threads 1 generation 3 probe false app app\nGET / HTTP/1.1\n"),
        "{home}"
    );
    let echo = client.call(
        TestRequest::post("/echo?status=201")
            .header("X-Reply", "yes")
            .body("hello"),
    );
    assert_eq!(
        (echo.status, echo.body.as_slice()),
        (201, b"hello".as_slice())
    );
    assert_eq!(echo.header("X-Reply"), Some("yes"));
}

#[test]
fn what_the_host_refuses_the_test_client_refuses() {
    let future = load("abi-future", "tolerant").expect("a newer app needing nothing new loads");
    assert_eq!(
        future.call(TestRequest::get("/")).text(),
        "200 from the future\n"
    );

    let refusal = |name: &str, export: &str| match load(name, export) {
        Err(StartError::Load(why)) => why,
        other => panic!("{name}:{export} should be refused, got {other:?}"),
    };
    let why = refusal("abi-future", "strict");
    assert!(why.contains("health hooks (app-sdk 0.2.9)"), "{why}");
    let why = refusal("abi-mismatch", "app");
    assert!(why.contains("app-sdk 0.3.x"), "{why}");
    let why = refusal("abi-mismatch", "old");
    assert!(why.contains("built against app-sdk 0.1"), "{why}");
    let why = refusal("hello", "no_such_export");
    assert!(why.contains("no_such_export"), "{why}");
}
