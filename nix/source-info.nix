# The package source at one revision, fetched, and the Nix it demands: nixpkgs names its minimum
# Nix in `lib/minver.nix` (and its default.nix aborts on an older one, which would otherwise look
# like every package failing). Checked once per revision before any name is resolved.
#
#   nix-instantiate --eval --strict --json --read-write-mode nix/source-info.nix \
#     --argstr srcType path|git|tarball --argstr src <path or url> --argstr rev <commit or "">
#
# => { "nixVersion": "2.8.0", "minVersion": "2.18" or null, "satisfied": bool }
{
  srcType,
  src,
  rev ? "",
}:

let
  source = toString (import ./fetch-source.nix { inherit srcType src rev; });
  # A path source may name the package set's file rather than its directory.
  candidates = [
    "${source}/lib/minver.nix"
    "${dirOf source}/lib/minver.nix"
  ];
  present = builtins.filter builtins.pathExists candidates;
  minVersion = if present == [ ] then null else import (builtins.head present);
in
{
  nixVersion = builtins.nixVersion;
  inherit minVersion;
  satisfied = minVersion == null || builtins.compareVersions minVersion builtins.nixVersion != 1;
}
