//! `todo`: a small JSON API whose state lives in SQLite, shared by every worker.
//!
//! It answers the per-worker-state trap: each worker process builds its own
//! app value, so state kept in the app (a `Vec`, a `HashMap`) differs from
//! worker to worker, and a todo created through one is missing through the
//! next. Here the state is a SQLite database file that all workers open, so
//! what one writes every other reads. Every response says which worker
//! answered (`X-Worker-Id`, `X-Worker-Pid`), to show it.
//!
//! | request | answer |
//! | --- | --- |
//! | `GET /todos` | `200`, every todo: `[{"id":1,"title":"milk","done":false}]` |
//! | `POST /todos` `{"title":"milk"}` (`"done"` optional) | `201`, the todo, `Location: /todos/1` |
//! | `GET /todos/{id}` | `200`, the todo; `404` |
//! | `PATCH /todos/{id}` `{"done":true}` (`"title"` and/or `"done"`) | `200`, the todo; `404` |
//! | `DELETE /todos/{id}` | `204`; `404` |
//!
//! A body that is not the JSON asked for is answered `400`, a title empty or
//! longer than [`MAX_TITLE`] characters `422`, a body over [`MAX_BODY`]
//! bytes `413`, another method `405` (with `Allow`); errors are
//! `{"error":"..."}`. A database error is returned with `?`: the host answers
//! `500` and logs it.
//!
//! The database is the file `TODO_DB` names (default `host-todo.sqlite3` in
//! the temporary directory), in WAL mode (readers never wait for the
//! writer) with a busy timeout of [`BUSY_TIMEOUT`] (a writer waits for
//! another worker's write instead of failing).
//!
//! Connections: `init` opens the first one and creates the table, also in
//! the host's probe, so a database that cannot be opened (a bad `TODO_DB`)
//! makes the host refuse the build at start-up rather than leave every
//! worker failing its requests. Each worker keeps its own connections
//! (never one opened before a fork): a small pool that opens another when
//! all are in use (with `--threads T`, up to T at once) and keeps at most T
//! idle, so threads read in parallel.
//!
//! Serve it with `TODO_DB=/var/lib/todo.db host -w 2 target/debug/libtodo.so`.

use std::{
    io::Read,
    path::{Path, PathBuf},
    sync::{Mutex, PoisonError},
    time::Duration,
};

use app_sdk::{export_app, App, Request, Response, Worker};
use rusqlite::{Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

/// The environment variable naming the database file.
pub const DB_ENV: &str = "TODO_DB";
/// The database file's name in the temporary directory when `TODO_DB` is unset.
pub const DEFAULT_DB_FILE: &str = "host-todo.sqlite3";
/// How long a statement waits for another connection's lock before failing.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest request body read, in bytes.
pub const MAX_BODY: u64 = 64 * 1024;
/// The longest title, in characters.
pub const MAX_TITLE: usize = 500;

/// The table, made by the first worker (or probe) that opens the database.
const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS todos (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    title TEXT NOT NULL,
    done INTEGER NOT NULL DEFAULT 0
)";

/// One todo, as stored and as answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Todo {
    /// Its id, given by the database.
    pub id: i64,
    /// What to do.
    pub title: String,
    /// Whether it is done.
    pub done: bool,
}

/// The body of `POST /todos`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewTodo {
    title: String,
    #[serde(default)]
    done: bool,
}

/// The body of `PATCH /todos/{id}`: the fields to change.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Changes {
    title: Option<String>,
    done: Option<bool>,
}

/// A worker's connections to the database.
struct Db {
    path: PathBuf,
    /// Connections not in use.
    idle: Mutex<Vec<Connection>>,
    /// How many idle connections to keep: one per handler thread.
    keep: usize,
}

