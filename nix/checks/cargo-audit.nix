# Known vulnerabilities in Cargo.lock, against the advisory database pinned
# in flake.lock (so the result changes only when the lock is bumped).
{
  craneLib,
  commonArgs,
  advisory-db,
}:
craneLib.cargoAudit {
  inherit (commonArgs) src;
  inherit advisory-db;
}
