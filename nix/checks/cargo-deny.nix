# Licences, banned crates and crate sources per deny.toml at the repository
# root (commonCargoSources keeps every .toml, so it is in `src`). crane's
# default checks leave out `advisories`, which would need the network;
# cargo-audit covers them offline.
{
  craneLib,
  commonArgs,
}:
craneLib.cargoDeny {
  inherit (commonArgs) src;
}
