"""The build side: Nix, the closure graph, layers, manifests, and the one contract the
registry side uses (nixery.build.contract)."""
