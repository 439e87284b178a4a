"""Check that a dockerTools image archive holds the static binary and nothing else.

Usage: image_budget.py IMAGE_TARBALL
Settings come from the environment (set by nix/checks/image-budget.nix):
budgetBytes, binaryPath, storeDir, expectedUser, expectedEntrypoint.
"""

import json
import os
import re
import struct
import sys
import tarfile


def fail(message):
    print(f"image-budget: FAIL: {message}", file=sys.stderr)
    sys.exit(1)


def normalise(name):
    # Layer tarballs name entries "./bin/x", "bin/x" or "/bin/x".
    name = name.lstrip("/")
    while name.startswith("./"):
        name = name[2:]
    return name.rstrip("/")


def has_interpreter(elf):
    """True when a 64-bit ELF file has a PT_INTERP program header (is dynamic)."""
    if elf[4] != 2:
        fail("binary is not a 64-bit ELF file")
    endian = "<" if elf[5] == 1 else ">"
    (phoff,) = struct.unpack_from(endian + "Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from(endian + "HH", elf, 0x36)
    PT_INTERP = 3
    return any(
        struct.unpack_from(endian + "I", elf, phoff + i * phentsize)[0] == PT_INTERP
        for i in range(phnum)
    )


def main():
    image_path = sys.argv[1]
    budget = int(os.environ["budgetBytes"])
    binary = normalise(os.environ["binaryPath"])
    store_dir = normalise(os.environ["storeDir"])
    # A real store reference: the store directory, then a 32-character hash
    # in Nix's base-32 alphabet (no e, o, u, t). Crane's scrubbed
    # "/nix/store/eeee..." placeholders therefore do not match.
    store_ref = re.compile(
        re.escape(("/" + store_dir).encode()) + rb"/[0-9a-df-np-sv-z]{32}"
    )

    tarball_size = os.path.getsize(image_path)
    if tarball_size > budget:
        fail(f"image tarball is {tarball_size} bytes, budget {budget}")

    files = {}
    with tarfile.open(image_path, mode="r:*") as outer:
        manifest = json.load(outer.extractfile("manifest.json"))
        if len(manifest) != 1:
            fail(f"expected one image in the archive, found {len(manifest)}")
        config = json.load(outer.extractfile(manifest[0]["Config"]))
        layers = manifest[0]["Layers"]
        for layer_name in layers:
            with tarfile.open(
                fileobj=outer.extractfile(layer_name), mode="r:*"
            ) as layer:
                for member in layer:
                    path = normalise(member.name)
                    if path == store_dir or path.startswith(store_dir + "/"):
                        fail(f"layer {layer_name} holds store path /{path}")
                    if member.isdir():
                        continue
                    if not member.isfile():
                        fail(f"layer {layer_name} holds non-regular file /{path}")
                    if path != binary:
                        fail(f"layer {layer_name} holds unexpected file /{path}")
                    files[path] = layer.extractfile(member).read()

    if list(files) != [binary]:
        fail(f"binary /{binary} not found in any layer")
    content = files[binary]
    if len(content) > budget:
        fail(f"/{binary} is {len(content)} bytes, budget {budget}")
    if not content.startswith(b"\x7fELF"):
        fail(f"/{binary} is not an ELF file")
    # The image has no libc or loader, so the binary must not ask for one.
    if has_interpreter(content):
        fail(f"/{binary} has a program interpreter; it must be static")
    match = store_ref.search(content)
    if match:
        fail(f"/{binary} references {match.group().decode()}")

    runtime = config.get("config", {})
    if runtime.get("User") != os.environ["expectedUser"]:
        fail(f"image User is {runtime.get('User')!r}")
    if runtime.get("Entrypoint") != json.loads(os.environ["expectedEntrypoint"]):
        fail(f"image Entrypoint is {runtime.get('Entrypoint')!r}")

    print(
        f"image-budget: ok: {len(layers)} layer(s), /{binary} {len(content)} bytes,"
        f" tarball {tarball_size} bytes, budget {budget}"
    )


if __name__ == "__main__":
    main()
