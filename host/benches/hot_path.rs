//! Micro-benchmarks of the per-request path: the head parser, the PROXY
//! protocol header parser (once per connection), the chunked decoder, the
//! response-head writer, and one call into a real app (`hello`, loaded
//! through the stable ABI): alone (the host's exchange set-up, the
//! call, the app's header and body calls back into the host, the response
//! head built) and with parsing and the response written to `/dev/null`.
//!
//! What the ABI itself costs is the difference between that call and the
//! same work done by direct Rust calls on the exchange (`hello_direct`):
//! the crossing, `catch_unwind`, the app's request and response views, two
//! calls back through the host's function table and their results.
//!
//! ```text
//! cargo build --release -p hello     # the app the call benchmark loads
//! cargo bench -p host --bench hot_path
//! ```
//!
//! Before the timings it prints the heap allocations one keep-alive request
//! costs on that path (parse, call, response), counted by a global allocator.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    hint::black_box,
    os::fd::AsFd,
    path::PathBuf,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use abi_stable::std_types::RStr;
use app_sdk::abi::{size_u32, WorkerInfo};
use criterion::{criterion_group, Criterion, Throughput};
use host::internals::{
    app::{self, AppSpec, Failure, LoadedApp},
    http::{
        body::ChunkedDecoder,
        parse::{self, Limits, RequestHead},
        proxy_protocol,
        response::{self, Head},
    },
    scoreboard::Scoreboard,
    websocket::port::Port,
    worker::call,
    worker::exchange::{BodyState, Exchange, ExchangeBuffers, ExchangeInit},
    worker::held::{Held, HoldLimits},
    worker::host_fns,
    worker::outcome::Flags,
    worker::timeout::Watch,
};

/// Counts every allocation (and passes it on to the system allocator).
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: defers to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// What `wrk` sends.
const WRK_GET: &[u8] = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n\r\n";

/// What a browser sends.
const BROWSER_GET: &[u8] = b"GET /articles/2026/11/benchmarks?page=2&sort=new HTTP/1.1\r\n\
Host: www.example.com\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:132.0) Gecko/20100101 Firefox/132.0\r\n\
Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n\
Accept-Language: en-GB,en;q=0.5\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Referer: https://www.example.com/articles/2026/11/\r\n\
Connection: keep-alive\r\n\
Cookie: session=4f1c2a9e8b7d6c5e; theme=dark; consent=yes\r\n\
Upgrade-Insecure-Requests: 1\r\n\
Sec-Fetch-Dest: document\r\n\
Sec-Fetch-Mode: navigate\r\n\
Sec-Fetch-Site: same-origin\r\n\r\n";

fn bench_parse(c: &mut Criterion) {
    let limits = Limits::default();
    let mut group = c.benchmark_group("parse_head");
    for (name, input) in [("wrk", WRK_GET), ("browser", BROWSER_GET)] {
        let mut head = RequestHead::default();
        group.throughput(Throughput::Bytes(input.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| parse::parse_head(black_box(input), &limits, &mut head))
        });
    }
    group.finish();
}

/// The PROXY protocol header before the first request of a connection
/// behind an L4 balancer: v1 as `send-proxy` writes it, and v2 with the
/// TLVs `send-proxy-v2` adds (ALPN, authority, unique id), each followed by
/// the request. Asserts first that a parse allocates nothing.
fn bench_proxy_protocol(c: &mut Criterion) {
    let v1 = [
        &b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 443\r\n"[..],
        WRK_GET,
    ]
    .concat();
    let mut v2 = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x26".to_vec();
    v2.extend([203, 0, 113, 7, 10, 0, 0, 1, 0xc8, 0x22, 0x01, 0xbb]);
    v2.extend(b"\x01\x00\x02h2\x02\x00\x0bexample.com\x05\x00\x04abcd");
    v2.extend(WRK_GET);
    let mut group = c.benchmark_group("proxy_protocol");
    for (name, input) in [("v1_tcp4", &v1), ("v2_tcp4_tlvs", &v2)] {
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        let parsed = proxy_protocol::parse(input);
        let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
        assert!(
            matches!(
                parsed,
                proxy_protocol::Parsed::Done {
                    source: Some(_),
                    ..
                }
            ),
            "{name}: {parsed:?}"
        );
        assert_eq!(allocations, 0, "{name}: a header's parse allocated");
        group.bench_function(name, |b| b.iter(|| proxy_protocol::parse(black_box(input))));
    }
    group.finish();
}

