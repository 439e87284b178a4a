#!/usr/bin/env python3
"""Benchmark harness: hello-server side by side with Go net/http, nginx,
actix-web and a bare hyper hello.

Called by benches/run.sh (which installs the tools); see benches/README.md.

Method, in short:
  * server pinned to CPU 1, load generator (and this script) to CPU 0;
  * wrk for HTTP/1.1 keep-alive (50 and 256 connections), h2load for h2c
    prior knowledge (50 connections, 1 and 10 streams each);
  * R rounds, every peer in every round (order rotated per round), a fresh
    server per peer per round; every measured run is preceded by a short
    unmeasured warm-up;
  * a run during which OTHER processes used >= 1 CPU-second is discarded,
    counted and retried (bounded). "Other" = every process but the server
    tree, the load generator, this script and ksoftirqd (utime+stime+
    cutime+cstime deltas from /proc/PID/stat), capped by the machine's busy
    time (exact NO_HZ idle counters of /proc/stat) minus ours;
  * medians with min-max and IQR; startup = median of 20 exec-to-first-200;
    user-space instructions per request with perf if the CPU counters work,
    else callgrind (N requests minus a 0-request run).

Every wait is bounded; every server started is killed on exit.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
PEERS_DIR = BENCH_DIR / "peers"
TARGET_DIR = BENCH_DIR / "target"
PID_DIR = TARGET_DIR / "run-pids"  # run.sh's trap kills whatever is left here

BODY = b"Hello, World!"
SERVER_CPU = 1
LOAD_CPU = 0
CLK_TCK = os.sysconf("SC_CLK_TCK")
MUSL = "x86_64-unknown-linux-musl"

H1_SCENARIOS = [("h1-c50", 50), ("h1-c256", 256)]
H2_SCENARIOS = [("h2c-m1", 50, 1), ("h2c-m10", 50, 10)]
SCENARIOS = [s[0] for s in H1_SCENARIOS] + [s[0] for s in H2_SCENARIOS]
SCENARIO_LABEL = {
    "h1-c50": "HTTP/1.1, 50 conns",
    "h1-c256": "HTTP/1.1, 256 conns",
    "h2c-m1": "h2c, 50 conns x 1 stream",
    "h2c-m10": "h2c, 50 conns x 10 streams",
}


class HarnessError(Exception):
    """An expected failure with a clear message (no traceback printed)."""


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --------------------------------------------------------------------------
# processes


def run(cmd: list[str], *, timeout: float, cwd: Path | None = None,
        env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """Run a command to completion (bounded), capturing output."""
    try:
        cp = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise HarnessError(f"timed out after {timeout:.0f}s: {' '.join(cmd)}") from e
    except FileNotFoundError as e:
        raise HarnessError(f"not found: {cmd[0]}") from e
    if check and cp.returncode != 0:
        tail = "\n".join((cp.stdout + cp.stderr).strip().splitlines()[-25:])
        raise HarnessError(f"exit {cp.returncode}: {' '.join(cmd)}\n{tail}")
    return cp


def spawn_pinned(cmd: list[str], cpu: int, **kw: Any) -> subprocess.Popen:
    """Popen with the child's CPU affinity set to `cpu` (inherited from us,
    so no extra exec as `taskset` would add: matters for startup time)."""
    old = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        return subprocess.Popen(cmd, **kw)
    finally:
        os.sched_setaffinity(0, old)


def proc_stat_fields(pid: int) -> list[str] | None:
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm may hold spaces and parens: fields restart after the last ')'
    return data[data.rfind(")") + 2:].split()


def proc_tree(pid: int) -> list[int]:
    """pid and all its descendants (nginx master + worker)."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            f = proc_stat_fields(int(d))
            if f:
                children.setdefault(int(f[1]), []).append(int(d))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def tree_cpu(pids: list[int]) -> tuple[float, float]:
    """(user, system) CPU seconds of the given processes, all threads."""
    u = s = 0
    for p in pids:
        f = proc_stat_fields(p)
        if f:
            u += int(f[11])  # utime (field 14)
            s += int(f[12])  # stime (field 15)
    return u / CLK_TCK, s / CLK_TCK


def tree_status_kib(pids: list[int], key: str) -> int:
    """Sum of a /proc/PID/status kB field (VmRSS, VmHWM) over processes."""
    total = 0
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith(key + ":"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def busy_cpu() -> tuple[float, float]:
    """(monotonic time, idle+iowait seconds summed over CPUs). The kernel's
    idle time is exact under NO_HZ, unlike the tick-sampled busy columns of
    /proc/stat, so machine-wide busy time = ncpus * dt - d(idle)."""
    f = Path("/proc/stat").read_text().splitlines()[0].split()
    return time.monotonic(), (int(f[4]) + int(f[5])) / CLK_TCK


NCPUS = sum(1 for ln in Path("/proc/stat").read_text().splitlines()
            if re.match(r"cpu\d+ ", ln))


def ksoftirqd_pids() -> list[int]:
    """Kernel threads that run the loopback network softirqs when they pile
    up: work our own traffic causes, so counted with the server."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if Path(f"/proc/{d}/comm").read_text().startswith("ksoftirqd/"):
                    out.append(int(d))
            except OSError:
                pass
    return out


def others_snapshot(exclude: set[int]) -> dict[tuple[int, int], int]:
    """(pid, start time) -> utime+stime+cutime+cstime in ticks for every
    process not in `exclude`. The children terms catch short-lived
    processes (a rustc under cargo) that start and end between snapshots."""
    snap = {}
    for d in os.listdir("/proc"):
        if d.isdigit() and int(d) not in exclude:
            f = proc_stat_fields(int(d))
            if f:
                snap[(int(d), int(f[19]))] = sum(int(x) for x in f[11:15])
    return snap


def others_cpu(before: dict[tuple[int, int], int], after: dict[tuple[int, int], int]) -> float:
    """CPU-seconds other processes used between two snapshots (processes new
    in `after` count whole; ones gone from it show up in their parent's
    children time once reaped)."""
    return sum(v - before.get(k, 0) for k, v in after.items()) / CLK_TCK


def self_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A server process in its own session (process group), pinned to
    SERVER_CPU; recorded in PID_DIR until stopped."""

    live: list["Server"] = []

    def __init__(self, name: str, argv: list[str], env: dict[str, str], workdir: Path,
                 cpu: int = SERVER_CPU):
        self.name = name
        self.logpath = workdir / f"{name}.log"
        self.logf = open(self.logpath, "wb")
        self.t_spawn = time.monotonic()
        self.proc = spawn_pinned(argv, cpu, env=env, cwd=workdir, stdin=subprocess.DEVNULL,
                                 stdout=self.logf, stderr=subprocess.STDOUT,
                                 start_new_session=True)
        self.pid = self.proc.pid
        PID_DIR.mkdir(parents=True, exist_ok=True)
        # start time (in ticks since boot) lets run.sh's trap tell this
        # process from a later one that reuses the pid
        f = proc_stat_fields(self.pid)
        (PID_DIR / str(self.pid)).write_text(f"{f[19] if f else '?'} {argv[0]}\n")
        Server.live.append(self)

    def pids(self) -> list[int]:
        return proc_tree(self.pid)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, n: int = 15) -> str:
        try:
            return "\n".join(self.logpath.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self, sig: int = signal.SIGTERM, grace: float = 10.0) -> None:
        if self in Server.live:
            Server.live.remove(self)
        try:
            if self.proc.poll() is None:
                try:
                    os.killpg(self.pid, sig)
                except ProcessLookupError:
                    pass
                try:
                    self.proc.wait(timeout=grace)
                except subprocess.TimeoutExpired:
                    os.killpg(self.pid, signal.SIGKILL)
                    self.proc.wait(timeout=10)
            # leftovers of the group (e.g. an nginx worker)
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        finally:
            self.logf.close()
            (PID_DIR / str(self.pid)).unlink(missing_ok=True)

    @classmethod
    def stop_all(cls) -> None:
        for s in list(cls.live):
            try:
                s.stop(grace=3)
            except Exception as e:  # noqa: BLE001 - best effort at exit
                print(f"warning: could not stop {s.name} ({s.pid}): {e}", file=sys.stderr)


