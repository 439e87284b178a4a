//! Abuse and failure suite: hostile clients, resource exhaustion, shutdown under load, and
//! fuzzed configuration. Every row of the matrix is one test named `rowNN_...`; each prints one
//! `ROW` line with its measured figures (`cargo test --test abuse -- --nocapture`).
//!
//! Rows 1-6 drive the library's server in-process (its connection count is observable);
//! rows 7-12 drive the built binary, whose RSS and CPU come from /proc. Tests hold a
//! process-wide lock so timings and memory figures are not disturbed by each other.
//! Row 13 (a second signal during the drain exits at once) is
//! `tests/process.rs::second_signal_during_the_drain_exits_at_once`.

mod common;
#[path = "abuse/h2.rs"]
mod h2;
#[path = "abuse/support.rs"]
mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::TestServer;
use hello_server::server::ServerConfig;
use support::{Prober, Proc, get_once, is_hello, read_until_closed, runtime, serial};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::{Instant, timeout};

/// The header read timeout the rows configure, and the margin every close must meet.
const HRT: Duration = Duration::from_secs(1);
const MARGIN: Duration = Duration::from_secs(1);

fn fast() -> ServerConfig {
    ServerConfig {
        header_read_timeout: HRT,
        write_timeout: Duration::from_secs(1),
        shutdown_grace: Duration::from_secs(2),
        ..ServerConfig::default()
    }
}

fn row(name: &str, figures: std::fmt::Arguments<'_>) {
    eprintln!("ROW {name}: {figures}");
}

/// Waits for every task, returning their results; panics if any is not done within `within`.
async fn join_all<T: 'static>(mut set: JoinSet<T>, within: Duration) -> Vec<T> {
    let mut out = Vec::with_capacity(set.len());
    timeout(within, async {
        while let Some(result) = set.join_next().await {
            out.push(result.expect("task"));
        }
    })
    .await
    .expect("all tasks done in time");
    out
}

async fn connect(addr: SocketAddr) -> TcpStream {
    timeout(support::WAIT, TcpStream::connect(addr))
        .await
        .expect("connect in time")
        .expect("connect")
}

// ---------------------------------------------------------------------------------------------
// 1. Slow request head (slowloris).

/// Sends a request head one header line every 100 ms; returns when the server closes.
async fn slowloris(addr: SocketAddr) -> (Duration, Vec<u8>) {
    let mut stream = connect(addr).await;
    let started = Instant::now();
    let _ = stream.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n").await;
    let mut drip = tokio::time::interval(Duration::from_millis(100));
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    // Bounded: 100 lines, 10 s.
    for i in 0..100 {
        tokio::select! {
            read = stream.read(&mut buf) => match read {
                Ok(0) | Err(_) => return (started.elapsed(), got),
                Ok(n) => got.extend_from_slice(&buf[..n]),
            },
            _ = drip.tick() => {
                if stream.write_all(format!("X-Drip-{i}: a\r\n").as_bytes()).await.is_err() {
                    return (started.elapsed(), got);
                }
            }
        }
    }
    panic!("slowloris connection still open after 100 lines");
}

#[test]
fn row01_slowloris_connections_are_closed_after_the_header_read_timeout() {
    let _serial = serial();
    runtime().block_on(async {
        let mut server = TestServer::start(fast()).await;
        let mut set = JoinSet::new();
        for _ in 0..200 {
            set.spawn(slowloris(server.addr));
        }
        let results = join_all(set, support::WAIT).await;
        let worst = results.iter().map(|r| r.0).max().unwrap();
        for (elapsed, reply) in &results {
            assert!(*elapsed <= HRT + MARGIN, "closed after {elapsed:?}");
            assert!(
                !reply.starts_with(b"HTTP/1.1 200"),
                "answered a partial head"
            );
        }
        server.connections_at_most(0).await;
        row(
            "1 slowloris",
            format_args!(
                "200 connections, slowest closed {worst:?} after connect (bound {:?})",
                HRT + MARGIN
            ),
        );
        server.stop().await;
    });
}

// ---------------------------------------------------------------------------------------------
// 2. Connections that send nothing (or only part of the HTTP/2 preface, or only the preface).

#[test]
fn row02_silent_and_preface_only_connections_are_closed() {
    let _serial = serial();
    runtime().block_on(async {
        let mut server = TestServer::start(fast()).await;
        let partial: &[u8] = &h2::PREFACE[..10];
        let cases: [(&str, Vec<u8>); 4] = [
            ("nothing", Vec::new()),
            ("partial h2 preface", partial.to_vec()),
            ("full h2 preface", h2::PREFACE.to_vec()),
            ("preface and SETTINGS", h2::hello()),
        ];
        let mut set = JoinSet::new();
        for (name, bytes) in &cases {
            for _ in 0..50 {
                let (name, bytes, addr) = (*name, bytes.clone(), server.addr);
                set.spawn(async move {
                    let mut stream = connect(addr).await;
                    let started = Instant::now();
                    let _ = stream.write_all(&bytes).await;
                    let (reply, closed) = read_until_closed(&mut stream, HRT + support::WAIT).await;
                    (name, started.elapsed(), closed, reply)
                });
            }
        }
        let results = join_all(set, 2 * support::WAIT).await;
        let mut worst = Duration::ZERO;
        for (name, elapsed, closed, reply) in results {
            assert!(
                closed && elapsed <= HRT + MARGIN,
                "{name}: open {elapsed:?}"
            );
            assert!(!reply.starts_with(b"HTTP/1.1 200"), "{name}: answered");
            worst = worst.max(elapsed);
        }
        server.connections_at_most(0).await;
        row(
            "2 silent",
            format_args!("4 kinds x 50 connections, slowest closed after {worst:?}"),
        );
        server.stop().await;
    });
}

// ---------------------------------------------------------------------------------------------
// 3. Idle keep-alive connections, HTTP/1.1 and HTTP/2.

