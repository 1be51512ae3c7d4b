# The package set a source names, called the way nixpkgs expects: shared by resolve.nix and
# popcount.nix. `config` is nixpkgs' config as JSON ({"allowUnfree": true,
# "permittedInsecurePackages": [...]}); "{}" is what nixpkgs gets when nothing is allowed.
{
  srcType,
  src,
  rev ? "",
  system,
  config ? "{}",
}:

let
  source = import ./fetch-source.nix { inherit srcType src rev; };

  imported = import source;

  # Pass only the arguments a package set declares, unless it declares none (`pkgs: ...` or
  # `{ ... }: ...`), whose arguments functionArgs cannot reveal. nixpkgs declares all three.
  packageSetArgs = {
    inherit system;
    config = builtins.fromJSON config;
    overlays = [ ];
  };
  declaredArgs = builtins.functionArgs imported;
in
if builtins.isFunction imported then
  imported (
    if declaredArgs == { } then packageSetArgs else builtins.intersectAttrs declaredArgs packageSetArgs
  )
else
  imported
