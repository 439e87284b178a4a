//! The image under a real container engine, checked the way the NixOS VM tests
//! (nix/tests/oci_container.py) and the image budget check (nix/checks/) expect it to behave.
//!
//! `HELLO_SERVER_IMAGE=path/to/docker-archive cargo test --test container`
//!
//! Works on any docker-archive of ours: the fallback one from `tests/container/build-image.sh`
//! or the Nix one (`HELLO_SERVER_IMAGE=result`). Talks to the engine through the `docker` CLI,
//! so `DOCKER_HOST` is honoured; containers run with `--network host` and listen on a free
//! loopback port (`HELLO_LISTEN`, which the image's healthcheck reads too).
//!
//! Without an image or a reachable engine every test says so and passes; `HELLO_REQUIRE_ENGINE=1`
//! (CI) turns that into a failure. podman runs the same archive where it can; when it cannot,
//! the podman test says why and passes, unless `HELLO_REQUIRE_PODMAN=1`.
//!
//! No test sleeps to wait: each wait polls external state (an HTTP request, `docker inspect`,
//! `/proc/net/tcp`) in a loop bounded by a deadline.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The single definition the Nix image and the fallback image are both built from.
const IMAGE_CONFIG: &str = include_str!("../nix/image-config.json");
/// Pause between two looks at external state while waiting for it.
const POLL: Duration = Duration::from_millis(10);
/// Pause between two `docker inspect`s while waiting for the health status.
const HEALTH_POLL: Duration = Duration::from_millis(100);
/// Bound on the wait for the first answer after `run`.
const STARTUP_DEADLINE: Duration = Duration::from_secs(20);
/// `docker stop` (SIGTERM, drain, exit) must return within this.
const STOP_BUDGET: Duration = Duration::from_secs(1);
/// The gzip-compressed archive must stay under this.
const GZIP_BUDGET: u64 = 1024 * 1024;
/// The labels the build adds to the static ones in the definition.
const DYNAMIC_LABELS: [&str; 3] = [
    "org.opencontainers.image.version",
    "org.opencontainers.image.revision",
    "org.opencontainers.image.created",
];
/// Locked down as production (and the VM tests) run it, plus resource limits.
const HARDENING: [&str; 7] = [
    "--read-only",
    "--cap-drop=ALL",
    "--security-opt=no-new-privileges",
    "--memory=64m",
    "--pids-limit=64",
    "--network=host",
    "--ulimit=nofile=1024:1024",
];

// --- output that libtest does not capture ------------------------------------

/// Prints even when the test passes: libtest captures `println!`/`eprintln!`, not the stream.
fn say(message: impl AsRef<str>) {
    let _ = writeln!(io::stderr().lock(), "container: {}", message.as_ref());
}

fn required(variable: &str) -> bool {
    std::env::var(variable).is_ok_and(|v| v == "1")
}

// --- the definition ----------------------------------------------------------

fn definition() -> &'static Value {
    static DEFINITION: OnceLock<Value> = OnceLock::new();
    DEFINITION
        .get_or_init(|| serde_json::from_str(IMAGE_CONFIG).expect("nix/image-config.json parses"))
}

fn def_str(pointer: &str) -> &'static str {
    definition()
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("nix/image-config.json has no string at {pointer}"))
}

fn image_ref() -> String {
    format!("{}:{}", def_str("/name"), def_str("/tag"))
}

// --- engines -----------------------------------------------------------------

/// A container engine's CLI: `docker`, or `podman` with its private storage options.
struct Cli {
    program: &'static str,
    global: Vec<String>,
    /// Options `run` needs on this engine besides [`HARDENING`].
    run_extra: Vec<String>,
}

impl Cli {
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(self.program);
        command.args(&self.global).args(args).stdin(Stdio::null());
        command
    }

    fn output(&self, args: &[&str]) -> Output {
        self.command(args)
            .output()
            .unwrap_or_else(|err| panic!("cannot run {}: {err}", self.program))
    }

    /// Runs and returns stdout, or panics with the command and its stderr.
    fn ok(&self, args: &[&str]) -> String {
        let output = self.output(args);
        assert!(
            output.status.success(),
            "{} {} failed ({}): {}",
            self.program,
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn inspect(&self, name: &str, template: &str) -> String {
        self.ok(&["inspect", "--format", template, name])
            .trim()
            .to_string()
    }
}

fn docker() -> Cli {
    Cli {
        program: "docker",
        global: Vec::new(),
        run_extra: Vec::new(),
    }
}

/// The docker engine with the image loaded, or why the suite cannot run.
struct Engine {
    docker: Cli,
    image: String,
    archive: PathBuf,
}

/// The loaded engine, or `None` after printing why this test is skipped (a panic instead when
/// `HELLO_REQUIRE_ENGINE=1`).
fn engine(test: &str) -> Option<&'static Engine> {
    static ENGINE: OnceLock<Result<Engine, String>> = OnceLock::new();
    match ENGINE.get_or_init(set_up) {
        Ok(engine) => Some(engine),
        Err(why) if required("HELLO_REQUIRE_ENGINE") => {
            panic!("{why}; HELLO_REQUIRE_ENGINE=1 makes that a failure")
        }
        Err(why) => {
            say(format!("SKIP {test}: {why}"));
            None
        }
    }
}

