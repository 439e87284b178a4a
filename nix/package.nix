# hello-server as a fully static musl binary; the test suite runs in the
# build (the sandbox has loopback, and tests bind 127.0.0.1:0).
{
  craneLib,
  commonArgs,
  cargoArtifacts,
  lib,
}:
craneLib.buildPackage (
  commonArgs
  // {
    inherit cargoArtifacts;

    # The image copies the binary without its closure, so the build must
    # prove the binary needs no store path. Crane already rewrites the
    # toolchain and vendored-source paths that panic messages embed to
    # /nix/store/eeee... (not a valid store hash); this turns any reference
    # left over into a build failure instead of a broken image.
    allowedReferences = [ ];

    meta = {
      description = "A production-grade HTTP \"Hello, World!\" service on hyper";
      mainProgram = "hello-server";
      license = [
        lib.licenses.mit
        lib.licenses.asl20
      ];
    };
  }
)
