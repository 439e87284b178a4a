# Known vulnerabilities in Cargo.lock, against the advisory database pinned
# in flake.lock (so the result changes only when the lock is bumped).
{
  craneLib,
  commonArgs,
  advisory-db,
  lib,
}:
craneLib.cargoAudit {
  inherit (commonArgs) src;
  inherit advisory-db;
  # crane cannot read the name from the audit's filtered source (only
  # Cargo.lock survives it) and would call the check crate-audit-0.0.0.
  pname = "hello-server";
  inherit ((lib.importTOML ../../Cargo.toml).package) version;
}