/// `Err` only for reasons to skip; a broken image or a failing load panics.
fn set_up() -> Result<Engine, String> {
    let archive = std::env::var_os("HELLO_SERVER_IMAGE")
        .map(PathBuf::from)
        .ok_or("HELLO_SERVER_IMAGE is not set (a docker-archive to test)")?;
    let docker = docker();
    let host = std::env::var("DOCKER_HOST").unwrap_or_else(|_| "the default socket".into());
    let version = docker
        .command(&["version", "--format", "{{.Server.Version}}"])
        .output()
        .map_err(|err| format!("no docker CLI: {err}"))?;
    if !version.status.success() {
        return Err(format!(
            "no docker engine reachable at {host}: {}",
            String::from_utf8_lossy(&version.stderr).trim()
        ));
    }
    say(format!(
        "docker engine {} at {host}",
        String::from_utf8_lossy(&version.stdout).trim()
    ));

    assert!(
        archive.is_file(),
        "HELLO_SERVER_IMAGE={} is not a file",
        archive.display()
    );
    let image = image_ref();
    let archive_arg = archive.to_str().expect("HELLO_SERVER_IMAGE is UTF-8");
    let loaded = docker.ok(&["load", "--input", archive_arg]);
    let tags: Vec<&str> = loaded
        .lines()
        .filter_map(|line| line.strip_prefix("Loaded image: "))
        .map(|tag| tag.trim().trim_start_matches("docker.io/library/"))
        .collect();
    assert!(
        tags.contains(&image.as_str()),
        "docker load did not tag {image} (per nix/image-config.json); it said: {loaded}"
    );
    say(format!("loaded {} as {image}", archive.display()));
    Ok(Engine {
        docker,
        image,
        archive,
    })
}

// --- containers --------------------------------------------------------------

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
        .port()
}

/// A container of ours, removed on drop (its logs printed first if the test is failing).
struct Container<'a> {
    cli: &'a Cli,
    name: String,
    port: u16,
}

impl<'a> Container<'a> {
    /// `run -d` with [`HARDENING`], listening on a free loopback port.
    fn start(cli: &'a Cli, image: &str, test: &str, env: &[(&str, &str)]) -> Self {
        Self::try_start(cli, image, test, env).unwrap_or_else(|err| panic!("{err}"))
    }

