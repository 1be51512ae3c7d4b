# The default output path (and derivation) of every top-level package of a package set, and of
# packages in nested sets marked `recurseForDerivations`: the roots of popularity counting.
#
#   nix-instantiate --eval --strict --json nix/popcount.nix \
#     --argstr srcType path|git|tarball --argstr src <path or url> --argstr rev <commit or ""> \
#     --argstr system x86_64-linux
#
# => [ { "drvPath": ..., "path": ... } ], sorted by path. Attributes that throw, and packages
# whose evaluation throws (broken, unfree, removed), are skipped.
{
  srcType,
  src,
  rev ? "",
  system,
}:

let
  inherit (builtins) tryEval;

  pkgs = import ./package-set.nix {
    inherit
      srcType
      src
      rev
      system
      ;
  };

  rootsOf =
    value:
    let
      kind = tryEval (
        if !(builtins.isAttrs value) then
          "other"
        else if (value.type or null) == "derivation" then
          "derivation"
        else if (value.recurseForDerivations or false) == true then
          "set"
        else
          "other"
      );
      derivation = tryEval (builtins.deepSeq [ value.drvPath value.outPath ] {
        inherit (value) drvPath;
        path = value.outPath;
      });
    in
    if !kind.success then
      [ ]
    else if kind.value == "derivation" then
      (if derivation.success then [ derivation.value ] else [ ])
    else if kind.value == "set" then
      builtins.concatMap (name: rootsOf value.${name}) (builtins.attrNames value)
    else
      [ ];

  byPath = builtins.listToAttrs (
    map (root: {
      name = builtins.unsafeDiscardStringContext root.path;
      value = root;
    }) (rootsOf (pkgs // { recurseForDerivations = true; }))
  );
in
builtins.attrValues byPath
