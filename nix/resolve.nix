# Resolves package names (dotted attribute paths) against a package set in one evaluation.
#
#   nix-instantiate --eval --strict --json --read-write-mode nix/resolve.nix \
#     --argstr srcType path|git|tarball --argstr src <path or url> --argstr rev <commit or ""> \
#     --argstr system x86_64-linux --argstr config '{"allowUnfree":true}' \
#     --argstr names '["git", "python3Packages.numpy"]'
#
# => { "found": [ { "name", "attrPath", "drvPath", "outputs": { <output>: <store path> } } ],
#      "refused": [ { "name", "attrPath", "reason", ... } ] }
#
# A refusal's reason is "not_found", "unfree" (with "licence"), "insecure" (with "advisories"),
# "broken", "unsupported_platform" (with "platform"), or "throws": the attribute (or its store
# paths) throws, whose message tryEval drops; the caller forces that attribute alone to read it.
# nixpkgs says why it refuses a package in `meta` without throwing (`meta.available`), so the
# first four are told here, without forcing the throwing store paths.
#
# --read-write-mode makes evaluation write the .drv files that realising needs.
#
# Uses builtins only, so it works for nixpkgs and for any package set shaped like it. Only the
# requested attribute paths are forced: package sets are full of attributes that throw or abort
# when forced (removed aliases, broken packages), and forcing unrelated ones would be slow too.
# An `abort` (or a missing attribute) on a requested path fails the whole evaluation: tryEval
# cannot catch those, so the caller evaluates the names apart to find the one at fault.
{
  srcType,
  src,
  rev ? "",
  system,
  config ? "{}",
  names,
}:

