# The OCI image: the static binary and nothing else (no shell, no libc, no
# store paths). Name, tag, path and runtime config come from
# nix/image-config.json; the version, revision and creation labels from the
# flake, so the image is reproducible from the commit alone.
{
  dockerTools,
  lib,
  hello-server,
  imageConfig,
  # RFC 3339 UTC commit time; also the image's `created`, never "now".
  created,
  # Commit id (a dirty tree's ends in "-dirty"), or null outside git.
  revision,
}:
let
  inherit (imageConfig) binaryPath;

  labels =
    imageConfig.config.Labels
    // {
      "org.opencontainers.image.version" = hello-server.version;
      "org.opencontainers.image.created" = created;
    }
    // lib.optionalAttrs (revision != null) {
      "org.opencontainers.image.revision" = revision;
    };
in
dockerTools.buildLayeredImage {
  inherit (imageConfig) name tag;
  inherit created;

  config = imageConfig.config // {
    Labels = labels;
  };

  # `contents` would add the package's store path (and closure) and link
  # /bin into it; instead no store path goes in, and the binary is copied
  # as a plain file into the customisation layer.
  includeStorePaths = false;
  extraCommands = ''
    mkdir -p .${builtins.dirOf binaryPath}
    cp ${lib.getExe hello-server} .${binaryPath}
  '';
}
