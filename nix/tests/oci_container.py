# Driver script for nix/tests/oci-container.nix; the Nix file prepends
# BACKEND, UNIT, PORT and IMAGE_USER.

CONTAINER = "hello-server"
URL = f"http://server:{PORT}/"

# How each engine reports a container's exit in `events` (docker: "die" with
# an exitCode attribute; podman: "died" with ContainerExitCode).
EXIT_EVENTS = {
    "docker": "--filter event=die --format '{{.Actor.Attributes.exitCode}}'",
    "podman": "--filter event=died --format '{{.ContainerExitCode}}'",
}[BACKEND]


def inspect(template):
    """One field of the running container, via the engine's Go template."""
    return server.succeed(f"{BACKEND} inspect --format '{template}' {CONTAINER}").strip()


def assert_serves():
    # No wait_for_open_port on the server: podman publishes through firewall
    # rules, not a listening proxy, so only a real client request tells.
    body = client.wait_until_succeeds(f"curl -fsS --max-time 5 {URL}", timeout=90)
    assert body == "Hello, World!", f"GET / answered {body!r}"


start_all()
server.wait_for_unit(UNIT)
client.wait_for_unit("multi-user.target")

with subtest("the client gets the greeting"):
    assert_serves()

with subtest("the engine reports the container healthy"):
    health = "{{.State.Health.Status}}"
    server.wait_until_succeeds(
        f"test \"$({BACKEND} inspect --format '{health}' {CONTAINER})\" = healthy",
        timeout=90,
    )

with subtest("the process inside the container is not root"):
    configured = inspect("{{.Config.User}}")
    assert configured == IMAGE_USER, f"container user is {configured!r}"
    pid = inspect("{{.State.Pid}}")
    uids = server.succeed(f"grep '^Uid:' /proc/{pid}/status").split()[1:]
    expected_uid = IMAGE_USER.split(":")[0]
    assert uids == [expected_uid] * 4, f"container process uids are {uids}"

with subtest("stopping the unit is graceful and fast"):
    since = server.succeed("date +%s").strip()
    elapsed_ms = int(
        server.succeed(
            f"start=$(date +%s%N); systemctl stop {UNIT}; end=$(date +%s%N);"
            " echo $(( (end - start) / 1000000 ))"
        )
    )
    assert elapsed_ms < 2000, f"systemctl stop took {elapsed_ms} ms"
    # Result=success rules out a stop timeout, SIGKILL and a failing exit.
    result = server.succeed(f"systemctl show --property=Result --value {UNIT}").strip()
    assert result == "success", f"unit stopped with Result={result}"
    until = int(server.succeed("date +%s")) + 1
    exit_codes = server.succeed(
        f"{BACKEND} events --since {since} --until {until}"
        f" --filter container={CONTAINER} {EXIT_EVENTS}"
    ).split()
    assert exit_codes == ["0"], f"container exit codes on stop: {exit_codes}"

with subtest("the unit starts again and serves"):
    server.succeed(f"systemctl start {UNIT}")
    server.wait_for_unit(UNIT)
    assert_serves()
