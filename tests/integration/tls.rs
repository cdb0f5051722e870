//! TLS termination through the real binary: curl, Python's `ssl`, `openssl
//! s_client`, a rustls client for raw cases, and headless Chromium, against
//! certificates a test CA (rcgen) made.

use std::{
    io::{Read, Write},
    net::TcpStream,
    process::Command,
    time::Duration,
};

use tests::{
    app_arg, curl, free_port, parse_responses, require_tool,
    tls::{exchange, Pair, Pki},
    Host, Scratch,
};

use tests::tls::{curl as curl_tls, host as tls_host};

#[test]
fn curl_gets_pages_over_tls_beside_a_plain_listener() {
    let dir = Scratch::new("tls-basic");
    let pki = Pki::new(dir.path());
    let pair = pki.server(&["localhost"]);
    let plain = free_port();
    let plain_bind = format!("127.0.0.1:{plain}");
    let host = tls_host("echo", &pair, &["-b", &plain_bind]);
    assert!(host.count_log("listening on https://127.0.0.1:") == 1);
    let (code, body, err) = curl_tls(&pki, host.addr(), "localhost", "/hello", &[]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("ALPN: server accepted http/1.1"), "{err}");
    let seen: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(seen["path"], "/hello");
    // Keep-alive: two requests on one connection.
    let url = format!("https://localhost:{}/again", host.addr().port());
    let (code, _, err) = curl_tls(&pki, host.addr(), "localhost", "/once", &[&url]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("Re-using existing connection") || err.contains("Reusing existing"),
        "{err}"
    );
    // The plain listener beside it still speaks plain HTTP.
    let r = tests::get(format!("127.0.0.1:{plain}").parse().unwrap(), "/plain");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["path"], "/plain");
}

#[test]
fn pipelined_requests_bodies_and_continue_over_tls() {
    let dir = Scratch::new("tls-pipeline");
    let pki = Pki::new(dir.path());
    let host = tls_host("echo", &pki.server(&["localhost"]), &[]);
    let requests = b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n\
POST /two HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
GET /three HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let got = exchange(host.addr(), pki.client_config(), "localhost", requests).expect("exchange");
    let responses = parse_responses(&got);
    assert_eq!(responses.len(), 3, "{}", String::from_utf8_lossy(&got));
    let paths: Vec<_> = responses.iter().map(|r| r.json()["path"].clone()).collect();
    assert_eq!(paths, ["/one", "/two", "/three"]);
    assert_eq!(responses[1].json()["body_b64"], "aGVsbG8=");
    // A large body after 100-continue, echoed back whole.
    let body = dir.join("body");
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(&body, &data).unwrap();
    let upload = format!("@{}", body.display());
    let out = dir.file("out.json");
    let (code, _, err) = curl_tls(
        &pki,
        host.addr(),
        "localhost",
        "/upload",
        &[
            "-H",
            "Expect: 100-continue",
            "--data-binary",
            &upload,
            "-o",
            &out,
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("HTTP/1.1 100 Continue"), "{err}");
    let seen: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&out).unwrap()).expect("json");
    use base64::Engine;
    let echoed = base64::engine::general_purpose::STANDARD
        .decode(seen["body_b64"].as_str().unwrap())
        .unwrap();
    assert!(echoed == data, "the body came back changed");
}

