# Forces one attribute path of a package set without tryEval, so that Nix prints the message that
# resolve.nix's tryEval dropped (a removed alias's "has been renamed to ...", a package's check):
# the caller reads it from stderr. Succeeds (=> true) only when nothing throws.
#
#   nix-instantiate --eval --strict --json nix/explain.nix --argstr srcType ... --argstr src ... \
#     --argstr rev ... --argstr system ... --argstr config '{}' --argstr attrPath '["oldAlias"]'
{
  srcType,
  src,
  rev ? "",
  system,
  config ? "{}",
  attrPath,
}:

let
  pkgs = import ./package-set.nix {
    inherit
      srcType
      src
      rev
      system
      config
      ;
  };
  value = builtins.foldl' (set: name: set.${name}) pkgs (builtins.fromJSON attrPath);
  isDerivation = builtins.isAttrs value && (value.type or null) == "derivation";
in
builtins.seq value (
  if isDerivation then builtins.deepSeq [ value.drvPath value.outPath ] true else true
)
