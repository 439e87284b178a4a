//! The library's server on 127.0.0.1:0, exercised over real sockets.

mod common;

use std::time::Duration;

use common::{RawClient, TestServer, WAIT, get};
use hello_server::server::{DrainReport, Phase, ServerConfig};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// Short enough for a quick test, long enough for a loaded CI machine to send a request.
const SHORT_TIMEOUT: Duration = Duration::from_millis(400);

/// Reads until the server closes `client`, which must happen within the short timeout plus a
/// second of slack; returns what the server sent meanwhile.
async fn closed_by_the_timeout(client: &mut RawClient) -> Vec<u8> {
    let started = tokio::time::Instant::now();
    let reply = client.closed_within(SHORT_TIMEOUT + WAIT).await;
    let elapsed = started.elapsed();
    assert!(
        elapsed < SHORT_TIMEOUT + Duration::from_secs(1),
        "closed after {elapsed:?}"
    );
    reply
}

fn short_timeouts() -> ServerConfig {
    ServerConfig {
        header_read_timeout: SHORT_TIMEOUT,
        ..ServerConfig::default()
    }
}

#[tokio::test]
async fn every_path_and_method_gets_the_go_response() {
    let server = TestServer::start_default().await;
    for method in ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"] {
        for path in ["/", "/hello", "/a/b/c?x=1", "/healthzz", "/%20"] {
            let mut client = RawClient::connect(server.addr).await;
            let body = if method == "GET" {
                ""
            } else {
                "Content-Length: 0\r\n"
            };
            client
                .send(format!("{method} {path} HTTP/1.1\r\nHost: t\r\n{body}\r\n").as_bytes())
                .await;
            let response = client.response(false).await;
            assert_eq!(response.version, "HTTP/1.1");
            response.assert_go_hello();
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn http_1_0_request_is_answered() {
    let server = TestServer::start_default().await;
    let mut client = RawClient::connect(server.addr).await;
    client.send(b"GET / HTTP/1.0\r\n\r\n").await;
    client.response(false).await.assert_go_hello();
    client.closed_within(WAIT).await;
    server.stop().await;
}

#[tokio::test]
async fn head_gets_the_headers_and_no_body() {
    let server = TestServer::start_default().await;
    let mut client = RawClient::connect(server.addr).await;
    client.send(b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\n").await;
    client.send(&get("/")).await;
    let head = client.response(true).await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("13"));
    assert_eq!(
        head.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    // The next bytes are the GET's response: the HEAD response carried no body.
    client.response(false).await.assert_go_hello();
    server.stop().await;
}

#[tokio::test]
async fn healthz_answers_ok() {
    let server = TestServer::start_default().await;
    let mut client = RawClient::connect(server.addr).await;
    client.send(&get("/healthz")).await;
    let response = client.response(false).await;
    assert_eq!(
        (response.status, response.body.as_slice()),
        (200, b"ok".as_slice())
    );
    server.stop().await;
}

#[tokio::test]
async fn readyz_is_200_then_503_once_the_drain_begins() {
    let mut server = TestServer::start_default().await;
    let mut client = RawClient::connect(server.addr).await;
    client.send(&get("/readyz")).await;
    assert_eq!(client.response(false).await.status, 200);

    // A request whose head is half sent when shutdown begins is in flight: it is answered.
    let mut in_flight = RawClient::connect(server.addr).await;
    in_flight.send(b"GET /readyz HTTP/1.1\r\nHost: t\r\n").await;
    server.connections_at_least(2).await;
    server.begin_shutdown();
    server.reached(Phase::Draining).await;
    in_flight.send(b"\r\n").await;
    let response = in_flight.response(false).await;
    assert_eq!(response.status, 503);
    assert_eq!(
        response.header("connection"),
        Some("close"),
        "the drain closes the connection"
    );
    in_flight.closed_within(WAIT).await;
    server.finished().await;
}

#[tokio::test]
async fn shutdown_delay_keeps_accepting_while_readyz_says_503() {
    let config = ServerConfig {
        shutdown_delay: Duration::from_secs(60),
        ..ServerConfig::default()
    };
    let mut server = TestServer::start(config).await;
    server.begin_shutdown();
    server.reached(Phase::NotReady).await;
    // The listener is still open during the delay, and says not ready.
    let mut client = RawClient::connect(server.addr).await;
    client.send(&get("/readyz")).await;
    assert_eq!(client.response(false).await.status, 503);
    client.send(&get("/")).await;
    client.response(false).await.assert_go_hello();
}

#[tokio::test]
async fn keep_alive_serves_many_requests_on_one_connection() {
    let mut server = TestServer::start_default().await;
    let mut client = RawClient::connect(server.addr).await;
    for _ in 0..5 {
        client.send(&get("/")).await;
        let response = client.response(false).await;
        response.assert_go_hello();
        assert_eq!(
            response.header("connection"),
            None,
            "keep-alive is the HTTP/1.1 default"
        );
    }
    assert_eq!(*server.watch.connections.borrow_and_update(), 1);
    server.stop().await;
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let server = TestServer::start_default().await;
    let mut client = RawClient::connect(server.addr).await;
    let mut batch = Vec::new();
    for path in ["/", "/healthz", "/x", "/readyz"] {
        batch.extend(get(path));
    }
    client.send(&batch).await;
    for expected in [&b"Hello, World!"[..], b"ok", b"Hello, World!", b"ready"] {
        assert_eq!(client.response(false).await.body, expected);
    }
    server.stop().await;
}

#[tokio::test]
async fn h2c_prior_knowledge_request_is_answered() {
    let server = TestServer::start_default().await;
    let stream = TcpStream::connect(server.addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2 handshake");
    tokio::spawn(connection);
    for path in ["/", "/deep/path"] {
        let request = hyper::Request::get(format!("http://test{path}"))
            .body(Empty::<Bytes>::new())
            .unwrap();
        let response = timeout(WAIT, sender.send_request(request))
            .await
            .expect("in time")
            .expect("h2 response");
        assert_eq!(response.status(), 200);
        assert_eq!(response.version(), hyper::Version::HTTP_2);
        assert_eq!(
            response.headers()["content-type"],
            "text/plain; charset=utf-8"
        );
        assert_eq!(response.headers()["content-length"], "13");
        assert!(response.headers().contains_key("date"));
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "Hello, World!");
    }
    server.stop().await;
}

#[tokio::test]
async fn h2c_can_be_turned_off() {
    let server = TestServer::start(ServerConfig {
        h2c: false,
        ..ServerConfig::default()
    })
    .await;
    let mut client = RawClient::connect(server.addr).await;
    client.send(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
    let reply = client.closed_within(WAIT).await;
    // An HTTP/2 server would answer with a SETTINGS frame; hyper's HTTP/1 closes on the preface.
    assert!(
        reply.is_empty(),
        "got {:?}",
        String::from_utf8_lossy(&reply)
    );
    server.stop().await;
}

/// Sends `request` to a fresh server and expects 431, then the connection closed.
async fn get_431_and_close(request: String) {
    let server = TestServer::start_default().await;
    let mut client = RawClient::connect(server.addr).await;
    client.send(request.as_bytes()).await;
    assert_eq!(client.response(false).await.status, 431);
    client.closed_within(WAIT).await;
    server.stop().await;
}

#[tokio::test]
async fn oversized_header_field_gets_431_and_close() {
    let big = "a".repeat(20 * 1024);
    get_431_and_close(format!("GET / HTTP/1.1\r\nHost: t\r\nX-Big: {big}\r\n\r\n")).await;
}

#[tokio::test]
async fn too_many_headers_get_431_and_close() {
    let headers: String = (0..101).map(|i| format!("X-H{i}: v\r\n")).collect();
    get_431_and_close(format!("GET / HTTP/1.1\r\n{headers}\r\n")).await;
}

#[tokio::test]
async fn a_hundred_headers_are_accepted() {
    let server = TestServer::start_default().await;
    let mut client = RawClient::connect(server.addr).await;
    let headers: String = (0..99).map(|i| format!("X-H{i}: v\r\n")).collect();
    client
        .send(format!("GET / HTTP/1.1\r\nHost: t\r\n{headers}\r\n").as_bytes())
        .await;
    client.response(false).await.assert_go_hello();
    server.stop().await;
}

#[tokio::test]
async fn garbage_gets_400_and_close_while_another_client_is_served() {
    let server = TestServer::start_default().await;
    let mut good = RawClient::connect(server.addr).await;
    good.send(&get("/")).await;
    good.response(false).await.assert_go_hello();

    let mut bad = RawClient::connect(server.addr).await;
    bad.send(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n")
        .await;
    let reply = bad.closed_within(WAIT).await;
    assert!(
        reply.starts_with(b"HTTP/1.1 400"),
        "got {:?}",
        String::from_utf8_lossy(&reply)
    );

    good.send(&get("/")).await;
    good.response(false).await.assert_go_hello();
    server.stop().await;
}

#[tokio::test]
async fn slow_request_head_is_closed_after_the_header_read_timeout() {
    let server = TestServer::start(short_timeouts()).await;
    let mut client = RawClient::connect(server.addr).await;
    client.send(b"GET / HTTP/1.1\r\nHost: t\r\n").await;
    let reply = closed_by_the_timeout(&mut client).await;
    assert!(
        !reply.starts_with(b"HTTP/1.1 200"),
        "an incomplete head is never answered"
    );
    server.stop().await;
}

#[tokio::test]
async fn silent_connection_is_closed_after_the_header_read_timeout() {
    for h2c in [true, false] {
        let server = TestServer::start(ServerConfig {
            h2c,
            ..short_timeouts()
        })
        .await;
        let mut client = RawClient::connect(server.addr).await;
        closed_by_the_timeout(&mut client).await;
        server.stop().await;
    }
}

#[tokio::test]
async fn partial_h2_preface_is_closed_after_the_header_read_timeout() {
    let server = TestServer::start(short_timeouts()).await;
    let mut client = RawClient::connect(server.addr).await;
    client.send(b"PRI * HTTP/2.0\r\n").await;
    closed_by_the_timeout(&mut client).await;
    server.stop().await;
}

#[tokio::test]
async fn idle_keep_alive_connection_is_closed_after_the_header_read_timeout() {
    let server = TestServer::start(short_timeouts()).await;
    let mut client = RawClient::connect(server.addr).await;
    client.send(&get("/")).await;
    client.response(false).await.assert_go_hello();
    closed_by_the_timeout(&mut client).await;
    server.stop().await;
}

#[tokio::test]
async fn in_flight_request_completes_during_shutdown() {
    let mut server = TestServer::start_default().await;
    let mut client = RawClient::connect(server.addr).await;
    client.send(b"GET / HTTP/1.1\r\nHost: t\r\n").await;
    server.connections_at_least(1).await;
    server.begin_shutdown();
    server.reached(Phase::Draining).await;
    // New connections are refused once the listener is closed.
    assert!(
        TcpStream::connect(server.addr).await.is_err(),
        "listener closed during the drain"
    );
    client.send(b"\r\n").await;
    client.response(false).await.assert_go_hello();
    client.closed_within(WAIT).await;
    assert_eq!(
        server.finished().await,
        DrainReport {
            drained: 1,
            forced: 0
        }
    );
}

#[tokio::test]
async fn idle_keep_alive_connections_close_at_once_on_shutdown() {
    let mut server = TestServer::start_default().await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        let mut client = RawClient::connect(server.addr).await;
        client.send(&get("/")).await;
        client.response(false).await.assert_go_hello();
        clients.push(client);
    }
    server.connections_at_least(3).await;
    server.begin_shutdown();
    for client in &mut clients {
        client.closed_within(WAIT).await;
    }
    assert_eq!(
        server.finished().await,
        DrainReport {
            drained: 3,
            forced: 0
        }
    );
}

#[tokio::test]
async fn connections_still_open_after_the_grace_are_dropped() {
    let config = ServerConfig {
        shutdown_grace: Duration::from_millis(200),
        ..ServerConfig::default()
    };
    let mut server = TestServer::start(config).await;
    let mut client = RawClient::connect(server.addr).await;
    client.send(b"GET / HTTP/1.1\r\n").await;
    server.connections_at_least(1).await;
    let report = server.stop().await;
    assert_eq!(
        report,
        DrainReport {
            drained: 0,
            forced: 1
        }
    );
    client.closed_within(WAIT).await;
}

#[tokio::test]
async fn connections_beyond_the_limit_wait_for_a_slot() {
    let mut server = TestServer::start(ServerConfig {
        max_connections: 1,
        ..ServerConfig::default()
    })
    .await;
    let mut first = RawClient::connect(server.addr).await;
    first.send(&get("/")).await;
    first.response(false).await.assert_go_hello();

    let mut second = RawClient::connect(server.addr).await;
    second.send(&get("/")).await;
    assert!(
        timeout(Duration::from_millis(300), second.response(false))
            .await
            .is_err(),
        "the second connection must wait while the only slot is taken"
    );
    drop(first);
    second.response(false).await.assert_go_hello();
    server.connections_at_most(1).await;
    server.stop().await;
}
