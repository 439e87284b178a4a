# `cargo fmt --check` with the pinned toolchain's rustfmt.
{
  craneLib,
  commonArgs,
}:
craneLib.cargoFmt {
  inherit (commonArgs) src;
}