impl Db {
    /// Opens a connection set up for sharing the file with other processes.
    fn connect(path: &Path) -> rusqlite::Result<Connection> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // Persistent in the file: a no-op once the first worker has set it.
        let _: String =
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        Ok(conn)
    }

    /// Runs `f` on a connection of the pool (opening one if all are in use).
    fn with<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> rusqlite::Result<T> {
        // A panic while holding the lock leaves a valid Vec: use it.
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let conn = match idle {
            Some(conn) => conn,
            None => Db::connect(&self.path)?,
        };
        let result = f(&conn);
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < self.keep {
            idle.push(conn);
        }
        result
    }
}

/// The API; the database is opened in `init`.
#[derive(Default)]
pub struct Todos {
    /// The database file; `None`: from `TODO_DB` (or the default) at `init`.
    path: Option<PathBuf>,
    db: Option<Db>,
    /// Which worker this is, for the `X-Worker-*` headers.
    worker_id: u32,
    pid: u32,
}

impl Todos {
    /// The API on the database file `path` (instead of `TODO_DB`).
    pub fn at(path: impl Into<PathBuf>) -> Todos {
        Todos {
            path: Some(path.into()),
            ..Todos::default()
        }
    }
}

/// The database file `TODO_DB` names, or the default one.
fn path_from_env() -> PathBuf {
    match std::env::var_os(DB_ENV) {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => std::env::temp_dir().join(DEFAULT_DB_FILE),
    }
}

/// An answer to a request the API refuses.
struct Refusal {
    status: u16,
    message: String,
}

fn refuse(status: u16, message: impl Into<String>) -> Refusal {
    Refusal {
        status,
        message: message.into(),
    }
}

/// What a route answers: a status and a JSON body (none for `204`), or a refusal.
type Answer = Result<(u16, Option<serde_json::Value>), Refusal>;

impl App for Todos {
    fn init(&mut self, worker: &Worker<'_>) -> app_sdk::Result {
        let path = self.path.clone().unwrap_or_else(path_from_env);
        let conn = Db::connect(&path)
            .and_then(|conn| conn.execute(SCHEMA, []).map(|_| conn))
            .map_err(|e| format!("cannot open the database {}: {e}", path.display()))?;
        self.db = Some(Db {
            path,
            idle: Mutex::new(vec![conn]),
            keep: worker.threads.max(1) as usize,
        });
        self.worker_id = worker.id;
        self.pid = worker.pid;
        Ok(())
    }

    fn handle(&self, req: &mut Request<'_>, resp: &mut Response<'_>) -> app_sdk::Result {
        let db = self
            .db
            .as_ref()
            .ok_or("the database is not open (init did not run)")?;
        resp.header("X-Worker-Id", self.worker_id.to_string())
            .header("X-Worker-Pid", self.pid.to_string());
        let (status, body) = match route(db, req)? {
            Ok(answer) => answer,
            Err(refusal) => {
                if refusal.status == 405 {
                    let allow = if req.path() == "/todos" {
                        "GET, POST"
                    } else {
                        "GET, PATCH, DELETE"
                    };
                    resp.header("Allow", allow);
                }
                let error = serde_json::json!({ "error": refusal.message });
                (refusal.status, Some(error))
            }
        };
        resp.status(status);
        if let Some(id) = body.as_ref().filter(|_| status == 201).map(|b| &b["id"]) {
            resp.header("Location", format!("/todos/{id}"));
        }
        match body {
            Some(body) => {
                resp.header("Content-Type", "application/json")
                    .body(body.to_string())?;
            }
            None => resp.body(b"")?,
        }
        Ok(())
    }
}

