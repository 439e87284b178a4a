# `nix develop`: the pinned toolchain plus the inputs of every cargo check,
# so clippy, rustfmt, cargo-audit and cargo-deny run here as in the checks.
# The VM tests are left out: their inputs are QEMU and the test driver.
{
  craneLib,
  checks,
  cargo-audit,
  cargo-deny,
  nixfmt,
}:
craneLib.devShell {
  inherit checks;
  packages = [
    cargo-audit
    cargo-deny
    nixfmt
  ];
}
