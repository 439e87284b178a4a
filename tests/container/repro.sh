#!/usr/bin/env bash
# Proves the fallback image reproducible: builds it from HEAD in fresh clones
# in different temporary directories, one after the other (so minutes apart),
# and fails unless the image IDs (config digests) and the archives' sha256 are
# the same.
#
#   tests/container/repro.sh                 two clones, two builds
#   tests/container/repro.sh REFERENCE.tar   one clone, compared with an image
#                                            already built from a clean HEAD
#
# Needs what build-image.sh needs. CARGO_TARGET_DIR is ignored on purpose:
# each clone builds in its own target/, so the build paths differ too.
set -euo pipefail

say() { printf 'repro: %s\n' "$*" >&2; }
die() { say "FAIL: $*"; exit 1; }

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
head=$(git -C "$root" rev-parse --verify HEAD) || die "no commit to build"
reference=${1:-}
if [ -n "$reference" ]; then
  [ -f "$reference" ] || die "no such file: $reference"
  reference=$(cd "$(dirname "$reference")" && pwd)/$(basename "$reference")
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/hello-repro.XXXXXX")
trap 'rm -rf "$work"' EXIT

# image ID = the config digest named by the archive's manifest.json
image_id() { tar -xOf "$1" manifest.json | jq -r '"sha256:" + (.[0].Config | rtrimstr(".json"))'; }

build() { # DIR-NAME -> path of the archive
  local dir="$work/$1"
  git clone --quiet --no-hardlinks "$root" "$dir"
  git -C "$dir" checkout --quiet --detach "$head"
  [ -x "$dir/tests/container/build-image.sh" ] || die "build-image.sh is not committed at $head"
  say "building $head in $dir"
  (cd "$dir" && env -u CARGO_TARGET_DIR -u HELLO_SERVER_BIN tests/container/build-image.sh "$work/$1.tar" >/dev/null)
  echo "$work/$1.tar"
}

if [ -n "$reference" ]; then
  a=$reference
else
  a=$(build first)
fi
b=$(build second)

id_a=$(image_id "$a"); id_b=$(image_id "$b")
sum_a=$(sha256sum "$a" | cut -d' ' -f1); sum_b=$(sha256sum "$b" | cut -d' ' -f1)
say "A: id $id_a sha256 $sum_a ($a)"
say "B: id $id_b sha256 $sum_b ($b)"
if [ "$id_a" = "$id_b" ] && [ "$sum_a" = "$sum_b" ]; then
  say "reproducible: same image ID and same archive from two directories"
  exit 0
fi

# Say what differs, to make the fix obvious.
for x in a b; do
  mkdir -p "$work/unpacked-$x"
  tar -xf "${!x}" -C "$work/unpacked-$x"
done
cfg_a=$(tar -xOf "$a" manifest.json | jq -r '.[0].Config')
cfg_b=$(tar -xOf "$b" manifest.json | jq -r '.[0].Config')
diff <(jq -S . "$work/unpacked-a/$cfg_a") <(jq -S . "$work/unpacked-b/$cfg_b") >&2 || true
layers_a=$(tar -xOf "$a" manifest.json | jq -r '.[0].Layers[]')
layers_b=$(tar -xOf "$b" manifest.json | jq -r '.[0].Layers[]')
[ "$layers_a" = "$layers_b" ] || say "layers differ: $layers_a vs $layers_b (binary bytes or file metadata)"
die "not reproducible"
