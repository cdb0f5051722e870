//! Forwarded headers: the host reads one family (`--forwarded-headers`), and
//! only from a trusted proxy; the shipped nginx recipe sets or clears every
//! header the host reads, so no client behind it chooses its own address.

use std::{net::SocketAddr, path::PathBuf};

use tests::{curl, eventually, free_port, nginx::Nginx, parse_responses, raw, Host, Scratch};

/// A request from a client pretending, in both header families, to be
/// 6.6.6.6 on HTTPS.
const SPOOF: &str = "GET /spoof HTTP/1.1\r\nHost: t\r\n\
    Forwarded: for=6.6.6.6;proto=https\r\n\
    X-Forwarded-For: 6.6.6.6\r\n\
    X-Forwarded-Proto: https\r\n\
    Connection: close\r\n\r\n";

/// What the echo app saw of `request`, sent from 127.0.0.1 (a trusted peer by default).
fn seen(host: &Host, request: &str) -> serde_json::Value {
    let responses = parse_responses(&raw(host.addr(), request.as_bytes()));
    assert_eq!(responses.len(), 1, "{responses:?}");
    assert_eq!(responses[0].status, 200, "{}", responses[0].text());
    responses[0].json()
}

/// The value of the request header `name` as the app saw it.
fn header<'a>(seen: &'a serde_json::Value, name: &str) -> Option<&'a str> {
    seen["headers"]
        .as_array()?
        .iter()
        .find(|h| h[0].as_str().is_some_and(|n| n.eq_ignore_ascii_case(name)))
        .and_then(|h| h[1].as_str())
}

/// The peer's own address, as the app sees it without forwarding (`ip:port`).
fn is_peer(seen: &serde_json::Value) -> bool {
    seen["remote_addr"]
        .as_str()
        .is_some_and(|a| a.starts_with("127.0.0.1:"))
}

