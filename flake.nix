{
  description = "hello-server: a production hyper \"Hello, World!\" HTTP server";

  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05";

    crane.url = "github:ipetkov/crane/v0.23.4";

    rust-overlay = {
      url = "github:oxalica/rust-overlay";
      inputs.nixpkgs.follows = "nixpkgs";
    };

    # Plain data for cargo-audit; pinned in flake.lock so the audit is reproducible.
    advisory-db = {
      url = "github:rustsec/advisory-db";
      flake = false;
    };
  };

  outputs =
    {
      self,
      nixpkgs,
      crane,
      rust-overlay,
      advisory-db,
    }:
    let
      inherit (nixpkgs) lib;

      # The product is a static musl binary in a Linux image, and the VM tests
      # need a Linux builder, so only Linux systems are offered.
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];

      forAllSystems = f: lib.genAttrs systems (system: f perSystem.${system});

      imageConfig = lib.importJSON ./nix/image-config.json;

      # Everything the image labels need from the flake itself; computed here
      # because only flake.nix can see `self`.
      buildInfo = import ./nix/build-info.nix {
        inherit lib;
        lastModified = self.lastModified or 0;
        # A clean tree has `rev`; a dirty one has `dirtyRev` ("<rev>-dirty");
        # a tree outside git has neither and gets no revision label.
        revision = self.rev or self.dirtyRev or null;
      };

      nixosModule = import ./nix/module.nix { inherit (self) packages; };

      perSystem = lib.genAttrs systems (
        system:
        let
          pkgs = import nixpkgs {
            inherit system;
            overlays = [ rust-overlay.overlays.default ];
          };

          rust = pkgs.callPackage ./nix/rust.nix { inherit crane; };

          hello-server = pkgs.callPackage ./nix/package.nix {
            inherit (rust) craneLib commonArgs cargoArtifacts;
          };

          image = pkgs.callPackage ./nix/image.nix {
            inherit hello-server imageConfig;
            inherit (buildInfo) created revision;
          };

          vmTest =
            backend:
            pkgs.callPackage ./nix/tests/oci-container.nix {
              inherit backend image imageConfig;
            };

          # Cargo-level checks; also the inputs of the dev shell.
          cargoChecks = {
            inherit hello-server;
            clippy = pkgs.callPackage ./nix/checks/clippy.nix {
              inherit (rust) craneLib commonArgs cargoArtifacts;
            };
            rustfmt = pkgs.callPackage ./nix/checks/rustfmt.nix {
              inherit (rust) craneLib commonArgs;
            };
            cargo-audit = pkgs.callPackage ./nix/checks/cargo-audit.nix {
              inherit (rust) craneLib commonArgs;
              inherit advisory-db;
            };
            cargo-deny = pkgs.callPackage ./nix/checks/cargo-deny.nix {
              inherit (rust) craneLib commonArgs;
            };
          };
        in
        {
          inherit
            pkgs
            rust
            hello-server
            image
            cargoChecks
            ;

          checks = cargoChecks // {
            image-budget = pkgs.callPackage ./nix/checks/image-budget.nix {
              inherit image imageConfig;
            };
            vm-docker = vmTest "docker";
            vm-podman = vmTest "podman";
            vm-module = pkgs.callPackage ./nix/tests/module.nix { module = nixosModule; };
          };
        }
      );
    in
    {
      packages = forAllSystems (s: {
        default = s.hello-server;
        inherit (s) hello-server image;
      });

      checks = forAllSystems (s: s.checks);

      nixosModules.default = nixosModule;

      devShells = forAllSystems (s: {
        default = s.pkgs.callPackage ./nix/dev-shell.nix {
          inherit (s.rust) craneLib;
          checks = s.cargoChecks;
        };
      });

      formatter = forAllSystems (s: s.pkgs.nixfmt);

      # Written here, not callPackage'd: `nix flake check` rejects any app
      # attribute but type, program and meta, and callPackage adds `override`.
      apps = forAllSystems (s: {
        default = {
          type = "app";
          program = lib.getExe s.hello-server;
          meta.description = "Run hello-server (listens on HELLO_LISTEN, default 0.0.0.0:8080)";
        };
      });
    };
}
