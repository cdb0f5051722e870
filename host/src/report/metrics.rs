//! What the server reports about itself: Prometheus text, JSON, and an HTML
//! status page, all rendered from one [`Snapshot`] the master takes of its
//! counters and of the shared-memory scoreboard.

use std::{collections::BTreeMap, fmt::Write};

use serde_json::json;

use crate::scoreboard::{RequestTotals, LATENCY_BUCKETS};

/// One worker, as the status page shows it.
#[derive(Debug, Clone)]
pub struct WorkerView {
    /// The worker's number.
    pub id: u32,
    /// Its pid.
    pub pid: i32,
    /// `booting`, `idle`, `busy`, `stopping`.
    pub state: &'static str,
    /// The build generation it runs.
    pub generation: u32,
    /// Requests served.
    pub requests: u64,
    /// The request in hand and for how long (ms).
    pub current: Option<(String, u64)>,
    /// Resident memory in KiB (0: not measured).
    pub rss_kib: u64,
    /// WebSocket connections it holds open now.
    pub websockets: u64,
}

/// A listener's accept queue.
#[derive(Debug, Clone)]
pub struct Backlog {
    /// Where it listens.
    pub url: String,
    /// Connections waiting to be accepted.
    pub queued: u32,
    /// The most that may wait.
    pub max: u32,
}

/// A generation the master gave up on (its build passed the probe but did
/// not boot in workers), as the status page shows it.
#[derive(Debug, Clone)]
pub struct AbandonedView {
    /// Its build hash.
    pub build: String,
    /// Its generation.
    pub generation: u32,
    /// Why it was abandoned.
    pub reason: String,
    /// Whether a reload of the unchanged file is refused.
    pub bad: bool,
    /// Seconds since.
    pub ago_s: u64,
}

/// The master's status endpoint (`--metrics-bind`) itself.
#[derive(Debug, Clone, Default)]
pub struct StatusEndpointStats {
    /// Connections open now.
    pub open: u64,
    /// Most connections it holds at once.
    pub limit: u64,
    /// Connections accepted.
    pub accepted: u64,
    /// Idle connections closed to make room for a new one.
    pub dropped_idle: u64,
    /// Connections closed at their deadline.
    pub timed_out: u64,
    /// Pauses in accepting, out of descriptors or memory.
    pub accept_pauses: u64,
}

/// One build generation's figures since it began (its live and gone workers).
#[derive(Debug, Clone, Default)]
pub struct GenerationView {
    /// The generation.
    pub generation: u32,
    /// Its build hash (empty if no longer known).
    pub build: String,
    /// Its workers now.
    pub workers: u64,
    /// Responses by status class, 1xx to 5xx.
    pub statuses: [u64; 5],
    /// Requests in which the app panicked.
    pub panics: u64,
    /// Workers that crashed.
    pub crashes: u64,
    /// Requests past `--timeout`.
    pub timeouts: u64,
    /// Its p99 latency so far, in milliseconds (from the histogram).
    pub p99_ms: Option<f64>,
}

/// A canary rollout in progress, as /status.json shows it.
#[derive(Debug, Clone, Default)]
pub struct CanaryView {
    /// The generation on trial.
    pub generation: u32,
    /// The step (1-based) and how many there are.
    pub step: (usize, usize),
    /// Workers of the new build the step runs, and the pool's size.
    pub workers: (usize, usize),
    /// Workers serving, by generation.
    pub by_generation: BTreeMap<u32, usize>,
    /// Seconds since it began.
    pub elapsed_s: f64,
    /// The last verdict (`pass`, `wait (...)`, `fail: ...`).
    pub verdict: String,
    /// The last window's figures, in a line.
    pub figures: String,
    /// Requests each generation served since it began.
    pub served: BTreeMap<u32, u64>,
}

/// A certificate a TLS listener serves.
#[derive(Debug, Clone, Default)]
pub struct CertificateView {
    /// The certificate file.
    pub file: String,
    /// Its leaf's subject.
    pub subject: String,
    /// When it expires, in seconds since the Unix epoch.
    pub not_after: i64,
}