async fn idle_h1(addr: SocketAddr) -> Duration {
    let mut stream = connect(addr).await;
    stream.write_all(&common::get("/")).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.ends_with(b"Hello, World!") {
        let n = timeout(support::WAIT, stream.read(&mut buf))
            .await
            .expect("response in time")
            .expect("read");
        assert!(n > 0, "closed before the response");
        got.extend_from_slice(&buf[..n]);
    }
    let answered = Instant::now();
    let (rest, closed) = read_until_closed(&mut stream, HRT + support::WAIT).await;
    assert!(closed && rest.is_empty(), "idle h1 connection: {rest:?}");
    answered.elapsed()
}

async fn idle_h2(addr: SocketAddr) -> Duration {
    let stream = connect(addr).await;
    let (mut reader, mut writer) = stream.into_split();
    let mut out = h2::hello();
    h2::frame(&mut out, h2::SETTINGS, h2::ACK, 0, &[]);
    h2::frame(
        &mut out,
        h2::HEADERS,
        h2::END_HEADERS | h2::END_STREAM,
        1,
        h2::GET_BLOCK,
    );
    writer.write_all(&out).await.unwrap();
    let (end, _) = h2::read_frames(&mut reader, support::WAIT, |f| {
        f.kind == h2::DATA && f.stream == 1 && f.flags & h2::END_STREAM != 0
    })
    .await;
    assert!(matches!(end, h2::End::Open), "no h2 response: {end:?}");
    let answered = Instant::now();
    let (end, _) = h2::read_frames(&mut reader, HRT + support::WAIT, |_| false).await;
    match end {
        h2::End::Closed => {}
        // A GOAWAY before the close is fine; wait for the close itself.
        h2::End::GoAway(..) => {
            let (end, _) = h2::read_frames(&mut reader, support::WAIT, |_| false).await;
            assert!(matches!(end, h2::End::Closed), "{end:?}");
        }
        h2::End::Open => panic!("idle h2 connection still open"),
    }
    answered.elapsed()
}

#[test]
fn row03_idle_keep_alive_connections_are_closed_h1_and_h2() {
    let _serial = serial();
    runtime().block_on(async {
        let mut server = TestServer::start(fast()).await;
        let mut set = JoinSet::new();
        for i in 0..100 {
            let addr = server.addr;
            set.spawn(async move {
                if i % 2 == 0 {
                    ("h1", idle_h1(addr).await)
                } else {
                    ("h2", idle_h2(addr).await)
                }
            });
        }
        let results = join_all(set, 2 * support::WAIT).await;
        let worst = |proto| {
            results
                .iter()
                .filter(|r| r.0 == proto)
                .map(|r| r.1)
                .max()
                .unwrap()
        };
        for (proto, idle) in &results {
            assert!(*idle <= HRT + MARGIN, "{proto}: idle {idle:?}");
        }
        server.connections_at_most(0).await;
        row(
            "3 idle keep-alive",
            format_args!(
                "50 h1 + 50 h2, closed after idle {:?} (h1) / {:?} (h2)",
                worst("h1"),
                worst("h2")
            ),
        );
        server.stop().await;
    });
}

// ---------------------------------------------------------------------------------------------
// 4. Oversized heads.

