# The benchmark package set: the test package set (tests/pkgs) plus `hostfiles`, store paths holding
# real files copied from the host's /usr/lib at build time, as a stand-in for a real closure.
#
# With a non-empty `salt` (passed by a wrapper expression), `synthetic` is the test set's generated
# family with the same DAG and contents but new derivations, so nothing of it is in the store yet:
# a store-cold build without garbage-collecting a store that others share.
#
# The host's files are read by the builder (Debian's nix-bin builds without a sandbox), not
# imported at evaluation time, so evaluating this set stays cheap. Their content therefore depends
# on the machine: the same machine gives the same store paths and bytes, another machine other
# bytes, and throughput figures are per machine. Kept out of tests/pkgs/all.nix, which CI builds.
{
  system ? builtins.currentSystem,
  busybox ? "/bin/busybox",
  hostLib ? "/usr/lib",
  salt ? "",
  ...
}:

let
  test = import ../../tests/pkgs { inherit system busybox; };
  shell = "${test.busybox}/bin/busybox";
  run =
    name: script:
    builtins.derivation {
      inherit name system;
      builder = shell;
      args = [
        "sh"
        "-e"
        "-c"
        script
      ];
      PATH = "${test.busybox}/bin";
    };

  # A stride sample of the host's readable regular files, in path order, until `megabytes` MB:
  # a mix of everything under hostLib (libraries, binaries, scripts, data) rather than its
  # alphabetically first directories. Each line is "<part> <path>", parts of about equal size
  # (no file is over half a part, so one file cannot fill several parts).
  fileList =
    megabytes: parts:
    run "host-files-${toString megabytes}mb-${toString parts}-list" ''
      find ${hostLib} -type f -perm -004 -exec stat -c '%s %n' {} + 2>/dev/null \
        | awk 'NF == 2' | LC_ALL=C sort -k 2,2 > all
      awk -v limit=${toString megabytes}000000 -v parts=${toString parts} '
        $1 <= limit / parts / 2 { n++; size[n] = $1; path[n] = $2; total += $1 }
        END {
          if (total < limit) { print "hostfiles: only " total " bytes under ${hostLib}" > "/dev/stderr"; exit 1 }
          stride = int(total / limit); if (stride < 1) stride = 1
          for (offset = 0; offset < stride && taken < limit; offset++)
            for (i = 1 + offset; i <= n && taken < limit; i += stride) { chosen[i] = 1; taken += size[i] }
          for (i = 1; i <= n; i++) if (i in chosen) {
            print int(before * parts / taken), path[i]; before += size[i]
          }
        }' all > $out
    '';

  part =
    megabytes: parts: index:
    run "host-files-${toString megabytes}mb-part${toString index}" ''
      awk -v part=${toString index} '$1 == part { print $2 }' ${fileList megabytes parts} > mine
      mkdir -p $out
      cd /
      sed 's|^/||' $OLDPWD/mine | cpio -o -H newc 2>/dev/null | (cd $out && cpio -i -d 2>/dev/null)
    '';

  # `parts` store paths of about `megabytes / parts` MB each, plus one package depending on all.
  hostFiles =
    megabytes: parts:
    let
      paths = builtins.genList (part megabytes parts) parts;
      named = builtins.listToAttrs (
        builtins.genList (index: {
          name = "part${toString index}";
          value = builtins.elemAt paths index;
        }) parts
      );
    in
    named
    // {
      all = run "host-files-${toString megabytes}mb" ''
        mkdir -p $out/nix-support
        printf '%s\n' ${toString paths} > $out/nix-support/runtime-dependencies
      '';
    };

  saltedPackage =
    {
      pname,
      version,
      script,
    }:
    builtins.derivation {
      name = "${pname}-${version}";
      inherit system salt;
      builder = shell;
      args = [
        "sh"
        "-e"
        "-c"
        script
      ];
      PATH = "${test.busybox}/bin";
    }
    // {
      inherit pname version;
    };
in
test
// {
  synthetic =
    if salt == "" then
      test.synthetic
    else
      import ../../tests/pkgs/synthetic.nix {
        mkPackage = saltedPackage;
        inherit (test) busybox;
      };

  hostfiles = {
    # The pipeline benchmark's closure, its quick-mode slice, and one 1 GB path for peak RSS.
    full = hostFiles 320 8;
    quick = hostFiles 8 4;
    gigabyte = hostFiles 1024 1;
  };
}
