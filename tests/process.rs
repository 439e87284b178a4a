//! The built binary as an operator runs it: signals, exit codes, messages, `healthcheck`.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_hello-server");
/// Bound on every wait for the process.
const WAIT: Duration = Duration::from_secs(10);

/// A running `hello-server`, killed on drop so a failing test leaves nothing behind.
struct Running {
    /// Taken by [`Running::exit_within`], which hands it to a waiting thread.
    child: Option<Child>,
    pid: u32,
    addr: SocketAddr,
    /// The remaining stderr lines, read on a thread so the child never blocks on a full pipe.
    lines: mpsc::Receiver<String>,
}

impl Running {
    /// Starts the server on 127.0.0.1:0 and learns its port from the JSON startup line,
    /// giving up at the deadline or as soon as the process dies.
    fn start(extra_env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(BIN)
            .env_clear()
            .env("HELLO_LISTEN", "127.0.0.1:0")
            .env("HELLO_LOG_FORMAT", "json")
            .envs(extra_env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn hello-server");
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + WAIT;
        let addr = loop {
            let line = lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|_| panic!("no startup line; exit status {:?}", child.try_wait()));
            if let Some(addr) = json_field(&line, "address").filter(|_| line.contains("listening"))
            {
                break addr.parse().expect("address field");
            }
        };
        Self {
            pid: child.id(),
            child: Some(child),
            addr,
            lines,
        }
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args(["-s", signal, &self.pid.to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Waits for exit, at most `within` (a thread blocks in `wait`; drop kills a laggard).
    fn exit_within(&mut self, within: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("exit_within called once");
        let (tx, exited) = mpsc::channel();
        std::thread::spawn(move || tx.send(child.wait().expect("wait")));
        exited
            .recv_timeout(within)
            .unwrap_or_else(|_| panic!("still running after {within:?}"))
    }

    /// Waits for a stderr line containing `needle`, at most [`WAIT`].
    fn wait_for_line(&self, needle: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            let line = self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|_| panic!("no log line with {needle:?} within {WAIT:?}"));
            if line.contains(needle) {
                return;
            }
        }
    }

    /// The stderr lines written so far and up to exit.
    fn remaining_lines(&self) -> Vec<String> {
        self.lines.try_iter().collect()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        match &mut self.child {
            Some(child) => {
                let _ = child.kill();
                let _ = child.wait();
            }
            // A waiting thread owns it; SIGKILL by pid ends a process that outlived the test.
            None => {
                let _ = Command::new("kill")
                    .args(["-s", "KILL", &self.pid.to_string()])
                    .status();
            }
        }
    }
}

/// The string value of `"field":"..."` in a JSON log line.
fn json_field<'a>(line: &'a str, field: &str) -> Option<&'a str> {
    let start = line.find(&format!("\"{field}\":\""))? + field.len() + 4;
    let len = line[start..].find('"')?;
    Some(&line[start..start + len])
}

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(BIN)
        .env_clear()
        .envs(env.iter().copied())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run hello-server")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn http_get(addr: SocketAddr, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&addr, WAIT).expect("connect");
    stream.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).expect("read reply");
    reply
}

#[test]
fn serves_and_exits_zero_quickly_on_sigterm() {
    let mut server = Running::start(&[]);
    assert!(http_get(server.addr, "/").ends_with("\r\n\r\nHello, World!"));
    let asked = Instant::now();
    server.signal("TERM");
    let status = server.exit_within(WAIT);
    assert_eq!(status.code(), Some(0));
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "idle shutdown took {:?}",
        asked.elapsed()
    );
    let lines = server.remaining_lines();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("shutdown complete") && l.contains("\"forced\":0")),
        "{lines:#?}"
    );
}

#[test]
fn sigint_also_drains_and_exits_zero() {
    let mut server = Running::start(&[]);
    server.signal("INT");
    assert_eq!(server.exit_within(WAIT).code(), Some(0));
}

#[test]
fn second_signal_during_the_drain_exits_at_once() {
    use std::io::Write;
    // A half-sent request keeps the drain waiting for the whole (long) grace period.
    let mut server = Running::start(&[("HELLO_SHUTDOWN_GRACE", "1m")]);
    let mut stalled = std::net::TcpStream::connect(server.addr).unwrap();
    stalled.write_all(b"GET / HTTP/1.1\r\n").unwrap();
    // Once this completes, the stalled connection (opened earlier) has been accepted too.
    assert!(http_get(server.addr, "/").contains("200 OK"));
    server.signal("TERM");
    server.wait_for_line("draining");
    let asked = Instant::now();
    server.signal("TERM");
    let status = server.exit_within(WAIT);
    assert_eq!(status.code(), Some(1));
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "took {:?}",
        asked.elapsed()
    );
}