    fn try_start(
        cli: &'a Cli,
        image: &str,
        test: &str,
        env: &[(&str, &str)],
    ) -> Result<Self, String> {
        let name = format!("hello-server-test-{}-{test}", std::process::id());
        let port = free_port();
        let _ = cli.output(&["rm", "--force", &name]);
        let mut args: Vec<String> = ["run", "--detach", "--name", &name]
            .iter()
            .map(ToString::to_string)
            .collect();
        args.extend(HARDENING.iter().map(ToString::to_string));
        args.extend(cli.run_extra.iter().cloned());
        args.push(format!("--env=HELLO_LISTEN=127.0.0.1:{port}"));
        args.extend(env.iter().map(|(k, v)| format!("--env={k}={v}")));
        args.push(image.to_string());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let output = cli.output(&args);
        if !output.status.success() {
            let _ = cli.output(&["rm", "--force", &name]);
            return Err(format!(
                "{} {} failed: {}",
                cli.program,
                args.join(" "),
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        Ok(Self { cli, name, port })
    }

    fn inspect(&self, template: &str) -> String {
        self.cli.inspect(&self.name, template)
    }

    fn logs(&self) -> String {
        let output = self.cli.output(&["logs", &self.name]);
        // The container's stdout and stderr come back on ours.
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    }

    /// Polls GET / until it answers 200; returns the answer and when it came.
    fn wait_for_200(&self, deadline: Duration) -> (Response, Instant) {
        let end = Instant::now() + deadline;
        let mut last: String;
        loop {
            match get(self.port) {
                Ok(response) if response.status == 200 => return (response, Instant::now()),
                Ok(response) => last = format!("status {}", response.status),
                Err(err) => last = err.to_string(),
            }
            if Instant::now() >= end {
                panic!(
                    "{} did not answer 200 on 127.0.0.1:{} within {deadline:?} (last: {last}); \
                     state: {}",
                    self.name,
                    self.port,
                    self.inspect("{{json .State}}")
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// `stop` with the engine's default grace; returns how long it took.
    fn stop(&self) -> Duration {
        let started = Instant::now();
        self.cli.ok(&["stop", &self.name]);
        started.elapsed()
    }

    fn exit_code(&self) -> String {
        self.inspect("{{.State.ExitCode}}")
    }
}

impl Drop for Container<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            say(format!("logs of {}:\n{}", self.name, self.logs()));
        }
        let _ = self.cli.output(&["rm", "--force", &self.name]);
    }
}

// --- HTTP over a plain socket --------------------------------------------------

#[derive(Debug)]
struct Response {
    status: u16,
    /// Names lowercased, in order.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

fn connect(port: u16) -> io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(1),
    )?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    Ok(stream)
}

/// One keep-alive `GET /` (no `Connection: close`, so the headers are the plain ones).
fn get(port: u16) -> io::Result<Response> {
    let mut stream = connect(port)?;
    write!(stream, "GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n")?;
    read_response(&mut stream)
}

/// Reads one response: the head, then exactly Content-Length bytes (or to EOF without one).
fn read_response(stream: &mut TcpStream) -> io::Result<Response> {
    let invalid = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
    let mut buffer = Vec::new();
    let mut chunk = [0; 4096];
    let head_end = loop {
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        let read = stream.read(&mut chunk)?;
        if read == 0 {
            return Err(invalid(format!(
                "connection closed before a full response head ({} bytes: {:?})",
                buffer.len(),
                String::from_utf8_lossy(&buffer)
            )));
        }
        buffer.extend_from_slice(&chunk[..read]);
    };
    let head = String::from_utf8(buffer[..head_end].to_vec())
        .map_err(|_| invalid("response head is not UTF-8".into()))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| invalid(format!("bad status line {status_line:?}")))?;
    let headers: Vec<(String, String)> = lines
        .map(|line| {
            let (name, value) = line.split_once(':').unwrap_or((line, ""));
            (name.trim().to_ascii_lowercase(), value.trim().to_string())
        })
        .collect();
    let mut body = buffer[head_end + 4..].to_vec();
    let length = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map(|(_, v)| {
            v.parse::<usize>()
                .map_err(|_| invalid(format!("bad content-length {v:?}")))
        })
        .transpose()?;
    match length {
        Some(length) => {
            while body.len() < length {
                let read = stream.read(&mut chunk)?;
                if read == 0 {
                    return Err(invalid(format!(
                        "body cut at {} of {length} bytes",
                        body.len()
                    )));
                }
                body.extend_from_slice(&chunk[..read]);
            }
            body.truncate(length);
        }
        None => {
            stream.read_to_end(&mut body)?;
        }
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// What Go's net/http "Hello, World!" handler answers, exactly: no other header.
fn assert_hello(response: &Response) {
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(String::from_utf8_lossy(&response.body), "Hello, World!");
    assert_eq!(
        response.header("content-type"),
        ["text/plain; charset=utf-8"]
    );
    assert_eq!(response.header("content-length"), ["13"]);
    let date = response.header("date");
    assert_eq!(date.len(), 1, "one Date header: {response:?}");
    // IMF-fixdate, e.g. "Tue, 24 Nov 2026 05:00:00 GMT".
    assert!(
        date[0].len() == 29 && date[0].ends_with(" GMT") && date[0].as_bytes()[3] == b',',
        "Date is not an IMF-fixdate: {:?}",
        date[0]
    );
    let names: BTreeSet<&str> = response.headers.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        BTreeSet::from(["content-length", "content-type", "date"]),
        "headers beyond Go's: {response:?}"
    );
}

// --- the kernel's view of the listener ------------------------------------------

/// The LISTEN socket on loopback `port` from /proc/net/tcp{,6}: `Some(accept queue length)`,
/// or `None` when nothing listens there. With `--network host` this is the container's socket.
fn listener_queue(port: u16) -> Option<u32> {
    let mut found = None;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state), Some(queues)) =
                (fields.get(1), fields.get(3), fields.get(4))
            else {
                continue;
            };
            let local_port = local
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if local_port == Some(port) && *state == "0A" {
                // For a listening socket the kernel reports the accept backlog as rx_queue.
                let rx = queues
                    .split(':')
                    .nth(1)
                    .and_then(|q| u32::from_str_radix(q, 16).ok());
                found = Some(found.unwrap_or(0) + rx.unwrap_or(0));
            }
        }
    }
    found
}

