# The substituter tests' package set: store paths in the shapes a NAR must carry into a layer
# (executables, symlinks relative, absolute and dangling, empty directories, names over 100
# characters, a deep tree, names that sort differently as paths than per directory), with runtime
# references between them.
#
# Every derivation carries `salt` (the tests pass a fresh one through a wrapper expression), so
# its outputs are new store paths that the tests may copy to a binary cache and then delete from
# the store without touching what other tests use.
{
  system ? builtins.currentSystem,
  busybox ? "/bin/busybox",
  salt ? "",
  ...
}:

let
  test = import ./. { inherit system busybox; };
  package =
    pname: script:
    builtins.derivation {
      name = "${pname}-1.0";
      inherit system salt;
      builder = "${test.busybox}/bin/busybox";
      args = [
        "sh"
        "-e"
        "-c"
        script
      ];
      PATH = "${test.busybox}/bin";
    }
    // {
      inherit pname;
      version = "1.0";
    };
  long = "a-name-longer-than-the-one-hundred-characters-a-plain-ustar-header-holds-so-that-pax-records-carry-it";

  pkgs = {
    # A copy of busybox of its own, so that every path of the closure carries the salt.
    busybox = package "busybox" ''
      mkdir -p $out/bin
      cp ${test.busybox}/bin/busybox $out/bin/busybox
      chmod 0555 $out/bin/busybox
      for applet in sh cat ls env; do ln -s busybox $out/bin/$applet; done
    '';
    bashInteractive = package "bash-interactive" ''
      mkdir -p $out/bin
      printf '#!%s\nexec %s "$@"\n' ${pkgs.busybox}/bin/sh ${pkgs.busybox}/bin/sh > $out/bin/bash
      chmod 0555 $out/bin/bash
      ln -s ${pkgs.busybox}/bin/env $out/bin/env
    '';
    cacert = package "cacert" ''
      mkdir -p $out/etc/ssl/certs
      printf 'certificate ${salt}\n' > $out/etc/ssl/certs/ca-bundle.crt
    '';
    iana-etc = package "iana-etc" ''
      mkdir -p $out/etc
      printf 'tcp 6 TCP\n' > $out/etc/protocols
    '';
    base = package "base" ''
      mkdir -p $out/lib
      i=0
      while [ $i -lt 64 ]; do printf 'line %d of base ${salt}\n' $i; i=$((i+1)); done > $out/lib/libbase.txt
    '';
    # The shapes: `include/foo` (a directory) beside `include/foo.h` and `include/foo-1`, which
    # the tar puts before `include/foo/...` and the NAR after it.
    shapes = package "shapes" ''
      mkdir -p $out/bin $out/include/foo/bar $out/include/foo-1 $out/share/empty "$out/share/with space"
      printf '#!${pkgs.busybox}/bin/sh\necho shapes\n' > $out/bin/shapes
      chmod 0555 $out/bin/shapes
      printf 'header\n' > $out/include/foo.h
      printf 'inner\n' > $out/include/foo/bar/inner.h
      printf 'versioned\n' > $out/include/foo-1/x.h
      printf 'spaced\n' > "$out/share/with space/file"
      printf 'long\n' > $out/share/${long}
      ln -s ${long} $out/share/link-to-long
      ln -s ../include/foo.h $out/share/relative-link
      ln -s ${pkgs.base}/lib/libbase.txt $out/share/absolute-link
      ln -s /nowhere/at/all $out/share/dangling-link
      d=$out/share/deep
      for level in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do d=$d/level-$level; done
      mkdir -p $d
      printf 'deep\n' > $d/bottom
      : > $out/share/empty-file
      head -c 300000 ${pkgs.busybox}/bin/busybox > $out/share/binary-blob
    '';
    # A store path that is a single file, not a directory.
    single = package "single" ''
      printf 'one file\n' > $out
    '';
  };
in
pkgs