# --------------------------------------------------------------------------
# clients


def http1_get(port: int, timeout: float = 5.0) -> tuple[int, bytes]:
    """One GET / with Connection: close on a fresh socket; (status, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        data = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in
               (ln.partition(b":") for ln in lines[1:])}
    if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        out, rest = b"", body
        while rest:
            size_s, _, rest = rest.partition(b"\r\n")
            size = int(size_s.split(b";")[0], 16)
            if size == 0:
                break
            out, rest = out + rest[:size], rest[size + 2:]
        body = out
    elif b"content-length" in headers:
        body = body[:int(headers[b"content-length"])]
    return status, body


def wait_ready(port: int, server: Server, timeout: float) -> float:
    """Poll connect+GET until 200 with the exact body; returns seconds since
    the server was spawned (monotonic clock)."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if not server.alive():
            raise HarnessError(f"{server.name} exited with {server.proc.returncode} "
                               f"before answering:\n{server.log_tail()}")
        try:
            status, body = http1_get(port, timeout=max(1.0, min(10.0, deadline - time.monotonic())))
        except (OSError, IndexError, ValueError) as e:
            last = repr(e)
            time.sleep(0.0002)
            continue
        t = time.monotonic() - server.t_spawn
        if status == 200 and body == BODY:
            return t
        raise HarnessError(f"{server.name}: GET / gave {status} {body[:80]!r}, "
                           f"want 200 {BODY!r}")
    raise HarnessError(f"{server.name} not ready on port {port} after {timeout:.0f}s ({last})\n"
                       f"{server.log_tail()}")


def h2c_check(port: int) -> None:
    """One h2c prior-knowledge GET with nghttp: 200 and the exact body."""
    url = f"http://127.0.0.1:{port}/"
    v = run(["nghttp", "-v", "-t", "5", url], timeout=15, check=False)
    if not re.search(r":status: 200\b", v.stdout):
        raise HarnessError(f"h2c GET {url}: no ':status: 200' (exit {v.returncode})\n"
                           + "\n".join(v.stdout.splitlines()[-10:]) + v.stderr[-500:])
    b = subprocess.run(["nghttp", "-t", "5", url], capture_output=True, timeout=15)
    if b.stdout != BODY:
        raise HarnessError(f"h2c GET {url}: body {b.stdout[:80]!r}, want {BODY!r}")


def run_loadgen(cmd: list[str], timeout: float) -> str:
    """Run a load generator pinned to LOAD_CPU, bounded; its output. Its CPU
    time shows in RUSAGE_CHILDREN once reaped (see measured_run)."""
    p = spawn_pinned(cmd, LOAD_CPU, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                     stdin=subprocess.DEVNULL)
    try:
        out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate(timeout=10)
        raise HarnessError(f"load generator timed out after {timeout:.0f}s: {' '.join(cmd)}")
    except BaseException:  # interrupted: do not leave it running
        p.kill()
        p.wait(timeout=10)
        raise
    text = out.decode(errors="replace")
    if p.returncode != 0:
        raise HarnessError(f"exit {p.returncode}: {' '.join(cmd)}\n{text[-1500:]}")
    return text


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