/// Polls `condition` until it holds, or panics with `what` at the deadline.
fn wait_until(
    what: &str,
    deadline: Duration,
    interval: Duration,
    mut condition: impl FnMut() -> bool,
) -> Duration {
    let started = Instant::now();
    while !condition() {
        assert!(
            started.elapsed() < deadline,
            "{what}: not within {deadline:?}"
        );
        std::thread::sleep(interval);
    }
    started.elapsed()
}

fn ms(duration: Duration) -> String {
    format!("{:.0} ms", duration.as_secs_f64() * 1000.0)
}

// --- the image itself ----------------------------------------------------------

#[test]
fn config_matches_the_definition() {
    let Some(engine) = engine("config_matches_the_definition") else {
        return;
    };
    let inspected: Value =
        serde_json::from_str(&engine.docker.ok(&["image", "inspect", &engine.image]))
            .expect("docker image inspect prints JSON");
    let image = &inspected[0];
    let config = &image["Config"];
    let def = &definition()["config"];

    // Entrypoint: exec form (a JSON array, no shell), as defined, running the binary.
    let entrypoint = config["Entrypoint"]
        .as_array()
        .expect("an exec-form Entrypoint");
    assert!(
        entrypoint.iter().all(Value::is_string),
        "Entrypoint {entrypoint:?}"
    );
    assert_eq!(config["Entrypoint"], def["Entrypoint"]);
    assert_eq!(entrypoint[0], definition()["binaryPath"]);
    assert!(
        config["Cmd"].is_null() || config["Cmd"] == serde_json::json!([]),
        "the definition has no Cmd, the image has {}",
        config["Cmd"]
    );

    // User: numeric uid:gid, not root, as defined.
    assert_eq!(config["User"], def["User"]);
    let user = config["User"].as_str().expect("a User");
    let ids: Vec<u32> = user
        .split(':')
        .map(|id| {
            id.parse()
                .unwrap_or_else(|_| panic!("User {user:?} is not numeric uid:gid"))
        })
        .collect();
    assert!(
        ids.len() == 2 && ids[0] != 0 && ids[1] != 0,
        "User {user:?} is root or incomplete"
    );

    assert_eq!(config["ExposedPorts"], def["ExposedPorts"]);
    assert!(
        config["ExposedPorts"].get("8080/tcp").is_some(),
        "8080/tcp is not exposed"
    );

    // Healthcheck: as defined (nanosecond durations); fields newer engines add must be unset.
    let health = config["Healthcheck"].as_object().expect("a Healthcheck");
    let def_health = def["Healthcheck"]
        .as_object()
        .expect("the definition has a Healthcheck");
    assert_eq!(
        def_health["Test"][0], "CMD",
        "the definition's healthcheck is exec form"
    );
    for (key, value) in health {
        let expected = def_health.get(key).unwrap_or(&Value::Null);
        let unset = value.is_null() || *value == 0;
        assert!(
            value == expected || (expected.is_null() && unset),
            "Healthcheck.{key}: {value} != {expected}"
        );
    }
    for key in def_health.keys() {
        assert!(health.contains_key(key), "Healthcheck.{key} missing");
    }

    // Labels: exactly the static ones plus version, revision and created.
    let labels = config["Labels"].as_object().expect("Labels");
    for (key, value) in def["Labels"].as_object().expect("static labels") {
        assert_eq!(labels.get(key), Some(value), "label {key}");
    }
    let expected_keys: BTreeSet<&str> = def["Labels"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .chain(DYNAMIC_LABELS)
        .collect();
    let keys: BTreeSet<&str> = labels.keys().map(String::as_str).collect();
    assert_eq!(keys, expected_keys, "label set");
    for key in [
        "title",
        "description",
        "version",
        "revision",
        "source",
        "licenses",
        "created",
    ] {
        let label = format!("org.opencontainers.image.{key}");
        assert!(
            labels[&label].as_str().is_some_and(|v| !v.is_empty()),
            "{label} is empty"
        );
    }
    let label = |key: &str| {
        labels[&format!("org.opencontainers.image.{key}")]
            .as_str()
            .unwrap()
    };
    assert_eq!(
        label("version"),
        env!("CARGO_PKG_VERSION"),
        "version label vs Cargo.toml"
    );
    let revision = label("revision");
    let commit = revision.strip_suffix("-dirty").unwrap_or(revision);
    assert!(
        commit.len() == 40
            && commit
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
        "revision label {revision:?} is not a commit id (with -dirty for a dirty tree)"
    );
    let created = label("created");
    assert!(
        is_rfc3339_utc_seconds(created),
        "created label {created:?} is not YYYY-MM-DDTHH:MM:SSZ"
    );
    let image_created = image["Created"].as_str().expect("Created");
    assert_eq!(
        normalize_time(image_created),
        created,
        "the image's created time is the commit time of the label"
    );

    assert_eq!(image["Os"], "linux");
    assert_eq!(image["Architecture"], "amd64");
    say(format!(
        "{}: id {} version {} revision {revision} created {created}",
        engine.image,
        image["Id"].as_str().unwrap_or("?"),
        label("version"),
    ));
}

fn is_rfc3339_utc_seconds(text: &str) -> bool {
    let b = text.as_bytes();
    b.len() == 20
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

/// "2026-11-24T05:00:00.000000000Z" → "2026-11-24T05:00:00Z" (a zero fraction says nothing).
fn normalize_time(text: &str) -> String {
    match text.strip_suffix('Z').and_then(|t| t.split_once('.')) {
        Some((seconds, fraction)) if fraction.bytes().all(|b| b == b'0') => format!("{seconds}Z"),
        _ => text.to_string(),
    }
}

/// A path in a layer, as an absolute path without a trailing slash.
fn clean(path: &str) -> String {
    let trimmed = path
        .trim_start_matches("./")
        .trim_start_matches('/')
        .trim_end_matches('/');
    format!("/{trimmed}")
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Dir,
    File { size: u64, mode: u32 },
    Symlink(String),
    Other(String),
}

/// The root filesystem `docker save` gives for the image: every layer applied in order.
fn saved_filesystem(engine: &Engine) -> (BTreeMap<String, Node>, u64) {
    let saved = engine
        .docker
        .command(&["save", &engine.image])
        .output()
        .expect("docker save runs");
    assert!(
        saved.status.success(),
        "docker save: {}",
        String::from_utf8_lossy(&saved.stderr)
    );

    // The outer archive: manifest.json names the layers, which may be symlinks to blobs.
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut links: BTreeMap<String, String> = BTreeMap::new();
    let mut outer = tar::Archive::new(&saved.stdout[..]);
    for entry in outer.entries().expect("docker save gives a tar") {
        let mut entry = entry.expect("a tar entry");
        let path = clean(&entry.path().expect("a path").to_string_lossy());
        if entry.header().entry_type().is_symlink() {
            let target = entry.link_name().ok().flatten().expect("a link target");
            links.insert(path, target.to_string_lossy().into_owned());
        } else if entry.header().entry_type().is_file() {
            let mut data = Vec::new();
            entry.read_to_end(&mut data).expect("read a tar entry");
            files.insert(path, data);
        }
    }
    let manifest: Value = serde_json::from_slice(&files["/manifest.json"]).expect("manifest.json");
    let layers = manifest[0]["Layers"].as_array().expect("Layers");

    let mut fs = BTreeMap::from([("/".to_string(), Node::Dir)]);
    let mut layer_bytes = 0;
    for layer in layers {
        let mut path = clean(layer.as_str().expect("a layer path"));
        for _ in 0..8 {
            let Some(target) = links.get(&path) else {
                break;
            };
            let dir = Path::new(&path).parent().unwrap_or(Path::new("/"));
            path = resolve_path(&dir.join(target).to_string_lossy());
        }
        let data = files
            .get(&path)
            .unwrap_or_else(|| panic!("layer {path} not in the archive"));
        assert!(
            !data.starts_with(&[0x1f, 0x8b]),
            "layer {path} is compressed; docker save gives plain tars"
        );
        layer_bytes += data.len() as u64;
        let mut archive = tar::Archive::new(&data[..]);
        for entry in archive.entries().expect("a layer is a tar") {
            let entry = entry.expect("a layer entry");
            let header = entry.header();
            let path = clean(&entry.path().expect("a path").to_string_lossy());
            let kind = header.entry_type();
            let node = if kind.is_dir() {
                Node::Dir
            } else if kind.is_file() {
                Node::File {
                    size: header.size().unwrap_or(0),
                    mode: header.mode().unwrap_or(0),
                }
            } else if kind.is_symlink() {
                Node::Symlink(
                    entry
                        .link_name()
                        .ok()
                        .flatten()
                        .map(|l| l.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                )
            } else {
                Node::Other(format!("{kind:?}"))
            };
            fs.insert(path, node);
        }
    }
    (fs, layer_bytes)
}

/// `/a/./b/../c` → `/a/c`, lexically.
fn resolve_path(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            part => parts.push(part),
        }
    }
    format!("/{}", parts.join("/"))
}

/// Follows symlinks in `fs` from `path`: the final path, and every symlink passed on the way.
fn follow(fs: &BTreeMap<String, Node>, path: &str) -> (String, Vec<String>) {
    let mut current = resolve_path(path);
    let mut passed = Vec::new();
    'restart: for _ in 0..40 {
        let parts: Vec<&str> = current.trim_start_matches('/').split('/').collect();
        for i in 1..=parts.len() {
            let prefix = format!("/{}", parts[..i].join("/"));
            if let Some(Node::Symlink(target)) = fs.get(&prefix) {
                let base = if target.starts_with('/') {
                    String::new()
                } else {
                    format!("/{}", parts[..i - 1].join("/"))
                };
                let rest = parts[i..].join("/");
                passed.push(prefix);
                current = resolve_path(&format!("{base}/{target}/{rest}"));
                continue 'restart;
            }
        }
        return (current, passed);
    }
    panic!("symlink loop at {path}");
}