#[test]
fn json_logs_are_one_object_per_line() {
    let mut server = Running::start(&[]);
    server.signal("TERM");
    server.exit_within(WAIT);
    let lines = server.remaining_lines();
    assert!(!lines.is_empty());
    for line in lines {
        assert!(
            line.starts_with('{') && line.ends_with('}'),
            "not a JSON object: {line}"
        );
        assert!(json_field(&line, "level").is_some(), "no level: {line}");
    }
}

#[test]
fn bad_settings_exit_2_naming_the_setting() {
    // (arguments, environment, the setting the message must name)
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        (&[], &[("PORT", "abc")], "PORT"),
        (&["--listen", "nonsense"], &[], "--listen"),
        (&[], &[("HELLO_LISTEN", "localhost:80")], "HELLO_LISTEN"),
        (&["--max-connections", "0"], &[], "--max-connections"),
        (
            &[],
            &[("HELLO_MAX_CONNECTIONS", "-5")],
            "HELLO_MAX_CONNECTIONS",
        ),
        (
            &["--header-read-timeout", "10"],
            &[],
            "--header-read-timeout",
        ),
        (
            &[],
            &[("HELLO_SHUTDOWN_GRACE", "soon")],
            "HELLO_SHUTDOWN_GRACE",
        ),
        (&["--log-format", "xml"], &[], "--log-format"),
        (&[], &[("RUST_LOG", "hello=loud")], "RUST_LOG"),
        (&["--no-such-flag"], &[], "--no-such-flag"),
    ];
    for (args, env, setting) in cases {
        let output = run(args, env);
        let message = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{args:?} {env:?}: {message}");
        assert!(
            message.contains(setting),
            "{args:?} {env:?} should name {setting}: {message}"
        );
        assert!(!message.contains("panicked"), "{message}");
    }
}

#[test]
fn port_in_use_exits_1_naming_the_address() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let output = run(&["--listen", &addr], &[]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(stderr(&output).contains(&addr), "{}", stderr(&output));
}

#[test]
fn port_env_sets_the_port() {
    let free = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = free.local_addr().unwrap().port().to_string();
    // PORT binds 0.0.0.0; the port is still taken by `free`, which proves PORT was used.
    let output = run(&[], &[("PORT", &port)]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(
        stderr(&output).contains(&format!("0.0.0.0:{port}")),
        "{}",
        stderr(&output)
    );
}

#[test]
fn healthcheck_exits_0_against_a_running_server() {
    let server = Running::start(&[]);
    let listen = server.addr.to_string();
    let by_listen = run(&["healthcheck"], &[("HELLO_LISTEN", &listen)]);
    assert_eq!(by_listen.status.code(), Some(0), "{}", stderr(&by_listen));
    let url = format!("http://{listen}/healthz");
    let by_url = run(&["healthcheck", "--url", &url], &[]);
    assert_eq!(by_url.status.code(), Some(0), "{}", stderr(&by_url));
}

#[test]
fn healthcheck_exits_1_against_nothing() {
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let output = run(&["healthcheck", "--listen", &closed.to_string()], &[]);
    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert_eq!(message.lines().count(), 1, "one line: {message}");
    assert!(message.contains(&closed.to_string()), "{message}");
}

#[test]
fn healthcheck_exits_1_on_a_non_200() {
    // With a shutdown delay the server keeps answering, and /readyz says 503.
    let server = Running::start(&[("HELLO_SHUTDOWN_DELAY", "1m")]);
    server.signal("TERM");
    server.wait_for_line("readiness off");
    let url = format!("http://{}/readyz", server.addr);
    let output = run(&["healthcheck", "--url", &url], &[]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("503"), "{}", stderr(&output));
}

#[test]
fn healthcheck_refuses_a_non_http_url() {
    let output = run(
        &["healthcheck", "--url", "https://127.0.0.1:1/healthz"],
        &[],
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("only http://"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn version_and_help_exit_0() {
    let version = run(&["--version"], &[]);
    assert_eq!(version.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("hello-server {}", env!("CARGO_PKG_VERSION"))
    );
    let help = run(&["--help"], &[]);
    assert_eq!(help.status.code(), Some(0));
    for flag in [
        "--listen",
        "--header-read-timeout",
        "--shutdown-grace",
        "--max-connections",
        "--log-format",
        "healthcheck",
    ] {
        assert!(
            String::from_utf8_lossy(&help.stdout).contains(flag),
            "--help lacks {flag}"
        );
    }
}
