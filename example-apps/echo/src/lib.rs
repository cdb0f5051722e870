//! `echo`: answers `200 application/json` describing the request exactly as the app saw it.
//!
//! Fields: `method`, `target` (the raw request-target), `path`, `query`,
//! `version`, `headers` (`[name, value]` pairs in received order and case),
//! `body_b64` (the decoded body, base64), `pid` (the worker's), `remote_addr`,
//! `local_addr`, `scheme` and `request_id`; with `?env=NAME`, also `env`, the value of that
//! environment variable in the worker; with `?print=TEXT`, the app prints TEXT
//! to its stdout and stderr. The tests use it to check what reaches an app.
//!
//! What the SDK's request helpers make of the request, too: `path_decoded`
//! (`null` when the path is not UTF-8 once decoded), `path_segments` (`null`
//! likewise), `query_pairs` (`[key, value]` pairs, decoded), `remote_ip` and
//! `remote_port` (`null` when absent), and `headers_all` with `?header=NAME`
//! (every value of that header). With `?body_limit=N` the body is read with
//! `body_bytes(N)`, and a body past N is answered `413` with the SDK's message.
//!
//! `tls` is what the app sees of the connection's TLS session (`null` on a
//! plain connection, else `version`, `cipher`, `sni`, `alpn`,
//! `client_subject`, each `null` when absent), and `GET /tls` answers only
//! `scheme` and `tls`, for the TLS tests.
//!
//! `GET /raw` with `Connection: upgrade` and `Upgrade: echo` switches
//! protocols ([`Response::upgrade`](app_sdk::Response::upgrade)): the
//! answer is `101 Switching Protocols` with `Upgrade: echo`, then every
//! byte the client sends comes back as it is, until the client closes its
//! side; then the connection closes. Without the upgrade headers the
//! switch is refused and the handler's error answers `500`. With
//! `?protocol=NAME` it switches to NAME instead (the tests ask for
//! `websocket`, which only the host may switch to). (The export
//! does not say `#[upgrade]`: the rest of the app serves on any 0.2 host,
//! and on one without upgrades `/raw` answers `500`.)
//!
//! Serve it with `host target/debug/libecho.so:app`.

use std::io::{Read, Write};

use app_sdk::{export_app, App, BodyError, Request, Response, TlsInfo};
use base64::Engine;
use serde_json::{json, Value};

/// Describes each request back to its client.
struct Echo;

/// The TLS facts as JSON: `null` on a plain connection.
fn tls_json(tls: Option<TlsInfo<'_>>) -> Value {
    match tls {
        None => Value::Null,
        Some(t) => json!({
            "version": t.version(),
            "cipher": t.cipher(),
            "sni": t.sni(),
            "alpn": t.alpn(),
            "client_subject": t.client_subject(),
        }),
    }
}

/// Switches to `protocol` and sends back what the client sends until it
/// closes its side.
fn echo_raw(resp: &mut Response<'_>, protocol: &str) -> app_sdk::Result {
    let mut stream = resp.upgrade(protocol)?;
    let mut buf = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut buf)? {
            0 => return Ok(()),
            n => stream.write_all(&buf[..n])?,
        }
    }
}

