//! Harness for the abuse suite: the built binary as a process (RSS, CPU, log lines, signals),
//! descriptor limits, a serial lock, and small raw clients.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// The binary under test: `HELLO_ABUSE_BIN` (CI points it at the static musl release build,
/// the one the image ships), else the one cargo built for this test run.
pub fn bin() -> String {
    std::env::var("HELLO_ABUSE_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_hello-server").into())
}

/// Whether the binary links glibc dynamically (its allocator keeps freed memory; see row 7).
pub fn bin_is_glibc() -> bool {
    let bytes = std::fs::read(bin()).expect("read the binary");
    bytes.windows(15).any(|w| w == b"ld-linux-x86-64")
}

/// Rows measure time, memory and CPU: one at a time, so they do not disturb each other.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A multi-threaded runtime sized like the CI machine.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Raises this process's descriptor limit to at least `want` (soft up to hard; as root the hard
/// limit too). Returns the new soft limit, or why not. Children inherit it.
pub fn raise_nofile(want: u64) -> Result<u64, String> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write/read only the struct passed.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(format!("getrlimit: {}", std::io::Error::last_os_error()));
    }
    if limit.rlim_cur >= want {
        return Ok(limit.rlim_cur);
    }
    let raised = libc::rlimit {
        rlim_cur: want.max(limit.rlim_cur),
        rlim_max: limit.rlim_max.max(want),
    };
    // SAFETY: as above.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        return Err(format!(
            "RLIMIT_NOFILE is {}/{} and cannot be raised to {want}: {} (run as root or `ulimit -Hn {want}`)",
            limit.rlim_cur,
            limit.rlim_max,
            std::io::Error::last_os_error()
        ));
    }
    Ok(want)
}

/// Whether a missing capability fails the test (CI) or skips it (a developer's machine).
pub fn in_ci() -> bool {
    std::env::var_os("CI").is_some()
}

/// Log lines of a child, collected on a thread; waits are on a condition variable.
#[derive(Clone, Default)]
pub struct Lines(Arc<(Mutex<Vec<String>>, Condvar)>);

impl Lines {
    fn push(&self, line: String) {
        let (lines, changed) = &*self.0;
        lines.lock().unwrap().push(line);
        changed.notify_all();
    }

    pub fn all(&self) -> Vec<String> {
        self.0.0.lock().unwrap().clone()
    }

    /// The first line matching `pred`, waiting at most `within`.
    pub fn wait_for(&self, within: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        let (lines, changed) = &*self.0;
        let deadline = Instant::now() + within;
        let mut guard = lines.lock().unwrap();
        loop {
            if let Some(line) = guard.iter().find(|l| pred(l)) {
                return Some(line.clone());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            guard = changed.wait_timeout(guard, left).unwrap().0;
        }
    }
}

/// The built binary on 127.0.0.1:0 with JSON logs; killed on drop.
pub struct Proc {
    child: Option<Child>,
    pub pid: u32,
    pub addr: SocketAddr,
    pub lines: Lines,
}

pub const WAIT: Duration = Duration::from_secs(10);

impl Proc {
    pub fn start(env: &[(&str, &str)]) -> Self {
        Self::start_with_nofile(env, None)
    }

    /// Starts the server, optionally under `RLIMIT_NOFILE = nofile` (soft and hard).
    pub fn start_with_nofile(env: &[(&str, &str)], nofile: Option<u64>) -> Self {
        let mut command = Command::new(bin());
        command
            .env_clear()
            .env("HELLO_LISTEN", "127.0.0.1:0")
            .env("HELLO_LOG_FORMAT", "json")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(n) = nofile {
            use std::os::unix::process::CommandExt;
            let limit = libc::rlimit {
                rlim_cur: n,
                rlim_max: n,
            };
            // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
            unsafe {
                command.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        let mut child = command.spawn().expect("spawn hello-server");
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let lines = Lines::default();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                sink.push(line);
            }
        });
        let line = lines
            .wait_for(WAIT, |l| l.contains("\"listening\""))
            .unwrap_or_else(|| panic!("no startup line; status {:?}", child.try_wait()));
        let addr = json_field(&line, "address")
            .expect("address field")
            .parse()
            .expect("address");
        Self {
            pid: child.id(),
            child: Some(child),
            addr,
            lines,
        }
    }