/// Answers one request: the outer `Err` is a failure (database, I/O), the
/// inner one a refusal.
fn route(db: &Db, req: &mut Request<'_>) -> app_sdk::Result<Answer> {
    let method = req.method();
    let path = req.path();
    if path == "/todos" {
        return match method {
            "GET" | "HEAD" => {
                let todos = db.with(|c| {
                    let mut stmt = c.prepare("SELECT id, title, done FROM todos ORDER BY id")?;
                    let rows = stmt.query_map([], row_todo)?;
                    rows.collect::<rusqlite::Result<Vec<Todo>>>()
                })?;
                Ok(Ok((200, Some(serde_json::to_value(todos)?))))
            }
            "POST" => {
                let new: NewTodo = match json_body(req)? {
                    Ok(new) => new,
                    Err(refusal) => return Ok(Err(refusal)),
                };
                let title = match check_title(&new.title) {
                    Ok(title) => title,
                    Err(refusal) => return Ok(Err(refusal)),
                };
                let todo = db.with(|c| {
                    c.query_row(
                        "INSERT INTO todos (title, done) VALUES (?1, ?2) RETURNING id, title, done",
                        (title, new.done),
                        row_todo,
                    )
                })?;
                Ok(Ok((201, Some(serde_json::to_value(todo)?))))
            }
            _ => Ok(Err(refuse(405, format!("{method} is not allowed here")))),
        };
    }
    let Some(id) = path.strip_prefix("/todos/") else {
        return Ok(Err(refuse(404, "no such resource")));
    };
    let Ok(id) = id.parse::<i64>() else {
        return Ok(Err(refuse(404, "no such todo")));
    };
    let found = match method {
        "GET" | "HEAD" => db.with(|c| {
            c.query_row(
                "SELECT id, title, done FROM todos WHERE id = ?1",
                [id],
                row_todo,
            )
            .optional()
        })?,
        "PATCH" => {
            let changes: Changes = match json_body(req)? {
                Ok(changes) => changes,
                Err(refusal) => return Ok(Err(refusal)),
            };
            let title = match changes.title.as_deref().map(check_title).transpose() {
                Ok(title) => title,
                Err(refusal) => return Ok(Err(refusal)),
            };
            db.with(|c| {
                c.query_row(
                    "UPDATE todos SET title = COALESCE(?1, title), done = COALESCE(?2, done)
                     WHERE id = ?3 RETURNING id, title, done",
                    (title, changes.done, id),
                    row_todo,
                )
                .optional()
            })?
        }
        "DELETE" => {
            let deleted = db.with(|c| c.execute("DELETE FROM todos WHERE id = ?1", [id]))?;
            if deleted == 0 {
                return Ok(Err(refuse(404, "no such todo")));
            }
            return Ok(Ok((204, None)));
        }
        _ => return Ok(Err(refuse(405, format!("{method} is not allowed here")))),
    };
    Ok(match found {
        Some(todo) => Ok((200, Some(serde_json::to_value(todo)?))),
        None => Err(refuse(404, "no such todo")),
    })
}

/// A todo from a row of `id, title, done`.
fn row_todo(row: &rusqlite::Row<'_>) -> rusqlite::Result<Todo> {
    Ok(Todo {
        id: row.get(0)?,
        title: row.get(1)?,
        done: row.get(2)?,
    })
}

/// The title trimmed, or why it is refused.
fn check_title(title: &str) -> Result<&str, Refusal> {
    let title = title.trim();
    if title.is_empty() {
        return Err(refuse(422, "the title is empty"));
    }
    if title.chars().count() > MAX_TITLE {
        return Err(refuse(
            422,
            format!("the title is longer than {MAX_TITLE} characters"),
        ));
    }
    Ok(title)
}

/// Reads the body as JSON into `T`: the outer `Err` is a failure to read,
/// the inner one a body refused (too large, not the JSON asked for).
fn json_body<T: serde::de::DeserializeOwned>(
    req: &mut Request<'_>,
) -> app_sdk::Result<Result<T, Refusal>> {
    if req.content_length().is_some_and(|n| n > MAX_BODY) {
        return Ok(Err(refuse(
            413,
            format!("the body is over {MAX_BODY} bytes"),
        )));
    }
    let mut body = Vec::new();
    req.body().take(MAX_BODY + 1).read_to_end(&mut body)?;
    if body.len() as u64 > MAX_BODY {
        return Ok(Err(refuse(
            413,
            format!("the body is over {MAX_BODY} bytes"),
        )));
    }
    Ok(serde_json::from_slice(&body).map_err(|e| refuse(400, format!("invalid JSON: {e}"))))
}

export_app!(app = Todos::default());

#[cfg(test)]
mod tests;