/// Writes `request` while reading; returns the reply and how long until the close.
async fn send_and_collect(addr: SocketAddr, request: Vec<u8>) -> (Vec<u8>, Duration, bool) {
    let stream = connect(addr).await;
    let started = Instant::now();
    let (mut reader, mut writer) = stream.into_split();
    let writing = tokio::spawn(async move {
        // The server may close before it has read everything: a failed write is expected.
        let _ = writer.write_all(&request).await;
        writer
    });
    let mut reply = Vec::new();
    let closed = timeout(HRT + support::WAIT, async {
        let mut buf = [0u8; 8192];
        for _ in 0..100_000 {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => reply.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .is_ok();
    let elapsed = started.elapsed();
    drop(writing.await);
    (reply, elapsed, closed)
}

#[test]
fn row04_oversized_heads_get_431_and_close() {
    let _serial = serial();
    runtime().block_on(async {
        let server = TestServer::start(fast()).await;
        let field = format!(
            "GET / HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
            "a".repeat(20 * 1024)
        );
        let many: String = (0..101).map(|i| format!("X-H{i}: v\r\n")).collect();
        let many = format!("GET / HTTP/1.1\r\nHost: t\r\n{many}\r\n");
        let huge: String = (0..5000)
            .map(|i| format!("X-Header-{i:05}: {}\r\n", "v".repeat(90)))
            .collect();
        let huge = format!("GET / HTTP/1.1\r\nHost: t\r\n{huge}\r\n");
        assert!(huge.len() >= 500 * 1024);
        let mut figures = Vec::new();
        for (name, request) in [
            ("20 KiB field", field),
            ("101 headers", many),
            ("500 KiB of headers", huge),
        ] {
            let (reply, elapsed, closed) =
                send_and_collect(server.addr, request.into_bytes()).await;
            assert!(
                reply.starts_with(b"HTTP/1.1 431"),
                "{name}: {:?}",
                String::from_utf8_lossy(&reply[..reply.len().min(200)])
            );
            assert!(
                closed && elapsed <= MARGIN,
                "{name}: closed {closed} after {elapsed:?}"
            );
            figures.push(format!("{name}: 431, closed after {elapsed:?}"));
        }
        row("4 oversized head", format_args!("{}", figures.join("; ")));
        server.stop().await;
    });
}

// ---------------------------------------------------------------------------------------------
// 5. Garbage while a normal client is served.

#[test]
fn row05_garbage_gets_400_or_close_while_a_normal_client_is_served() {
    let _serial = serial();
    runtime().block_on(async {
        let server = TestServer::start(fast()).await;
        let prober = Prober::start(server.addr);
        let mut random = Vec::with_capacity(4096);
        let mut x: u32 = 0x2545_f491;
        for _ in 0..4096 {
            // xorshift: fixed, reproducible noise.
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            random.push(x as u8);
        }
        let client_hello: &[u8] = b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\
            \x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f\
            \x10\x11\x12\x13\x14\x15\x16\x17\x18\x19\x1a\x1b\x1c\x1d\x1e\x1f\x00\x00\x02\x13\x01\x01\x00";
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("random bytes", random),
            ("TLS ClientHello", client_hello.to_vec()),
            ("NUL bytes", vec![0u8; 1024]),
            ("NUL in request line", b"GET /\0 HTTP/1.1\r\nHost: t\r\n\r\n".to_vec()),
            ("NUL in header", b"GET / HTTP/1.1\r\nHost: t\0\r\n\r\n".to_vec()),
            ("no version", b"GET /\r\n\r\n".to_vec()),
            ("bad version", b"GET / HTTP/9.9\r\nHost: t\r\n\r\n".to_vec()),
            ("HTTP/1.1x", b"GET / HTTP/1.1x\r\nHost: t\r\n\r\n".to_vec()),
            ("double space", b"GET  / HTTP/1.1\r\nHost: t\r\n\r\n".to_vec()),
            ("no target", b"GET HTTP/1.1\r\nHost: t\r\n\r\n".to_vec()),
            ("method with slash", b"G/ET / HTTP/1.1\r\nHost: t\r\n\r\n".to_vec()),
            ("space in target", b"GET /a b HTTP/1.1\r\nHost: t\r\n\r\n".to_vec()),
            ("control char in target", b"GET /\x7f HTTP/1.1\r\nHost: t\r\n\r\n".to_vec()),
            ("header without colon", b"GET / HTTP/1.1\r\nHost t\r\n\r\n".to_vec()),
            ("empty header name", b"GET / HTTP/1.1\r\n: v\r\n\r\n".to_vec()),
            ("high bytes", b"\xff\xfe\xfd\xfc / HTTP/1.1\r\n\r\n".to_vec()),
            ("CR alone", b"GET / HTTP/1.1\rHost: t\r\r\r".to_vec()),
            ("just CRLFs", b"\r\n".repeat(64)),
        ];
        let mut worst = Duration::ZERO;
        let mut outcomes = Vec::new();
        for (name, bytes) in cases {
            let (reply, elapsed, closed) = send_and_collect(server.addr, bytes).await;
            let text = String::from_utf8_lossy(&reply[..reply.len().min(80)]).into_owned();
            assert!(
                reply.is_empty() || reply.starts_with(b"HTTP/1.1 400"),
                "{name}: {text:?}"
            );
            assert!(closed && elapsed <= HRT + MARGIN, "{name}: closed {closed} after {elapsed:?}");
            worst = worst.max(elapsed);
            outcomes.push(if reply.is_empty() { "close" } else { "400" });
        }
        let (served, failures) = prober.finish().await;
        assert!(failures.is_empty(), "normal client failed: {failures:?}");
        assert!(served > 0);
        let count = |o| outcomes.iter().filter(|x| **x == o).count();
        row(
            "5 garbage",
            format_args!(
                "{} inputs: {} x 400, {} x close (slowest {worst:?}); normal client {served} ok, 0 failed",
                outcomes.len(),
                count("400"),
                count("close")
            ),
        );
        server.stop().await;
    });
}

// ---------------------------------------------------------------------------------------------
// 6. Request smuggling shapes: each request hides a second one ("GET /smuggled") that only a
// parser disagreeing with the front end would see. Never two responses.

#[test]
fn row06_smuggling_shapes_are_rejected_never_two_responses() {
    let _serial = serial();
    runtime().block_on(async {
        let server = TestServer::start(fast()).await;
        let hidden = "GET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n";
        let cases: Vec<(&str, String)> = vec![
            (
                "CL then TE",
                format!("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{hidden}"),
            ),
            (
                "TE then CL",
                format!("POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 40\r\n\r\n0\r\n\r\n{hidden}"),
            ),
            (
                "conflicting CL",
                format!("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nContent-Length: {}\r\n\r\n{hidden}", hidden.len()),
            ),
            (
                "CL list",
                format!("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 0, {}\r\n\r\n{hidden}", hidden.len()),
            ),
            (
                "CL with sign",
                format!("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: +0\r\n\r\n{hidden}"),
            ),
            (
                "oversized chunk size",
                format!("POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFFFF\r\n{hidden}"),
            ),
            (
                "chunk size overflow to 0",
                format!("POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000000\r\n\r\n{hidden}"),
            ),
            (
                "TE not chunked last",
                format!("POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n{hidden}"),
            ),
            (
                "TE obfuscated",
                format!("POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: xchunked\r\nContent-Length: 0\r\n\r\n0\r\n\r\n{hidden}"),
            ),
            (
                "obs-fold",
                format!("POST / HTTP/1.1\r\nHost: t\r\nX-Fold: a\r\n Content-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{hidden}"),
            ),
            (
                "space before colon",
                format!("POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding : chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n{hidden}"),
            ),
            (
                "tab before colon",
                format!("POST / HTTP/1.1\r\nHost: t\r\nContent-Length\t: 0\r\n\r\n{hidden}"),
            ),
            (
                "bare LF in chunk size",
                format!("POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0\n\r\n{hidden}"),
            ),
        ];
        let mut outcomes = Vec::new();
        for (name, request) in cases {
            let (reply, elapsed, closed) = send_and_collect(server.addr, request.into_bytes()).await;
            let text = String::from_utf8_lossy(&reply).into_owned();
            let responses = text.matches("HTTP/1.1 ").count();
            assert!(responses <= 1, "{name}: {responses} responses: {text:?}");
            assert!(!text.contains("smuggled"), "{name}: {text:?}");
            assert!(closed && elapsed <= HRT + MARGIN, "{name}: closed {closed} after {elapsed:?}");
            let status = text.get(9..12).unwrap_or("close").to_owned();
            outcomes.push(format!("{name}: {status}"));
        }
        row("6 smuggling", format_args!("{}", outcomes.join("; ")));
        server.stop().await;
    });
}

// ---------------------------------------------------------------------------------------------
// 7. 10 000 idle connections against the binary: responsive, bounded RSS, memory given back.

/// Measured per idle keep-alive connection (one request answered, then silence): 18 KiB with
/// glibc, 25 KiB with the static musl build. hyper's HTTP/1 connection keeps an 8 KiB read
/// buffer and an 8 KiB write buffer; the task, timers and registration add about 2 KiB; the
/// rest is allocator overhead. A connection that sent nothing costs 4.4 KiB (no hyper yet).
/// The budget is the worse of the two plus a quarter.
const PER_CONNECTION_BUDGET_KIB: u64 = 32;
/// The idle process (2-4 MiB) plus allocator and runtime slack.
const BASE_BUDGET_KIB: u64 = 16 * 1024;
const IDLE_CONNECTIONS: usize = 10_000;

async fn open_idle(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut streams = Vec::with_capacity(n);
    for _ in 0..n.div_ceil(500) {
        let mut set = JoinSet::new();
        for _ in 0..500.min(n - streams.len()) {
            set.spawn(async move {
                let mut stream = connect(addr).await;
                stream.write_all(&common::get("/")).await.expect("write");
                let mut got = Vec::new();
                let mut buf = [0u8; 512];
                while !got.ends_with(b"Hello, World!") {
                    let read = stream.read(&mut buf).await.expect("read");
                    assert!(read > 0, "closed before the response");
                    got.extend_from_slice(&buf[..read]);
                }
                stream
            });
        }
        streams.extend(join_all(set, support::WAIT).await);
    }
    streams
}

#[test]
fn row07_ten_thousand_idle_connections() {
    let _serial = serial();
    // Ours and the server's descriptors: 10k each, plus slack.
    if let Err(why) = support::raise_nofile(IDLE_CONNECTIONS as u64 + 2_000) {
        assert!(!support::in_ci(), "{why}");
        eprintln!("SKIP row 7: {why}");
        return;
    }
    let timeout_s = 6;
    let server = Proc::start(&[
        ("HELLO_MAX_CONNECTIONS", "11000"),
        ("HELLO_HEADER_READ_TIMEOUT", &format!("{timeout_s}s")),
    ]);
    runtime().block_on(async {
        for _ in 0..100 {
            assert!(is_hello(&get_once(server.addr, support::WAIT).await.unwrap()));
        }
        let base = server.rss_kib();
        let started = Instant::now();
        let mut streams = open_idle(server.addr, 1_000).await;
        let at_1k = server.rss_kib();
        streams.extend(open_idle(server.addr, IDLE_CONNECTIONS - 1_000).await);
        let opened = started.elapsed();
        let at_10k = server.rss_kib();
        assert!(
            opened < Duration::from_secs(timeout_s) - MARGIN,
            "opening took {opened:?}; the first connections may have timed out"
        );

        let asked = Instant::now();
        let reply = get_once(server.addr, support::WAIT).await.expect("served under 10k idle");
        let latency = asked.elapsed();
        assert!(is_hello(&reply));
        assert!(h2::h2_get_ok(server.addr, support::WAIT).await, "h2 served under 10k idle");
        assert!(latency < Duration::from_secs(1), "latency {latency:?}");

        let per_1k = at_1k.saturating_sub(base) / 1_000;
        let per_10k = at_10k.saturating_sub(base) / IDLE_CONNECTIONS as u64;
        let bound = BASE_BUDGET_KIB + PER_CONNECTION_BUDGET_KIB * IDLE_CONNECTIONS as u64;
        assert!(at_10k < bound, "RSS {at_10k} KiB at 10k idle, bound {bound} KiB");

        // Every connection is closed by the header read timeout: all within timeout + 1 s of
        // the last response (the first ones a little earlier).
        let deadline = Duration::from_secs(timeout_s) + MARGIN;
        let mut set = JoinSet::new();
        for mut stream in streams {
            set.spawn(async move { read_until_closed(&mut stream, deadline + support::WAIT).await.1 });
        }
        let closed = join_all(set, deadline + support::WAIT).await;
        let close_time = started.elapsed();
        assert!(closed.iter().all(|c| *c));
        assert!(
            close_time <= opened + deadline,
            "all closed after {close_time:?}; opened within {opened:?}"
        );
        // The server's side is gone once a fresh request is answered after the last close.
        assert!(is_hello(&get_once(server.addr, support::WAIT).await.unwrap()));
        let after = server.rss_kib();
        let growth = at_10k.saturating_sub(base);
        // musl (the shipped static binary) returns freed memory to the system; glibc's malloc
        // keeps it in its arenas (fragmentation: a few long-lived allocations above the freed
        // ones pin the heap), so for a glibc build only report it.
        let glibc = support::bin_is_glibc();
        if !glibc {
            assert!(
                after <= base + growth / 10,
                "RSS after the timeout {after} KiB; base {base} KiB, peak {at_10k} KiB"
            );
        }
        let allocator = if glibc { "glibc: not returned, not asserted" } else { "musl" };
        row(
            "7 10k idle",
            format_args!(
                "base {base} KiB, 1k {at_1k} KiB ({per_1k} KiB/conn), 10k {at_10k} KiB ({per_10k} KiB/conn, bound {bound} KiB), \
                 GET under load {latency:?}, opened in {opened:?}, all closed {:?} after the last open, RSS after {after} KiB ({allocator})",
                close_time - opened
            ),
        );
    });
}

// ---------------------------------------------------------------------------------------------
// 8. Descriptor exhaustion: the server under RLIMIT_NOFILE 256 with 400 connections.

#[test]
fn row08_descriptor_exhaustion_backs_off_and_recovers() {
    let _serial = serial();
    let mut server = Proc::start_with_nofile(&[("HELLO_HEADER_READ_TIMEOUT", "30s")], Some(256));
    runtime().block_on(async {
        let mut streams = Vec::new();
        for _ in 0..400 {
            streams.push(connect(server.addr).await);
        }
        // Backoff doubles from 5 ms: a line with 80 ms proves 5 failed accepts in a row,
        // spaced out rather than spinning.
        let first = server
            .lines
            .wait_for(support::WAIT, |l| l.contains("accept failed"))
            .expect("accept error logged");
        // EMFILE: glibc says "Too many open files", musl "No file descriptors available".
        assert!(first.contains("(os error 24)"), "{first}");
        let grown = server.lines.wait_for(support::WAIT, |l| {
            l.contains("accept failed") && l.contains("\"80ms\"")
        });
        assert!(
            grown.is_some(),
            "backoff did not grow: {:#?}",
            server.lines.all()
        );
        assert!(server.alive(), "server died at the descriptor limit");
        let failures_while_full = server
            .lines
            .all()
            .iter()
            .filter(|l| l.contains("accept failed"))
            .count();
        drop(streams);
        let freed = Instant::now();
        let reply = get_once(server.addr, support::WAIT)
            .await
            .expect("served after recovery");
        let recovered = freed.elapsed();
        assert!(is_hello(&reply));
        assert!(server.alive());
        row(
            "8 EMFILE",
            format_args!(
                "nofile 256, 400 connections: alive, {failures_while_full} backoff lines, \
                 first: {}, 200 {recovered:?} after the connections closed",
                support::json_field(&first, "error").unwrap_or("?")
            ),
        );
    });
}

// ---------------------------------------------------------------------------------------------
// 9. Connection churn.

const CHURN: u64 = 50_000;

#[test]
fn row09_connection_churn_has_no_failures_and_bounded_rss() {
    let _serial = serial();
    let server = Proc::start(&[]);
    let rt = runtime();
    let base = rt.block_on(async {
        for _ in 0..100 {
            assert!(is_hello(
                &get_once(server.addr, support::WAIT).await.unwrap()
            ));
        }
        server.rss_kib()
    });
    let started = std::time::Instant::now();
    let (ok, failures) = rt.block_on(async {
        let next = Arc::new(AtomicU64::new(0));
        let mut set = JoinSet::new();
        for _ in 0..16 {
            let next = Arc::clone(&next);
            let addr = server.addr;
            set.spawn(async move {
                let (mut ok, mut failures) = (0u64, Vec::new());
                while next.fetch_add(1, Ordering::Relaxed) < CHURN {
                    match get_once(addr, support::WAIT).await {
                        Ok(reply) if is_hello(&reply) => ok += 1,
                        Ok(reply) => failures.push(String::from_utf8_lossy(&reply).into_owned()),
                        Err(err) => failures.push(err),
                    }
                }
                (ok, failures)
            });
        }
        let results = join_all(set, Duration::from_secs(120)).await;
        let ok: u64 = results.iter().map(|r| r.0).sum();
        let failures: Vec<String> = results.into_iter().flat_map(|r| r.1).collect();
        (ok, failures)
    });
    let elapsed = started.elapsed();
    let after = server.rss_kib();
    assert!(
        failures.is_empty(),
        "{} failures: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert_eq!(ok, CHURN);
    assert!(
        after < base + 8 * 1024,
        "RSS {after} KiB after churn; base {base} KiB"
    );
    row(
        "9 churn",
        format_args!(
            "{CHURN} connections in {elapsed:?} ({:.0}/s), 0 failures, RSS {base} -> {after} KiB",
            CHURN as f64 / elapsed.as_secs_f64()
        ),
    );
}

// ---------------------------------------------------------------------------------------------
// 10. Slow readers: pipelined requests, responses never read.

#[test]
fn row10_slow_reader_is_closed_after_the_write_timeout() {
    let _serial = serial();
    let write_timeout = Duration::from_secs(1);
    let server = Arc::new(Proc::start(&[
        ("HELLO_WRITE_TIMEOUT", "1s"),
        // Long, so only the write timeout can close these connections.
        ("HELLO_HEADER_READ_TIMEOUT", "60s"),
    ]));
    runtime().block_on(async {
        let base = server.rss_kib();
        let peak = Arc::new(AtomicU64::new(base));
        let batch = common::get("/").repeat(100);
        let mut set = JoinSet::new();
        for _ in 0..20 {
            let (batch, addr) = (batch.clone(), server.addr);
            let (server, peak) = (Arc::clone(&server), Arc::clone(&peak));
            set.spawn(async move {
                let mut stream = connect(addr).await;
                let mut stalled_at = None;
                // Bounded: 100k batches (350 MB), and the join deadline.
                for _ in 0..100_000 {
                    let mut write = std::pin::pin!(stream.write_all(&batch));
                    let result = tokio::select! {
                        result = &mut write => result,
                        () = tokio::time::sleep(Duration::from_millis(300)), if stalled_at.is_none() => {
                            // The server stopped reading: its writes are blocked. Sample memory.
                            stalled_at = Some(Instant::now());
                            peak.fetch_max(server.rss_kib(), Ordering::Relaxed);
                            write.await
                        }
                    };
                    if result.is_err() {
                        let stalled = stalled_at.expect("the write stalled before the close");
                        return stalled.elapsed();
                    }
                }
                panic!("a slow reader was never closed");
            });
        }
        let closes = join_all(set, Duration::from_secs(30)).await;
        let worst = closes.iter().max().copied().unwrap();
        let peak = peak.load(Ordering::Relaxed);
        // Measured from when the client noticed the stall (300 ms after its last progress).
        // A debug server is CPU-bound answering the pipelined requests, so its reads stall
        // before its writes block: the bound holds for release builds (CI), loosely for debug.
        let margin = if cfg!(debug_assertions) { 10 * MARGIN } else { MARGIN };
        assert!(worst <= write_timeout + margin, "closed {worst:?} after the stall");
        assert!(peak < base + 8 * 1024, "RSS {peak} KiB while stalled; base {base} KiB");
        assert!(is_hello(&get_once(server.addr, support::WAIT).await.unwrap()));
        row(
            "10 slow reader",
            format_args!(
                "20 connections, closed at most {worst:?} after the stall was seen (write timeout {write_timeout:?}), \
                 RSS {base} -> {peak} KiB while stalled"
            ),
        );
    });
}

// ---------------------------------------------------------------------------------------------
// 11. HTTP/2 floods.

struct Flood {
    end: h2::End,
    cpu: Duration,
    wall: Duration,
    frames_sent: u64,
}

/// Opens an h2c connection, writes `batches` (each at most once, stopping at the first
/// failed write), and reads until GOAWAY or close; measures the server's CPU meanwhile.
async fn flood(
    server: &Proc,
    opening: Vec<u8>,
    batch: Vec<u8>,
    frames_per_batch: u64,
    batches: u64,
) -> Flood {
    let stream = connect(server.addr).await;
    let (mut reader, mut writer) = stream.into_split();
    let cpu_before = server.cpu();
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let stop_writer = Arc::clone(&stop);
    let writing = tokio::spawn(async move {
        let mut sent = 0;
        if writer.write_all(&opening).await.is_err() {
            return sent;
        }
        for _ in 0..batches {
            if stop_writer.load(Ordering::Relaxed) || writer.write_all(&batch).await.is_err() {
                break;
            }
            sent += frames_per_batch;
        }
        sent
    });
    let (end, _frames) = h2::read_frames(&mut reader, Duration::from_secs(10), |_| false).await;
    let wall = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    drop(reader);
    let frames_sent = timeout(support::WAIT, writing)
        .await
        .expect("writer stops")
        .unwrap();
    Flood {
        end,
        cpu: server.cpu() - cpu_before,
        wall,
        frames_sent,
    }
}

#[test]
fn row11_h2_floods_get_goaway_quickly_with_bounded_cpu() {
    let _serial = serial();
    let server = Proc::start(&[("HELLO_HEADER_READ_TIMEOUT", "2s")]);
    runtime().block_on(async {
        let prober = Prober::start(server.addr);
        let mut opening = h2::hello();
        h2::frame(&mut opening, h2::SETTINGS, h2::ACK, 0, &[]);
        let mut figures = Vec::new();

        // Rapid reset (CVE-2023-44487): HEADERS then RST_STREAM, over and over.
        let mut rapid = Vec::new();
        for i in 0..1_000u32 {
            h2::frame(
                &mut rapid,
                h2::HEADERS,
                h2::END_HEADERS | h2::END_STREAM,
                2 * i + 1,
                h2::GET_BLOCK,
            );
            h2::frame(
                &mut rapid,
                h2::RST_STREAM,
                0,
                2 * i + 1,
                &h2::CANCEL.to_be_bytes(),
            );
        }
        // Stream ids must grow: each batch is a fresh connection's worth, so send one batch
        // of 1 000 pairs (more than enough for the 20-pending limit).
        let result = flood(&server, opening.clone(), rapid, 2_000, 1).await;
        figures.push(check_goaway("rapid reset", &result, h2::ENHANCE_YOUR_CALM));

        // Local error resets: streams the server must reset for malformed headers.
        let mut malformed = Vec::new();
        let block = h2::malformed_block();
        for i in 0..1_000u32 {
            h2::frame(
                &mut malformed,
                h2::HEADERS,
                h2::END_HEADERS | h2::END_STREAM,
                2 * i + 1,
                &block,
            );
        }
        let result = flood(&server, opening.clone(), malformed, 1_000, 1).await;
        figures.push(check_goaway(
            "malformed-header resets",
            &result,
            h2::ENHANCE_YOUR_CALM,
        ));

        // CONTINUATION flood (CVE-2024-27316 family): a header block that never ends.
        let mut start = opening.clone();
        h2::frame(&mut start, h2::HEADERS, 0, 1, h2::GET_BLOCK);
        let mut continuation = Vec::new();
        for _ in 0..1_000 {
            h2::frame(
                &mut continuation,
                h2::CONTINUATION,
                0,
                1,
                &[0x00, 0x01, b'x', 0x01, b'y'],
            );
        }
        let result = flood(&server, start, continuation, 1_000, 100).await;
        figures.push(check_goaway(
            "CONTINUATION flood",
            &result,
            h2::ENHANCE_YOUR_CALM,
        ));

        // Empty DATA frames on an open stream (CVE-2019-9518).
        let mut start = opening.clone();
        h2::frame(&mut start, h2::HEADERS, h2::END_HEADERS, 1, h2::GET_BLOCK);
        let mut empty = Vec::new();
        for _ in 0..10_000 {
            h2::frame(&mut empty, h2::DATA, 0, 1, &[]);
        }
        let result = flood(&server, start, empty, 10_000, 10_000).await;
        // h2 0.4.20 allows 100 empty non-final DATA frames per connection
        // (MAX_RECV_EMPTY_DATA_FRAMES), then GOAWAY ENHANCE_YOUR_CALM "too_many_data_frames".
        figures.push(check_goaway(
            "empty DATA flood",
            &result,
            h2::ENHANCE_YOUR_CALM,
        ));

        let (served, failures) = prober.finish().await;
        assert!(failures.is_empty(), "normal client failed: {failures:?}");
        assert!(h2::h2_get_ok(server.addr, support::WAIT).await);
        row(
            "11 h2 floods",
            format_args!("{}; normal client {served} ok", figures.join("; ")),
        );
    });
}

fn check_goaway(name: &str, result: &Flood, code: u32) -> String {
    let h2::End::GoAway(frame, after) = &result.end else {
        panic!("{name}: no GOAWAY: {:?}", result.end);
    };
    assert_eq!(
        frame.goaway_code(),
        Some(code),
        "{name}: {frame:?} {}",
        frame.goaway_debug()
    );
    assert!(
        *after < Duration::from_secs(1),
        "{name}: GOAWAY after {after:?}"
    );
    assert!(
        result.cpu < Duration::from_millis(500),
        "{name}: server CPU {:?}",
        result.cpu
    );
    format!(
        "{name}: GOAWAY {:#x} {:?} after {after:?} ({} frames written in {:?}), server CPU {:?}",
        code,
        frame.goaway_debug(),
        result.frames_sent,
        result.wall,
        result.cpu
    )
}

// ---------------------------------------------------------------------------------------------
// 12. SIGTERM under sustained load.

#[derive(Debug, Default, Clone, Copy)]
struct Outcomes {
    /// Complete 200 responses.
    ok: u64,
    /// Written, then the connection closed (FIN or reset) before any byte of the answer: the
    /// server closed the connection without reading the request (graceful close of an idle
    /// keep-alive connection). Not accepted.
    unanswered: u64,
    /// Part of a response, then the connection ended, or no answer in time: broken.
    broken: u64,
    /// New connections refused (after the listener closed).
    refused: u64,
    /// New connections that failed otherwise.
    connect_errors: u64,
}

/// One keep-alive load worker: requests back to back, reconnecting when the server closes,
/// until a connection is refused, `stop` is set, or the bounds run out.
async fn load_worker(addr: SocketAddr, done: Arc<AtomicU64>, stop: Arc<AtomicBool>) -> Outcomes {
    let mut out = Outcomes::default();
    let request = common::get("/");
    for _ in 0..10_000 {
        if stop.load(Ordering::Relaxed) {
            return out;
        }
        let mut stream = match TcpStream::connect(addr).await {
            Ok(stream) => stream,
            Err(err) if err.kind() == std::io::ErrorKind::ConnectionRefused => {
                out.refused += 1;
                return out;
            }
            Err(_) => {
                out.connect_errors += 1;
                return out;
            }
        };
        let mut buf = Vec::with_capacity(512);
        for _ in 0..1_000_000 {
            if stop.load(Ordering::Relaxed) {
                return out;
            }
            if stream.write_all(&request).await.is_err() {
                out.unanswered += 1;
                break;
            }
            buf.clear();
            let read = timeout(support::WAIT, async {
                let mut chunk = [0u8; 512];
                loop {
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return false,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                    if buf.ends_with(b"Hello, World!") {
                        return true;
                    }
                }
            })
            .await;
            match read {
                Ok(true) if is_hello_keep_alive(&buf) => {
                    out.ok += 1;
                    done.fetch_add(1, Ordering::Relaxed);
                }
                Ok(false) if buf.is_empty() => {
                    out.unanswered += 1;
                    break;
                }
                _ => {
                    out.broken += 1;
                    break;
                }
            }
        }
    }
    out
}

fn is_hello_keep_alive(reply: &[u8]) -> bool {
    reply.starts_with(b"HTTP/1.1 200 OK\r\n") && reply.ends_with(b"\r\n\r\nHello, World!")
}

#[test]
fn row12_sigterm_under_load_breaks_no_accepted_request() {
    let _serial = serial();
    let grace = Duration::from_secs(5);
    let mut server = Proc::start(&[("HELLO_SHUTDOWN_GRACE", "5s")]);
    let (totals, served_before, exited_after, refused_after_close) = runtime().block_on(async {
        let done = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let mut set = JoinSet::new();
        for _ in 0..64 {
            set.spawn(load_worker(
                server.addr,
                Arc::clone(&done),
                Arc::clone(&stop),
            ));
        }
        // Let the load build up: wait for the first "listening" is past; wait until 5 000
        // requests were answered (bounded by a deadline), then signal.
        let warm = Instant::now();
        let mut progress = tokio::time::interval(Duration::from_millis(10));
        while done.load(Ordering::Relaxed) < 5_000 {
            assert!(
                warm.elapsed() < support::WAIT,
                "load never reached 5 000 requests"
            );
            progress.tick().await;
        }
        let served_before = done.load(Ordering::Relaxed);
        let signalled = std::time::Instant::now();
        server.signal(libc::SIGTERM);
        let lines = server.lines.clone();
        let draining = tokio::task::spawn_blocking(move || {
            lines.wait_for(support::WAIT, |l| l.contains("listener closed"))
        })
        .await
        .unwrap();
        assert!(draining.is_some(), "no drain line");
        // The listener is closed: a new connection is refused.
        let refused_after_close = matches!(
            TcpStream::connect(server.addr).await,
            Err(err) if err.kind() == std::io::ErrorKind::ConnectionRefused
        );
        let status = server.exit_within(grace + MARGIN);
        let exited_after = signalled.elapsed();
        stop.store(true, Ordering::Relaxed);
        let results = join_all(set, support::WAIT).await;
        let mut totals = Outcomes::default();
        for r in results {
            totals.ok += r.ok;
            totals.unanswered += r.unanswered;
            totals.broken += r.broken;
            totals.refused += r.refused;
            totals.connect_errors += r.connect_errors;
        }
        assert_eq!(status.map(|s| s.code()), Some(Some(0)), "exit status");
        (totals, served_before, exited_after, refused_after_close)
    });
    assert_eq!(totals.broken, 0, "{totals:?}");
    assert_eq!(totals.connect_errors, 0, "{totals:?}");
    assert!(
        refused_after_close,
        "a connection after the listener closed was not refused"
    );
    assert!(exited_after < grace, "exit after {exited_after:?}");
    let complete = server
        .lines
        .wait_for(support::WAIT, |l| l.contains("shutdown complete"))
        .expect("shutdown line");
    assert!(complete.contains("\"forced\":0"), "{complete}");
    row(
        "12 SIGTERM under load",
        format_args!(
            "64 keep-alive clients, {served_before} answered before the signal; {totals:?}; exit 0 after {exited_after:?}; new connections refused"
        ),
    );
}

// ---------------------------------------------------------------------------------------------
// Configuration: fuzzed parsing and environment precedence.

mod config_props {
    use super::*;
    use hello_server::config::{ListenArgs, parse_duration, parse_listen};
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2_000, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn durations_never_panic_and_errors_say_why(s in ".{0,24}") {
            match parse_duration(&s) {
                Ok(_) => {
                    let t = s.trim();
                    prop_assert!(t.ends_with("ms") || t.ends_with('s') || t.ends_with('m') || t.ends_with('h'));
                    prop_assert!(t.starts_with(|c: char| c.is_ascii_digit()));
                }
                Err(e) => prop_assert!(!e.is_empty()),
            }
        }

        #[test]
        fn well_formed_durations_round_trip(n in 0u64..1_000_000_000, unit in prop::sample::select(vec![("ms", 1u64), ("s", 1_000), ("m", 60_000), ("h", 3_600_000)])) {
            let parsed = parse_duration(&format!("{n}{}", unit.0));
            prop_assert_eq!(parsed, Ok(Duration::from_millis(n * unit.1)));
        }

        #[test]
        fn huge_durations_are_errors_not_overflow(n in (u64::MAX / 1_000)..u64::MAX) {
            let text = format!("{n}h");
            prop_assert!(parse_duration(&text).is_err());
        }

        #[test]
        fn listen_never_panics_and_names_the_setting(s in "\\PC{0,40}") {
            if let Err(e) = parse_listen(&s) {
                prop_assert!(e.to_string().contains("HELLO_LISTEN"), "{}", e);
            }
        }

        #[test]
        fn every_socket_address_is_accepted(addr in any::<std::net::SocketAddr>()) {
            // Display drops IPv6 flow info, so compare what an address is: IP and port.
            let parsed = parse_listen(&addr.to_string()).map(|a| (a.ip(), a.port()));
            prop_assert_eq!(parsed, Ok((addr.ip(), addr.port())));
        }

        #[test]
        fn port_env_never_panics_and_names_port(s in "\\PC{0,12}") {
            match (ListenArgs { listen: None }).resolve(Some(&s)) {
                Ok(addr) => prop_assert_eq!(Some(addr.port()), s.trim().parse::<u16>().ok()),
                Err(e) => prop_assert!(e.to_string().starts_with("invalid PORT"), "{}", e),
            }
        }

        #[test]
        fn the_listen_setting_always_wins_over_port(port in any::<u16>(), other in "\\PC{0,8}") {
            let args = ListenArgs { listen: Some(format!("127.0.0.1:{port}")) };
            prop_assert_eq!(args.resolve(Some(&other)).unwrap().port(), port);
        }
    }

    /// Runs the binary with exactly `env` and `args`: a valid configuration starts (killed at
    /// its "listening" line), an invalid one exits 2 naming the setting. Never a panic.
    fn outcome(env: &[(&str, &str)], args: &[&str]) -> Result<String, String> {
        use std::io::{BufRead, BufReader};
        use std::process::{Command, Stdio};
        let mut child = Command::new(support::bin())
            .env_clear()
            .env("HELLO_LOG_FORMAT", "json")
            .envs(env.iter().copied())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let mut text = String::new();
        for line in stderr.lines().map_while(Result::ok).take(50) {
            if line.contains("\"listening\"") {
                let _ = child.kill();
                let _ = child.wait();
                return Ok(line);
            }
            text.push_str(&line);
            text.push('\n');
        }
        let status = child.wait().expect("wait");
        assert_eq!(
            status.code(),
            Some(2),
            "not a usage error: {status:?}: {text}"
        );
        Err(text)
    }

    #[test]
    fn environment_values_never_panic_and_errors_name_the_variable() {
        let _serial = serial();
        let variables = [
            "HELLO_HEADER_READ_TIMEOUT",
            "HELLO_WRITE_TIMEOUT",
            "HELLO_SHUTDOWN_GRACE",
            "HELLO_SHUTDOWN_DELAY",
            "HELLO_MAX_CONNECTIONS",
            "HELLO_H2C",
            "HELLO_LOG_FORMAT",
        ];
        let values = [
            "",
            " ",
            "0",
            "-1",
            "1.5s",
            "10",
            "10 s",
            "1e3",
            "99999999999999999999s",
            "4294967296",
            "1000001",
            "yes",
            "TRUE",
            "maybe",
            "json",
            "JSON",
            "\u{feff}5s",
            "5s\n",
            "💥",
        ];
        let mut ran = 0;
        for variable in variables {
            for value in values {
                let result = outcome(&[("HELLO_LISTEN", "127.0.0.1:0"), (variable, value)], &[]);
                if let Err(text) = result {
                    assert!(
                        text.contains(variable)
                            || text.contains(&format!(
                                "--{}",
                                variable[6..].to_lowercase().replace('_', "-")
                            )),
                        "{variable}={value:?}: {text}"
                    );
                }
                ran += 1;
            }
        }
        // Precedence: flag over environment, HELLO_LISTEN over PORT.
        let flag_wins = outcome(
            &[("HELLO_LISTEN", "not an address")],
            &["--listen", "127.0.0.1:0"],
        );
        assert!(flag_wins.is_ok(), "{flag_wins:?}");
        let listen_wins = outcome(
            &[("HELLO_LISTEN", "127.0.0.1:0"), ("PORT", "nonsense")],
            &[],
        );
        assert!(listen_wins.is_ok(), "{listen_wins:?}");
        let bad_port = outcome(&[("PORT", "nonsense")], &[]).unwrap_err();
        assert!(bad_port.contains("PORT"), "{bad_port}");
        let flag_wins = outcome(
            &[
                ("HELLO_LISTEN", "127.0.0.1:0"),
                ("HELLO_HEADER_READ_TIMEOUT", "bogus"),
            ],
            &["--header-read-timeout", "3s"],
        )
        .expect("flag beats a bad environment value");
        assert!(flag_wins.contains("3s"), "{flag_wins}");
        row(
            "config",
            format_args!("{ran} environment values, 4 precedence cases: no panic"),
        );
    }
}