    /// Resident set size in KiB, from /proc/PID/status.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .expect("/proc/PID/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }

    /// User plus system CPU time so far, from /proc/PID/stat.
    pub fn cpu(&self) -> Duration {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).expect("/proc/PID/stat");
        // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
        let rest = &stat[stat.rfind(')').expect("comm") + 2..];
        let fields: Vec<u64> = rest
            .split_whitespace()
            .skip(11)
            .take(2)
            .map(|f| f.parse().expect("tick count"))
            .collect();
        // SAFETY: sysconf only reads a constant.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
        Duration::from_millis((fields[0] + fields[1]) * 1000 / ticks)
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(None)))
    }

    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill has no memory effects; the pid is our own child's.
        assert_eq!(unsafe { libc::kill(self.pid as libc::pid_t, signal) }, 0);
    }

    /// Waits for exit, at most `within`: a bounded poll of the child's state.
    pub fn exit_within(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut().expect("child");
        let deadline = Instant::now() + within;
        for _ in 0..100_000 {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The string value of `"field":"..."` in a JSON log line.
pub fn json_field<'a>(line: &'a str, field: &str) -> Option<&'a str> {
    let start = line.find(&format!("\"{field}\":\""))? + field.len() + 4;
    let len = line[start..].find('"')?;
    Some(&line[start..start + len])
}

/// One `GET /` on a fresh connection with `Connection: close`; the whole reply.
pub async fn get_once(addr: SocketAddr, within: Duration) -> Result<Vec<u8>, String> {
    timeout(within, async {
        let mut stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut reply = Vec::new();
        stream
            .read_to_end(&mut reply)
            .await
            .map_err(|e| format!("read: {e}"))?;
        Ok(reply)
    })
    .await
    .unwrap_or_else(|_| Err(format!("no reply within {within:?}")))
}

pub fn is_hello(reply: &[u8]) -> bool {
    reply.starts_with(b"HTTP/1.1 200 OK\r\n") && reply.ends_with(b"\r\n\r\nHello, World!")
}

/// Reads until EOF or reset; returns what arrived and whether it ended within `within`.
pub async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> (Vec<u8>, bool) {
    let mut got = Vec::new();
    let closed = timeout(within, async {
        let mut chunk = [0u8; 8192];
        for _ in 0..1_000_000 {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await
    .is_ok();
    (got, closed)
}

/// A client that keeps asking `GET /` on keep-alive connections while abuse goes on, so a
/// test can show a legitimate client is served throughout.
pub struct Prober {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<(u32, Vec<String>)>,
}

impl Prober {
    pub fn start(addr: SocketAddr) -> Self {
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            let mut served = 0;
            let mut failures = Vec::new();
            // Bounded: at most 100k requests, each within 2 s.
            for _ in 0..100_000 {
                if *stopped.borrow() {
                    break;
                }
                match get_once(addr, Duration::from_secs(2)).await {
                    Ok(reply) if is_hello(&reply) => served += 1,
                    Ok(reply) => failures.push(String::from_utf8_lossy(&reply).into_owned()),
                    Err(err) => failures.push(err),
                }
                // Pace without sleeping: wait for "stop" up to 20 ms.
                let _ = timeout(Duration::from_millis(20), stopped.changed()).await;
            }
            (served, failures)
        });
        Self { stop, task }
    }

    /// Stops and returns (requests served, failures).
    pub async fn finish(self) -> (u32, Vec<String>) {
        let _ = self.stop.send(true);
        timeout(WAIT, self.task)
            .await
            .expect("prober stops")
            .expect("prober task")
    }
}
