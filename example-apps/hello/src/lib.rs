//! `hello`: the smallest app. Answers `200 text/plain` "Hello, World!" on every path.
//!
//! Serve it with `host target/debug/libhello.so:app`. Building it with
//! `HELLO_GREETING=... cargo build -p hello` changes the greeting, which the
//! reload tests use to tell two builds apart.

use app_sdk::{export_app, App, Request, Response};

/// What every request gets: `HELLO_GREETING` at build time, else "Hello, World!".
const GREETING: &str = match option_env!("HELLO_GREETING") {
    Some(greeting) => greeting,
    None => "Hello, World!",
};

/// Says hello to every request.
struct Hello;

impl App for Hello {
    fn handle(&self, _req: &mut Request<'_>, resp: &mut Response<'_>) -> app_sdk::Result {
        resp.header("Content-Type", "text/plain").body(GREETING)?;
        Ok(())
    }
}

export_app!(app = Hello);

#[cfg(test)]
mod tests {
    use app_sdk::testing::{self, TestRequest};

    use super::*;

    #[test]
    fn says_hello_on_every_path() {
        for path in ["/", "/some/where?x=1"] {
            let resp = testing::call(Hello, TestRequest::get(path));
            assert_eq!(resp.status, 200);
            assert_eq!(resp.header("Content-Type"), Some("text/plain"));
            assert_eq!(resp.text(), GREETING);
            assert!(resp.outcome.is_done());
        }
    }

    #[test]
    fn head_gets_the_length_without_the_body() {
        let resp = testing::call(Hello, TestRequest::head("/"));
        assert_eq!(resp.status, 200);
        assert!(resp.body.is_empty());
        assert_eq!(resp.content_length, Some(GREETING.len() as u64));
    }
}