/// Byte `i` of the `stream:bytes` app's answer.
fn expected_bytes(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

#[test]
fn large_file_and_streamed_responses_arrive_whole_over_tls() {
    let dir = Scratch::new("tls-large");
    let pki = Pki::new(dir.path());
    let pair = pki.server(&["localhost"]);
    let cert = pair.cert.display().to_string();
    let key = pair.key.display().to_string();
    let app = format!("{}:bytes", tests::app_lib("stream").display());
    let host = Host::start(&[
        "-b",
        "tls://127.0.0.1:0",
        "--certfile",
        &cert,
        "--keyfile",
        &key,
        &app,
    ]);
    for query in ["n=5000000", "n=5000000&file=1", "n=1"] {
        let out = dir.file("out");
        let path = format!("/?{query}");
        let (code, _, err) = curl_tls(&pki, host.addr(), "localhost", &path, &["-o", &out]);
        assert_eq!(code, 0, "{query}: {err}");
        let n: usize = query.split(['=', '&']).nth(1).unwrap().parse().unwrap();
        assert!(
            std::fs::read(&out).unwrap() == expected_bytes(n),
            "{query}: bytes differ"
        );
    }
    drop(host);
    // Chunked streaming.
    let host = tls_host("stream", &pair, &[]);
    let (code, body, err) = curl_tls(&pki, host.addr(), "localhost", "/?n=3", &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(body, "part 1\npart 2\npart 3\n");
}

#[test]
fn a_stalled_handshake_is_closed_and_holds_nothing_up() {
    let dir = Scratch::new("tls-stall");
    let pki = Pki::new(dir.path());
    let host = tls_host(
        "hello",
        &pki.server(&["localhost"]),
        &["-w", "1", "--tls-handshake-timeout", "1"],
    );
    // Half a ClientHello, then nothing.
    let mut stalled = TcpStream::connect(host.addr()).unwrap();
    stalled
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .unwrap();
    // The only worker serves others meanwhile.
    let (code, body, err) = curl_tls(&pki, host.addr(), "localhost", "/", &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(body, "Hello, World!");
    // And closes the stalled one once its handshake time is up.
    stalled
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut rest = Vec::new();
    let _ = stalled.read_to_end(&mut rest);
    assert!(
        rest.is_empty() || rest[0] == 0x15,
        "an alert or nothing: {rest:?}"
    );
}

#[test]
fn a_slow_handshake_flood_leaves_a_normal_request_served() {
    let dir = Scratch::new("tls-flood");
    let pki = Pki::new(dir.path());
    let host = tls_host(
        "hello",
        &pki.server(&["localhost"]),
        &["-w", "1", "--tls-max-handshakes", "32"],
    );
    // 300 clients sending a ClientHello a byte at a time.
    let hello = client_hello();
    let mut flood: Vec<(TcpStream, usize)> = (0..300)
        .filter_map(|_| TcpStream::connect(host.addr()).ok().map(|s| (s, 0)))
        .collect();
    for round in 0..3 {
        for (s, sent) in flood.iter_mut() {
            if s.write_all(&hello[*sent..*sent + 1]).is_ok() {
                *sent += 1;
            }
        }
        if round == 1 {
            let (code, body, err) = curl_tls(&pki, host.addr(), "localhost", "/", &[]);
            assert_eq!(code, 0, "{err}");
            assert_eq!(body, "Hello, World!");
        }
    }
    assert!(host.count_log("panicked") == 0);
}

/// A real ClientHello (the first flight of a rustls client).
fn client_hello() -> Vec<u8> {
    let dir = Scratch::new("tls-hello");
    let pki = Pki::new(dir.path());
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut conn = rustls::ClientConnection::new(pki.client_config(), name).unwrap();
    let mut out = Vec::new();
    conn.write_tls(&mut out).unwrap();
    out
}

#[test]
fn malformed_client_hellos_close_only_their_connection() {
    let dir = Scratch::new("tls-garbage");
    let pki = Pki::new(dir.path());
    let host = tls_host("hello", &pki.server(&["localhost"]), &["-w", "1"]);
    let mut hello = client_hello();
    // Corrupt the ClientHello's body: rustls answers an alert and closes.
    let at = hello.len() / 2;
    hello[at..].iter_mut().for_each(|b| *b ^= 0x5a);
    for garbage in [
        hello,
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        vec![0x16, 0x03, 0x01, 0xff, 0xff, 0x01],
        vec![0u8; 4096],
    ] {
        let mut s = TcpStream::connect(host.addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let _ = s.write_all(&garbage);
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
        assert!(
            rest.is_empty() || rest[0] == 0x15,
            "an alert or nothing: {:?}",
            &rest[..rest.len().min(16)]
        );
    }
    let (code, body, err) = curl_tls(&pki, host.addr(), "localhost", "/", &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(body, "Hello, World!");
    assert_eq!(host.count_log("panicked"), 0);
}

#[test]
fn client_certificates_required_and_optional() {
    let dir = Scratch::new("tls-mtls");
    let pki = Pki::new(dir.path());
    let other = Pki::new(&dir.join("other-ca").tap_mkdir());
    let server = pki.server(&["localhost"]);
    let alice = pki.client("alice");
    let mallory = other.client("mallory");
    let ca = pki.ca.display().to_string();
    let (ac, ak) = (
        alice.cert.display().to_string(),
        alice.key.display().to_string(),
    );
    let (mc, mk) = (
        mallory.cert.display().to_string(),
        mallory.key.display().to_string(),
    );
    let required = tls_host(
        "echo",
        &server,
        &["--ca-certs", &ca, "--client-cert", "required"],
    );
    let (code, _, err) = curl_tls(&pki, required.addr(), "localhost", "/", &[]);
    assert_ne!(code, 0, "served without a client certificate: {err}");
    let (code, body, err) = curl_tls(
        &pki,
        required.addr(),
        "localhost",
        "/",
        &["--cert", &ac, "--key", &ak],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["path"],
        "/"
    );
    let (code, _, err) = curl_tls(
        &pki,
        required.addr(),
        "localhost",
        "/",
        &["--cert", &mc, "--key", &mk],
    );
    assert_ne!(code, 0, "served a certificate of another CA: {err}");
    drop(required);
    let optional = tls_host(
        "echo",
        &server,
        &["--ca-certs", &ca, "--client-cert", "optional"],
    );
    let (code, _, err) = curl_tls(&pki, optional.addr(), "localhost", "/", &[]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = curl_tls(
        &pki,
        optional.addr(),
        "localhost",
        "/",
        &["--cert", &ac, "--key", &ak],
    );
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = curl_tls(
        &pki,
        optional.addr(),
        "localhost",
        "/",
        &["--cert", &mc, "--key", &mk],
    );
    assert_ne!(code, 0, "served a certificate of another CA: {err}");
}

/// Makes a directory and returns its path.
trait TapMkdir {
    fn tap_mkdir(self) -> Self;
}

impl TapMkdir for std::path::PathBuf {
    fn tap_mkdir(self) -> Self {
        std::fs::create_dir_all(&self).unwrap();
        self
    }
}

#[test]
fn sni_picks_the_certificate_by_name() {
    let dir = Scratch::new("tls-sni");
    let pki = Pki::new(dir.path());
    let first = pki.server(&["default.test"]);
    let wild = pki.server(&["*.example.test"]);
    let api = pki.server(&["api.example.test"]);
    let args: Vec<String> = [&first, &wild, &api]
        .iter()
        .flat_map(|p| {
            [
                "--certfile".to_owned(),
                p.cert.display().to_string(),
                "--keyfile".to_owned(),
                p.key.display().to_string(),
            ]
        })
        .collect();
    let mut all: Vec<&str> = vec!["-b", "tls://127.0.0.1:0"];
    all.extend(args.iter().map(String::as_str));
    let host = Host::app("hello", &all);
    assert_eq!(host.count_log("TLS certificate "), 3);
    for (name, subject) in [
        ("api.example.test", "CN=api.example.test"),
        ("www.example.test", "CN=*.example.test"),
        ("default.test", "CN=default.test"),
    ] {
        let (code, _, err) = curl_tls(&pki, host.addr(), name, "/", &[]);
        assert_eq!(code, 0, "{name}: {err}");
        assert!(
            err.contains(&format!("subject: {subject}")),
            "{name}: {err}"
        );
    }
    // No SNI (an address): the first certificate, which does not name it.
    let url = format!("https://127.0.0.1:{}/", host.addr().port());
    let ca = pki.ca.display().to_string();
    let (_, _, err) = curl(&["-v", "--cacert", &ca, "-k", &url]);
    assert!(err.contains("subject: CN=default.test"), "{err}");
}

#[test]
fn config_file_certificate_tables_serve_by_sni() {
    let dir = Scratch::new("tls-tables");
    let pki = Pki::new(dir.path());
    let first = pki.server(&["first.test"]);
    let second = pki.server(&["second.test"]);
    let config = dir.join("host.toml");
    std::fs::write(
        &config,
        format!(
            "bind = [\"tls://127.0.0.1:0\"]\napp = \"{}\"\n\n[[certificate]]\ncertfile = \"{}\"\nkeyfile = \"{}\"\n\n[[certificate]]\ncertfile = \"{}\"\nkeyfile = \"{}\"\n",
            app_arg("hello"),
            first.cert.display(),
            first.key.display(),
            second.cert.display(),
            second.key.display()
        ),
    )
    .unwrap();
    let c = config.display().to_string();
    let host = Host::start(&["-c", &c]);
    for name in ["first.test", "second.test"] {
        let (code, _, err) = curl_tls(&pki, host.addr(), name, "/", &[]);
        assert_eq!(code, 0, "{name}: {err}");
        assert!(
            err.contains(&format!("subject: CN={name}")),
            "{name}: {err}"
        );
    }
}

#[test]
fn tls_min_version_1_3_refuses_1_2() {
    let dir = Scratch::new("tls-version");
    let pki = Pki::new(dir.path());
    let pair = pki.server(&["localhost"]);
    let both = tls_host("hello", &pair, &[]);
    let (code, _, err) = curl_tls(
        &pki,
        both.addr(),
        "localhost",
        "/",
        &["--tlsv1.2", "--tls-max", "1.2"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("TLSv1.2"), "{err}");
    drop(both);
    let only13 = tls_host("hello", &pair, &["--tls-min-version", "1.3"]);
    let (code, _, err) = curl_tls(
        &pki,
        only13.addr(),
        "localhost",
        "/",
        &["--tlsv1.2", "--tls-max", "1.2"],
    );
    assert_ne!(code, 0, "TLS 1.2 served: {err}");
    let (code, _, err) = curl_tls(&pki, only13.addr(), "localhost", "/", &[]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("TLSv1.3"), "{err}");
}

#[test]
fn hup_serves_a_renewed_certificate_and_refuses_a_broken_one() {
    let dir = Scratch::new("tls-hup");
    let pki = Pki::new(dir.path());
    let old = pki.server(&["localhost", "old.test"]);
    let cert = dir.join("live.crt");
    let key = dir.join("live.key");
    std::fs::copy(&old.cert, &cert).unwrap();
    std::fs::copy(&old.key, &key).unwrap();
    let live = Pair {
        cert: cert.clone(),
        key: key.clone(),
        spki_sha256: String::new(),
    };
    let maddr = tests::metrics_addr();
    let m = maddr.to_string();
    let host = tls_host("hello", &live, &["-w", "2", "--metrics-bind", &m]);
    let expiry = |subject: &str| {
        let text = tests::get(maddr, "/metrics").text();
        text.lines()
            .find(|l| l.starts_with("host_tls_certificate_expiry_seconds{"))
            .filter(|l| l.contains(&format!("subject=\"{subject}\"")))
            .and_then(|l| l.rsplit(' ').next()?.parse::<i64>().ok())
    };
    assert!(expiry("CN=localhost").is_some_and(|t| t > 1_700_000_000));
    let subject = |host: &Host| {
        let (code, _, err) = curl_tls(&pki, host.addr(), "localhost", "/", &[]);
        assert_eq!(code, 0, "{err}");
        err.lines()
            .find_map(|l| l.split_once("subject: ").map(|(_, s)| s.trim().to_owned()))
            .unwrap_or_default()
    };
    assert_eq!(subject(&host), "CN=localhost");
    // An open connection keeps its session across the reload.
    let mut open = rustls::StreamOwned::new(
        rustls::ClientConnection::new(
            pki.client_config(),
            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
        )
        .unwrap(),
        TcpStream::connect(host.addr()).unwrap(),
    );
    open.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut first = [0u8; 512];
    let n = open.read(&mut first).unwrap();
    assert!(first[..n].starts_with(b"HTTP/1.1 200"));
    // A renewed certificate, written in place, then HUP.
    let renewed = pki.server(&["renewed.test", "localhost"]);
    std::fs::copy(&renewed.cert, &cert).unwrap();
    std::fs::copy(&renewed.key, &key).unwrap();
    host.signal(nix::sys::signal::Signal::SIGHUP);
    host.wait_for_log("generation 2: build", 1);
    // The connection opened before the reload keeps its session: its
    // worker (of generation 1) answers its next request, then closes it
    // (at once if it already retires, else after its idle linger).
    open.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut rest = Vec::new();
    let _ = open.read_to_end(&mut rest);
    let rest = String::from_utf8_lossy(&rest);
    assert!(rest.starts_with("HTTP/1.1 200"), "{rest}");
    host.wait_for_log("generation 2 complete", 1);
    assert_eq!(subject(&host), "CN=renewed.test");
    assert!(expiry("CN=renewed.test").is_some());
    // A key that does not go with the certificate: refused, serving goes on.
    let stray = pki.server(&["stray.test"]);
    std::fs::copy(&stray.key, &key).unwrap();
    host.signal(nix::sys::signal::Signal::SIGHUP);
    host.wait_for_log("keeping the current certificates", 1);
    host.wait_for_log("generation 3 complete", 1);
    assert_eq!(subject(&host), "CN=renewed.test");
}

#[test]
fn startup_refuses_a_key_that_does_not_match_or_an_expired_certificate() {
    let dir = Scratch::new("tls-refuse");
    let pki = Pki::new(dir.path());
    let good = pki.server(&["localhost"]);
    let other = pki.server(&["other.test"]);
    let expired = pki.server_with(&["localhost"], |p| {
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2021, 1, 1);
    });
    let app = app_arg("hello");
    for (cert, key, says) in [
        (&good.cert, &other.key, "does not go with"),
        (&expired.cert, &expired.key, "expired"),
        (&good.key, &good.key, "no certificate"),
    ] {
        let (c, k) = (cert.display().to_string(), key.display().to_string());
        let mut host = Host::spawn(&[
            "-b",
            "tls://127.0.0.1:0",
            "--certfile",
            &c,
            "--keyfile",
            &k,
            &app,
        ]);
        let status = host.wait_exit();
        assert_eq!(status.code(), Some(1), "{says}");
        host.wait_for_log(says, 1);
    }
    // A TLS listener without a certificate is a usage error.
    let mut host = Host::spawn(&["-b", "tls://127.0.0.1:0", &app]);
    assert_eq!(host.wait_exit().code(), Some(2));
}

#[test]
fn python_ssl_client() {
    let dir = Scratch::new("tls-python");
    let pki = Pki::new(dir.path());
    let host = tls_host("hello", &pki.server(&["localhost"]), &[]);
    let port = host.addr().port().to_string();
    let script = r#"
import socket, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[1])
with socket.create_connection(("127.0.0.1", int(sys.argv[2]))) as raw:
    with ctx.wrap_socket(raw, server_hostname="localhost") as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        print(s.version(), data.split(b"\r\n\r\n", 1)[1].decode())
"#;
    let out = Command::new("python3")
        .args(["-c", script, &pki.ca.display().to_string(), &port])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.trim(),
        "TLSv1.3 Hello, World!",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
#[ignore = "needs openssl"]
fn openssl_s_client() {
    require_tool("openssl", "version");
    let dir = Scratch::new("tls-openssl");
    let pki = Pki::new(dir.path());
    let host = tls_host("hello", &pki.server(&["localhost"]), &[]);
    let port = host.addr().port().to_string();
    let connect = format!("127.0.0.1:{port}");
    let mut child = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &connect,
            "-servername",
            "localhost",
            "-CAfile",
            &pki.ca.display().to_string(),
            "-alpn",
            "http/1.1",
            "-verify_return_error",
            "-quiet",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("HTTP/1.1 200 OK") && text.ends_with("Hello, World!"),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
#[ignore = "needs chromium"]
fn chromium_loads_an_app_page_over_https() {
    let chromium = tests::chromium();
    let dir = Scratch::new("tls-chromium");
    let pki = Pki::new(dir.path());
    let pair = pki.server(&["localhost"]);
    let host = tls_host("todo", &pair, &["-w", "2"]);
    let url = format!("https://localhost:{}/", host.addr().port());
    let profile = dir.join("profile");
    let dom = Command::new(chromium)
        .args(tests::CHROMIUM_FLAGS)
        // Trust the test certificate's key, as a CA in the store would.
        .arg(format!(
            "--ignore-certificate-errors-spki-list={}",
            pair.spki_sha256
        ))
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(["--dump-dom", &url])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&dom.stdout);
    assert!(
        text.contains("<html") || text.contains("<body"),
        "{text} {}",
        String::from_utf8_lossy(&dom.stderr)
    );
}

#[test]
fn check_config_checks_the_certificates() {
    let dir = Scratch::new("tls-check");
    let pki = Pki::new(dir.path());
    let good = pki.server(&["localhost"]);
    let other = pki.server(&["other.test"]);
    let app = app_arg("hello");
    let run = |key: &Pair| {
        let out = Command::new(tests::host_bin())
            .args(["--check-config", "-b", "tls://127.0.0.1:0", "--certfile"])
            .arg(&good.cert)
            .arg("--keyfile")
            .arg(&key.key)
            .arg(&app)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (code, text) = run(&good);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("ok: TLS certificate") && text.contains("CN=localhost"),
        "{text}"
    );
    let (code, text) = run(&other);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("does not go with"), "{text}");
}

#[test]
fn a_socket_from_systemd_serves_tls_as_tls_fd_3() {
    let dir = Scratch::new("tls-systemd");
    let pki = Pki::new(dir.path());
    let pair = pki.server(&["localhost"]);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (cert, key) = (
        pair.cert.display().to_string(),
        pair.key.display().to_string(),
    );
    let app = app_arg("hello");
    let host = Host::start_socket_activated(
        &listener,
        &[
            "-b",
            "tls://fd://3",
            "--certfile",
            &cert,
            "--keyfile",
            &key,
            &app,
        ],
    );
    assert_eq!(host.addr(), listener.local_addr().unwrap());
    let (code, body, err) = curl_tls(&pki, host.addr(), "localhost", "/", &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(body, "Hello, World!");
}

#[test]
#[ignore = "needs root (to switch users)"]
fn a_key_readable_by_root_alone_serves_workers_running_as_nobody() {
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        nix::unistd::Uid::effective().as_raw(),
        0,
        "this test needs root to switch users; run it as root (CI does) or without --include-ignored"
    );
    let dir = Scratch::new("tls-root-key");
    let pki = Pki::new(dir.path());
    let pair = pki.server(&["localhost"]);
    std::fs::set_permissions(&pair.key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let host = tls_host("hello", &pair, &["-w", "2", "--user", "nobody"]);
    host.wait_for_log("ready in", 2);
    let (code, body, err) = curl_tls(&pki, host.addr(), "localhost", "/", &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(body, "Hello, World!");
    // A renewal: the master (still root) reads the key again on HUP.
    let renewed = pki.server(&["localhost", "renewed.test"]);
    std::fs::copy(&renewed.cert, &pair.cert).unwrap();
    std::fs::copy(&renewed.key, &pair.key).unwrap();
    host.signal(nix::sys::signal::Signal::SIGHUP);
    host.wait_for_log("generation 2 complete", 1);
    let (code, _, err) = curl_tls(&pki, host.addr(), "localhost", "/", &[]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("subject: CN=localhost"), "{err}");
    assert_eq!(host.count_log("keeping the current certificates"), 0);
}
