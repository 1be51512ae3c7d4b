# Debian 12's dependency shapes as a package set (benchmarks/shapes.py; its snapshot
# benchmarks/data/debian-12-shapes.json): one package per Debian package, named as Debian names
# it, holding its installed size of generated data (tests/pkgs/synthetic-data.awk: a third
# repeated text, the rest hex, about 0.4 of its size once gzipped, as binaries are) and
# referencing exactly its dependencies at run time, so that its closure is the snapshot's.
#
# Called like nixpkgs. Nothing is evaluated or built until an image names a package: the whole
# snapshot is 3.3 GB of data.
{
  system ? builtins.currentSystem,
  busybox ? "/bin/busybox",
  ...
}:

let
  test = import ../../tests/pkgs { inherit system busybox; };
  shell = "${test.busybox}/bin/busybox";
  snapshot = builtins.fromJSON (builtins.readFile ../data/debian-12-shapes.json);
  # Store path names allow [A-Za-z0-9+._?=-]; Debian versions also hold ':' and '~'.
  storeName =
    name: version: "${name}-${builtins.replaceStrings [ ":" "~" ] [ "_" "_" ] version}";
  package =
    name: entry:
    builtins.derivation {
      name = storeName name entry.version;
      inherit system;
      builder = shell;
      args = [
        "sh"
        "-e"
        "-c"
        ''
          mkdir -p $out/share/data $out/nix-support
          seed=$(printf '%d' 0x${builtins.substring 0 7 (builtins.hashString "sha256" name)})
          awk -v seed=$seed -v size=${toString entry.installed_size} -v name=${storeName name ""} \
            -f ${../../tests/pkgs/synthetic-data.awk} > $out/share/data/data.txt
          printf '%s\n' ${toString (map (dep: packages.${dep}) entry.depends)} \
            > $out/nix-support/runtime-dependencies
        ''
      ];
      PATH = "${test.busybox}/bin";
    };
  packages = builtins.mapAttrs package snapshot.packages;
in
# Every image also gets the CA bundle and /etc/services data: the test set's, a few kB.
packages // { inherit (test) cacert iana-etc; }
