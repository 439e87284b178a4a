# Labels the image takes from the flake's own source: the commit time as an
# RFC 3339 UTC string (also the image's `created`, so rebuilds are
# reproducible and never stamped "now") and the revision.
{
  lib,
  # Unix seconds of the last commit (`self.lastModified`).
  lastModified,
  # `self.rev`, `self.dirtyRev`, or null outside git.
  revision,
}:
let
  pad = lib.fixedWidthNumber 2;

  # Howard Hinnant's days-to-civil algorithm (public domain,
  # https://howardhinnant.github.io/date_algorithms.html#civil_from_days),
  # written for non-negative inputs so Nix's truncating `/` is floor division.
  civilFromDays =
    days:
    let
      z = days + 719468;
      era = z / 146097;
      doe = z - era * 146097;
      yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
      doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
      mp = (5 * doy + 2) / 153;
      month = if mp < 10 then mp + 3 else mp - 9;
    in
    {
      year = yoe + era * 400 + (if month <= 2 then 1 else 0);
      inherit month;
      day = doy - (153 * mp + 2) / 5 + 1;
    };

  toRfc3339 =
    seconds:
    let
      days = seconds / 86400;
      secondOfDay = seconds - days * 86400;
      date = civilFromDays days;
      hour = secondOfDay / 3600;
      minute = lib.mod secondOfDay 3600 / 60;
      second = lib.mod secondOfDay 60;
    in
    "${toString date.year}-${pad date.month}-${pad date.day}T${pad hour}:${pad minute}:${pad second}Z";
in
assert lib.assertMsg (
  builtins.isInt lastModified && lastModified >= 0
) "build-info: lastModified must be a non-negative integer, got ${toString lastModified}";
{
  created = toRfc3339 lastModified;
  inherit revision;
}