/// Everything the reports say, taken at one moment.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The app (`libx.so:app`).
    pub app: String,
    /// The current generation.
    pub generation: u32,
    /// Its build hash.
    pub build: String,
    /// Seconds since the master started.
    pub uptime_s: u64,
    /// Every worker.
    pub workers: Vec<WorkerView>,
    /// Requests by status and duration, over all workers ever.
    pub totals: RequestTotals,
    /// Workers forked.
    pub spawns: u64,
    /// Workers gone, by cause.
    pub deaths: BTreeMap<&'static str, u64>,
    /// Reloads that started a generation.
    pub reloads: u64,
    /// Builds refused.
    pub refused_builds: u64,
    /// Listen queues.
    pub backlogs: Vec<Backlog>,
    /// The pool's target size.
    pub target: u64,
    /// Adaptive-pool decisions: (grown, shrunk).
    pub resizes: (u64, u64),
    /// Generations abandoned since start-up.
    pub abandoned_builds: u64,
    /// The latest abandoned generations, oldest first.
    pub abandoned: Vec<AbandonedView>,
    /// Workers that died soon after they were ready.
    pub early_deaths: u64,
    /// The pause before the next spawn after failures in a row (0: none).
    pub spawn_backoff_ms: u64,
    /// The server is stopping: `draining` (in `--drain-delay`, still
    /// serving), `stopping`; `None` while it serves.
    pub stopping: Option<&'static str>,
    /// Figures per build generation (the current one and recent ones).
    pub generations: Vec<GenerationView>,
    /// Rollouts rolled back, by the canary check that failed (or `operator`).
    pub rollbacks: BTreeMap<&'static str, u64>,
    /// The canary in progress, if any.
    pub canary: Option<CanaryView>,
    /// The status endpoint's own connections (filled in by the endpoint).
    pub status_endpoint: StatusEndpointStats,
    /// The certificates TLS listeners serve (new connections), if any.
    pub certificates: Vec<CertificateView>,
}

