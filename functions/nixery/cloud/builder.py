"""The Cloud Run builder's wiring: Nix, layers to GCS, records and leases in Firestore, behind
the build service's HTTP handler."""

from __future__ import annotations

import json

from nixery.build.assemble import build_coordinator
from nixery.cloud import clients
from nixery.cloud.buildservice import BuildService
from nixery.cloud.idtoken import IdTokenVerifier, public_keys_of
from nixery.config import Config


def build_service(config: Config) -> BuildService:
    """The Cloud Run builder: Nix, layers to GCS, records and leases in Firestore."""
    index = clients.index(config)
    coordinator = build_coordinator(
        config, clients.storage(config, clients.bucket(config), None), index
    )
    verifier = None
    if config.builder_audience:
        certs = None
        if config.id_token_public_keys:
            certs = json.loads(config.id_token_public_keys.read_text())
        elif config.id_token_key_file:
            certs = public_keys_of(config.id_token_key_file)
        verifier = IdTokenVerifier(config.builder_audience, certs)
    return BuildService(coordinator, verifier)
