# NixOS module for hello-server. A function of the flake's `packages` first,
# so `services.hello-server.package` defaults to this flake's build for the
# host's system without an overlay.
{ packages }:
{
  config,
  lib,
  pkgs,
  ...
}:
let
  cfg = config.services.hello-server;
  inherit (pkgs.stdenv.hostPlatform) system;

  # IPv6 literals need brackets in "host:port".
  listen =
    if lib.hasInfix ":" cfg.listenAddress then
      "[${cfg.listenAddress}]:${toString cfg.port}"
    else
      "${cfg.listenAddress}:${toString cfg.port}";

  # Ports below 1024 need CAP_NET_BIND_SERVICE; every other capability stays dropped.
  needsBindCapability = cfg.port < 1024;
in
{
  options.services.hello-server = {
    enable = lib.mkEnableOption "hello-server, an HTTP service that answers \"Hello, World!\"";

    package = lib.mkOption {
      type = lib.types.package;
      default =
        packages.${system}.default
          or (throw "hello-server: no package for ${system}; set services.hello-server.package");
      defaultText = lib.literalExpression "hello-server.packages.\${system}.default";
      description = "The hello-server package to run.";
    };

    listenAddress = lib.mkOption {
      type = lib.types.str;
      default = "0.0.0.0";
      example = "::";
      description = ''
        IP address to listen on. `::` listens on IPv6 (and IPv4, unless the
        kernel's `bindv6only` is set).
      '';
    };

    port = lib.mkOption {
      type = lib.types.port;
      default = 8080;
      description = "TCP port to listen on.";
    };

    openFirewall = lib.mkOption {
      type = lib.types.bool;
      default = false;
      description = "Whether to open {option}`services.hello-server.port` in the firewall.";
    };

    environment = lib.mkOption {
      type = lib.types.attrsOf lib.types.str;
      default = { };
      example = {
        HELLO_LOG_FORMAT = "json";
        HELLO_SHUTDOWN_GRACE = "5s";
        RUST_LOG = "info";
      };
      description = ''
        Extra environment for the server, e.g. `HELLO_LOG_FORMAT`,
        `HELLO_SHUTDOWN_GRACE`, `HELLO_MAX_CONNECTIONS`,
        `HELLO_HEADER_READ_TIMEOUT` or `RUST_LOG`. `HELLO_LISTEN` is set
        from {option}`services.hello-server.listenAddress` and
        {option}`services.hello-server.port`.
      '';
    };
  };

  config = lib.mkIf cfg.enable {
    networking.firewall.allowedTCPPorts = lib.mkIf cfg.openFirewall [ cfg.port ];

    systemd.services.hello-server = {
      description = "hello-server HTTP service";
      wantedBy = [ "multi-user.target" ];
      after = [ "network.target" ];

      environment = cfg.environment // {
        HELLO_LISTEN = listen;
      };

      serviceConfig = {
        ExecStart = lib.getExe' cfg.package "hello-server";
        # "exec" reports a missing or unrunnable binary as a start failure.
        Type = "exec";
        Restart = "on-failure";
        # The server drains on SIGTERM and exits 0 (within
        # HELLO_SHUTDOWN_GRACE, 8 s by default), so the default KillSignal
        # and stop timeout already give it a graceful stop.

        # No state, no config files, no secrets: a transient user is enough.
        DynamicUser = true;
        UMask = "0077";

        CapabilityBoundingSet = if needsBindCapability then [ "CAP_NET_BIND_SERVICE" ] else [ "" ];
        AmbientCapabilities = if needsBindCapability then [ "CAP_NET_BIND_SERVICE" ] else [ "" ];
        NoNewPrivileges = true;
        # A user namespace would strip the ambient capability again.
        PrivateUsers = !needsBindCapability;

        ProtectSystem = "strict";
        ProtectHome = true;
        PrivateTmp = true;
        PrivateDevices = true;
        DevicePolicy = "closed";
        ProtectHostname = true;
        ProtectClock = true;
        ProtectKernelTunables = true;
        ProtectKernelModules = true;
        ProtectKernelLogs = true;
        ProtectControlGroups = true;
        ProtectProc = "invisible";
        # Only /proc/<pid> is left; Rust's std reads /proc/self/* (cgroup
        # CPU quota for available_parallelism), which that keeps.
        ProcSubset = "pid";

        # Only IP sockets may be created. socketpair() is not filtered, and
        # that is all tokio's signal handling uses; logs go to the inherited
        # stdout, so no AF_UNIX socket is needed.
        RestrictAddressFamilies = [
          "AF_INET"
          "AF_INET6"
        ];
        RestrictNamespaces = true;
        RestrictRealtime = true;
        RestrictSUIDSGID = true;
        LockPersonality = true;
        # Rust code never needs writable-and-executable memory (no JIT).
        MemoryDenyWriteExecute = true;
        RemoveIPC = true;
        SystemCallArchitectures = "native";
        SystemCallFilter = [
          "@system-service"
          "~@privileged"
          "~@resources"
        ];
        # A filtered call fails with EPERM instead of killing the server.
        SystemCallErrorNumber = "EPERM";
      };
    };
  };
}