/// The Prometheus text format (version 0.0.4).
pub fn prometheus(s: &Snapshot) -> String {
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    };
    metric(
        "host_requests_total",
        "counter",
        "Responses sent, by status class.",
    );
    let mut lines = String::new();
    for (i, n) in s.totals.statuses.iter().enumerate() {
        let _ = writeln!(lines, "host_requests_total{{status=\"{}xx\"}} {n}", i + 1);
    }
    metric(
        "host_request_duration_seconds",
        "histogram",
        "Time from a complete request to the end of its response.",
    );
    let mut cumulative = 0;
    for (i, n) in s.totals.latency.iter().enumerate() {
        cumulative += n;
        let le = LATENCY_BUCKETS
            .get(i)
            .map_or("+Inf".to_owned(), |b| b.to_string());
        let _ = writeln!(
            lines,
            "host_request_duration_seconds_bucket{{le=\"{le}\"}} {cumulative}"
        );
    }
    let _ = writeln!(
        lines,
        "host_request_duration_seconds_sum {}\nhost_request_duration_seconds_count {cumulative}",
        s.totals.latency_sum_us as f64 / 1e6
    );
    out.push_str(&lines);
    let mut gauge = |name: &str, kind: &str, help: &str, samples: &[(String, u64)]| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, v) in samples {
            let _ = writeln!(out, "{name}{labels} {v}");
        }
    };
    let by_state: Vec<(String, u64)> = ["booting", "idle", "busy", "stopping"]
        .iter()
        .map(|st| {
            let n = s.workers.iter().filter(|w| w.state == *st).count() as u64;
            (format!("{{state=\"{st}\"}}"), n)
        })
        .collect();
    gauge("host_workers", "gauge", "Workers, by state.", &by_state);
    gauge(
        "host_worker_spawns_total",
        "counter",
        "Workers forked.",
        &[(String::new(), s.spawns)],
    );
    gauge(
        "host_workers_target",
        "gauge",
        "The size the pool is brought to.",
        &[(String::new(), s.target)],
    );
    gauge(
        "host_pool_resizes_total",
        "counter",
        "Adaptive pool (--workers-max) decisions, by direction.",
        &[
            ("{direction=\"up\"}".to_owned(), s.resizes.0),
            ("{direction=\"down\"}".to_owned(), s.resizes.1),
        ],
    );
    let deaths: Vec<(String, u64)> = s
        .deaths
        .iter()
        .map(|(cause, n)| (format!("{{cause=\"{cause}\"}}"), *n))
        .collect();
    gauge(
        "host_worker_exits_total",
        "counter",
        "Workers gone, by cause.",
        &deaths,
    );
    gauge(
        "host_accept_pauses_total",
        "counter",
        "Times a worker stopped polling its listeners for a moment because accept failed for want of descriptors or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM).",
        &[(String::new(), s.totals.accept_pauses)],
    );
    gauge(
        "host_app_panics_total",
        "counter",
        "Requests in which the app panicked (answered 500; see --panic-policy).",
        &[(String::new(), s.totals.app_panics)],
    );
    gauge(
        "host_app_errors_total",
        "counter",
        "Requests in which the app returned an error (answered 500), the client still there.",
        &[(String::new(), s.totals.app_errors)],
    );
    let websockets: Vec<(String, u64)> = s
        .workers
        .iter()
        .map(|w| (format!("{{worker=\"{}\"}}", w.id), w.websockets))
        .collect();
    gauge(
        "host_websocket_connections",
        "gauge",
        "WebSocket connections open now, by worker.",
        &websockets,
    );
    gauge(
        "host_websocket_messages_total",
        "counter",
        "WebSocket messages (data frames, whole messages) received from clients and sent to them.",
        &[
            ("{direction=\"in\"}".to_owned(), s.totals.websocket_in),
            ("{direction=\"out\"}".to_owned(), s.totals.websocket_out),
        ],
    );
    gauge(
        "host_reloads_total",
        "counter",
        "Reloads that started a generation.",
        &[(String::new(), s.reloads)],
    );
    gauge(
        "host_refused_builds_total",
        "counter",
        "Builds that failed their probe.",
        &[(String::new(), s.refused_builds)],
    );
    gauge(
        "host_abandoned_builds_total",
        "counter",
        "Generations abandoned: their build passed its probe but did not boot in workers.",
        &[(String::new(), s.abandoned_builds)],
    );
    gauge(
        "host_worker_early_deaths_total",
        "counter",
        "Workers that died within a few seconds of becoming ready (a crash loop).",
        &[(String::new(), s.early_deaths)],
    );
    gauge(
        "host_draining",
        "gauge",
        "1 from a TERM until the server exits (in --drain-delay, /ready answers 503 while workers still serve), else 0.",
        &[(String::new(), u64::from(s.stopping.is_some()))],
    );
    gauge(
        "host_generation",
        "gauge",
        "The current build generation, labelled with its build hash.",
        &[(
            format!("{{build=\"{}\"}}", s.build),
            u64::from(s.generation),
        )],
    );
    let queued: Vec<(String, u64)> = s
        .backlogs
        .iter()
        .map(|b| (format!("{{listener=\"{}\"}}", b.url), u64::from(b.queued)))
        .collect();
    gauge(
        "host_listen_queue",
        "gauge",
        "Connections waiting to be accepted.",
        &queued,
    );
    let max: Vec<(String, u64)> = s
        .backlogs
        .iter()
        .map(|b| (format!("{{listener=\"{}\"}}", b.url), u64::from(b.max)))
        .collect();
    gauge(
        "host_listen_queue_max",
        "gauge",
        "The most connections that may wait.",
        &max,
    );
    let st = &s.status_endpoint;
    gauge(
        "host_status_connections",
        "gauge",
        "Connections open to the status endpoint (--metrics-bind).",
        &[(String::new(), st.open)],
    );
    gauge(
        "host_status_connections_max",
        "gauge",
        "The most connections the status endpoint holds (a share of the descriptor limit).",
        &[(String::new(), st.limit)],
    );
    gauge(
        "host_status_connections_closed_total",
        "counter",
        "Status endpoint connections closed unanswered: idle ones to make room, or at their deadline.",
        &[
            ("{reason=\"room\"}".to_owned(), st.dropped_idle),
            ("{reason=\"deadline\"}".to_owned(), st.timed_out),
        ],
    );
    gauge(
        "host_status_accept_pauses_total",
        "counter",
        "Pauses in the status endpoint's accepting, out of descriptors or memory.",
        &[(String::new(), st.accept_pauses)],
    );
    gauge(
        "host_pending_output_bytes",
        "gauge",
        "Bytes of complete responses workers hold for clients that have not taken them yet.",
        &[(String::new(), s.totals.pending_output)],
    );
    gauge(
        "host_responses_held_total",
        "counter",
        "Responses whose rest a worker's event loop wrote, the app's call over (slow readers).",
        &[(String::new(), s.totals.held)],
    );
    gauge(
        "host_responses_over_output_budget_total",
        "counter",
        "Responses to slow readers past --max-pending-output or --max-worker-pending-output: written with the worker waiting.",
        &[(String::new(), s.totals.over_budget)],
    );
    let rollbacks: Vec<(String, u64)> = s
        .rollbacks
        .iter()
        .map(|(check, n)| (format!("{{check=\"{check}\"}}"), *n))
        .collect();
    gauge(
        "host_rollbacks_total",
        "counter",
        "Rollouts rolled back: by the canary check that failed (5xx, crash, panic, timeout, p99), or by the operator.",
        &rollbacks,
    );
    let mut by_generation = Vec::new();
    for g in &s.generations {
        for (i, n) in g.statuses.iter().enumerate() {
            by_generation.push((
                format!(
                    "{{generation=\"{}\",build=\"{}\",status=\"{}xx\"}}",
                    g.generation,
                    g.build,
                    i + 1
                ),
                *n,
            ));
        }
    }
    gauge(
        "host_generation_requests_total",
        "counter",
        "Responses by build generation (recent generations) and status class.",
        &by_generation,
    );
    let events = |pick: fn(&GenerationView) -> u64| -> Vec<(String, u64)> {
        s.generations
            .iter()
            .map(|g| {
                (
                    format!("{{generation=\"{}\",build=\"{}\"}}", g.generation, g.build),
                    pick(g),
                )
            })
            .collect()
    };
    gauge(
        "host_generation_worker_crashes_total",
        "counter",
        "Workers that crashed, by build generation.",
        &events(|g| g.crashes),
    );
    gauge(
        "host_generation_app_panics_total",
        "counter",
        "Requests in which the app panicked, by build generation.",
        &events(|g| g.panics),
    );
    gauge(
        "host_generation_workers",
        "gauge",
        "Workers now, by build generation.",
        &events(|g| g.workers),
    );
    if !s.certificates.is_empty() {
        let _ = writeln!(
            out,
            "# HELP host_tls_certificate_expiry_seconds When each certificate TLS listeners serve expires (seconds since the Unix epoch).\n# TYPE host_tls_certificate_expiry_seconds gauge"
        );
        for c in &s.certificates {
            let _ = writeln!(
                out,
                "host_tls_certificate_expiry_seconds{{file=\"{}\",subject=\"{}\"}} {}",
                label_value(&c.file),
                label_value(&c.subject),
                c.not_after
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP host_spawn_backoff_seconds Seconds until the next worker start is allowed, after failures in a row (0: none).\n# TYPE host_spawn_backoff_seconds gauge\nhost_spawn_backoff_seconds {}",
        s.spawn_backoff_ms as f64 / 1000.0
    );
    out
}

/// The same as JSON, for tools (`host status` reads it).
pub fn json(s: &Snapshot) -> String {
    let workers: Vec<serde_json::Value> = s
        .workers
        .iter()
        .map(|w| {
            json!({
                "id": w.id, "pid": w.pid, "state": w.state, "generation": w.generation,
                "requests": w.requests,
                "current_request": w.current.as_ref().map(|(r, _)| r),
                "current_ms": w.current.as_ref().map(|(_, ms)| ms),
                "rss_kib": w.rss_kib, "websockets": w.websockets,
            })
        })
        .collect();
    json!({
        "app": s.app, "generation": s.generation, "build": s.build, "uptime_s": s.uptime_s,
        "workers": workers,
        "requests": {
            "1xx": s.totals.statuses[0], "2xx": s.totals.statuses[1], "3xx": s.totals.statuses[2],
            "4xx": s.totals.statuses[3], "5xx": s.totals.statuses[4],
        },
        "spawns": s.spawns, "exits": s.deaths, "reloads": s.reloads,
        "target": s.target, "pool_grown": s.resizes.0, "pool_shrunk": s.resizes.1,
        "refused_builds": s.refused_builds,
        "abandoned_builds": s.abandoned_builds,
        "abandoned": s.abandoned.iter().map(|a| json!({
            "build": a.build, "generation": a.generation, "reason": a.reason,
            "marked_bad": a.bad, "ago_s": a.ago_s,
        })).collect::<Vec<_>>(),
        "early_deaths": s.early_deaths,
        "stopping": s.stopping,
        "spawn_backoff_ms": s.spawn_backoff_ms,
        "accept_pauses": s.totals.accept_pauses,
        "pending_output_bytes": s.totals.pending_output,
        "held_responses": s.totals.held, "held_over_budget": s.totals.over_budget,
        "app_panics": s.totals.app_panics, "app_errors": s.totals.app_errors,
        "websocket_messages": {"in": s.totals.websocket_in, "out": s.totals.websocket_out},
        "listen_queues": s.backlogs.iter().map(|b| json!({"listener": b.url, "queued": b.queued, "max": b.max})).collect::<Vec<_>>(),
        "generations": s.generations.iter().map(|g| json!({
            "generation": g.generation, "build": g.build, "workers": g.workers,
            "requests": {
                "1xx": g.statuses[0], "2xx": g.statuses[1], "3xx": g.statuses[2],
                "4xx": g.statuses[3], "5xx": g.statuses[4],
            },
            "crashes": g.crashes, "panics": g.panics, "timeouts": g.timeouts,
            "p99_ms": g.p99_ms,
        })).collect::<Vec<_>>(),
        "rollbacks": s.rollbacks,
        "tls_certificates": s.certificates.iter().map(|c| json!({
            "file": c.file, "subject": c.subject, "expires": c.not_after,
        })).collect::<Vec<_>>(),
        "canary": s.canary.as_ref().map(|c| json!({
            "generation": c.generation,
            "step": c.step.0, "steps": c.step.1,
            "workers": c.workers.0, "pool": c.workers.1,
            "workers_by_generation": c.by_generation,
            "elapsed_s": c.elapsed_s,
            "verdict": c.verdict,
            "figures": c.figures,
            "served_by_generation": c.served,
        })),
    })
    .to_string()
}

/// The worker table as plain text (the status page's and `host status`'s).
pub fn table(rows: &[WorkerView]) -> String {
    let mut out = format!(
        "{:>3}  {:>7}  {:<8}  {:>4}  {:>9}  {:>10}  {:>8}  {}\n",
        "#", "pid", "state", "gen", "requests", "websockets", "rss MiB", "current request"
    );
    for w in rows {
        let current = w
            .current
            .as_ref()
            .map(|(r, ms)| format!("{r} ({ms} ms)"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{:>3}  {:>7}  {:<8}  {:>4}  {:>9}  {:>10}  {:>8.1}  {}",
            w.id,
            w.pid,
            w.state,
            w.generation,
            w.requests,
            w.websockets,
            w.rss_kib as f64 / 1024.0,
            current
        );
    }
    out
}

/// Seconds between refreshes of the HTML status page.
pub const STATUS_REFRESH_S: u32 = 2;

/// A small HTML status page that refreshes itself.
pub fn html(s: &Snapshot) -> String {
    let mut rows = String::new();
    for w in &s.workers {
        let (current, age) = match &w.current {
            Some((r, ms)) => (escape(r), format!("{ms} ms")),
            None => (String::new(), String::new()),
        };
        let _ = write!(
            rows,
            "<tr class=\"{state}\"><td>{id}</td><td>{pid}</td><td>{state}</td><td>{gen}</td><td>{req}</td><td>{ws}</td><td>{current}</td><td>{age}</td><td>{rss:.1}</td></tr>",
            state = w.state,
            id = w.id,
            pid = w.pid,
            gen = w.generation,
            req = w.requests,
            ws = w.websockets,
            rss = w.rss_kib as f64 / 1024.0,
        );
    }
    let t = &s.totals.statuses;
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="{refresh}">
<title>host status: {app}</title>
<style>
body {{ font: 14px system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin-top: 1em; }}
th, td {{ padding: .3em .8em; border-bottom: 1px solid #ddd; text-align: right; }}
th {{ background: #f3f3f3; }}
tr.busy td {{ background: #fff4d6; }} tr.booting td, tr.stopping td {{ color: #888; }}
.summary span {{ margin-right: 1.5em; }}
</style></head>
<body>
<h1>{app}</h1>
<p class="summary"><span>generation <b>{generation}</b> (build <code>{build}</code>)</span><span>up {uptime} s</span><span>{workers} worker(s)</span><span>reloads {reloads}</span><span>refused builds {refused}</span><span>abandoned builds {abandoned_count}</span></p>
{abandoned}
<p class="summary"><span>2xx {s2}</span><span>3xx {s3}</span><span>4xx {s4}</span><span>5xx {s5}</span><span>WebSocket messages in {ws_in} / out {ws_out}</span></p>
<table id="workers"><tr><th>#</th><th>pid</th><th>state</th><th>gen</th><th>requests</th><th>WebSockets</th><th>current request</th><th>age</th><th>RSS MiB</th></tr>
{rows}
</table>
<p><a href="/metrics">/metrics</a> · <a href="/status.json">/status.json</a> · refreshes every {refresh} s</p>
</body></html>
"#,
        refresh = STATUS_REFRESH_S,
        app = escape(&s.app),
        generation = s.generation,
        build = escape(&s.build),
        uptime = s.uptime_s,
        workers = s.workers.len(),
        reloads = s.reloads,
        refused = s.refused_builds,
        abandoned_count = s.abandoned_builds,
        abandoned = abandoned_html(&s.abandoned),
        s2 = t[1],
        s3 = t[2],
        s4 = t[3],
        s5 = t[4],
        ws_in = s.totals.websocket_in,
        ws_out = s.totals.websocket_out,
    )
}

/// The abandoned generations, newest first, as a list (nothing if none).
fn abandoned_html(abandoned: &[AbandonedView]) -> String {
    if abandoned.is_empty() {
        return String::new();
    }
    let mut out = String::from("<ul id=\"abandoned\">");
    for a in abandoned.iter().rev() {
        let _ = write!(
            out,
            "<li>generation {} (build <code>{}</code>) abandoned {} s ago{}: {}</li>",
            a.generation,
            escape(&a.build),
            a.ago_s,
            if a.bad { ", marked bad" } else { "" },
            escape(&a.reason)
        );
    }
    out.push_str("</ul>");
    out
}

/// `s` as a Prometheus label value: backslash, quote and newline escaped.
fn label_value(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificates_show_their_expiry_with_escaped_labels() {
        let s = Snapshot {
            certificates: vec![CertificateView {
                file: "/etc/tls/a\"b.pem".into(),
                subject: "CN=x\\y".into(),
                not_after: 1_900_000_000,
            }],
            ..Snapshot::default()
        };
        let text = prometheus(&s);
        assert!(
            text.contains(
                "host_tls_certificate_expiry_seconds{file=\"/etc/tls/a\\\"b.pem\",subject=\"CN=x\\\\y\"} 1900000000"
            ),
            "{text}"
        );
        assert!(!prometheus(&Snapshot::default()).contains("host_tls_certificate"));
    }

    fn snapshot() -> Snapshot {
        let mut totals = RequestTotals {
            statuses: [0, 7, 0, 2, 1],
            ..RequestTotals::default()
        };
        totals.latency[0] = 6;
        totals.latency[3] = 4;
        totals.latency_sum_us = 12_000;
        totals.accept_pauses = 5;
        (totals.pending_output, totals.held, totals.over_budget) = (4096, 2, 1);
        (totals.app_panics, totals.app_errors) = (3, 4);
        (totals.websocket_in, totals.websocket_out) = (11, 29);
        Snapshot {
            app: "libx.so:app".into(),
            generation: 3,
            build: "abc".into(),
            workers: vec![WorkerView {
                id: 1,
                pid: 42,
                state: "busy",
                generation: 3,
                requests: 10,
                current: Some(("GET /<slow>".into(), 1500)),
                rss_kib: 2048,
                websockets: 6,
            }],
            totals,
            spawns: 4,
            deaths: BTreeMap::from([("crash", 1)]),
            reloads: 2,
            ..Snapshot::default()
        }
    }

    #[test]
    fn prometheus_text() {
        let text = prometheus(&snapshot());
        for line in [
            "host_requests_total{status=\"2xx\"} 7",
            "host_requests_total{status=\"5xx\"} 1",
            "host_request_duration_seconds_bucket{le=\"0.0005\"} 6",
            "host_request_duration_seconds_bucket{le=\"0.005\"} 10",
            "host_request_duration_seconds_bucket{le=\"+Inf\"} 10",
            "host_request_duration_seconds_sum 0.012",
            "host_request_duration_seconds_count 10",
            "host_workers{state=\"busy\"} 1",
            "host_worker_exits_total{cause=\"crash\"} 1",
            "host_generation{build=\"abc\"} 3",
            "host_abandoned_builds_total 0",
            "host_worker_early_deaths_total 0",
            "host_spawn_backoff_seconds 0",
            "host_accept_pauses_total 5",
            "host_pending_output_bytes 4096",
            "host_responses_held_total 2",
            "host_responses_over_output_budget_total 1",
            "host_app_panics_total 3",
            "host_app_errors_total 4",
            "host_draining 0",
            "host_websocket_connections{worker=\"1\"} 6",
            "host_websocket_messages_total{direction=\"in\"} 11",
            "host_websocket_messages_total{direction=\"out\"} 29",
            "# TYPE host_websocket_connections gauge",
            "# TYPE host_websocket_messages_total counter",
            "# TYPE host_request_duration_seconds histogram",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
    }

    #[test]
    fn websockets_per_worker_in_json_table_and_page() {
        let s = snapshot();
        let j: serde_json::Value = serde_json::from_str(&json(&s)).expect("json");
        assert_eq!(j["workers"][0]["websockets"], 6);
        assert_eq!(j["websocket_messages"]["in"], 11);
        assert_eq!(j["websocket_messages"]["out"], 29);
        let table = table(&s.workers);
        let header: Vec<&str> = table
            .lines()
            .next()
            .expect("header")
            .split_whitespace()
            .collect();
        let row: Vec<&str> = table
            .lines()
            .nth(1)
            .expect("row")
            .split_whitespace()
            .collect();
        let column = header
            .iter()
            .position(|h| *h == "websockets")
            .expect("a websockets column");
        assert_eq!(row[column], "6", "{table}");
        let page = html(&s);
        assert!(page.contains("<th>WebSockets</th>"), "{page}");
        assert!(page.contains("<td>10</td><td>6</td>"), "{page}");
        assert!(page.contains("WebSocket messages in 11 / out 29"), "{page}");
    }

    #[test]
    fn html_escapes_requests() {
        let page = html(&snapshot());
        assert!(page.contains("GET /&lt;slow&gt;"));
        assert!(page.contains("http-equiv=\"refresh\""));
    }
}
