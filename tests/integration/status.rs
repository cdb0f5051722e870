//! Metrics and status: `/metrics` (Prometheus), `/status.json`, `/status`
//! (HTML, looked at in headless Chromium: an ignored test that CI runs), `host status`.

use std::process::Command;

use tests::{eventually, get, host_bin, metrics_addr, raw, sample, Host};

#[test]
fn metrics_count_requests_workers_and_reloads() {
    let maddr = metrics_addr();
    let m = maddr.to_string();
    let host = Host::app("crash", &["-w", "2", "--metrics-bind", &m]);
    host.wait_for_log("ready in", 2);
    for _ in 0..3 {
        assert_eq!(host.get("/").status, 200);
    }
    assert_eq!(host.get("/panic").status, 500);
    let _ = raw(host.addr(), b"GET /segv HTTP/1.1\r\nHost: t\r\n\r\n");
    host.wait_for_log("killed by SIGSEGV", 1);
    host.signal(nix::sys::signal::Signal::SIGHUP);
    host.wait_for_log("generation 2 complete", 1);
    let text = eventually("the metrics to show the requests", || {
        let resp = get(maddr, "/metrics");
        let text = resp.text();
        (sample(&text, "host_requests_total{status=\"2xx\"}") == Some(3.0)).then_some(text)
    });
    assert_eq!(
        sample(&text, "host_requests_total{status=\"5xx\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "host_request_duration_seconds_count"),
        Some(4.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "host_worker_exits_total{cause=\"crash\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(sample(&text, "host_reloads_total"), Some(1.0), "{text}");
    assert_eq!(
        sample(&text, "host_workers{state=\"idle\"}"),
        Some(2.0),
        "{text}"
    );
    assert!(
        sample(&text, "host_worker_spawns_total").unwrap() >= 5.0,
        "{text}"
    );
    assert!(text.contains("host_generation{build=\""), "{text}");
    assert!(
        text.contains(&format!(
            "host_listen_queue_max{{listener=\"http://{}\"}} 2048",
            host.addr()
        )),
        "{text}"
    );
    assert_eq!(get(maddr, "/nope").status, 404);
    assert_eq!(get(maddr, "/ready").status, 200);
}

#[test]
fn status_json_and_the_terminal_table_show_each_worker() {
    let maddr = metrics_addr();
    let m = maddr.to_string();
    let host = Host::app("slow", &["-w", "2", "--metrics-bind", &m]);
    host.wait_for_log("ready in", 2);
    let addr = host.addr();
    let slow = std::thread::spawn(move || {
        raw(
            addr,
            b"GET /?ms=3000 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        )
    });
    let j = eventually("a busy worker in /status.json", || {
        let j = get(maddr, "/status.json").json();
        j["workers"]
            .as_array()?
            .iter()
            .any(|w| w["state"] == "busy")
            .then_some(j)
    });
    assert_eq!(j["generation"], 1);
    let busy = j["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["state"] == "busy")
        .unwrap();
    assert_eq!(busy["current_request"], "GET /?…");
    assert!(busy["rss_kib"].as_u64().unwrap() > 0 || busy["requests"] == 0);
    let out = Command::new(host_bin())
        .args(["status", &m])
        .output()
        .unwrap();
    assert!(out.status.success());
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("libslow.so:app: generation 1"), "{table}");
    assert!(table.contains("GET /?… ("), "{table}");
    assert_eq!(
        table.lines().count(),
        4,
        "summary, header and two workers:\n{table}"
    );
    slow.join().unwrap();
    // Nothing listening: a clear error.
    let out = Command::new(host_bin())
        .args(["status", "127.0.0.1:1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("error: host status 127.0.0.1:1"));
}

#[test]
#[ignore = "needs chromium"]
fn status_page_renders_in_headless_chromium() {
    let chromium = tests::chromium();
    let maddr = metrics_addr();
    let m = maddr.to_string();
    let host = Host::app("hello", &["-w", "2", "--metrics-bind", &m]);
    host.wait_for_log("ready in", 2);
    host.get("/");
    let profile = std::env::temp_dir().join(format!("host-chromium-{}", std::process::id()));
    let shot = tests::target_dir().join("status-page.png");
    let url = format!("http://{m}/status");
    let flags = tests::CHROMIUM_FLAGS;
    let dom = Command::new(chromium)
        .args(flags)
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(["--dump-dom", &url])
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(dom.contains("<table id=\"workers\">"), "{dom}");
    assert_eq!(dom.matches("<tr class=\"idle\">").count(), 2, "{dom}");
    let _ = Command::new(chromium)
        .args(flags)
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--screenshot={}", shot.display()))
        .args(["--window-size=900,500", &url])
        .output()
        .unwrap();
    let png = std::fs::read(&shot).unwrap_or_default();
    assert!(
        png.starts_with(b"\x89PNG"),
        "a screenshot at {}",
        shot.display()
    );
    let _ = std::fs::remove_dir_all(&profile);
}
