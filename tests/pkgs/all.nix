# Every package of the test set that builds, for `nix-build tests/pkgs/all.nix`: the set itself
# also holds attributes that throw, abort, fail or never finish on purpose.
{ ... }@args:
let
  pkgs = import ./. args;
in
{
  inherit (pkgs)
    busybox
    hello
    bashInteractive
    coreutils
    moreutils
    nano
    cacert
    iana-etc
    libbase
    libfoo
    libbar
    app
    tool
    multi
    docsOnly
    SDL2
    _1password
    python3Packages
    emptydir
    synthetic
    syntheticAll
    ;
  haskellPackages = pkgs.haskellPackages // { recurseForDerivations = true; };
  mixed = { inherit (pkgs.mixed) good; recurseForDerivations = true; };
  deeplyNested = pkgs.deeply.Nested // { recurseForDerivations = true; };
}
