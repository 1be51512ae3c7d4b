# Resolves package names (dotted attribute paths) against a package set in one evaluation.
#
#   nix-instantiate --eval --strict --json --read-write-mode nix/resolve.nix \
#     --argstr srcType path|git|tarball --argstr src <path or url> --argstr rev <commit or ""> \
#     --argstr system x86_64-linux --argstr names '["git", "python3Packages.numpy"]'
#
# => { "found": [ { "name", "attrPath", "drvPath", "outputs": { <output>: <store path> } } ],
#      "notFound": [ <name> ] }
#
# --read-write-mode makes evaluation write the .drv files that realising needs.
#
# Uses builtins only, so it works for nixpkgs and for any package set shaped like it. Only the
# requested attribute paths are forced: package sets are full of attributes that throw or abort
# when forced (removed aliases, broken packages), and forcing unrelated ones would be slow too.
{
  srcType,
  src,
  rev ? "",
  system,
  names,
}:

let
  inherit (builtins)
    attrNames
    elem
    filter
    head
    length
    tail
    tryEval
    ;

  pkgs = import ./package-set.nix {
    inherit
      srcType
      src
      rev
      system
      ;
  };

  # Nix 2.8 has no builtins.toLower.
  upper = [ "A" "B" "C" "D" "E" "F" "G" "H" "I" "J" "K" "L" "M" "N" "O" "P" "Q" "R" "S" "T" "U" "V" "W" "X" "Y" "Z" ];
  lower = [ "a" "b" "c" "d" "e" "f" "g" "h" "i" "j" "k" "l" "m" "n" "o" "p" "q" "r" "s" "t" "u" "v" "w" "x" "y" "z" ];
  toLower = builtins.replaceStrings upper lower;

  # Forces `value` (to weak head normal form only) and tells whether that gave an attribute
  # set; a `throw` on the way counts as "no".
  isForcedAttrs =
    value:
    let
      forced = tryEval (builtins.isAttrs value);
    in
    forced.success && forced.value;

  # The attribute of `set` that `component` names: exact match first, else the first (attrNames
  # is sorted) whose lower case matches. attrNames and `?` do not force attribute values.
  matchAttr =
    set: component:
    if set ? ${component} then
      component
    else
      let
        wanted = toLower component;
        matches = filter (name: toLower name == wanted) (attrNames set);
      in
      if matches == [ ] then null else head matches;

  # => { value; attrPath; } or null when some level is missing, throws or is not a set.
  walk =
    value: attrPath: components:
    if components == [ ] then
      { inherit value attrPath; }
    else if !(isForcedAttrs value) then
      null
    else
      let
        key = matchAttr value (head components);
      in
      if key == null then null else walk value.${key} (attrPath ++ [ key ]) (tail components);

  isDerivation =
    value:
    let
      checked = tryEval (isForcedAttrs value && (value.type or null) == "derivation");
    in
    checked.success && checked.value;

  # Forces `value` completely; null if that throws.
  strictOrNull =
    value:
    let
      forced = tryEval (builtins.deepSeq value value);
    in
    if forced.success then forced.value else null;

  documentationOutputs = [ "man" "doc" "devdoc" "info" ];

  # `pkg.dev` asks for exactly that output; otherwise what the package says to install, minus
  # documentation, falling back to its default output.
  selectOutputs =
    drv: lastAttr:
    let
      outputs = strictOrNull (drv.outputs or [ "out" ]);
      outputName = strictOrNull (drv.outputName or "out");
      toInstall = strictOrNull (drv.meta.outputsToInstall or [ ]);
      installable = filter (output: elem output outputs && !(elem output documentationOutputs)) (
        if builtins.isList toInstall then toInstall else [ ]
      );
    in
    if !(builtins.isList outputs) || !(builtins.isString outputName) then
      null
    else if elem lastAttr outputs && lastAttr == outputName then
      [ lastAttr ]
    else if installable != [ ] then
      installable
    else
      [ outputName ];

  splitName = name: filter builtins.isString (builtins.split "\\." name);

  resolveName =
    name:
    let
      components = splitName name;
      walked = if elem "" components then null else walk pkgs [ ] components;
      drv = walked.value;
      lastAttr = builtins.elemAt walked.attrPath (length walked.attrPath - 1);
      selected = if walked != null && isDerivation drv then selectOutputs drv lastAttr else null;
      drvPath = strictOrNull drv.drvPath;
      outputPaths = strictOrNull (
        builtins.listToAttrs (
          map (output: {
            name = output;
            value = drv.${output}.outPath;
          }) selected
        )
      );
    in
    if selected == null || drvPath == null || outputPaths == null then
      null
    else
      {
        inherit name drvPath;
        inherit (walked) attrPath;
        outputs = outputPaths;
      };

  results = map (name: {
    inherit name;
    resolved = resolveName name;
  }) (builtins.fromJSON names);
in
{
  found = map (result: result.resolved) (filter (result: result.resolved != null) results);
  notFound = map (result: result.name) (filter (result: result.resolved == null) results);
}
