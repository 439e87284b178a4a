#!/usr/bin/env bash
# Build the hello-server image without Nix: a docker-archive tagged as
# nix/image-config.json says, with the same config as the Nix image.
#
#   tests/container/build-image.sh OUT.tar
#
# Env:
#   HELLO_SERVER_BIN   use this static binary instead of building one
#   SOURCE_DATE_EPOCH  override the commit time used for every timestamp
#
# Needs: cargo (musl target), git, jq, buildah, skopeo (Debian packages).
# Reproducible: the same commit gives the same image ID and the same tarball,
# whatever directory it is built in and whenever.
set -euo pipefail

die() { echo "build-image: $*" >&2; exit 1; }
[ $# -eq 1 ] || die "usage: $0 OUT.tar"
for tool in jq buildah skopeo git cargo; do
  command -v "$tool" >/dev/null || die "$tool not found (Debian: apt-get install jq buildah skopeo git)"
done

# Relative paths are the caller's: resolve them before moving to the root.
out_dir=$(cd "$(dirname "$1")" && pwd) || die "no such directory: $(dirname "$1")"
out="$out_dir/$(basename "$1")"
if [ -n "${HELLO_SERVER_BIN:-}" ]; then
  HELLO_SERVER_BIN=$(realpath "$HELLO_SERVER_BIN") || die "no such file: $HELLO_SERVER_BIN"
fi
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
cfg="$root/nix/image-config.json"
[ -f "$cfg" ] || die "missing $cfg"

# --- provenance: everything derives from the commit -------------------------
if git rev-parse --verify -q HEAD >/dev/null; then
  revision=$(git rev-parse HEAD)
  # Same rule as a flake's dirtyRev: tracked changes (staged or not) make it dirty.
  git update-index -q --refresh >/dev/null 2>&1 || true
  git diff-index --quiet HEAD -- || revision="$revision-dirty"
  : "${SOURCE_DATE_EPOCH:=$(git log -1 --format=%ct HEAD)}"
else
  # As the flake does outside git: no revision label.
  echo "build-image: warning: not in a git commit; no revision label, created from SOURCE_DATE_EPOCH or 0" >&2
  revision=
  : "${SOURCE_DATE_EPOCH:=0}"
fi
export SOURCE_DATE_EPOCH
created=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)
version=$(cargo metadata --no-deps --format-version 1 --manifest-path "$root/Cargo.toml" |
  jq -r '.packages[] | select(.name == "hello-server") | .version')
[ -n "$version" ] || die "cannot read the package version from Cargo.toml"

# --- the static binary -------------------------------------------------------
target=x86_64-unknown-linux-musl
if [ -n "${HELLO_SERVER_BIN:-}" ]; then
  bin=$HELLO_SERVER_BIN
else
  if [ -n "${RUSTFLAGS:-}${CARGO_ENCODED_RUSTFLAGS:-}" ]; then
    echo "build-image: ignoring RUSTFLAGS: the image is built with the project's flags only" >&2
    unset RUSTFLAGS CARGO_ENCODED_RUSTFLAGS
  fi
  cargo_home=${CARGO_HOME:-$HOME/.cargo}
  target_dir=${CARGO_TARGET_DIR:-$root/target}
  # Strip every build path from the binary, so another checkout directory
  # (or another user's cargo home) gives the same bytes. Not RUSTFLAGS: that
  # would replace .cargo/config.toml's target rustflags (which the Nix build
  # uses too); a --config array is appended to them instead. Of several
  # matching prefixes rustc applies the last, so the specific one comes last.
  remap=$(jq -cn --arg root "$root" --arg home "$cargo_home" --arg target "$target_dir" '[
    "--remap-path-prefix=\($root)=/build",
    "--remap-path-prefix=\($home)=/cargo",
    "--remap-path-prefix=\($target)=/build/target"]')
  echo "build-image: cargo build --release --locked --target $target" >&2
  cargo build --release --locked --target "$target" --bin hello-server \
    --config "target.$target.rustflags=$remap" >&2
  bin=$target_dir/$target/release/hello-server
fi
[ -x "$bin" ] || die "no executable binary at $bin"
if LC_ALL=C grep -aqF -e "$root/" -e "$HOME/" "$bin"; then
  die "$bin still holds a build path ($root or $HOME); not reproducible"
fi

