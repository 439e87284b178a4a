# Unpacks the image tarball and fails unless the image holds exactly the
# binary (directories aside), no store path, a binary free of store
# references, the configured runtime config, and at most 2 MiB.
{
  runCommand,
  python3,
  image,
  imageConfig,
}:
runCommand "hello-server-image-budget"
  {
    nativeBuildInputs = [ python3 ];
    budgetBytes = 2 * 1024 * 1024;
    inherit (imageConfig) binaryPath;
    storeDir = builtins.storeDir;
    expectedUser = imageConfig.config.User;
    expectedEntrypoint = builtins.toJSON imageConfig.config.Entrypoint;
  }
  ''
    python3 ${./image_budget.py} ${image}
    touch $out
  ''