#[test]
fn holds_the_binary_and_nothing_else() {
    let Some(engine) = engine("holds_the_binary_and_nothing_else") else {
        return;
    };
    let (fs, layer_bytes) = saved_filesystem(engine);
    let binary_path = def_str("/binaryPath");
    let (binary, via) = follow(&fs, binary_path);
    match fs.get(&binary) {
        Some(Node::File { mode, .. }) => {
            assert!(
                mode & 0o111 != 0,
                "{binary} is not executable (mode {mode:o})"
            )
        }
        other => panic!("{binary_path} (→ {binary}) is not a regular file in the image: {other:?}"),
    }
    for shell in ["/bin/sh", "/bin/bash", "/bin/busybox", "/usr/bin/env"] {
        assert!(!fs.contains_key(shell), "the image holds {shell}");
    }
    for (path, node) in &fs {
        match node {
            Node::Dir => {}
            Node::File { .. } => assert_eq!(*path, binary, "the image holds another file"),
            Node::Symlink(target) => assert!(
                via.contains(path),
                "the image holds a symlink {path} -> {target} that is not on the way to the binary"
            ),
            Node::Other(kind) => panic!("the image holds {path} of type {kind}"),
        }
    }
    let listing: Vec<String> = fs
        .iter()
        .filter(|(path, _)| *path != "/")
        .map(|(path, node)| match node {
            Node::Dir => format!("{path}/"),
            Node::File { size, mode } => format!("{path} ({size} bytes, mode {:o})", mode & 0o7777),
            Node::Symlink(target) => format!("{path} -> {target}"),
            Node::Other(kind) => format!("{path} ({kind})"),
        })
        .collect();
    say(format!("image contents: {}", listing.join(", ")));

    // Size: the archive as given, and gzip of it (the Nix one is already gzip).
    let archive_bytes = std::fs::metadata(&engine.archive)
        .expect("the archive")
        .len();
    let gzip_bytes = gzip_size(&engine.archive);
    say(format!(
        "image size: layers {layer_bytes} bytes uncompressed, archive {archive_bytes} bytes, \
         gzip {gzip_bytes} bytes ({:.1} KiB; budget {} KiB)",
        gzip_bytes as f64 / 1024.0,
        GZIP_BUDGET / 1024
    ));
    assert!(
        gzip_bytes < GZIP_BUDGET,
        "gzip of the image is {gzip_bytes} bytes, over {GZIP_BUDGET}"
    );
}

