# A tiny package set shaped like nixpkgs, buildable offline from a static busybox.
#
# It is called like nixpkgs (`import ./. { system; config = {}; overlays = []; }`) and exposes the
# shapes the registry must cope with: runtime dependency chains and diamonds, multi-output
# packages, upper-case and nested attribute paths, throwing and non-derivation attributes, a
# failing build, and a large seeded synthetic DAG for layering.
#
# Like nixpkgs it honours `config.allowUnfree` and `config.permittedInsecurePackages` (names with
# versions, "openssl-1.1.1w"): packages it refuses (unfree, insecure, broken, unsupported
# platform) say so in `meta.available` without throwing, and their store paths throw the message
# nixpkgs' check-meta.nix would. Removed aliases throw as nixpkgs' aliases.nix does.
{
  system ? builtins.currentSystem,
  busybox ? "/bin/busybox",
  config ? { },
  ...
}:

let
  # busybox picks its applet from argv[0]'s basename, so the builder must be a file literally
  # named `busybox`: import the directory holding it (with nothing else) rather than the file.
  # On a merged-/usr system /bin is a symlink, which `builtins.path` would store as a dangling
  # symlink; Nix has no readlink builtin, so try the merged-/usr location as well.
  busyboxName = baseNameOf busybox;
  isRealDirWithBusybox =
    dir:
    let
      parent = dirOf dir;
      entries = builtins.readDir parent;
      base = baseNameOf dir;
    in
    builtins.pathExists dir
    && (dir == "/" || (entries.${base} or null) == "directory")
    && ((builtins.readDir dir).${busyboxName} or null) == "regular";
  candidateDirs = [
    (dirOf busybox)
    ("/usr" + dirOf busybox)
  ];
  usableDirs = builtins.filter isRealDirWithBusybox candidateDirs;
  bootstrapDir =
    if usableDirs == [ ] then
      throw "tests/pkgs: ${busybox} is not a regular file in a real (non-symlinked) directory; pass busybox = <real path>"
    else
      builtins.head usableDirs;
  bootstrap = builtins.path {
    path = bootstrapDir;
    name = "busybox-bootstrap";
    filter = path: type: path == "${bootstrapDir}/${busyboxName}" && type == "regular";
  };

  # For aarch64-linux the busybox package holds a real aarch64 busybox (Debian's
  # busybox-static:arm64, unpacked here at test set-up by tests/aarch64.py, never committed);
  # the builder stays the x86_64 busybox, which Nix runs given `extra-platforms = aarch64-linux`.
  aarch64Dir = ./aarch64;
  aarch64Busybox =
    if builtins.pathExists (aarch64Dir + "/busybox") then
      builtins.path {
        path = aarch64Dir;
        name = "busybox-aarch64";
        filter = path: type: baseNameOf path == "busybox" && type == "regular";
      }
    else
      throw "tests/pkgs: no aarch64 busybox in tests/pkgs/aarch64 (tests/aarch64.py unpacks it)";
  allowUnfree = config.allowUnfree or false;
  permittedInsecurePackages = config.permittedInsecurePackages or [ ];

  # Why nixpkgs' check-meta.nix would refuse the package `name` (pname-version), in its words,
  # or null. Checked in nixpkgs' order: licence, broken, platform, vulnerabilities.
  refusalOf =
    name: meta:
    let
      package = "Package ‘${name}’ in tests/pkgs/default.nix";
      showList = items: "[ " + toString (map (item: ''"${item}"'') items) + " ]";
    in
    if !(meta.license.free or true) && !allowUnfree then
      ''
        ${package} has an unfree license (‘${meta.license.shortName}’), refusing to evaluate.

        a) To temporarily allow unfree packages, you can use an environment variable
           for a single invocation of the nix tools: NIXPKGS_ALLOW_UNFREE=1
        b) For `nixos-rebuild` you can set { nixpkgs.config.allowUnfree = true; }''
    else if meta.broken or false then
      "${package} is marked as broken, refusing to evaluate."
    else if meta ? platforms && !(builtins.elem system meta.platforms) then
      ''
        ${package} is not available on the requested hostPlatform:
          hostPlatform.system = "${system}"
          package.meta.platforms = ${showList meta.platforms}''
    else if
      (meta.knownVulnerabilities or [ ]) != [ ] && !(builtins.elem name permittedInsecurePackages)
    then
      ''
        ${package} is marked as insecure, refusing to evaluate.

        Known issues:
        ${builtins.concatStringsSep "" (map (issue: " - ${issue}\n") meta.knownVulnerabilities)}
        You can install it anyway by allowing this package, using the following methods:
           { nixpkgs.config.permittedInsecurePackages = [ "${name}" ]; }''
    else
      null;

  # meta.available tells a refused package without throwing; forcing its store paths throws.
  # meta is not part of the derivation, so store paths are the same either way.
  withMetaCheck =
    name: outputs: meta: drv:
    let
      refusal = refusalOf name meta;
      refused = throw refusal;
    in
    if refusal == null then
      drv // { meta = meta // { available = true; }; }
    else
      drv
      // builtins.listToAttrs (
        map (output: {
          name = output;
          value = refused;
        }) outputs
      )
      // {
        meta = meta // { available = false; };
        drvPath = refused;
        outPath = refused;
      };

  mkPackage =
    {
      pname,
      version,
      script,
      outputs ? [ "out" ],
      meta ? { },
    }:
    let
      drv = builtins.derivation {
        name = "${pname}-${version}";
        inherit system outputs;
        builder = "${bootstrap}/${busyboxName}";
        args = [
          "sh"
          "-e"
          "-c"
          script
        ];
        # Applets run without PATH lookups (busybox's standalone shell); PATH is set only so
        # that nothing falls back to the host.
        PATH = "${bootstrap}";
      };
    in
    withMetaCheck "${pname}-${version}" outputs meta (drv // { inherit pname version; });

  # A `bin/<name>` shell script that runs on busybox's sh.
  script = name: body: ''
    mkdir -p $out/bin
    printf '%s\n' '#!${pkgs.busybox}/bin/sh' ${body} > $out/bin/${name}
    chmod 0555 $out/bin/${name}
  '';

  # Text naming each dependency's store path, which makes it a runtime reference.
  dependencyFile = deps: ''
    mkdir -p $out/nix-support
    printf '%s\n' ${toString deps} > $out/nix-support/runtime-dependencies
  '';

  library =
    name: deps:
    mkPackage {
      pname = name;
      version = "1.0";
      script = ''
        mkdir -p $out/lib
        printf 'library ${name}\n' > $out/lib/${name}.txt
        ${dependencyFile deps}
      '';
    };

  pkgs = {
    busybox =
      if system == "aarch64-linux" then
        mkPackage {
          pname = "busybox";
          version = "static";
          # The aarch64 binary cannot run here to list its applets: the builder's list stands in.
          script = ''
            mkdir -p $out/bin
            cp ${aarch64Busybox}/busybox $out/bin/busybox
            chmod 0555 $out/bin/busybox
            cd $out/bin
            for applet in $(${bootstrap}/${busyboxName} --list); do
              [ "$applet" = busybox ] || ln -s busybox "$applet"
            done
          '';
        }
      else
        mkPackage {
          pname = "busybox";
          version = "static";
          script = ''
            mkdir -p $out/bin
            cp ${bootstrap}/${busyboxName} $out/bin/busybox
            chmod 0555 $out/bin/busybox
            cd $out/bin
            for applet in $(./busybox --list); do
              [ "$applet" = busybox ] || ln -s busybox "$applet"
            done
          '';
        };

    # Exists only for x86_64-linux: a multi-platform tag naming it builds for amd64 alone.
    x86only = if system == "x86_64-linux" then library "x86only" [ ] else throw "x86only: x86_64 only";

    hello = mkPackage {
      pname = "hello";
      version = "2.12";
      script = script "hello" "'echo \"Hello from nixery!\"'";
    };

    # Stand-ins for the packages that image name parsing adds.
    bashInteractive = mkPackage {
      pname = "bash-interactive";
      version = "5.2";
      script = ''
        ${script "bash" "'exec ${pkgs.busybox}/bin/sh \"$@\"'"}
        ln -s ${pkgs.busybox}/bin/sh $out/bin/sh
      '';
    };
    coreutils = mkPackage {
      pname = "coreutils";
      version = "9.5";
      script = ''
        mkdir -p $out/bin
        for tool in cat chmod cp date echo env false head ls mkdir mv pwd rm sleep sort tail touch true uname wc; do
          ln -s ${pkgs.busybox}/bin/busybox $out/bin/$tool
        done
      '';
    };
    moreutils = mkPackage {
      pname = "moreutils";
      version = "0.69";
      script = ''
        ${script "sponge" "'exec ${pkgs.busybox}/bin/cat > \"$1\"'"}
        ln -s ${pkgs.busybox}/bin/busybox $out/bin/ts
      '';
    };
    nano = mkPackage {
      pname = "nano";
      version = "8.0";
      script = script "nano" "'exec ${pkgs.busybox}/bin/vi \"$@\"'";
    };
    cacert = mkPackage {
      pname = "cacert";
      version = "3.95";
      script = ''
        mkdir -p $out/etc/ssl/certs
        printf '%s\n' '-----BEGIN CERTIFICATE-----' 'bml4ZXJ5LXRlc3QtY2VydGlmaWNhdGU=' '-----END CERTIFICATE-----' \
          > $out/etc/ssl/certs/ca-bundle.crt
      '';
    };
    iana-etc = mkPackage {
      pname = "iana-etc";
      version = "20240318";
      script = ''
        mkdir -p $out/etc
        printf 'ip 0 IP\ntcp 6 TCP\nudp 17 UDP\n' > $out/etc/protocols
        printf 'http 80/tcp\nhttps 443/tcp\n' > $out/etc/services
      '';
    };

    # Runtime dependencies: a diamond (app -> libfoo, libbar -> libbase) under a chain
    # (tool -> app).
    libbase = library "libbase" [ ];
    libfoo = library "libfoo" [ pkgs.libbase ];
    libbar = library "libbar" [ pkgs.libbase ];
    app = mkPackage {
      pname = "app";
      version = "1.0";
      script = ''
        ${script "app" "'echo app uses ${pkgs.libfoo} and ${pkgs.libbar}'"}
      '';
    };
    tool = library "tool" [ pkgs.app ];

    # Every output has content; `bin` and `dev` reference `out`. `man` is listed in
    # outputsToInstall to check that documentation outputs are dropped.
    multi = mkPackage {
      pname = "multi";
      version = "1.0";
      outputs = [
        "out"
        "dev"
        "bin"
        "man"
      ];
      meta.outputsToInstall = [
        "bin"
        "man"
      ];
      script = ''
        mkdir -p $out/lib $dev/include $bin/bin $man/share/man/man1
        printf 'multi library\n' > $out/lib/libmulti.txt
        printf '/* uses %s */\n' $out > $dev/include/multi.h
        printf '#!${pkgs.busybox}/bin/sh\necho multi from %s\n' $out > $bin/bin/multi
        chmod 0555 $bin/bin/multi
        printf 'multi(1)\n' > $man/share/man/man1/multi.1
      '';
    };
    # outputsToInstall holds only documentation, so the default output is installed.
    docsOnly = mkPackage {
      pname = "docs-only";
      version = "1.0";
      outputs = [
        "out"
        "doc"
      ];
      meta.outputsToInstall = [ "doc" ];
      script = ''
        mkdir -p $out/bin $doc/share/doc
        printf 'program\n' > $out/bin/docs-only
        printf 'documentation\n' > $doc/share/doc/README
      '';
    };

    # Attribute path shapes.
    SDL2 = library "SDL2" [ ];
    _1password = library "1password" [ ];
    haskellPackages = {
      ShellCheck = library "ShellCheck" [ pkgs.libbase ];
    };
    python3Packages = {
      recurseForDerivations = true;
      numpy = library "python3-numpy" [ pkgs.libbase ];
    };
    deeply = {
      Nested = {
        Leaf = library "deeply-nested-leaf" [ ];
      };
    };
    notADerivation = {
      foo = 1;
    };
    oldAlias = throw "oldAlias was removed";
    # `bomb` aborts (which tryEval cannot catch): resolving anything that forces it fails the
    # whole evaluation.
    mixed = {
      bad = throw "mixed.bad was removed";
      bomb = abort "mixed.bomb must never be forced";
      good = library "mixed-good" [ ];
    };

    # Refused as nixpkgs refuses them: each evaluates its meta fine, its store paths throw.
    terraform = mkPackage {
      pname = "terraform";
      version = "1.9.0";
      meta.license = {
        free = false;
        shortName = "bsl11";
      };
      script = script "terraform" "'echo terraform'";
    };
    openssl_1_1 = mkPackage {
      pname = "openssl";
      version = "1.1.1w";
      meta.knownVulnerabilities = [
        "OpenSSL 1.1 is end of life since 2023-09-11"
        "CVE-2023-5678"
      ];
      script = script "openssl" "'echo openssl 1.1.1w'";
    };
    markedBroken = mkPackage {
      pname = "marked-broken";
      version = "1.0";
      meta.broken = true;
      script = script "marked-broken" "'echo never'";
    };
    darwinOnly = mkPackage {
      pname = "darwin-only";
      version = "1.0";
      meta.platforms = [
        "x86_64-darwin"
        "aarch64-darwin"
      ];
      script = script "darwin-only" "'echo darwin'";
    };
    # Removed aliases, in the words of nixpkgs' aliases.nix.
    oldHello = throw "'oldHello' has been renamed to/replaced by 'hello'";
    dropped = throw "'dropped' has been removed because it was unmaintained upstream";
    # Evaluation errors that tryEval cannot catch: an abort, and a missing attribute. In a set
    # that popularity counting does not recurse into, which they would stop.
    failing = {
      aborts = abort "aborts: this package aborts evaluation on purpose";
      needsMissing = library "needs-missing" [ pkgs.doesNotExist ];
    };

    broken = mkPackage {
      pname = "broken";
      version = "1.0";
      script = ''
        echo "broken: configuring" >&2
        echo "broken: compiling frobnicator.c" >&2
        echo "broken: error: frobnicator.c:42: expected ';'" >&2
        exit 1
      '';
    };

    emptydir = mkPackage {
      pname = "emptydir";
      version = "1.0";
      script = ''
        mkdir -p $out/var/empty $out/bin $out/share
        printf '#!${pkgs.busybox}/bin/sh\necho run\n' > $out/bin/run
        chmod 0555 $out/bin/run
        printf 'data\n' > $out/share/data.txt
        chmod 0444 $out/share/data.txt
      '';
    };

    synthetic = import ./synthetic.nix {
      inherit mkPackage;
      inherit (pkgs) busybox;
    };

    # One package whose closure is the whole synthetic DAG (300+ paths).
    syntheticAll = library "synthetic-all" (
      map (name: pkgs.synthetic.${name}) (
        builtins.filter (name: name != "recurseForDerivations") (builtins.attrNames pkgs.synthetic)
      )
    );

    # Not recursed into (no recurseForDerivations), so whole-set builds never start these.
    testing = {
      # Builds for ten minutes: for timeouts.
      slow = mkPackage {
        pname = "slow";
        version = "1.0";
        script = ''
          echo "slow: started" >&2
          sleep 600
          mkdir $out
        '';
      };
    };
  };
in
pkgs
