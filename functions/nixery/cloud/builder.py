"""The Cloud Run builder's wiring: Nix, layers to GCS, records and leases in Firestore, behind
the build service's HTTP handler, which also runs garbage collection on `/gc`."""

from __future__ import annotations

import json

from nixery.build.assemble import build_coordinator
from nixery.cloud import clients
from nixery.cloud.buildservice import BuildService
from nixery.cloud.idtoken import IdTokenVerifier, public_keys_of
from nixery.config import Config
from nixery.index.gc import GcPolicy, GcReport, collect


def build_service(config: Config) -> BuildService:
    """The Cloud Run builder: Nix, layers to GCS, records and leases in Firestore."""
    index = clients.index(config)
    storage = clients.storage(config, clients.bucket(config), None)
    coordinator = build_coordinator(config, storage, index)
    verifier = None
    if config.builder_audience:
        certs = None
        if config.id_token_public_keys:
            certs = json.loads(config.id_token_public_keys.read_text())
        elif config.id_token_key_file:
            certs = public_keys_of(config.id_token_key_file)
        verifier = IdTokenVerifier(config.builder_audience, certs)

    def collect_garbage(dry_run: bool) -> GcReport:
        return collect(index, storage, GcPolicy.of(config), dry_run=dry_run)

    return BuildService(coordinator, verifier, collect_garbage)