/// Bytes of `gzip -n` of the file; its own size if it is gzip already.
fn gzip_size(path: &Path) -> u64 {
    let mut magic = [0; 2];
    let mut file = std::fs::File::open(path).expect("open the archive");
    if file.read_exact(&mut magic).is_ok() && magic == [0x1f, 0x8b] {
        return file.metadata().expect("metadata").len();
    }
    let output = Command::new("gzip")
        .args(["-c", "-n"])
        .stdin(std::fs::File::open(path).expect("open the archive"))
        .output()
        .expect("gzip runs");
    assert!(output.status.success(), "gzip failed");
    output.stdout.len() as u64
}

// --- the image under docker ------------------------------------------------------

#[test]
fn serves_hello_world_locked_down() {
    let Some(engine) = engine("serves_hello_world_locked_down") else {
        return;
    };
    let started = Instant::now();
    let container = Container::start(&engine.docker, &engine.image, "serve", &[]);
    let (first, at) = container.wait_for_200(STARTUP_DEADLINE);
    say(format!(
        "startup (docker run → first 200): {}",
        ms(at - started)
    ));
    assert_hello(&first);
    assert_hello(&get(container.port).expect("a second GET /"));

    assert_eq!(container.inspect("{{.HostConfig.ReadonlyRootfs}}"), "true");
    assert_eq!(
        container.inspect("{{json .HostConfig.CapDrop}}"),
        r#"["ALL"]"#
    );

    // As the VM test checks: the process runs as the image's user, all four ids.
    let user = def_str("/config/User");
    let pid = container.inspect("{{.State.Pid}}");
    match std::fs::read_to_string(format!("/proc/{pid}/status")) {
        Ok(status) => {
            let (uid, gid) = user.split_once(':').expect("uid:gid");
            for (key, id) in [("Uid:", uid), ("Gid:", gid)] {
                let line = status
                    .lines()
                    .find(|l| l.starts_with(key))
                    .expect("an id line");
                let ids: Vec<&str> = line.split_whitespace().skip(1).collect();
                assert_eq!(ids, [id; 4], "{line}");
            }
            assert!(
                status.lines().any(|l| l == "NoNewPrivs:\t1"),
                "no_new_privs is not set on the container process"
            );
        }
        Err(err) => say(format!(
            "process ids not checked: /proc/{pid} unreadable here ({err})"
        )),
    }
}

