# The NixOS module on a server machine, probed from a client machine.
{
  testers,
  module,
}:
let
  port = 8080;
in
testers.runNixOSTest {
  name = "hello-server-module";

  nodes = {
    server = {
      imports = [ module ];
      services.hello-server = {
        enable = true;
        inherit port;
        openFirewall = true;
        environment.HELLO_LOG_FORMAT = "json";
      };
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
    PORT = ${toString port}
  ''
  + builtins.readFile ./module_test.py;
}
