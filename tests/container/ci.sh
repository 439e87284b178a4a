#!/usr/bin/env bash
# The container image in a real engine, for CI machines without Nix:
#   1. installs docker.io, buildah, skopeo, podman, jq (apt) if missing;
#   2. starts a private dockerd (own data-root, exec-root and socket; no
#      bridge, no iptables), stopped by its PID on exit, whatever happens;
#   3. builds the fallback image (tests/container/build-image.sh);
#   4. runs the conformance suite against it (cargo test --test container)
#      with HELLO_REQUIRE_ENGINE=1, so a missing engine fails instead of
#      skipping;
#   5. checks the build is reproducible (tests/container/repro.sh).
# Exits non-zero if the suite or the reproducibility check fails. Root, no stdin.
set -euo pipefail

say() { printf 'container-ci: %s\n' "$*"; }

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
export PATH="$HOME/.cargo/bin:$PATH"

# --- tools ---------------------------------------------------------------------
need=()
for pair in dockerd:docker.io buildah:buildah skopeo:skopeo podman:podman jq:jq gzip:gzip git:git; do
  command -v "${pair%%:*}" >/dev/null || need+=("${pair#*:}")
done
if [ "${#need[@]}" -gt 0 ]; then
  say "installing ${need[*]} (apt)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq "${need[@]}" >/dev/null
fi

# --- a private dockerd -----------------------------------------------------------
state=$(mktemp -d "${TMPDIR:-/tmp}/hello-ci-docker.XXXXXX")
out=$(mktemp -d "${TMPDIR:-/tmp}/hello-ci-image.XXXXXX")
dockerd_pid=
stop_dockerd() {
  local status=$?
  if [ -n "$dockerd_pid" ] && kill -0 "$dockerd_pid" 2>/dev/null; then
    say "stopping dockerd (pid $dockerd_pid)"
    kill -TERM "$dockerd_pid" 2>/dev/null || true
    for _ in $(seq 1 150); do
      kill -0 "$dockerd_pid" 2>/dev/null || break
      sleep 0.2
    done
    if kill -0 "$dockerd_pid" 2>/dev/null; then
      say "dockerd did not stop in 30 s; killing it"
      kill -KILL "$dockerd_pid" 2>/dev/null || true
    fi
    wait "$dockerd_pid" 2>/dev/null || true
  fi
  rm -rf "$out"
  # dockerd leaves its network namespace mounted under the exec-root.
  awk -v dir="$state/" 'index($2, dir) == 1 { print $2 }' /proc/mounts | sort -r |
    while read -r mnt; do umount "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null || true; done
  rm -rf "$state" 2>/dev/null || say "could not remove $state"
  exit "$status"
}
trap stop_dockerd EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

say "starting dockerd in $state"
dockerd \
  --data-root "$state/data" \
  --exec-root "$state/exec" \
  --host "unix://$state/docker.sock" \
  --pidfile "$state/docker.pid" \
  --bridge=none --iptables=false --ip-masq=false \
  >"$state/dockerd.log" 2>&1 &
dockerd_pid=$!
export DOCKER_HOST="unix://$state/docker.sock"

ready=
for _ in $(seq 1 300); do # up to 60 s
  if ! kill -0 "$dockerd_pid" 2>/dev/null; then
    tail -n 30 "$state/dockerd.log" >&2
    say "FAIL: dockerd exited"
    exit 1
  fi
  if [ -S "$state/docker.sock" ] && docker version >/dev/null 2>&1; then
    ready=1
    break
  fi
  sleep 0.2
done
if [ -z "$ready" ]; then
  tail -n 30 "$state/dockerd.log" >&2
  say "FAIL: dockerd did not answer on $DOCKER_HOST within 60 s"
  exit 1
fi
say "dockerd $(docker version --format '{{.Server.Version}}') ready"

# --- build, test, reproduce --------------------------------------------------------
image="$out/hello-server.tar"
say "building the image"
tests/container/build-image.sh "$image"

status=0
say "conformance suite"
HELLO_REQUIRE_ENGINE=1 HELLO_REQUIRE_PODMAN="${HELLO_REQUIRE_PODMAN:-1}" HELLO_SERVER_IMAGE="$image" \
  cargo test --locked --test container -- --test-threads=1 || status=1

say "reproducibility"
if [ -z "$(git status --porcelain)" ]; then
  # The tree is HEAD exactly: one more build in a clone is the second build.
  tests/container/repro.sh "$image" || status=1
else
  say "the work tree differs from HEAD; building HEAD twice in clones"
  tests/container/repro.sh || status=1
fi

[ "$status" -eq 0 ] && say "ok" || say "FAILED"
exit "$status"