# --- the image, from scratch, with buildah ------------------------------------
work=$(mktemp -d "${TMPDIR:-/tmp}/hello-image.XXXXXX")
bh=(buildah --root "$work/root" --runroot "$work/run" --storage-driver vfs)
cleanup() {
  "${bh[@]}" rm -a >/dev/null 2>&1 || true
  "${bh[@]}" rmi -a -f >/dev/null 2>&1 || true
  rm -rf "$work" 2>/dev/null || true
}
trap cleanup EXIT

name=$(jq -er .name "$cfg")
tag=$(jq -er .tag "$cfg")
bin_path=$(jq -er .binaryPath "$cfg")

ns_to_duration() { echo "$(jq -er "$1" "$cfg")ns"; } # Go duration syntax: exact

config_args=(
  --entrypoint "$(jq -ce .config.Entrypoint "$cfg")"
  --user "$(jq -er .config.User "$cfg")"
  # buildah 1.28 splits this on whitespace: "CMD a b" -> ["CMD","a","b"].
  --healthcheck "$(jq -er '.config.Healthcheck.Test | if .[0] == "CMD" and all(.[]; test("^\\S+$")) then join(" ") else error("healthcheck must be exec form without spaces") end' "$cfg")"
  --healthcheck-interval "$(ns_to_duration .config.Healthcheck.Interval)"
  --healthcheck-timeout "$(ns_to_duration .config.Healthcheck.Timeout)"
  --healthcheck-start-period "$(ns_to_duration .config.Healthcheck.StartPeriod)"
  --healthcheck-retries "$(jq -er .config.Healthcheck.Retries "$cfg")"
  --os linux --arch amd64
  --label "org.opencontainers.image.version=$version"
  --label "org.opencontainers.image.created=$created"
)
[ -z "$revision" ] || config_args+=(--label "org.opencontainers.image.revision=$revision")
while IFS= read -r port; do config_args+=(--port "$port"); done < <(jq -r '.config.ExposedPorts | keys[]' "$cfg")
while IFS= read -r -d '' kv; do config_args+=(--label "$kv"); done < <(jq -j '.config.Labels | to_entries[] | "\(.key)=\(.value)\u0000"' "$cfg")

# Not BUILDAH_FORMAT=docker: with it, buildah 1.28 writes a random Hostname into
# the config. The working container keeps both formats' settings; the docker
# one, HEALTHCHECK included, is what --format docker commits. Its warning that
# OCI has no HEALTHCHECK is therefore noise, and filtered.
ctr=$("${bh[@]}" from --quiet scratch)
"${bh[@]}" add --quiet --chown 0:0 --chmod 0755 "$ctr" "$bin" "$bin_path"
"${bh[@]}" config "${config_args[@]}" "$ctr" 2> >(grep -v 'HEALTHCHECK is not supported for OCI' >&2)
# --timestamp sets the image's created time and clamps every file's mtime in the layer.
"${bh[@]}" commit --quiet --format docker --timestamp "$SOURCE_DATE_EPOCH" \
  --identity-label=false --omit-history --rm "$ctr" "dir:$work/image" >/dev/null

# buildah 1.28 (Debian 12) still writes the random ID of its working container
# into the docker config ("container"); buildah >= 1.30 leaves it out when
# --timestamp is given. Drop it the same way, and re-address the config blob.
manifest="$work/image/manifest.json"
old_digest=$(jq -er .config.digest "$manifest")
jq -cj 'del(.container)' "$work/image/${old_digest#sha256:}" >"$work/config.json"
new_hex=$(sha256sum "$work/config.json" | cut -d' ' -f1)
rm "$work/image/${old_digest#sha256:}"
mv "$work/config.json" "$work/image/$new_hex"
jq -c --arg d "sha256:$new_hex" --argjson s "$(stat -c %s "$work/image/$new_hex")" \
  '.config.digest = $d | .config.size = $s' "$manifest" >"$manifest.new"
mv "$manifest.new" "$manifest"

rm -f "$out"
skopeo copy --quiet "dir:$work/image" "docker-archive:$out:$name:$tag"

image_id=$(tar -xOf "$out" manifest.json | jq -r '.[0].Config' | sed 's/\.json$//; s/^/sha256:/')
echo "build-image: $out: $name:$tag id=$image_id revision=$revision created=$created" >&2
echo "$image_id"
