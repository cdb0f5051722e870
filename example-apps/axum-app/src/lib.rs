//! An axum `Router` served by the host: the example of app-sdk's `tower`
//! bridge, and the app `bench/axum-serve` serves with `axum::serve` to
//! compare the two.
//!
//! The export is one line ([`app_sdk::tower::TowerApp`]); everything else is
//! ordinary axum: `Path`, `Query`, `Json`, `State`, a streamed request body
//! and a streamed response body.
//!
//! **State is per worker.** Each worker process builds its own router, and
//! with it its own [`AppState`], in its `init`: `/count` counts the requests
//! one worker served and `/items` holds the items posted to that worker.
//! Run with `-w 1` for one shared view; use a database for state all workers
//! must see.

use std::{
    collections::HashMap,
    convert::Infallible,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, PoisonError,
    },
    time::Duration,
};

use axum::{
    body::Body,
    extract::{Path, Query, State},
    http::StatusCode,
    routing::{get, post},
    Json, Router,
};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// The longest `/sleep?ms=` waits, in milliseconds.
pub const SLEEP_MAX_MS: u64 = 1000;

/// One worker's state (see the crate docs: nothing is shared between workers).
#[derive(Debug, Default)]
pub struct AppState {
    /// The worker's id (`0` outside the host).
    worker: u32,
    /// Requests `/count` has seen in this worker.
    hits: AtomicU64,
    /// The last id `/items` gave.
    last_id: AtomicU64,
    /// Items posted to this worker, by id.
    items: Mutex<HashMap<u64, Item>>,
}

/// An item as posted to `/items`.
#[derive(Debug, Clone, Deserialize)]
pub struct NewItem {
    /// Its name.
    pub name: String,
    /// How many.
    #[serde(default)]
    pub qty: u32,
}

/// An item as stored and returned.
#[derive(Debug, Clone, Serialize)]
pub struct Item {
    /// Given by the worker that stored it.
    pub id: u64,
    /// Its name.
    pub name: String,
    /// How many.
    pub qty: u32,
}

/// The parameters of `/search`.
#[derive(Debug, Deserialize)]
pub struct Search {
    /// The query (required: without it axum answers `400`).
    pub q: String,
    /// How many results (default 10).
    pub limit: Option<u32>,
}

/// The app's router, with the state of worker `worker`.
pub fn router(worker: u32) -> Router {
    let state = Arc::new(AppState {
        worker,
        ..AppState::default()
    });
    Router::new()
        .route("/", get(|| async { "hello from axum\n" }))
        .route("/hello/{name}", get(hello))
        .route("/search", get(search))
        .route("/count", get(count))
        .route("/items", post(create_item))
        .route("/items/{id}", get(get_item))
        .route("/upload", post(upload))
        .route("/stream", get(stream))
        .route("/sleep", get(sleep))
        .route("/yield", get(yield_once))
        .with_state(state)
}

app_sdk::export_app!(app = app_sdk::tower::TowerApp::with_worker(|w| router(w.id)));

/// `GET /hello/{name}`: the path segment, percent-decoded by axum.
async fn hello(Path(name): Path<String>) -> Json<Value> {
    Json(json!({ "hello": name }))
}

/// `GET /search?q=..&limit=..`: the query, decoded.
async fn search(Query(search): Query<Search>) -> Json<Value> {
    Json(json!({ "q": search.q, "limit": search.limit.unwrap_or(10) }))
}

/// `GET /count`: this worker's count of `/count` requests.
async fn count(State(state): State<Arc<AppState>>) -> Json<Value> {
    let count = state.hits.fetch_add(1, Ordering::Relaxed) + 1;
    Json(json!({ "worker": state.worker, "count": count }))
}

/// `POST /items` with a JSON [`NewItem`]: stores it, answers `201` and the [`Item`].
async fn create_item(
    State(state): State<Arc<AppState>>,
    Json(new): Json<NewItem>,
) -> (StatusCode, Json<Item>) {
    let item = Item {
        id: state.last_id.fetch_add(1, Ordering::Relaxed) + 1,
        name: new.name,
        qty: new.qty,
    };
    state
        .items
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(item.id, item.clone());
    (StatusCode::CREATED, Json(item))
}

