# ~300 packages forming a seeded pseudo-random DAG, with data of varied sizes (tens of MB in
# total, partly compressible) and runtime references to their dependencies: a stand-in for a
# real closure when testing layering. Everything derives from `seed` with integer arithmetic, so
# the DAG and every store path are the same on every machine.
{
  mkPackage,
  busybox,
  count ? 300,
  seed ? 20240521,
}:

let
  modulus = 2147483647;
  # Park-Miller: products stay below 2^47, far from Nix's 64-bit integer limit.
  mod = a: b: a - (a / b) * b;
  step = state: mod (state * 48271) modulus;
  # A pseudo-random number for (package, purpose), independent of evaluation order.
  random =
    index: purpose:
    step (step (step (1 + mod (seed + index * 1009 + purpose * 7919) (modulus - 1))));

  pad = index: if index < 10 then "00${toString index}" else if index < 100 then "0${toString index}" else toString index;
  attrName = index: "p${pad index}";

  dependencyIndices =
    index:
    let
      wanted = mod (random index 0) 4;
      candidates = builtins.genList (k: mod (random index (k + 1)) index) wanted;
      unique = builtins.listToAttrs (
        map (dep: {
          name = attrName dep;
          value = dep;
        }) candidates
      );
    in
    if index == 0 then [ ] else builtins.attrValues unique;

  # Mostly small, some medium and a few of several megabytes.
  dataSize =
    index:
    let
      bucket = mod (random index 9) 100;
      r = random index 10;
    in
    if bucket < 3 then
      1048576 + mod r 2097152
    else if bucket < 18 then
      102400 + mod r 307200
    else
      2048 + mod r 100000;

  package =
    index:
    let
      name = attrName index;
      deps = map (dep: packages.${attrName dep}) (dependencyIndices index);
    in
    mkPackage {
      pname = "synthetic-${name}";
      version = "1.0";
      script = ''
        mkdir -p $out/share/${name} $out/nix-support
        awk -v seed=${toString (random index 11)} -v size=${toString (dataSize index)} -v name=${name} \
          -f ${./synthetic-data.awk} > $out/share/${name}/data.txt
        printf '%s\n' ${busybox} ${toString deps} > $out/nix-support/runtime-dependencies
      '';
    };

  packages = builtins.listToAttrs (
    builtins.genList (index: {
      name = attrName index;
      value = package index;
    }) count
  );
in
packages // { recurseForDerivations = true; }