impl App for Echo {
    fn handle(&self, req: &mut Request<'_>, resp: &mut Response<'_>) -> app_sdk::Result {
        if req.method() == "GET" && req.path() == "/raw" {
            let protocol = req.query_param("protocol");
            return echo_raw(resp, protocol.as_deref().unwrap_or("echo"));
        }
        if req.method() == "GET" && req.path() == "/tls" {
            let facts = json!({ "scheme": req.scheme(), "tls": tls_json(req.tls()) });
            resp.header("Content-Type", "application/json")
                .body(facts.to_string())?;
            return Ok(());
        }
        let limit = req.query_param("body_limit").and_then(|n| n.parse().ok());
        let body = match limit {
            Some(limit) => req.body_bytes(limit),
            None => {
                let mut body = Vec::new();
                req.body()
                    .read_to_end(&mut body)
                    .map(|_| body)
                    .map_err(BodyError::Read)
            }
        };
        let body = match body {
            Ok(body) => body,
            Err(e) => {
                let (status, text) = match e {
                    BodyError::Read(e) => (400, format!("cannot read the body: {e}")),
                    too_large => (413, too_large.to_string()),
                };
                let _ = resp
                    .status(status)
                    .header("Content-Type", "text/plain")
                    .body(format!("{text}\n"));
                return Ok(());
            }
        };
        let headers: Vec<Value> = req
            .headers()
            .map(|h| json!([h.name, String::from_utf8_lossy(h.value)]))
            .collect();
        if let Some(text) = req.query_param("print") {
            // Shows where an app's output goes: the host's error log, tagged.
            println!("{text} (stdout)");
            eprintln!("{text} (stderr)");
        }
        let env = req
            .query_param("env")
            .map(|name| std::env::var(&*name).ok());
        let query_pairs: Vec<Value> = req.query_pairs().map(|(k, v)| json!([k, v])).collect();
        let mut description = json!({
            "method": req.method(),
            "target": req.target(),
            "path": req.path(),
            "query": req.query(),
            "version": req.version().as_str(),
            "headers": headers,
            "body_b64": base64::engine::general_purpose::STANDARD.encode(&body),
            "pid": std::process::id(),
            "remote_addr": req.remote_addr(),
            "local_addr": req.local_addr(),
            "scheme": req.scheme(),
            "request_id": req.request_id(),
            "path_decoded": req.path_decoded().ok(),
            "path_segments": req.path_segments().ok(),
            "query_pairs": query_pairs,
            "remote_ip": req.remote_ip().map(|ip| ip.to_string()),
            "remote_port": req.remote_port(),
            "tls": tls_json(req.tls()),
        });
        if let Some(name) = req.query_param("header") {
            let values: Vec<String> = req
                .headers_all(&name)
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .collect();
            description["headers_all"] = json!(values);
        }
        if let Some(value) = env {
            description["env"] = json!(value);
        }
        let _ = resp
            .header("Content-Type", "application/json")
            .body(description.to_string());
        Ok(())
    }
}

export_app!(app = Echo);

#[cfg(test)]
mod tests {
    use app_sdk::testing::{self, TestRequest};
    use serde_json::{json, Value};

    use super::*;

    #[test]
    fn describes_the_request_it_got() {
        let resp = testing::call(
            Echo,
            TestRequest::put("/a/b?x=1&y=2")
                .header("X-Custom", "Value")
                .body("hello")
                .remote_addr("192.0.2.1:5555")
                .request_id("req-1"),
        );
        assert_eq!(resp.status, 200);
        assert_eq!(resp.header("content-type"), Some("application/json"));
        let got: Value = resp.json().expect("a JSON description");
        assert_eq!(got["method"], "PUT");
        assert_eq!(got["target"], "/a/b?x=1&y=2");
        assert_eq!(got["path"], "/a/b");
        assert_eq!(got["query"], "x=1&y=2");
        assert_eq!(got["version"], "HTTP/1.1");
        assert_eq!(
            got["headers"],
            json!([
                ["Host", "localhost"],
                ["X-Custom", "Value"],
                ["Content-Length", "5"]
            ])
        );
        assert_eq!(got["body_b64"], "aGVsbG8=");
        assert_eq!(got["pid"], std::process::id());
        assert_eq!(got["remote_addr"], "192.0.2.1:5555");
        assert_eq!(got["request_id"], "req-1");
        assert_eq!(got.get("env"), None);
    }

    #[test]
    fn an_unreadable_body_is_answered_400() {
        let resp = testing::call(
            Echo,
            TestRequest::post("/")
                .body("half")
                .body_error("truncated chunk"),
        );
        assert_eq!(resp.status, 400);
        assert_eq!(resp.text(), "cannot read the body: truncated chunk\n");
        assert!(resp.outcome.is_done());
    }

    #[test]
    fn tls_shows_the_connections_tls_facts() {
        let tls = app_sdk::OwnedTlsInfo::new("TLSv1.3", "TLS13_AES_128_GCM_SHA256")
            .with_sni("a.test")
            .with_client_subject("CN=alice");
        let cases = [
            (
                TestRequest::get("/tls").tls(tls.clone()),
                json!({"scheme": "https", "tls": {
                    "version": "TLSv1.3", "cipher": "TLS13_AES_128_GCM_SHA256",
                    "sni": "a.test", "alpn": null, "client_subject": "CN=alice"}}),
            ),
            (
                TestRequest::get("/tls"),
                json!({"scheme": "http", "tls": null}),
            ),
        ];
        for (req, expected) in cases {
            let resp = testing::call(Echo, req);
            assert_eq!(resp.status, 200);
            assert_eq!(resp.json::<Value>().unwrap(), expected);
        }
        // The full description carries them too.
        let got: Value = testing::call(Echo, TestRequest::get("/x").tls(tls))
            .json()
            .unwrap();
        assert_eq!(got["tls"]["sni"], "a.test");
        assert_eq!(got["scheme"], "https");
    }
}