_UNIT = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(v: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", v)
    if not m:
        raise HarnessError(f"cannot parse wrk latency {v!r}")
    return float(m.group(1)) * _UNIT[m.group(2)]


def parse_wrk(text: str) -> dict[str, Any]:
    try:
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
        reqs = int(re.search(r"(\d+) requests in ([\d.]+)(\w+)", text).group(1))
        lat = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", text, re.M))
        p50, p99 = _ms(lat["50"]), _ms(lat["99"])
    except (AttributeError, KeyError) as e:
        raise HarnessError(f"cannot parse wrk output:\n{text}") from e
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    return {"rps": rps, "requests": reqs, "p50_ms": p50, "p99_ms": p99,
            "bad_status": int(non2xx.group(1)) if non2xx else 0,
            "socket_errors": sum(map(int, sock.groups())) if sock else 0}


def parse_h2load(text: str, logfile: Path) -> dict[str, Any]:
    try:
        rps = float(re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", text).group(1))
        m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                      r"(\d+) failed, (\d+) errored, (\d+) timeout", text)
        done, succeeded, failed, errored, tmo = (int(m.group(i)) for i in (3, 4, 5, 6, 7))
        codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
        bad = sum(int(codes.group(i)) for i in (2, 3, 4))
    except AttributeError as e:
        raise HarnessError(f"cannot parse h2load output:\n{text}") from e
    lat = []
    with open(logfile) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3:
                lat.append(int(parts[2]))
    lat.sort()
    p50 = lat[len(lat) // 2] / 1e3 if lat else float("nan")
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] / 1e3 if lat else float("nan")
    return {"rps": rps, "requests": succeeded, "p50_ms": p50, "p99_ms": p99,
            "bad_status": bad + (done - succeeded), "socket_errors": failed + errored + tmo}


def load_cmd(scn: str, port: int, duration: float, logfile: Path | None) -> list[str]:
    url = f"http://127.0.0.1:{port}/"
    d = f"{max(1, round(duration))}s"
    for name, conns in H1_SCENARIOS:
        if name == scn:
            return ["wrk", "-t", "1", "-c", str(conns), "-d", d, "--timeout", "5s",
                    "--latency", url]
    for name, conns, streams in H2_SCENARIOS:
        if name == scn:
            cmd = ["h2load", "-t", "1", "-c", str(conns), "-m", str(streams), "-D", d,
                   "-N", "5", url]
            if logfile:
                cmd[1:1] = ["--log-file", str(logfile)]
            return cmd
    raise ValueError(scn)


# --------------------------------------------------------------------------
# peers


@dataclasses.dataclass
class Peer:
    name: str
    binary: Path | None = None
    # h2c: "same" (same port), "port" (a second port), or None (n/a)
    h2c: str | None = None
    h2c_na: str = ""
    note: str = ""
    build_error: str = ""

    def argv(self, port: int, h2port: int, workdir: Path, callgrind: bool = False) -> list[str]:
        if self.name == "nginx":
            conf = workdir / "nginx.conf"
            conf.write_text(nginx_conf(workdir, port, h2port, single_process=callgrind))
            return [str(self.binary), "-p", str(workdir), "-c", str(conf),
                    "-e", str(workdir / "error.log")]
        return [str(self.binary)]

    def env(self, port: int) -> dict[str, str]:
        return {"PATH": "/usr/bin:/bin", "HELLO_LISTEN": f"127.0.0.1:{port}", "HOME": "/tmp"}


def nginx_conf(d: Path, port: int, h2port: int, single_process: bool) -> str:
    # nginx 1.22 (Debian bookworm) has no `http2 on;`: a plaintext
    # `listen ... http2` speaks h2c prior knowledge only, so h2c gets its own port.
    return f"""# generated by benches/harness.py
worker_processes 1;
daemon off;
master_process {"off" if single_process else "on"};
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    default_type text/plain;
    # defaults (1000 requests per connection, HTTP/1.1 and h2) would make
    # h2load stop and wrk reconnect: measure keep-alive, not reconnects
    keepalive_requests 1000000000;
    keepalive_timeout 300s;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location / {{ return 200 "Hello, World!"; }}
    }}
    server {{
        listen 127.0.0.1:{h2port} http2;
        location / {{ return 200 "Hello, World!"; }}
    }}
}}
"""


ALL_PEERS = ["hello-server", "hyper-hello", "actix-web", "nginx", "go-net-http"]


def cargo_build(project: Path, target_dir: Path, target: str | None, smoke_profile: bool,
                timeout: float) -> Path:
    env = dict(os.environ, CARGO_TARGET_DIR=str(target_dir))
    if smoke_profile:
        env.update(CARGO_PROFILE_RELEASE_LTO="false", CARGO_PROFILE_RELEASE_CODEGEN_UNITS="16")
    cmd = ["cargo", "build", "--release", "--message-format=json-render-diagnostics"]
    if (project / "Cargo.lock").exists():
        cmd.append("--locked")
    if target:
        cmd += ["--target", target]
    cp = run(cmd, cwd=project, env=env, timeout=timeout, check=False)
    exe = None
    for line in cp.stdout.splitlines():
        if line.startswith("{"):
            msg = json.loads(line)
            if msg.get("reason") == "compiler-artifact" and msg.get("executable"):
                exe = msg["executable"]
    if cp.returncode != 0 or not exe:
        raise HarnessError(f"cargo build failed in {project}:\n"
                           + "\n".join(cp.stderr.strip().splitlines()[-30:]))
    return Path(exe)


def build_peers(names: list[str], args: argparse.Namespace) -> dict[str, Peer]:
    peers: dict[str, Peer] = {}
    cargo_dir = TARGET_DIR / ("cargo-smoke" if args.smoke else "cargo")
    bt = args.build_timeout
    for name in names:
        p = Peer(name)
        peers[name] = p
        log(f"build {name}")
        t0 = time.monotonic()
        try:
            if name == "hello-server":
                p.h2c = "same"
                if args.server_bin:
                    p.binary = Path(args.server_bin).resolve()
                else:
                    # the shipped build: the repo's own profile and target dir
                    env_dir = os.environ.get("CARGO_TARGET_DIR") or str(REPO_DIR / "target")
                    p.binary = cargo_build(REPO_DIR, Path(env_dir), MUSL, False, bt)
                if not p.binary.exists():
                    raise HarnessError(f"no binary at {p.binary}")
            elif name == "hyper-hello":
                p.h2c_na = "HTTP/1.1 only by design"
                p.binary = cargo_build(PEERS_DIR / "hyper-hello", cargo_dir, MUSL,
                                       args.smoke, bt)
            elif name == "actix-web":
                p.h2c = "same"
                p.note = "glibc (host target)"
                p.binary = cargo_build(PEERS_DIR / "actix-hello", cargo_dir, None,
                                       args.smoke, bt)
            elif name == "nginx":
                p.h2c = "port"
                p.note = "Debian package, dynamic"
                found = shutil.which("nginx") or "/usr/sbin/nginx"
                if not os.access(found, os.X_OK):
                    raise HarnessError("nginx not installed (apt-get install nginx)")
                p.binary = Path(found)
            elif name == "go-net-http":
                p.h2c_na = "h2c needs golang.org/x/net/http2/h2c (not available offline)"
                out = TARGET_DIR / "go" / "go-hello"
                out.parent.mkdir(parents=True, exist_ok=True)
                env = dict(os.environ, CGO_ENABLED="0", GOPROXY="off", GOFLAGS="-mod=mod",
                           GOCACHE=str(TARGET_DIR / "go" / "cache"),
                           GOPATH=str(TARGET_DIR / "go" / "path"), GO111MODULE="on")
                run(["go", "build", "-trimpath", "-ldflags=-s -w", "-o", str(out), "."],
                    cwd=PEERS_DIR / "go-hello", env=env, timeout=bt)
                p.binary = out
            else:
                raise HarnessError(f"unknown peer {name}")
            log(f"  {name}: {p.binary} ({time.monotonic() - t0:.0f}s)")
        except HarnessError as e:
            p.build_error = str(e)
            log(f"  {name}: BUILD FAILED: {str(e).splitlines()[0]}")
    return peers


def is_static(path: Path) -> bool:
    """True when the ELF has no PT_INTERP (no dynamic loader)."""
    with open(path, "rb") as f:
        hdr = f.read(64)
        if hdr[:4] != b"\x7fELF" or hdr[4] != 2:
            return False
        phoff, = struct.unpack_from("<Q", hdr, 0x20)
        phentsize, phnum = struct.unpack_from("<HH", hdr, 0x36)
        f.seek(phoff)
        ph = f.read(phentsize * phnum)
    return all(struct.unpack_from("<I", ph, i * phentsize)[0] != 3 for i in range(phnum))


# --------------------------------------------------------------------------
# measurements


def start_peer(peer: Peer, workdir: Path, ready_timeout: float,
               wrapper: list[str] | None = None) -> tuple[Server, int, int, float]:
    port, h2port = free_port(), free_port()
    argv = peer.argv(port, h2port, workdir, callgrind=bool(wrapper))
    srv = Server(peer.name, (wrapper or []) + argv, peer.env(port), workdir)
    try:
        t = wait_ready(port, srv, ready_timeout)
    except BaseException:
        srv.stop(grace=3)
        raise
    return srv, port, (port if peer.h2c == "same" else h2port), t


def measured_run(srv: Server, scn: str, port: int, duration: float,
                 workdir: Path) -> dict[str, Any]:
    logfile = workdir / "h2load.log" if scn.startswith("h2c") else None
    cmd = load_cmd(scn, port, duration, logfile)
    pids, kpids = srv.pids(), ksoftirqd_pids()
    exclude = set(pids) | set(kpids) | {os.getpid()}
    o0 = others_snapshot(exclude)
    s0, k0, c0, m0 = tree_cpu(pids), sum(tree_cpu(kpids)), children_cpu(), self_cpu()
    b0 = busy_cpu()
    text = run_loadgen(cmd, timeout=duration + 60)
    b1 = busy_cpu()
    s1, k1, c1, m1 = tree_cpu(pids), sum(tree_cpu(kpids)), children_cpu(), self_cpu()
    o1 = others_snapshot(exclude)
    wall = b1[0] - b0[0]
    busy = NCPUS * wall - (b1[1] - b0[1])
    r = parse_wrk(text) if logfile is None else parse_h2load(text, logfile)
    if logfile:
        logfile.unlink(missing_ok=True)
    su, ss = s1[0] - s0[0], s1[1] - s0[1]
    lg, ksoft = c1 - c0, k1 - k0
    # CPU-seconds the machine's other processes used meanwhile: counted per
    # process, capped by the machine's busy time (exact idle counters) minus
    # ours, since a child reaped meanwhile brings its whole lifetime along
    others_procs = others_cpu(o0, o1)
    others_machine = busy - (su + ss) - lg - ksoft - (m1 - m0)
    others = max(0.0, min(others_procs, others_machine))
    mreq = max(r["requests"], 1) / 1e6
    r.update(wall_s=round(wall, 3), server_user_s=su, server_sys_s=ss, loadgen_cpu_s=round(lg, 3),
             ksoftirqd_cpu_s=round(ksoft, 3), machine_busy_s=round(busy, 3),
             others_cpu_s=round(others, 3), others_procs_cpu_s=round(others_procs, 3),
             others_machine_cpu_s=round(others_machine, 3),
             cpu_user_s_per_mreq=su / mreq, cpu_sys_s_per_mreq=ss / mreq)
    return r


def peer_round(peer: Peer, args: argparse.Namespace, workdir: Path, rnd: int,
               counters: dict[str, int]) -> dict[str, Any]:
    """Fresh server; idle RSS; every scenario (warm-up + measured, with
    discard/retry); peak RSS; stop. A failed scenario is recorded in
    "errors" and the others still run while the server lives."""
    out: dict[str, Any] = {"round": rnd, "runs": {}, "errors": []}
    srv, port, h2port, _ = start_peer(peer, workdir, args.ready_timeout)
    try:
        time.sleep(args.idle_settle)
        out["idle_rss_kib"] = tree_status_kib(srv.pids(), "VmRSS")
        scns = [s for s, _ in H1_SCENARIOS]
        if peer.h2c:
            try:
                h2c_check(h2port)
                scns += [s for s, _, _ in H2_SCENARIOS]
            except HarnessError as e:
                out["errors"].append(f"h2c: {e}")
        for scn in scns:
            if not srv.alive():
                out["errors"].append(f"{scn}: server died:\n{srv.log_tail()}")
                break
            try:
                out["runs"][scn] = scenario_runs(srv, peer, scn, args, workdir, counters,
                                                 h2port if scn.startswith("h2c") else port)
            except HarnessError as e:
                out["errors"].append(f"{scn}: {e}")
                log(f"    {peer.name:12} {scn:8} FAILED: {str(e).splitlines()[0]}")
            if scn == "h1-c256":
                out["peak_rss_h1_c256_kib"] = tree_status_kib(srv.pids(), "VmHWM")
        out["peak_rss_kib"] = tree_status_kib(srv.pids(), "VmHWM")
        # still answering correctly after the load?
        try:
            status, body = http1_get(port)
            if (status, body) != (200, BODY):
                out["errors"].append(f"after load: GET / gave {status} {body[:80]!r}")
        except OSError as e:
            out["errors"].append(f"after load: GET / failed: {e!r}")
    finally:
        srv.stop()
    return out


def scenario_runs(srv: Server, peer: Peer, scn: str, args: argparse.Namespace, workdir: Path,
                  counters: dict[str, int], port: int) -> list[dict[str, Any]]:
    """Warm-up + measured run, re-run (bounded) while discarded as noisy."""
    attempts = []
    for attempt in range(args.max_retries + 1):
        run_loadgen(load_cmd(scn, port, args.warmup, None), timeout=args.warmup + 60)
        r = measured_run(srv, scn, port, args.duration, workdir)
        r["discarded"] = (not args.smoke) and r["others_cpu_s"] >= args.discard_cpu
        attempts.append(r)
        if r["requests"] == 0 or r["bad_status"]:
            raise HarnessError(f"{r['requests']} requests, {r['bad_status']} bad status")
        if not r["discarded"]:
            break
        counters["discarded"] += 1
        log(f"    {peer.name:12} {scn:8} discarded: others used {r['others_cpu_s']:.2f} CPU-s "
            f"(attempt {attempt + 1}/{args.max_retries + 1})")
        if attempt < args.max_retries:
            time.sleep(args.retry_wait)  # let a burst elsewhere pass
    ok = attempts[-1]
    log(f"    {peer.name:12} {scn:8} {ok['rps']:>10,.0f} req/s  p50 {ok['p50_ms']:.3f} ms"
        f"  p99 {ok['p99_ms']:.3f} ms  others {ok['others_cpu_s']:.2f}s"
        + ("  [noisy, kept flagged]" if ok["discarded"] else ""))
    return attempts


def measure_startup(peers: list[Peer], samples: int, workdir: Path
                    ) -> tuple[dict[str, list[float]], dict[str, str]]:
    """exec-to-first-200 in ms, peers interleaved sample by sample; a peer
    that fails once is dropped from the rest (its error returned)."""
    res: dict[str, list[float]] = {p.name: [] for p in peers}
    errors: dict[str, str] = {}
    for _ in range(samples):
        for p in peers:
            if p.name in errors:
                continue
            d = workdir / f"startup-{p.name}"
            d.mkdir(exist_ok=True)
            try:
                srv, _, _, t = start_peer(p, d, ready_timeout=30)
                srv.stop()
            except HarnessError as e:
                errors[p.name] = str(e)
                continue
            res[p.name].append(t * 1e3)
    return res, errors


def perf_works() -> bool:
    try:
        cp = subprocess.run(["perf", "stat", "-x", ",", "-e", "instructions:u", "true"],
                            capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return bool(re.search(r"^\d+,", cp.stderr, re.M))


def instructions_perf(peer: Peer, n: int, workdir: Path) -> dict[str, Any]:
    srv, port, _, _ = start_peer(peer, workdir, 30)
    try:
        pids = ",".join(map(str, srv.pids()))
        out = workdir / "perf.csv"
        perf = subprocess.Popen(["perf", "stat", "-x", ",", "-e", "instructions:u", "-p", pids,
                                 "-o", str(out)], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        text = run_loadgen(["h2load", "--h1", "-n", str(n), "-c", "1", "-m", "1",
                               f"http://127.0.0.1:{port}/"], timeout=300)
        perf.send_signal(signal.SIGINT)
        perf.wait(timeout=20)
        m = re.search(r"^(\d+),", out.read_text(), re.M)
        if not m:
            raise HarnessError(f"perf gave no count:\n{out.read_text()[-500:]}")
        done = int(re.search(r"(\d+) succeeded", text).group(1))
        return {"method": "perf stat -e instructions:u", "requests": done,
                "instructions": int(m.group(1)), "per_request": int(m.group(1)) / done}
    finally:
        srv.stop()


def callgrind_total(peer: Peer, n: int, workdir: Path) -> int:
    """Total Ir of a server run under callgrind that answered the readiness
    GET plus n keep-alive GETs from h2load, then got SIGTERM."""
    outfile = workdir / f"callgrind.{peer.name}.{n}.out"
    outfile.unlink(missing_ok=True)
    wrapper = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={outfile}",
               "--dump-instr=no", "--collect-jumps=no"]
    srv, port, _, _ = start_peer(peer, workdir, ready_timeout=180, wrapper=wrapper)
    try:
        if n:
            text = run_loadgen(["h2load", "--h1", "-n", str(n), "-c", "1", "-m", "1",
                                   "-N", "60", f"http://127.0.0.1:{port}/"], timeout=900)
            done = int(re.search(r"(\d+) succeeded", text).group(1))
            if done != n:
                raise HarnessError(f"callgrind run: {done} of {n} requests succeeded")
        time.sleep(1.0)
    finally:
        srv.stop(grace=60)
    if not outfile.exists():
        raise HarnessError(f"callgrind wrote no output for {peer.name}:\n{srv.log_tail()}")
    for line in outfile.read_text(errors="replace").splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise HarnessError(f"no totals in {outfile}")


def instructions_callgrind(peer: Peer, n: int, workdir: Path) -> dict[str, Any]:
    base = callgrind_total(peer, 0, workdir)
    full = callgrind_total(peer, n, workdir)
    return {"method": "callgrind Ir (N requests minus 0-request run)", "requests": n,
            "ir_total_n": full, "ir_total_0": base, "per_request": (full - base) / n}


# --------------------------------------------------------------------------
# statistics and reports


def stats(xs: list[float]) -> dict[str, Any] | None:
    xs = [x for x in xs if x is not None]
    if not xs:
        return None
    s = sorted(xs)
    q = statistics.quantiles(s, n=4, method="inclusive") if len(s) >= 2 else [s[0]] * 3
    return {"median": statistics.median(s), "min": s[0], "max": s[-1], "q1": q[0], "q3": q[2],
            "n": len(s)}


def summarize(peer: Peer, rounds: list[dict[str, Any]], startup: list[float] | None,
              instr: dict[str, Any] | None) -> dict[str, Any]:
    res: dict[str, Any] = {
        "binary": str(peer.binary) if peer.binary else None,
        "binary_size_bytes": peer.binary.stat().st_size if peer.binary and peer.binary.exists() else None,
        "static": is_static(peer.binary) if peer.binary and peer.binary.exists() else None,
        "note": peer.note,
        "h2c": bool(peer.h2c),
        "h2c_na_reason": peer.h2c_na or None,
        "scenarios": {},
        "errors": [r["error"] for r in rounds if "error" in r]
        + [f"round {r['round'] + 1}: {e}" for r in rounds for e in r.get("errors", [])],
    }
    good_rounds = [r for r in rounds if "error" not in r]
    for scn in SCENARIOS:
        attempts = [a for r in good_rounds for a in r["runs"].get(scn, [])]
        if not attempts:
            continue
        kept = [a for a in attempts if not a["discarded"]]
        noisy = not kept
        use = kept or attempts
        res["scenarios"][scn] = {
            "rps": stats([a["rps"] for a in use]),
            "p50_ms": stats([a["p50_ms"] for a in use]),
            "p99_ms": stats([a["p99_ms"] for a in use]),
            "cpu_user_s_per_mreq": stats([a["cpu_user_s_per_mreq"] for a in use]),
            "cpu_sys_s_per_mreq": stats([a["cpu_sys_s_per_mreq"] for a in use]),
            "runs_kept": len(kept), "runs_discarded": len(attempts) - len(kept),
            "only_discarded_runs": noisy,
            "runs": attempts,
        }
    res["idle_rss_kib"] = stats([r.get("idle_rss_kib") for r in good_rounds])
    res["peak_rss_h1_c256_kib"] = stats([r.get("peak_rss_h1_c256_kib") for r in good_rounds])
    res["peak_rss_kib"] = stats([r.get("peak_rss_kib") for r in good_rounds])
    res["startup_ms"] = stats(startup or [])
    if startup:
        res["startup_ms"]["samples"] = startup
    res["instructions_per_request"] = instr
    return res


def med(res: dict, peer: str, *path: str) -> float | None:
    cur: Any = res.get(peer)
    for k in path:
        if not isinstance(cur, dict):
            return None
        cur = cur.get(k)
    if isinstance(cur, dict):
        cur = cur.get("median", cur.get("per_request"))
    return cur if isinstance(cur, (int, float)) else None


def evaluate_targets(res: dict[str, Any]) -> list[dict[str, Any]]:
    hs = "hello-server"
    others = [p for p in res if p != hs]
    out = []

    def noisy(scn: str, *names: str) -> bool:
        """True when a compared cell has only runs discarded as noisy."""
        return any(res.get(n, {}).get("scenarios", {}).get(scn, {}).get("only_discarded_runs")
                   for n in names)

    def add(name: str, ok: bool | None, detail: str, info: bool = False,
            value: float | None = None, reference: float | None = None,
            unreliable: bool = False) -> None:
        status = "INFO" if info else ("N/A" if ok is None else ("PASS" if ok else "MISS"))
        if unreliable and status in ("PASS", "MISS"):
            status += " (noisy)"
            detail += "; all runs of a compared cell were discarded as noisy"
        out.append({"target": name, "status": status, "detail": detail,
                    "value": value, "reference": reference, "noisy": unreliable})

    for scn in ("h1-c50", "h1-c256"):
        mine = med(res, hs, "scenarios", scn, "rps")
        cand = [(med(res, p, "scenarios", scn, "rps"), p) for p in others]
        cand = [c for c in cand if c[0] is not None]
        if mine is None or not cand:
            add(f"{SCENARIO_LABEL[scn]} req/s >= 0.97x best peer", None, "not measured")
        else:
            best, bp = max(cand)
            add(f"{SCENARIO_LABEL[scn]} req/s >= 0.97x best peer", mine >= 0.97 * best,
                f"{mine:,.0f} vs {bp} {best:,.0f} = {mine / best:.3f}x", value=mine, reference=best,
                unreliable=noisy(scn, hs, bp))
        go = med(res, "go-net-http", "scenarios", scn, "rps")
        if mine is None or go is None:
            add(f"{SCENARIO_LABEL[scn]} req/s >= 1.5x Go", None, "not measured")
        else:
            add(f"{SCENARIO_LABEL[scn]} req/s >= 1.5x Go", mine >= 1.5 * go,
                f"{mine:,.0f} vs Go {go:,.0f} = {mine / go:.2f}x", value=mine, reference=go,
                unreliable=noisy(scn, hs, "go-net-http"))
    mine = med(res, hs, "scenarios", "h1-c256", "p99_ms")
    cand = [(med(res, p, "scenarios", "h1-c256", "p99_ms"), p) for p in others]
    cand = [c for c in cand if c[0] is not None]
    if mine is None or not cand:
        add("p99 at 256 conns <= best peer", None, "not measured")
    else:
        best, bp = min(cand)
        add("p99 at 256 conns <= best peer", mine <= best,
            f"{mine:.3f} ms vs {bp} {best:.3f} ms", value=mine, reference=best,
            unreliable=noisy("h1-c256", hs, bp))
    v = med(res, hs, "idle_rss_kib")
    add("idle RSS <= 1 MiB", None if v is None else v <= 1024,
        "not measured" if v is None else f"{v / 1024:.2f} MiB", value=v, reference=1024)
    v = med(res, hs, "peak_rss_h1_c256_kib")
    add("peak RSS under 256-conn load <= 5 MiB", None if v is None else v <= 5 * 1024,
        "not measured" if v is None else f"{v / 1024:.2f} MiB", value=v, reference=5 * 1024)
    mine, ref = med(res, hs, "startup_ms"), med(res, "hyper-hello", "startup_ms")
    add("startup no slower than bare hyper", None if None in (mine, ref) else mine <= ref,
        "not measured" if None in (mine, ref) else f"{mine:.2f} ms vs hyper-hello {ref:.2f} ms",
        value=mine, reference=ref)
    mine = med(res, hs, "instructions_per_request")
    ref = med(res, "actix-web", "instructions_per_request")
    add("user-space instructions/request < actix-web",
        None if None in (mine, ref) else mine < ref,
        "not measured" if None in (mine, ref) else f"{mine:,.0f} vs actix-web {ref:,.0f}",
        value=mine, reference=ref)
    parts, mine = [], None
    for p in res:
        h2, h1 = med(res, p, "scenarios", "h2c-m10", "rps"), med(res, p, "scenarios", "h1-c50", "rps")
        if h2 and h1:
            parts.append(f"{p} {h2 / h1:.2f}x")
            if p == hs:
                mine = h2 / h1
    add("h2c 10 streams / HTTP/1.1 (50 conns) req/s ratio", None,
        ", ".join(parts) or "not measured", info=True, value=mine)
    return out


def fmt_spread(s: dict | None, fmt: str, scale: float = 1.0) -> str:
    if not s:
        return "n/a"
    m, lo, hi = (s[k] / scale for k in ("median", "min", "max"))
    if s["n"] < 2:
        return format(m, fmt)
    return f"{format(m, fmt)} ({format(lo, fmt)}–{format(hi, fmt)})"


def write_markdown(doc: dict[str, Any], path: Path) -> None:
    meta, res = doc["meta"], doc["peers"]
    L = [f"# hello-server benchmark ({meta['mode']})", "",
         f"{meta['date']} · {meta['host']} · {meta['cpus']} CPUs · kernel {meta['kernel']} · "
         f"server on CPU {SERVER_CPU}, load on CPU {LOAD_CPU}", "",
         f"{meta['rounds']} round(s) × {meta['duration_s']} s per run (+{meta['warmup_s']} s warm-up), "
         f"peers interleaved; medians with (min–max). "
         f"Discarded runs (other processes used ≥ {meta['discard_cpu_s']} CPU-s): "
         f"**{meta['discarded_runs']}**.", ""]
    if meta["mode"] == "smoke":
        L += ["> Smoke run: one short round with light builds of the peers, to check that the "
              "harness works and every peer answers. Its figures are not measurements.", ""]
    L += ["## Throughput and latency", "",
          "| peer | scenario | req/s | p50 ms | p99 ms | CPU user s/Mreq | CPU sys s/Mreq | runs kept |",
          "|---|---|---:|---:|---:|---:|---:|---:|"]
    for p, r in res.items():
        for scn in SCENARIOS:
            s = r["scenarios"].get(scn)
            if not s:
                if scn.startswith("h2c") and r.get("h2c_na_reason"):
                    L.append(f"| {p} | {scn} | n/a: {r['h2c_na_reason']} | | | | | |")
                continue
            mark = " †" if s["only_discarded_runs"] else ""
            L.append(f"| {p} | {scn} | {fmt_spread(s['rps'], ',.0f')}{mark} | "
                     f"{fmt_spread(s['p50_ms'], '.3f')} | {fmt_spread(s['p99_ms'], '.3f')} | "
                     f"{fmt_spread(s['cpu_user_s_per_mreq'], '.2f')} | "
                     f"{fmt_spread(s['cpu_sys_s_per_mreq'], '.2f')} | "
                     f"{s['runs_kept']}/{s['runs_kept'] + s['runs_discarded']} |")
    L += ["", "## Footprint and startup", "",
          "| peer | binary | idle RSS MiB | peak RSS MiB (256 conns) | peak RSS MiB (all) | "
          "startup ms | instr/request |", "|---|---:|---:|---:|---:|---:|---:|"]
    for p, r in res.items():
        size = r.get("binary_size_bytes")
        bin_s = f"{size / 2**20:.2f} MiB {'static' if r.get('static') else 'dynamic'}" if size else "n/a"
        ipr = r.get("instructions_per_request")
        ipr_s = f"{ipr['per_request']:,.0f}" if ipr and "per_request" in ipr else \
            (f"n/a ({ipr['error'][:60]})" if ipr else "n/a")
        L.append(f"| {p} | {bin_s} | {fmt_spread(r['idle_rss_kib'], '.2f', 1024)} | "
                 f"{fmt_spread(r['peak_rss_h1_c256_kib'], '.2f', 1024)} | "
                 f"{fmt_spread(r['peak_rss_kib'], '.2f', 1024)} | "
                 f"{fmt_spread(r['startup_ms'], '.2f')} | {ipr_s} |")
    L += ["", "## Targets", "", "| target | result | figures |", "|---|---|---|"]
    for t in doc["targets"]:
        L.append(f"| {t['target']} | **{t['status']}** | {t['detail']} |")
    L += ["", "## Notes", ""]
    L.append(f"- Instructions per request: {meta['instructions_method']}.")
    L.append("- RSS of nginx is master + worker. Startup = exec to first 200 with the exact "
             f"body (median of {meta['startup_samples']}).")
    for p, r in res.items():
        if r.get("note"):
            L.append(f"- {p}: {r['note']}.")
        for e in r.get("errors", []):
            L.append(f"- {p} FAILED: {e.splitlines()[0]}")
    if any(s.get("only_discarded_runs") for r in res.values() for s in r["scenarios"].values()):
        L.append("- † every run of this cell was discarded as noisy; figures shown anyway.")
    L.append(f"- Tools: {meta['tools']}")
    path.write_text("\n".join(L) + "\n")


PALETTE = {"hello-server": "#e4572e", "hyper-hello": "#f3a712", "actix-web": "#4c8fb8",
           "nginx": "#29a36a", "go-net-http": "#7a6fb0"}


def write_chart(doc: dict[str, Any], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res = doc["peers"]
    peers = list(res)
    fig, axes = plt.subplots(2, 2, figsize=(13, 8.5), gridspec_kw={"width_ratios": [1.6, 1]})
    (ax_rps, ax_rss), (ax_p99, ax_start) = axes

    def bars(ax, groups, getter, ylabel, title, scale=1.0, fmt="{:.0f}"):
        """Grouped bars: one group per key, one bar per peer, whiskers min-max."""
        width = 0.8 / len(peers)
        for i, p in enumerate(peers):
            xs, ys, lo, hi = [], [], [], []
            for g, key in enumerate(groups):
                s = getter(p, key)
                if not s:
                    continue
                xs.append(g + (i - (len(peers) - 1) / 2) * width)
                ys.append(s["median"] / scale)
                lo.append((s["median"] - s["min"]) / scale)
                hi.append((s["max"] - s["median"]) / scale)
            hs = p == "hello-server"
            ax.bar(xs, ys, width, yerr=[lo, hi], capsize=2, label=p, color=PALETTE.get(p, "#999"),
                   edgecolor="black" if hs else "none", linewidth=1.2 if hs else 0,
                   error_kw={"elinewidth": 0.8, "ecolor": "#333"})
            for x, y, h in zip(xs, ys, hi):
                ax.text(x, y + h, fmt.format(y), ha="center", va="bottom", fontsize=7,
                        rotation=90 if len(groups) > 1 else 0,
                        fontweight="bold" if hs else "normal")
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=11)
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
        ax.margins(y=0.15)

    scns = [s for s in SCENARIOS if any(s in res[p]["scenarios"] for p in peers)]
    bars(ax_rps, scns, lambda p, s: res[p]["scenarios"].get(s, {}).get("rps"),
         "thousand requests / s", "Throughput (higher is better)", 1e3)
    ax_rps.set_xticks(range(len(scns)), [SCENARIO_LABEL[s].replace(", ", "\n", 1) for s in scns])
    ax_rps.legend(fontsize=9, ncol=len(peers), loc="upper center", bbox_to_anchor=(0.5, -0.16))

    bars(ax_rss, ["idle_rss_kib", "peak_rss_h1_c256_kib"], lambda p, k: res[p].get(k), "MiB",
         "Memory: RSS idle / peak at 256 conns (lower is better)", 1024, "{:.1f}")
    ax_rss.set_xticks(range(2), ["idle", "peak, 256 conns"])
    for y, lbl in ((1, "1 MiB target (idle)"), (5, "5 MiB target (peak)")):
        ax_rss.axhline(y, color=PALETTE["hello-server"], lw=0.8, ls="--")
        ax_rss.text(1.48, y, lbl, color=PALETTE["hello-server"], fontsize=7, va="bottom", ha="right",
                    zorder=5, bbox={"facecolor": "white", "alpha": 0.8, "pad": 1, "edgecolor": "none"})

    bars(ax_p99, ["h1-c50", "h1-c256"], lambda p, s: res[p]["scenarios"].get(s, {}).get("p99_ms"),
         "ms", "HTTP/1.1 p99 latency (lower is better)", fmt="{:.2f}")
    ax_p99.set_xticks(range(2), ["50 conns", "256 conns"])

    # startup: one bar per peer, named on the axis
    st = [(p, res[p].get("startup_ms")) for p in peers if res[p].get("startup_ms")]
    for i, (p, s) in enumerate(st):
        hs = p == "hello-server"
        ax_start.bar(i, s["median"], 0.7, yerr=[[s["median"] - s["min"]], [s["max"] - s["median"]]],
                     capsize=3, color=PALETTE.get(p, "#999"), edgecolor="black" if hs else "none",
                     linewidth=1.2 if hs else 0, error_kw={"elinewidth": 0.8, "ecolor": "#333"})
        ax_start.text(i, s["max"], f"{s['median']:.2f}", ha="center", va="bottom", fontsize=8,
                      fontweight="bold" if hs else "normal")
    ax_start.set_xticks(range(len(st)), [p for p, _ in st], fontsize=8)
    ax_start.set_ylabel("ms")
    ax_start.set_title("Startup: exec to first 200, median (lower is better)", fontsize=11)
    ax_start.grid(axis="y", alpha=0.3)
    ax_start.set_axisbelow(True)
    ax_start.margins(y=0.15)
    meta = doc["meta"]
    fig.suptitle(f"hello-server vs peers — medians of {meta['rounds']} round(s), whiskers min–max"
                 f" ({meta['mode']}, {meta['date'][:10]}, discarded runs: {meta['discarded_runs']})",
                 fontsize=12)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def tool_versions() -> str:
    def first(cmd: list[str]) -> str:
        try:
            cp = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
            return (cp.stdout + cp.stderr).strip().splitlines()[0]
        except (OSError, subprocess.TimeoutExpired, IndexError):
            return "?"
    return "; ".join([first(["wrk", "-v"]).split(" Copyright")[0], first(["h2load", "--version"]),
                      first(["nginx", "-v"]), first(["go", "version"]), first(["rustc", "-V"]),
                      first(["valgrind", "--version"])])


# --------------------------------------------------------------------------
# main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true",
                    help="one short round, light peer builds, assert every peer answers")
    ap.add_argument("--peers", default=",".join(ALL_PEERS), help="comma list, default all")
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--duration", type=float, help="seconds per measured run")
    ap.add_argument("--warmup", type=float, help="seconds of warm-up before each run")
    ap.add_argument("--startup-samples", type=int)
    ap.add_argument("--instr-requests", type=int, help="requests for perf/callgrind")
    ap.add_argument("--no-instructions", action="store_true", help="skip perf/callgrind")
    ap.add_argument("--discard-cpu", type=float, default=1.0,
                    help="discard a run if other processes used this many CPU-s (default 1)")
    ap.add_argument("--max-retries", type=int, default=2, help="re-runs of a discarded run")
    ap.add_argument("--retry-wait", type=float, default=5.0,
                    help="seconds to wait before re-running a discarded run")
    ap.add_argument("--idle-settle", type=float, default=1.0)
    ap.add_argument("--ready-timeout", type=float, default=30.0)
    ap.add_argument("--build-timeout", type=float, default=3000.0)
    ap.add_argument("--server-bin", help="use this hello-server binary instead of building")
    ap.add_argument("--out", help="results directory (default benches/results[/smoke])")
    args = ap.parse_args()
    d = dict(rounds=1, duration=2.0, warmup=0.5, startup_samples=3, instr_requests=200) \
        if args.smoke else \
        dict(rounds=5, duration=10.0, warmup=1.0, startup_samples=20, instr_requests=2000)
    for k, v in d.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    out_dir = Path(args.out) if args.out else BENCH_DIR / "results" / ("smoke" if args.smoke else "")
    out_dir.mkdir(parents=True, exist_ok=True)
    names = [n.strip() for n in args.peers.split(",") if n.strip()]
    bad = [n for n in names if n not in ALL_PEERS]
    if bad:
        raise HarnessError(f"unknown peer(s) {bad}; known: {ALL_PEERS}")
    cpus = sorted(os.sched_getaffinity(0))
    if not {SERVER_CPU, LOAD_CPU} <= set(cpus):
        raise HarnessError(f"need CPUs {LOAD_CPU} and {SERVER_CPU}, have {cpus}")
    for tool in ("wrk", "h2load", "nghttp") + (() if args.no_instructions else ("valgrind",)):
        if not shutil.which(tool):
            raise HarnessError(f"{tool} not found (benches/run.sh installs it)")
    os.sched_setaffinity(0, {LOAD_CPU})
    t_start = time.monotonic()

    peers = build_peers(names, args)
    runnable = [peers[n] for n in names if not peers[n].build_error]
    counters = {"discarded": 0}
    rounds: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    for n in names:
        if peers[n].build_error:
            rounds[n].append({"error": f"build: {peers[n].build_error}"})

    with tempfile.TemporaryDirectory(prefix="hello-bench-") as tmp:
        work = Path(tmp)
        for rnd in range(args.rounds):
            order = runnable[rnd % max(1, len(runnable)):] + runnable[:rnd % max(1, len(runnable))]
            log(f"round {rnd + 1}/{args.rounds}: {', '.join(p.name for p in order)}")
            for p in order:
                d = work / f"r{rnd}-{p.name}"
                d.mkdir()
                try:
                    rounds[p.name].append(peer_round(p, args, d, rnd, counters))
                except HarnessError as e:
                    log(f"  {p.name} FAILED: {e}")
                    rounds[p.name].append({"error": str(e), "round": rnd})
        # peers that at least start and answer get the startup/instruction phases
        healthy = [p for p in runnable if any("error" not in r for r in rounds[p.name])]

        log(f"startup: {args.startup_samples} samples per peer")
        startup, st_err = measure_startup(healthy, args.startup_samples, work)
        for name, e in st_err.items():
            log(f"  startup {name} FAILED: {e.splitlines()[0]}")
            rounds[name].append({"error": f"startup: {e}"})

        instr: dict[str, Any] = {}
        method = "skipped"
        if not args.no_instructions:
            use_perf = perf_works()
            method = ("perf stat -e instructions:u" if use_perf else
                      "callgrind Ir, perf instructions:u not supported here") + \
                f", {args.instr_requests} keep-alive requests on 1 connection (h2load --h1)"
            for p in healthy:
                d = work / f"instr-{p.name}"
                d.mkdir()
                log(f"instructions/request: {p.name} ({'perf' if use_perf else 'callgrind'})")
                try:
                    instr[p.name] = (instructions_perf if use_perf else instructions_callgrind)(
                        p, args.instr_requests, d)
                    log(f"  {instr[p.name]['per_request']:,.0f} instructions/request")
                except (HarnessError, OSError, subprocess.SubprocessError) as e:
                    log(f"  n/a: {str(e).splitlines()[0]}")
                    instr[p.name] = {"error": str(e).splitlines()[0]}

    res = {n: summarize(peers[n], rounds[n], startup.get(n), instr.get(n)) for n in names}
    doc = {
        "meta": {
            "mode": "smoke" if args.smoke else "full",
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "host": platform.node(), "kernel": platform.release(), "cpus": os.cpu_count(),
            "rounds": args.rounds, "duration_s": args.duration, "warmup_s": args.warmup,
            "startup_samples": args.startup_samples, "discard_cpu_s": args.discard_cpu,
            "discarded_runs": counters["discarded"], "instructions_method": method,
            "server_cpu": SERVER_CPU, "load_cpu": LOAD_CPU,
            "scenarios": SCENARIO_LABEL, "tools": tool_versions(),
            "elapsed_s": round(time.monotonic() - t_start, 1),
        },
        "peers": res,
    }
    doc["targets"] = evaluate_targets(res)
    (out_dir / "results.json").write_text(json.dumps(doc, indent=1) + "\n")
    write_markdown(doc, out_dir / "results.md")
    try:
        write_chart(doc, out_dir / "chart.png")
    except ImportError as e:
        raise HarnessError(f"matplotlib missing ({e}); benches/run.sh installs it") from e
    log(f"wrote {out_dir}/results.json, results.md, chart.png "
        f"({doc['meta']['elapsed_s']:.0f}s, {counters['discarded']} discarded runs)")

    failed = [n for n in names if res[n]["errors"]]
    for n in failed:
        log(f"FAILED {n}: {res[n]['errors'][0].splitlines()[0]}")
    if args.smoke:
        print(f"bench smoke: {len(names) - len(failed)} passed, {len(failed)} failed", flush=True)
    else:
        print((Path(out_dir) / "results.md").read_text())
    return 1 if failed else 0


if __name__ == "__main__":
    def on_signal(signum: int, _frame: Any) -> None:
        print(f"bench: stopped by signal {signum}; stopping servers", file=sys.stderr)
        sys.exit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    try:
        rc = main()
    except HarnessError as e:
        print(f"bench: error: {e}", file=sys.stderr)
        rc = 2
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        rc = 130
    finally:
        Server.stop_all()
    sys.exit(rc)
