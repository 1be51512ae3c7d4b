# The test package set behind a `lib/minver.nix` that demands a newer Nix than Debian 12's 2.8,
# as nixpkgs has demanded Nix >= 2.18 since August 2025; its default.nix aborts like nixpkgs'.
# Used to check that the registry tells a too-old Nix apart from a failed build.
let
  requiredVersion = import ./lib/minver.nix;
in
if !builtins ? nixVersion || builtins.compareVersions requiredVersion builtins.nixVersion == 1 then
  abort ''
    This version of Nixpkgs requires Nix >= ${requiredVersion}, please upgrade:

    - If you are running NixOS, `nixos-rebuild' can be used to upgrade your system.
  ''
else
  import ../pkgs
