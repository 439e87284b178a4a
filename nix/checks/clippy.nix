# Lints every target (lib, bin, tests, benches) and fails on any warning;
# warnings are denied here rather than in the source (see STYLE.md).
{
  craneLib,
  commonArgs,
  cargoArtifacts,
}:
craneLib.cargoClippy (
  commonArgs
  // {
    inherit cargoArtifacts;
    cargoClippyExtraArgs = "--all-targets -- --deny warnings";
  }
)