#[test]
fn becomes_healthy() {
    let Some(engine) = engine("becomes_healthy") else {
        return;
    };
    let started = Instant::now();
    let container = Container::start(&engine.docker, &engine.image, "health", &[]);
    let health = &definition()["config"]["Healthcheck"];
    let ns = |key: &str| Duration::from_nanos(health[key].as_u64().unwrap_or(0));
    let retries = health["Retries"].as_u64().unwrap_or(3) as u32;
    // The engine's own bound: start period, then up to `retries` failing probes.
    let deadline = ns("StartPeriod")
        + (ns("Interval") + ns("Timeout")) * (retries + 1)
        + Duration::from_secs(5);
    wait_until(
        "the container becoming healthy",
        deadline,
        HEALTH_POLL,
        || {
            let status = container.inspect("{{.State.Health.Status}}");
            assert_ne!(
                status,
                "unhealthy",
                "health log: {}",
                container.inspect("{{json .State.Health}}")
            );
            status == "healthy"
        },
    );
    say(format!(
        "healthy {} after docker run (first probe after the {:?} interval)",
        ms(started.elapsed()),
        ns("Interval")
    ));
}

#[test]
fn stops_gracefully_fast_and_starts_again() {
    let Some(engine) = engine("stops_gracefully_fast_and_starts_again") else {
        return;
    };
    let container = Container::start(&engine.docker, &engine.image, "stop", &[]);
    container.wait_for_200(STARTUP_DEADLINE);
    let took = container.stop();
    say(format!(
        "docker stop: {} (budget {})",
        ms(took),
        ms(STOP_BUDGET)
    ));
    assert_eq!(container.exit_code(), "0", "exit code after SIGTERM");
    assert_eq!(container.inspect("{{.State.OOMKilled}}"), "false");
    assert!(took < STOP_BUDGET, "docker stop took {took:?}");

    // Like the VM test's restart of the unit: the same container serves again.
    container.cli.ok(&["start", &container.name]);
    let (response, _) = container.wait_for_200(STARTUP_DEADLINE);
    assert_hello(&response);
}

/// `docker stop` while a request is half sent: the server still answers it, then exits 0.
///
/// Ordering without sleeps, from the kernel's view of the listening socket (`/proc/net/tcp`,
/// shared through `--network host`):
/// 1. connect and send part of a request head;
/// 2. wait until the listener's accept queue is empty: the server has accepted our
///    connection, so it is the server's to finish (a connection still in the backlog when the
///    listener closes would be reset, and that is not what this test is about);
/// 3. `docker stop` in the background, and wait until the listening socket is gone: SIGTERM
///    has arrived and the drain has begun;
/// 4. only then send the rest of the head, and read a complete 200.
#[test]
fn stop_answers_the_request_in_flight() {
    let Some(engine) = engine("stop_answers_the_request_in_flight") else {
        return;
    };
    let container = Container::start(&engine.docker, &engine.image, "inflight", &[]);
    container.wait_for_200(STARTUP_DEADLINE);
    let port = container.port;
    assert!(
        listener_queue(port).is_some(),
        "no listening socket for 127.0.0.1:{port} in /proc/net/tcp"
    );

    let mut stream = connect(port).expect("connect");
    write!(stream, "GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n").expect("first half");
    wait_until(
        "the server accepting the connection",
        Duration::from_secs(5),
        POLL,
        || listener_queue(port) == Some(0),
    );

    let stopper = {
        let name = container.name.clone();
        std::thread::spawn(move || {
            let started = Instant::now();
            let output = docker().output(&["stop", &name]);
            (started.elapsed(), output)
        })
    };
    let drain = wait_until(
        "the listener closing after SIGTERM",
        Duration::from_secs(5),
        POLL,
        || listener_queue(port).is_none(),
    );

    stream
        .write_all(b"\r\n")
        .expect("second half, during the drain");
    let response = read_response(&mut stream).expect("the in-flight request is answered");
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(String::from_utf8_lossy(&response.body), "Hello, World!");

    let (took, output) = stopper.join().expect("docker stop thread");
    assert!(
        output.status.success(),
        "docker stop: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    say(format!(
        "docker stop with a request in flight: {} (listener closed {} after stop began)",
        ms(took),
        ms(drain)
    ));
    assert_eq!(container.exit_code(), "0");
    assert!(
        took < STOP_BUDGET,
        "docker stop took {took:?} with a request in flight"
    );
}

