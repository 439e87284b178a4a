# The image under a real container engine (docker or podman), locked down the
# way production runs it, probed from a second machine.
{
  testers,
  backend,
  image,
  imageConfig,
}:
let
  port = 8080;
  imageRef = "${imageConfig.name}:${imageConfig.tag}";
  # The unit name oci-containers gives a container named `hello-server`.
  unit = "${backend}-hello-server.service";
in
testers.runNixOSTest {
  name = "hello-server-${backend}";

  nodes = {
    server = {
      virtualisation.oci-containers = {
        inherit backend;
        containers.hello-server = {
          image = imageRef;
          # Loaded from the Nix store before start, so no registry is needed.
          imageFile = image;
          ports = [ "${toString port}:${toString port}" ];
          extraOptions = [
            "--read-only"
            "--cap-drop=ALL"
            "--security-opt=no-new-privileges"
          ];
        };
      };
      networking.firewall.allowedTCPPorts = [ port ];
    };

    client =
      { pkgs, ... }:
      {
        environment.systemPackages = [ pkgs.curl ];
      };
  };

  # Settings first, then the script kept as a plain .py file so
  # .ci/nix-static-checks can run pyflakes on it.
  testScript = ''
    BACKEND = ${builtins.toJSON backend}
    UNIT = ${builtins.toJSON unit}
    PORT = ${toString port}
    IMAGE_USER = ${builtins.toJSON imageConfig.config.User}
  ''
  + builtins.readFile ./oci_container.py;
}