/// `GET /items/{id}`: the item, or `404`.
async fn get_item(
    State(state): State<Arc<AppState>>,
    Path(id): Path<u64>,
) -> Result<Json<Item>, StatusCode> {
    let items = state.items.lock().unwrap_or_else(PoisonError::into_inner);
    items
        .get(&id)
        .cloned()
        .map(Json)
        .ok_or(StatusCode::NOT_FOUND)
}

/// `POST /upload`: reads the body as it streams in and reports its size,
/// how many pieces it came in, and the sum of its bytes.
async fn upload(body: Body) -> Result<Json<Value>, (StatusCode, String)> {
    let (mut bytes, mut pieces, mut sum) = (0u64, 0u64, 0u64);
    let mut data = body.into_data_stream();
    while let Some(piece) = data.next().await {
        let piece = piece.map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()))?;
        bytes += piece.len() as u64;
        pieces += 1;
        sum += piece.iter().map(|&b| u64::from(b)).sum::<u64>();
    }
    Ok(Json(
        json!({ "bytes": bytes, "pieces": pieces, "sum": sum }),
    ))
}

/// `GET /stream`: a body of unknown length, sent as it is produced.
async fn stream() -> Body {
    let parts = (1..=5).map(|i| Ok::<_, Infallible>(format!("part {i}\n")));
    Body::from_stream(futures_util::stream::iter(parts))
}

/// The parameter of `/sleep`.
#[derive(Debug, Deserialize)]
struct Sleep {
    ms: u64,
}

/// `GET /sleep?ms=N`: waits on a tokio timer (at most [`SLEEP_MAX_MS`]).
async fn sleep(Query(Sleep { ms }): Query<Sleep>) -> String {
    tokio::time::sleep(Duration::from_millis(ms.min(SLEEP_MAX_MS))).await;
    format!("slept {}ms\n", ms.min(SLEEP_MAX_MS))
}

/// `GET /yield`: pending once, so the request goes through the runtime
/// (the bench compares it with `/`, which is ready at once).
async fn yield_once() -> &'static str {
    tokio::task::yield_now().await;
    "hello from axum\n"
}

#[cfg(test)]
mod tests {
    //! The Router as the host serves it, in-process: through the SDK's
    //! tower bridge and the same ABI, with `app_sdk::testing`.

    use app_sdk::testing::{TestClient, TestRequest, WorkerFacts};
    use app_sdk::tower::TowerApp;
    use serde_json::Value;

    use super::router;

    fn client(worker: u32) -> TestClient {
        let facts = WorkerFacts {
            id: worker,
            ..WorkerFacts::default()
        };
        TestClient::with_worker(TowerApp::with_worker(|w| router(w.id)), &facts)
            .expect("the app starts")
    }

    fn json(body: &[u8]) -> Value {
        serde_json::from_slice(body).expect("a JSON body")
    }

    #[test]
    fn json_in_and_out_with_state_per_worker() {
        let one = client(1);
        let created = one.call(
            TestRequest::post("/items")
                .header("Content-Type", "application/json")
                .body(r#"{"name":"bolt","qty":3}"#),
        );
        assert_eq!(created.status, 201, "{}", created.text());
        assert_eq!(json(&created.body)["name"], "bolt");
        let got = one.call(TestRequest::get("/items/1"));
        assert_eq!(json(&got.body)["qty"], 3);
        // Another worker's state is its own.
        let two = client(2);
        assert_eq!(two.call(TestRequest::get("/items/1")).status, 404);
        assert_eq!(
            json(&two.call(TestRequest::get("/count")).body)["worker"],
            2
        );
    }

    #[test]
    fn paths_queries_head_and_a_pending_future() {
        let app = client(1);
        let hello = app.call(TestRequest::get("/hello/J%C3%BCrgen"));
        assert_eq!(json(&hello.body)["hello"], "Jürgen");
        let search = app.call(TestRequest::get("/search?q=a+b&limit=2"));
        assert_eq!(
            json(&search.body),
            serde_json::json!({"q": "a b", "limit": 2})
        );
        let head = app.call(TestRequest::new("HEAD", "/"));
        assert_eq!(head.status, 200);
        assert!(head.body.is_empty());
        assert_eq!(head.content_length, Some("hello from axum\n".len() as u64));
        assert_eq!(app.call(TestRequest::get("/yield")).status, 200);
        assert_eq!(app.call(TestRequest::get("/nowhere")).status, 404);
    }
}
