//! Shared setup: a real server on 127.0.0.1:0 with a shutdown trigger the test owns, and a
//! raw HTTP/1 client that sees exactly the bytes on the wire.

#![allow(dead_code)] // each test file uses a different part of this module

use std::net::SocketAddr;
use std::time::Duration;

use hello_server::server::{DrainReport, Phase, Server, ServerConfig, ServerWatch};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// The bound on every wait in the tests: generous, because CI machines are slow, and never
/// reached when things work.
pub const WAIT: Duration = Duration::from_secs(10);

pub struct TestServer {
    pub addr: SocketAddr,
    pub watch: ServerWatch,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<DrainReport>,
}

impl TestServer {
    /// Binds before spawning, so the address is known and connections queue until accepted.
    pub async fn start(config: ServerConfig) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let server = Server::new(listener, config);
        let addr = server.local_addr().expect("local_addr");
        let watch = server.watch();
        let (shutdown, shutdown_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async {
            let _ = shutdown_rx.await;
        }));
        Self {
            addr,
            watch,
            shutdown: Some(shutdown),
            task,
        }
    }

    pub async fn start_default() -> Self {
        Self::start(ServerConfig::default()).await
    }

    /// Starts the drain, as a signal would.
    pub fn begin_shutdown(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }

    /// Waits until the server has reached `phase` (or a later one).
    pub async fn reached(&mut self, phase: Phase) {
        let order = |p: &Phase| *p as u8;
        timeout(
            WAIT,
            self.watch.phase.wait_for(|p| order(p) >= order(&phase)),
        )
        .await
        .expect("phase reached in time")
        .expect("server alive");
    }

    /// Waits until at least `n` connections are accepted and open.
    pub async fn connections_at_least(&mut self, n: usize) {
        timeout(WAIT, self.watch.connections.wait_for(|c| *c >= n))
            .await
            .expect("connections accepted in time")
            .expect("server alive");
    }

    /// Waits until at most `n` connections are open.
    pub async fn connections_at_most(&mut self, n: usize) {
        timeout(WAIT, self.watch.connections.wait_for(|c| *c <= n))
            .await
            .expect("connections closed in time")
            .expect("server alive");
    }

    /// Shuts down and returns how the drain ended.
    pub async fn stop(mut self) -> DrainReport {
        self.begin_shutdown();
        self.finished().await
    }

    /// Waits for a drain already begun to end.
    pub async fn finished(self) -> DrainReport {
        timeout(WAIT, self.task)
            .await
            .expect("server stopped in time")
            .expect("server task")
    }
}

/// One parsed HTTP/1 response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub version: String,
    /// In wire order, names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Asserts the Go net/http answer: status, the three headers and the body.
    pub fn assert_go_hello(&self) {
        assert_eq!(self.status, 200, "{self:?}");
        assert_eq!(
            self.header("content-type"),
            Some("text/plain; charset=utf-8"),
            "{self:?}"
        );
        assert_eq!(self.header("content-length"), Some("13"), "{self:?}");
        let date = self.header("date").expect("Date header");
        assert!(
            date.ends_with(" GMT") && date.len() == 29,
            "IMF-fixdate, got {date:?}"
        );
        assert_eq!(self.body, b"Hello, World!", "{self:?}");
    }
}

/// A raw HTTP/1 client that keeps unread bytes, so pipelined responses parse one by one.
pub struct RawClient {
    pub stream: TcpStream,
    buffered: Vec<u8>,
}

impl RawClient {
    pub async fn connect(addr: SocketAddr) -> Self {
        let stream = timeout(WAIT, TcpStream::connect(addr))
            .await
            .expect("connect in time")
            .expect("connect");
        Self {
            stream,
            buffered: Vec::new(),
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write request");
    }

    /// Reads one response; `head` says it answers a HEAD request (no body follows).
    pub async fn response(&mut self, head: bool) -> Response {
        timeout(WAIT, self.read_response(head))
            .await
            .expect("response in time")
    }

    async fn read_response(&mut self, head: bool) -> Response {
        let end = loop {
            if let Some(i) = find(&self.buffered, b"\r\n\r\n") {
                break i + 4;
            }
            assert!(
                self.fill().await > 0,
                "connection closed before a response head: {:?}",
                String::from_utf8_lossy(&self.buffered)
            );
        };
        let head_text = String::from_utf8(self.buffered[..end].to_vec()).expect("ASCII head");
        let mut lines = head_text.split("\r\n");
        let status_line = lines.next().unwrap();
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap().to_owned();
        let status = parts
            .next()
            .and_then(|s| s.parse().ok())
            .expect("status code");
        let headers: Vec<(String, String)> = lines
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (n, v) = l.split_once(':').expect("header line");
                (n.to_ascii_lowercase(), v.trim().to_owned())
            })
            .collect();
        self.buffered.drain(..end);
        let length: usize = if head {
            0
        } else {
            headers
                .iter()
                .find(|(n, _)| n == "content-length")
                .map_or(0, |(_, v)| v.parse().expect("content-length"))
        };
        while self.buffered.len() < length {
            assert!(self.fill().await > 0, "connection closed mid-body");
        }
        let body = self.buffered.drain(..length).collect();
        Response {
            status,
            version,
            headers,
            body,
        }
    }

    /// Reads until the server closes; returns what it sent meanwhile. Panics after `within`.
    pub async fn closed_within(&mut self, within: Duration) -> Vec<u8> {
        timeout(within, async { while self.fill().await > 0 {} })
            .await
            .unwrap_or_else(|_| panic!("connection still open after {within:?}"));
        std::mem::take(&mut self.buffered)
    }

    /// Reads more bytes into the buffer; 0 means closed (a reset counts as closed).
    async fn fill(&mut self) -> usize {
        let mut chunk = [0u8; 4096];
        let n = self.stream.read(&mut chunk).await.unwrap_or(0);
        self.buffered.extend_from_slice(&chunk[..n]);
        n
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

pub fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").into_bytes()
}