#[test]
fn by_default_only_x_forwarded_counts_and_forwarded_reaches_the_app_unread() {
    let host = Host::app("echo", &[]);
    let j = seen(
        &host,
        "GET / HTTP/1.1\r\nHost: t\r\nForwarded: for=6.6.6.6;proto=https\r\nConnection: close\r\n\r\n",
    );
    assert!(is_peer(&j), "Forwarded was believed: {j}");
    assert_eq!(j["scheme"], "http", "{j}");
    // The app sees the header as it was sent; only the address is the host's word.
    assert_eq!(header(&j, "forwarded"), Some("for=6.6.6.6;proto=https"));

    // Both families: X-Forwarded-* wins, Forwarded is not read.
    let j = seen(&host, SPOOF);
    assert_eq!(j["remote_addr"], "6.6.6.6", "{j}");
    let j = seen(
        &host,
        "GET / HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 203.0.113.7\r\nForwarded: for=6.6.6.6\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(j["remote_addr"], "203.0.113.7", "{j}");
    assert_eq!(j["scheme"], "http", "{j}");
}

#[test]
fn the_forwarded_family_ignores_x_forwarded() {
    let host = Host::app("echo", &["--forwarded-headers", "forwarded"]);
    let j = seen(
        &host,
        "GET / HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: https\r\nConnection: close\r\n\r\n",
    );
    assert!(is_peer(&j), "X-Forwarded-For was believed: {j}");
    assert_eq!(j["scheme"], "http", "{j}");
    assert_eq!(header(&j, "x-forwarded-for"), Some("6.6.6.6"));

    let j = seen(
        &host,
        "GET / HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: http\r\n\
         Forwarded: for=203.0.113.7;proto=https\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(j["remote_addr"], "203.0.113.7", "{j}");
    assert_eq!(j["scheme"], "https", "{j}");

    // Several `Forwarded` lines are one list: the nearest hop is the last.
    let j = seen(
        &host,
        "GET / HTTP/1.1\r\nHost: t\r\nForwarded: for=6.6.6.6;proto=https\r\n\
         Forwarded: for=\"[2001:db8::7]:4711\"\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(j["remote_addr"], "2001:db8::7", "{j}");
    assert_eq!(j["scheme"], "http", "{j}");
}

#[test]
fn none_reads_neither_family() {
    let host = Host::app("echo", &["--forwarded-headers", "none"]);
    let j = seen(&host, SPOOF);
    assert!(is_peer(&j), "{j}");
    assert_eq!(j["scheme"], "http", "{j}");
}

#[test]
fn the_family_comes_from_the_config_file_and_a_wrong_one_is_refused() {
    let dir = Scratch::new("forwarded-config");
    let file = dir.file("host.toml");
    std::fs::write(&file, "forwarded-headers = \"forwarded\"\n").unwrap();
    let host = Host::app("echo", &["-c", &file, "-b", "127.0.0.1:0"]);
    let j = seen(&host, SPOOF);
    assert_eq!(j["remote_addr"], "6.6.6.6", "{j}");
    assert_eq!(j["scheme"], "https", "{j}");
    let j = seen(
        &host,
        "GET / HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 6.6.6.6\r\nConnection: close\r\n\r\n",
    );
    assert!(is_peer(&j), "{j}");

    let mut bad = Host::spawn(&["--forwarded-headers", "x-real-ip", &tests::app_arg("echo")]);
    let code = bad.wait_exit().code();
    let out = bad.log_lines().join("\n");
    // A usage error, as every bad setting (exit 2).
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("x-real-ip") && out.contains("x-forwarded"),
        "{out}"
    );
}

/// nginx in the foreground, serving the shipped `deploy/nginx.conf` with
/// only its listen address and upstream servers changed, and with
/// `rfc7239`, its commented alternative for `--forwarded-headers forwarded`.
fn shipped_nginx(listen: u16, upstream: SocketAddr, rfc7239: bool) -> Nginx {
    let dir = Scratch::new(&format!("forwarded-nginx-{rfc7239}"));
    let shipped = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/nginx.conf");
    let mut recipe = std::fs::read_to_string(&shipped).unwrap();
    for (from, to) in [
        ("listen 80;", format!("listen 127.0.0.1:{listen};")),
        ("server 127.0.0.1:8001 ", format!("server {upstream} ")),
        ("server 127.0.0.1:8002 ", format!("server {upstream} ")),
    ] {
        assert!(
            recipe.contains(from),
            "deploy/nginx.conf no longer has `{from}`: update this test"
        );
        recipe = recipe.replace(from, &to);
    }
    if rfc7239 {
        let x_forwarded = "        proxy_set_header X-Forwarded-For $remote_addr;\n        \
                proxy_set_header X-Forwarded-Proto $scheme;\n        \
                proxy_set_header Forwarded \"\";\n";
        let alternative = "#   proxy_set_header";
        assert!(
            recipe.contains(x_forwarded) && recipe.matches(alternative).count() == 3,
            "deploy/nginx.conf changed its forwarding lines: update this test"
        );
        recipe = recipe
            .replace(x_forwarded, "")
            .replace(alternative, "proxy_set_header");
    }
    std::fs::write(dir.join("recipe.conf"), recipe).unwrap();
    let recipe = dir.file("recipe.conf");
    Nginx::start(dir, listen, 64, &format!("    include {recipe};\n"))
}

/// What the echo app saw of a GET `path` sent through nginx on `port` from a
/// client socket bound to `from`, claiming to be 6.6.6.6 on HTTPS in both families.
fn through_nginx(port: u16, from: &str, path: &str) -> serde_json::Value {
    let (code, out, err) = curl(&[
        "--interface",
        from,
        "-H",
        "Forwarded: for=6.6.6.6;proto=https",
        "-H",
        "X-Forwarded-For: 6.6.6.6",
        "-H",
        "X-Forwarded-Proto: https",
        &format!("http://127.0.0.1:{port}{path}"),
    ]);
    assert_eq!(code, 0, "curl: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

#[test]
#[ignore = "needs nginx"]
fn behind_the_shipped_nginx_recipe_no_client_chooses_its_address() {
    tests::require_tool("nginx", "-v");
    tests::require_tool("curl", "--version");
    let logs = Scratch::new("forwarded-access");
    let access = logs.file("access.log");
    let host = Host::app("echo", &["--access-logfile", &access]);
    let port = free_port();
    let _nginx = shipped_nginx(port, host.addr(), false);

    // A client on 127.0.0.2, which no one trusts, claims 6.6.6.6 in both families.
    let j = through_nginx(port, "127.0.0.2", "/from-2");
    assert_eq!(j["remote_addr"], "127.0.0.2", "{j}");
    assert_eq!(j["scheme"], "http", "{j}");
    // The recipe replaced what the client sent: the app sees only nginx's word.
    assert_eq!(header(&j, "x-forwarded-for"), Some("127.0.0.2"), "{j}");
    assert_eq!(header(&j, "forwarded"), None, "{j}");
    let line = eventually("the access-log line of /from-2", || {
        std::fs::read_to_string(&access)
            .ok()?
            .lines()
            .find(|l| l.contains("GET /from-2 "))
            .map(str::to_owned)
    });
    assert!(line.starts_with("127.0.0.2 "), "{line}");

    // A client on the proxy's own machine (an address the host trusts) is
    // still only itself: nginx must not pass on a list the client began.
    let j = through_nginx(port, "127.0.0.1", "/from-1");
    assert_eq!(j["remote_addr"], "127.0.0.1", "{j}");
    assert_eq!(j["scheme"], "http", "{j}");
    let line = eventually("the access-log line of /from-1", || {
        std::fs::read_to_string(&access)
            .ok()?
            .lines()
            .find(|l| l.contains("GET /from-1 "))
            .map(str::to_owned)
    });
    assert!(line.starts_with("127.0.0.1 "), "{line}");
}

#[test]
#[ignore = "needs nginx"]
fn behind_the_recipes_rfc7239_alternative_no_client_chooses_its_address() {
    tests::require_tool("nginx", "-v");
    tests::require_tool("curl", "--version");
    let host = Host::app("echo", &["--forwarded-headers", "forwarded"]);
    let port = free_port();
    let _nginx = shipped_nginx(port, host.addr(), true);
    for from in ["127.0.0.2", "127.0.0.1"] {
        let j = through_nginx(port, from, "/rfc7239");
        assert_eq!(j["remote_addr"], from, "{j}");
        assert_eq!(j["scheme"], "http", "{j}");
        assert_eq!(
            header(&j, "forwarded"),
            Some(format!("for=\"{from}\";proto=http").as_str()),
            "{j}"
        );
        assert_eq!(header(&j, "x-forwarded-for"), None, "{j}");
    }
}