let
  inherit (builtins)
    all
    attrNames
    elem
    filter
    head
    isList
    isString
    length
    tail
    tryEval
    ;

  packageConfig = builtins.fromJSON config;

  pkgs = import ./package-set.nix {
    inherit
      srcType
      src
      rev
      system
      config
      ;
  };

  # Nix 2.8 has no builtins.toLower.
  upper = [ "A" "B" "C" "D" "E" "F" "G" "H" "I" "J" "K" "L" "M" "N" "O" "P" "Q" "R" "S" "T" "U" "V" "W" "X" "Y" "Z" ];
  lower = [ "a" "b" "c" "d" "e" "f" "g" "h" "i" "j" "k" "l" "m" "n" "o" "p" "q" "r" "s" "t" "u" "v" "w" "x" "y" "z" ];
  toLower = builtins.replaceStrings upper lower;

  # "set", "other", or "throws" when forcing `value` (to weak head normal form) throws.
  kindOf =
    value:
    let
      forced = tryEval (builtins.isAttrs value);
    in
    if !forced.success then
      "throws"
    else if forced.value then
      "set"
    else
      "other";

  # One node per attribute set on some name's path. Its lowercase index (lowercase name -> the
  # first real name, attrNames being sorted and listToAttrs keeping the first) is built once and
  # shared by every name that passes through the set, however many miss their exact match; the
  # children are lazy, so sets no name reaches are never indexed. attrNames, `?` and mapAttrs do
  # not force attribute values.
  node = value: {
    inherit value;
    lowerIndex = builtins.listToAttrs (
      map (name: {
        name = toLower name;
        value = name;
      }) (attrNames value)
    );
    children = builtins.mapAttrs (_: node) value;
  };
  root = node pkgs;

  # The attribute of the node's set that `component` names: exact match first, else by case.
  matchAttr =
    current: component:
    if current.value ? ${component} then
      component
    else
      current.lowerIndex.${toLower component} or null;

  # => { status = "ok" | "not_found" | "throws"; node; attrPath; }
  walk =
    current: attrPath: components:
    if components == [ ] then
      {
        status = "ok";
        inherit attrPath;
        node = current;
      }
    else
      let
        kind = kindOf current.value;
        key = matchAttr current (head components);
      in
      if kind != "set" then
        {
          status = if kind == "throws" then "throws" else "not_found";
          inherit attrPath;
        }
      else if key == null then
        {
          status = "not_found";
          inherit attrPath;
        }
      else
        walk current.children.${key} (attrPath ++ [ key ]) (tail components);

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
        if isList toInstall then toInstall else [ ]
      );
    in
    if !(isList outputs) || !(isString outputName) then
      null
    else if elem lastAttr outputs && lastAttr == outputName then
      [ lastAttr ]
    else if installable != [ ] then
      installable
    else
      [ outputName ];

  # Why nixpkgs' meta check refuses `drv` (whose meta.available is false), in nixpkgs' order:
  # licence, broken, platform, vulnerabilities. null when meta does not tell.
  unavailableBecause =
    drv:
    let
      meta = drv.meta or { };
      licenses = strictOrNull (
        let
          license = meta.license or [ ];
        in
        if isList license then license else [ license ]
      );
      unfree = filter (license: builtins.isAttrs license && !(license.free or true)) (
        if isList licenses then licenses else [ ]
      );
      platforms = strictOrNull (meta.platforms or null);
      badPlatforms = strictOrNull (meta.badPlatforms or [ ]);
      advisories = strictOrNull (meta.knownVulnerabilities or [ ]);
      licenceName = license: license.shortName or license.spdxId or license.fullName or "unfree";
    in
    if unfree != [ ] && !(packageConfig.allowUnfree or false) then
      {
        reason = "unfree";
        licence = strictOrNull (licenceName (head unfree));
      }
    else if strictOrNull (meta.broken or false) == true then
      { reason = "broken"; }
    else if
      (isList platforms && all isString platforms && !(elem system platforms))
      || (isList badPlatforms && elem system badPlatforms)
    then
      {
        reason = "unsupported_platform";
        platform = system;
      }
    else if isList advisories && advisories != [ ] then
      {
        reason = "insecure";
        advisories = filter isString advisories;
      }
    else
      null;

  splitName = name: filter isString (builtins.split "\\." name);

  resolveName =
    name:
    let
      components = splitName name;
      walked =
        if elem "" components then
          {
            status = "not_found";
            attrPath = [ ];
          }
        else
          walk root [ ] components;
      drv = walked.node.value;
      kind = kindOf drv;
      isDerivation = strictOrNull ((drv.type or null) == "derivation") == true;
      available = tryEval (builtins.deepSeq (drv.meta.available or true) (drv.meta.available or true));
      lastAttr = builtins.elemAt walked.attrPath (length walked.attrPath - 1);
      selected = selectOutputs drv lastAttr;
      drvPath = strictOrNull drv.drvPath;
      outputPaths = strictOrNull (
        builtins.listToAttrs (
          map (output: {
            name = output;
            value = drv.${output}.outPath;
          }) selected
        )
      );
      refused = fields: {
        refused = {
          inherit name;
          inherit (walked) attrPath;
        }
        // fields;
      };
      package = strictOrNull drv.name;
      unavailable = unavailableBecause drv;
    in
    if walked.status != "ok" then
      refused { reason = walked.status; }
    else if kind != "set" then
      refused { reason = if kind == "throws" then "throws" else "not_found"; }
    else if !isDerivation then
      refused { reason = "not_found"; }
    else if !available.success then
      refused { reason = "throws"; }
    else if available.value == false && unavailable != null then
      refused (unavailable // (if isString package then { inherit package; } else { }))
    else if selected == null || drvPath == null || outputPaths == null then
      refused { reason = "throws"; }
    else
      {
        found = {
          inherit name drvPath;
          inherit (walked) attrPath;
          outputs = outputPaths;
        };
      };

  results = map resolveName (builtins.fromJSON names);
in
# The package set itself is forced even for no names: a set that fails as a whole (nixpkgs on
# too old a Nix aborts) is the registry's failure, which the caller must not pin on any name.
builtins.seq (builtins.isAttrs pkgs) {
  found = map (result: result.found) (filter (result: result ? found) results);
  refused = map (result: result.refused) (filter (result: result ? refused) results);
}