#[test]
fn logs_json_lines() {
    let Some(engine) = engine("logs_json_lines") else {
        return;
    };
    let container = Container::start(
        &engine.docker,
        &engine.image,
        "logs",
        &[("HELLO_LOG_FORMAT", "json")],
    );
    container.wait_for_200(STARTUP_DEADLINE);
    container.stop();
    let logs = container.logs();
    let lines: Vec<&str> = logs.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "no log lines at all");
    for line in &lines {
        let parsed: Value = serde_json::from_str(line)
            .unwrap_or_else(|err| panic!("log line is not JSON ({err}): {line}"));
        assert!(parsed.is_object(), "log line is not a JSON object: {line}");
    }
    say(format!("{} log lines, all JSON objects", lines.len()));
}

// --- the same archive under podman -----------------------------------------------

/// podman with storage of its own under a temporary directory, removed on drop.
struct Podman {
    cli: Cli,
    root: PathBuf,
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.cli.output(&["rm", "--all", "--force"]);
        let _ = self.cli.output(&["rmi", "--all", "--force"]);
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

impl Podman {
    fn new() -> Self {
        let root = std::env::temp_dir().join(format!("hello-server-podman-{}", std::process::id()));
        let path = |sub: &str| root.join(sub).to_string_lossy().into_owned();
        let cli = Cli {
            program: "podman",
            global: vec![
                format!("--root={}", path("root")),
                format!("--runroot={}", path("run")),
                "--storage-driver=vfs".into(),
                // No systemd here: cgroups directly, events to a file.
                "--cgroup-manager=cgroupfs".into(),
                "--events-backend=file".into(),
            ],
            run_extra: vec![
                // crun is not installed; runc is.
                "--runtime=runc".into(),
                // podman raises RLIMIT_NPROC by default, which a sandbox may refuse.
                "--ulimit=nproc=1024:1024".into(),
                // podman runs healthchecks from systemd timers; see podman_runs_the_same_archive.
                "--no-healthcheck".into(),
            ],
        };
        Self { cli, root }
    }
}

#[test]
fn podman_runs_the_same_archive() {
    let skip = |why: String| {
        if required("HELLO_REQUIRE_PODMAN") {
            panic!("podman: {why}; HELLO_REQUIRE_PODMAN=1 makes that a failure");
        }
        say(format!("SKIP podman_runs_the_same_archive: {why}"));
    };
    let Some(archive) = std::env::var_os("HELLO_SERVER_IMAGE") else {
        return skip("HELLO_SERVER_IMAGE is not set".into());
    };
    let podman = Podman::new();
    match podman
        .cli
        .command(&["info", "--format", "{{.Version.Version}}"])
        .output()
    {
        Err(err) => return skip(format!("podman cannot run here ({err})")),
        Ok(out) if !out.status.success() => {
            return skip(format!(
                "podman info failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(out) => say(format!(
            "podman {}",
            String::from_utf8_lossy(&out.stdout).trim()
        )),
    }
    let archive = archive.to_str().expect("HELLO_SERVER_IMAGE is UTF-8");
    podman.cli.ok(&["load", "--input", archive]);
    let image = image_ref();
    assert_eq!(
        podman.cli.inspect(&image, "{{.Config.User}}"),
        def_str("/config/User"),
        "podman sees another user"
    );

    let started = Instant::now();
    let container = match Container::try_start(&podman.cli, &image, "podman", &[]) {
        Ok(container) => container,
        Err(err) => return skip(err),
    };
    let (response, at) = container.wait_for_200(STARTUP_DEADLINE);
    say(format!(
        "podman startup (podman run → first 200): {}",
        ms(at - started)
    ));
    assert_hello(&response);
    say(
        "podman: healthcheck not exercised (podman 4 schedules it with systemd timers, absent here)",
    );

    let took = container.stop();
    say(format!("podman stop: {}", ms(took)));
    assert_eq!(
        container.exit_code(),
        "0",
        "exit code after SIGTERM under podman"
    );
    assert!(took < STOP_BUDGET, "podman stop took {took:?}");
}
