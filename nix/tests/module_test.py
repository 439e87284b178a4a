# Driver script for nix/tests/module.nix; the Nix file prepends PORT.

UNIT = "hello-server.service"
URL = f"http://server:{PORT}/"


def assert_serves():
    server.wait_for_open_port(PORT)
    body = client.wait_until_succeeds(f"curl -fsS --max-time 5 {URL}", timeout=60)
    assert body == "Hello, World!", f"GET / answered {body!r}"


start_all()
server.wait_for_unit(UNIT)
client.wait_for_unit("multi-user.target")

with subtest("the client gets the greeting through the opened firewall"):
    assert_serves()

with subtest("the health endpoint answers"):
    body = client.succeed(f"curl -fsS --max-time 5 http://server:{PORT}/healthz")
    assert body == "ok", f"GET /healthz answered {body!r}"

with subtest("the service runs as an unprivileged dynamic user"):
    pid = server.succeed(f"systemctl show --property=MainPID --value {UNIT}").strip()
    uids = server.succeed(f"grep '^Uid:' /proc/{pid}/status").split()[1:]
    assert "0" not in uids, f"service process uids are {uids}"
    caps = server.succeed(f"grep '^CapEff:' /proc/{pid}/status").split()[1]
    assert int(caps, 16) == 0, f"service has effective capabilities {caps}"

with subtest("stopping the service is graceful"):
    server.succeed(f"systemctl stop {UNIT}")
    result = server.succeed(f"systemctl show --property=Result --value {UNIT}").strip()
    assert result == "success", f"unit stopped with Result={result}"
    status = server.succeed(f"systemctl show --property=ExecMainStatus --value {UNIT}").strip()
    assert status == "0", f"server exited with status {status}"

with subtest("the service starts again and serves"):
    server.succeed(f"systemctl start {UNIT}")
    server.wait_for_unit(UNIT)
    assert_serves()