/// A 64 KiB body in 4 KiB chunks, chunked-encoded.
fn chunked_body() -> Vec<u8> {
    let mut raw = Vec::new();
    for _ in 0..16 {
        raw.extend_from_slice(b"1000\r\n");
        raw.extend(std::iter::repeat_n(b'x', 4096));
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    raw
}

fn bench_chunked(c: &mut Criterion) {
    let raw = chunked_body();
    let mut out = vec![0u8; 64 * 1024];
    let mut group = c.benchmark_group("chunked");
    group.throughput(Throughput::Bytes(64 * 1024));
    group.bench_function("decode_64k_in_4k_chunks", |b| {
        b.iter(|| {
            let mut decoder = ChunkedDecoder::new(u64::MAX);
            let (mut used, mut written) = (0, 0);
            while !decoder.is_done() {
                let d = decoder
                    .decode(&raw[used..], &mut out[written..])
                    .expect("a valid body");
                used += d.consumed;
                written += d.written;
            }
            black_box(written)
        })
    });
    group.finish();
}

fn bench_response(c: &mut Criterion) {
    let mut out = Vec::with_capacity(512);
    let date = "Tue, 24 Nov 2026 20:22:38 GMT";
    c.bench_function("response/write_head", |b| {
        b.iter(|| {
            out.clear();
            response::write_head(
                &mut out,
                &Head {
                    status: 200,
                    framing: response::Framing::Length(13),
                    close: false,
                    announce_keep_alive: false,
                    date: Some(black_box(date)),
                    server: true,
                    app_headers: b"Content-Type: text/plain\r\n",
                },
            );
            black_box(out.len())
        })
    });
}

/// The `hello` app, loaded and initialised, if it was built.
fn hello() -> Option<LoadedApp> {
    let target = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target");
    let path = ["release", "debug"]
        .iter()
        .map(|p| target.join(p).join("libhello.so"))
        .find(|p| p.exists())?;
    let spec = AppSpec {
        path,
        name: "app".into(),
    };
    let module = app::load(&spec).ok()?;
    let info = WorkerInfo {
        size: size_u32::<WorkerInfo<'_>>(),
        worker_id: 1,
        pid: std::process::id(),
        threads: 1,
        generation: 1,
        flags: 0,
        app_name: RStr::from_str("app"),
    };
    LoadedApp::init(&module, host_fns::table(), &info).ok()
}

/// How a benchmarked request reaches the app's work.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Call {
    /// Parse, call `hello` through the ABI, write the response to /dev/null.
    Whole,
    /// Only the call through the ABI (the head parsed once, the response dropped).
    Abi,
    /// What `hello` does, done by direct calls on the exchange (no ABI).
    Direct,
}

/// Everything one request reuses: buffers, the scoreboard, the output file.
struct Bench {
    app: LoadedApp,
    board: Scoreboard,
    null: std::fs::File,
    head: RequestHead,
    staged: Vec<u8>,
    out: Vec<u8>,
    headers: Vec<u8>,
    held: Held,
    port: Port,
}

