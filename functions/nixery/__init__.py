"""nixery-serverless: a container registry that builds images on demand from the Nix packages
named in the image path.

The registry side (`registry/`, `auth/`) and the build side (`build/`) meet only in
`build/contract.py`; `local/` wires both into `nixery serve`, `cloud/` into the Cloud Function
and the Cloud Run builder. README.md ("How an image is built") has the map.
"""
