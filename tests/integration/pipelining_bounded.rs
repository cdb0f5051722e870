//! A client that pipelines requests and never reads the responses costs a
//! worker bounded memory: the worker answers what it has read, and once
//! the socket stops taking the answers it stops reading that connection
//! (the kernel's buffers then push back on the client). Meanwhile it
//! serves other clients. The worker reads at most 256 KiB from a connection
//! per wake-up (`READ_BURST` in host/src/worker/event_loop.rs) and takes no
//! more of its requests while 256 KiB of answers wait to be written
//! (`OUTPUT_HIGH_WATER`), so it grows by about 1 MiB; this test keeps it
//! so, with room to spare. (Before those two bounds it grew by 16 to 136
//! MB, as the client and the worker's read loop happened to race.)

use std::{
    io::Write,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread,
};

use tests::{connect, eventually, metrics_addr, sample, try_get, Host};

/// Requests the client pipelines: far more than the socket buffers hold
/// (about 70 MB of requests, and more of responses).
const REQUESTS: usize = 16_384;
/// Bytes of padding in each request, echoed back in its response: a
/// sizeable response, still small enough to be buffered rather than
/// written through.
const PAD: usize = 4_000;
/// Requests per write of the client.
const PER_WRITE: usize = 256;
/// Pipelined requests the worker must have answered before the test
/// looks for a standstill: the client really is ahead of the server.
const ANSWERED_FIRST: u64 = 200;
/// How much the worker's resident memory may grow, in KiB: generous (it
/// grows by about 1 MiB: a burst of input read, and a high-water mark of
/// output), and far below what buffering every response would take.
const MAX_GROWTH_KIB: u64 = 12 * 1024;

/// `host_requests_total{status="2xx"}` from `/metrics`.
fn answered(metrics: SocketAddr) -> Option<u64> {
    let resp = try_get(connect(metrics), "/metrics")?;
    sample(&resp.text(), "host_requests_total{status=\"2xx\"}").map(|v| v as u64)
}

/// The resident memory of process `pid`, in KiB.
fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("its status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

#[test]
fn a_pipelining_client_that_never_reads_costs_bounded_memory() {
    let metrics = metrics_addr();
    let m = metrics.to_string();
    let host = Host::app(
        "echo",
        &["-w", "1", "--keep-alive", "300", "--metrics-bind", &m],
    );
    host.wait_for_log("ready in", 1);
    let worker = host.children()[0];
    let before = rss_kib(worker);
    let request = format!(
        "GET /pipelined HTTP/1.1\r\nHost: t\r\nX-Pad: {}\r\n\r\n",
        "p".repeat(PAD)
    );
    let batch = request.repeat(PER_WRITE);
    let mut stream = connect(host.addr());
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let done = Arc::clone(&done);
        thread::spawn(move || {
            // Blocks once the server stops reading; ends with an error when
            // the test ends and the server goes.
            for _ in 0..REQUESTS / PER_WRITE {
                if stream.write_all(batch.as_bytes()).is_err() {
                    break;
                }
            }
            done.store(true, Ordering::SeqCst);
            stream
        })
    };
    eventually("the worker to answer pipelined requests", || {
        answered(metrics).filter(|&n| n >= ANSWERED_FIRST)
    });
    // Until the worker stands still (the client ahead, the socket full),
    // each round: another client is served at once, and the worker's
    // memory stays within the bound.
    let mut rounds = 0u64;
    let mut last = None;
    let mut peak = 0;
    eventually("the pipelined answers to stand still", || {
        rounds += 1;
        let resp = host.get("/other");
        assert_eq!(resp.status, 200, "another client is served meanwhile");
        let rss = rss_kib(worker);
        peak = peak.max(rss);
        assert!(
            rss <= before + MAX_GROWTH_KIB,
            "the worker holds {rss} KiB, {before} KiB before (at most {MAX_GROWTH_KIB} KiB more allowed)"
        );
        // Without this round's own request.
        let pipelined = answered(metrics)? - rounds;
        let still = last == Some(pipelined);
        last = Some(pipelined);
        still.then_some(())
    });
    assert!(
        !done.load(Ordering::SeqCst),
        "the client wrote all {REQUESTS} requests: the server read them all, unbounded ({} answered, worker at {peak} KiB)",
        last.unwrap_or_default()
    );
    eprintln!(
        "worker memory: {before} KiB before, peak {peak} KiB, with {} pipelined requests answered",
        last.unwrap_or_default()
    );
    drop(host);
    let _ = writer.join();
}
