# The crane library on the pinned toolchain, the filtered source, and the
# arguments every cargo derivation shares (so the dependency artifacts are
# built once and reused by the package, clippy and the tests).
{
  crane,
  lib,
  pkgs,
  stdenv,
}:
let
  inherit (stdenv.hostPlatform) system;

  # Rust names the static target after the CPU; one entry per flake system.
  muslTarget =
    {
      x86_64-linux = "x86_64-unknown-linux-musl";
      aarch64-linux = "aarch64-unknown-linux-musl";
    }
    .${system} or (throw "hello-server: no musl target known for ${system}");

  # rust-toolchain.toml is the single source of the channel and components.
  # Its `targets` lists only x86_64 musl, so the list is replaced per system;
  # `override` keeps the file's components (makeOverridable merges the
  # arguments of successive overrides).
  craneLib = (crane.mkLib pkgs).overrideToolchain (
    p:
    (p.rust-bin.fromRustupToolchainFile ../rust-toolchain.toml).override {
      targets = [ muslTarget ];
    }
  );

  root = ../.;

  # Manifests, the lock file and every .rs and .toml file (deny.toml and
  # rust-toolchain.toml included), plus what the test suite may read at run
  # time: all of tests/ (helper scripts) and the shared image definition.
  # README or other nix/ edits do not rebuild.
  wanted = lib.fileset.unions [
    (craneLib.fileset.commonCargoSources root)
    ../tests
    ./image-config.json
  ];

  # Not part of the build: cargo output (a `path:` flake, unlike a git one,
  # also holds untracked files, whose generated .rs files must not reach the
  # build) and the benchmark peers, separate crates whose edits should not
  # rebuild the server.
  excluded = lib.fileset.unions [
    (lib.fileset.maybeMissing ../target)
    (lib.fileset.maybeMissing ../benches)
  ];

  src = lib.fileset.toSource {
    inherit root;
    fileset = lib.fileset.difference wanted excluded;
  };

  commonArgs = {
    inherit src;
    strictDeps = true;

    # .cargo/config.toml (in `src`: commonCargoSources keeps every .toml)
    # gives the musl targets +crt-static and a non-PIE static link, the same
    # flags as a plain `cargo build --target ...-musl`.
    CARGO_BUILD_TARGET = muslTarget;
  };
in
{
  inherit craneLib commonArgs;
  cargoArtifacts = craneLib.buildDepsOnly commonArgs;
}
