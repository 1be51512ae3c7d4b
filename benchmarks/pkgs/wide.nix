# The test package set widened to nixpkgs' breadth at the top level: 12,000 extra attributes
# (never forced; they throw if they were), so that case-insensitive lookup has nixpkgs' cost.
{ ... }@args:
(import ../../tests/pkgs args)
// builtins.listToAttrs (
  builtins.genList (index: {
    name = "WidePackage${toString index}";
    value = throw "WidePackage${toString index} is never forced";
  }) 12000
)