impl Bench {
    /// One keep-alive request for `WRK_GET`, as `call` says.
    fn request(&mut self, call: Call) {
        let whole = call == Call::Whole;
        if whole || self.head.head_len == 0 {
            parse::parse_head(WRK_GET, &Limits::default(), &mut self.head).expect("a valid head");
        }
        let head = &self.head;
        let (head_bytes, after) = WRK_GET.split_at(head.head_len);
        let slot = self.board.slot(0).expect("slot 0");
        let lane = self.board.lane(0, 0).expect("lane 0");
        let mut ex = Exchange::new(
            ExchangeInit {
                stream: host::internals::worker::stream::Stream::plain(self.null.as_fd()),
                pending: after,
                prefix: &[],
                body: BodyState::Done,
                continue_pending: false,
                wish: true,
                flags: Flags::default(),
                is_head: false,
                http10: false,
                date: "Tue, 24 Nov 2026 20:22:38 GMT",
                io_timeout: Duration::from_secs(30),
                min_rate: 0,
                slot,
                watch: Watch::Signal(lane),
                hold: HoldLimits {
                    per_conn: 8 << 20,
                    per_worker: 64 << 20,
                },
                worker: 1,
                request_id: "",
                websocket_key: None,
                port: &mut self.port,
                upgrade_offer: None,
            },
            ExchangeBuffers {
                staged: &mut self.staged,
                out: &mut self.out,
                headers: &mut self.headers,
                held: &mut self.held,
            },
        );
        let raw = call::request_view(
            head,
            head_bytes,
            "127.0.0.1:50000",
            "127.0.0.1:8000",
            "http",
            "",
            None,
        );
        if call == Call::Direct {
            black_box(&raw);
            let _ = ex.add_header(b"Content-Type", b"text/plain");
            let _ = ex.send_body(black_box(b"Hello, World!"));
        } else {
            // As the worker does (`worker::call`): the outcome checked.
            let _ = Failure::check(self.app.handle(&raw, host_fns::host_ctx(&mut ex)));
        }
        black_box(ex.finish());
        // What the event loop does after the response: write it out.
        if !whole {
            self.out.clear();
        } else if !self.out.is_empty() {
            use std::io::Write;
            let _ = self.null.write_all(&self.out);
            self.out.clear();
        }
    }
}

fn bench_app_call(c: &mut Criterion) {
    let Some(app) = hello() else {
        eprintln!(
            "app_call: skipped (build target/release/libhello.so: cargo build --release -p hello)"
        );
        return;
    };
    let (Ok(board), Ok(null)) = (
        Scoreboard::new(1, 1),
        std::fs::OpenOptions::new().write(true).open("/dev/null"),
    ) else {
        eprintln!("app_call: skipped (no scoreboard or /dev/null)");
        return;
    };
    let mut bench = Bench {
        app,
        board,
        null,
        head: RequestHead::default(),
        staged: Vec::new(),
        out: Vec::with_capacity(4096),
        headers: Vec::with_capacity(1024),
        held: Held::default(),
        port: Port::new(0, 1 << 20, false),
    };
    // Warm up (buffers reach their size), then count.
    for _ in 0..100 {
        bench.request(Call::Whole);
    }
    const COUNTED: u64 = 10_000;
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for _ in 0..COUNTED {
        bench.request(Call::Whole);
    }
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
    println!(
        "allocations per keep-alive request (parse, app call, response): {:.2}",
        allocations as f64 / COUNTED as f64
    );
    println!(
        "the ABI's cost per call (through it, minus the same work by direct calls): {:.1} ns",
        abi_cost_ns(&mut bench)
    );
    c.bench_function("app_call/hello_parse_call_respond", |b| {
        b.iter(|| bench.request(Call::Whole))
    });
    c.bench_function("app_call/hello_call_only", |b| {
        b.iter(|| bench.request(Call::Abi))
    });
    c.bench_function("app_call/hello_direct", |b| {
        b.iter(|| bench.request(Call::Direct))
    });
}

/// The ABI's cost per call: the fastest of several alternating runs of each
/// way (the minimum filters out the machine's noise, which only adds).
fn abi_cost_ns(bench: &mut Bench) -> f64 {
    const CALLS: u32 = 200_000;
    let mut best = [f64::MAX; 2];
    for _ in 0..15 {
        for (i, call) in [Call::Abi, Call::Direct].into_iter().enumerate() {
            let start = std::time::Instant::now();
            for _ in 0..CALLS {
                bench.request(call);
            }
            let ns = start.elapsed().as_nanos() as f64 / f64::from(CALLS);
            best[i] = best[i].min(ns);
        }
    }
    best[0] - best[1]
}

criterion_group!(
    benches,
    bench_parse,
    bench_proxy_protocol,
    bench_chunked,
    bench_response,
    bench_app_call
);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
}
