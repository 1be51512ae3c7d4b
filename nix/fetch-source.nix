# The package source at one revision, fetched: its store path (or, for a local path, the path).
# Evaluated on its own before resolving names, so that a revision that cannot be fetched is told
# apart from a package that fails; package-set.nix imports it too, and Nix's fetcher cache makes
# the second fetch free.
{
  srcType,
  src,
  rev ? "",
}:

if srcType == "path" then
  src
else if srcType == "git" then
  (builtins.fetchGit {
    url = src;
    inherit rev;
    allRefs = true;
  }).outPath
else if srcType == "tarball" then
  builtins.fetchTarball src
else
  throw "unknown srcType '${srcType}' (expected path, git or tarball)"
