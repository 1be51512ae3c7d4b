# The substituter benchmark's closure: `parts` store paths of about `megabytes` MB of the host's
# real files each (a stride of /usr/lib), under `salt` so that each run gets new store paths it
# may copy to a binary cache and delete from the store. Content depends on the machine, as
# benchmarks/pkgs' hostfiles do.
{
  system ? builtins.currentSystem,
  busybox ? "/bin/busybox",
  hostLib ? "/usr/lib",
  salt ? "",
  parts ? 10,
  megabytes ? 20,
  ...
}:

let
  test = import ../../tests/pkgs { inherit system busybox; };
  part =
    index:
    builtins.derivation {
      name = "substituter-part${toString index}-1.0";
      inherit system salt;
      builder = "${test.busybox}/bin/busybox";
      args = [
        "sh"
        "-e"
        "-c"
        ''
          find ${hostLib} -type f -perm -004 -exec stat -c '%s %n' {} + 2>/dev/null \
            | awk 'NF == 2' | LC_ALL=C sort -k 2,2 \
            | awk -v parts=${toString parts} -v part=${toString index} -v limit=${toString megabytes}000000 \
                '(NR % parts) == part && $1 <= limit / 4 && total + $1 <= limit { total += $1; print $2 }' \
            > chosen
          mkdir -p $out
          sed 's|^/||' chosen | (cd / && cpio -o -H newc 2>/dev/null) | (cd $out && cpio -i -d 2>/dev/null)
        ''
      ];
      PATH = "${test.busybox}/bin";
    };
in
builtins.listToAttrs (
  builtins.genList (index: {
    name = "part${toString index}";
    value = part index;
  }) parts
)
