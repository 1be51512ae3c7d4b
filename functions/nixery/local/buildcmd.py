"""`nixery build NAME[:TAG] --output ...`: build an image without running a registry.

The image is built exactly as `nixery serve` builds it (the same registry service over its
own storage directory, kept between runs as a cache), so layers and digests are the ones a pull
of NAME gets, then written out: `oci:DIR[:TAG]` (an OCI image layout), `docker-archive:FILE[:REF]`
(for `docker load`) or `docker://HOST/REPO[:TAG]` (pushed). The digest of what was written goes
to stdout; progress to stderr."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TextIO

from nixery.build.assemble import build_coordinator
from nixery.build.contract import parse_platforms
from nixery.config import Config, load_config
from nixery.index.sqlite import SqliteIndex
from nixery.local.archives import write_docker_archive, write_oci_layout
from nixery.local.exported import ExportedImage, exported_image
from nixery.local.push import (
    Credentials,
    Destination,
    RegistryClient,
    docker_config_credentials,
    push_image,
)
from nixery.oci import OCI_INDEX, OCI_MANIFEST
from nixery.registry.errormap import registry_error
from nixery.registry.service import RegistryService
from nixery.registry.sources import package_source
from nixery.storage.filesystem import FilesystemStorage


def default_cache_dir() -> Path:
    cache_home = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache_home) / "nixery" / "build"


@dataclass(frozen=True)
class Output:
    kind: Literal["oci", "docker-archive", "docker"]
    location: str  # directory, file, or HOST/REPO:TAG
    name: str | None  # the tag in the layout, or the archive's image reference

    @classmethod
    def parse(cls, text: str) -> Output:
        if text.startswith("docker://"):
            return cls("docker", text.removeprefix("docker://"), None)
        if text.startswith("oci:"):
            directory, colon, tag = text.removeprefix("oci:").rpartition(":")
            if not colon or "/" in tag:
                directory, tag = text.removeprefix("oci:"), ""
            return cls("oci", directory, tag or None)
        if text.startswith("docker-archive:"):
            file, _, reference = text.removeprefix("docker-archive:").partition(":")
            return cls("docker-archive", file, reference or None)
        raise ValueError(
            f"unknown output {text!r}: use oci:DIR[:TAG], docker-archive:FILE[:REF] or "
            "docker://HOST/REPO:TAG"
        )


class Progress:
    """Progress on stderr: a redrawn bar on a terminal, plain lines elsewhere (CI logs)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.terminal = stream.isatty()
        self._label = ""

    def say(self, message: str) -> None:
        print(f"nixery: {message}", file=self.stream, flush=True)

    def stage(self, label: str) -> None:
        self._label = label

    def step(self, done: int, total: int) -> None:
        if self.terminal:
            width = 30
            filled = width * done // max(total, 1)
            bar = "#" * filled + "-" * (width - filled)
            end = "\n" if done == total else ""
            self.stream.write(f"\rnixery: {self._label} [{bar}] {done}/{total}{end}")
            self.stream.flush()
        elif done == total:
            self.say(f"{self._label}: {total} blobs")


def split_name(name: str, tag: str | None) -> tuple[str, str]:
    repository, colon, named_tag = name.rpartition(":")
    if colon and "/" not in named_tag:
        return repository, tag or named_tag
    return name, tag or "latest"


def run_build(
    config: Config,
    name: str,
    tag: str,
    output: Output,
    platforms: list[str],
    credentials: Credentials | None,
    progress: Progress,
) -> str:
    """Builds and writes the image; its digest (the tag's manifest or index)."""
    chosen = parse_platforms(",".join(platforms) if platforms else config.platforms)
    storage = FilesystemStorage(config.storage_path)
    index = SqliteIndex(config.index_path)
    service = RegistryService(
        package_source(config),
        index,
        storage,
        build_coordinator(config, storage, index),
        max_packages=config.max_packages,
        platforms=chosen,
    )
    accept = f"{OCI_INDEX}, {OCI_MANIFEST}" if len(chosen) > 1 else OCI_MANIFEST
    specs = ", ".join(platform.spec for platform in chosen)
    progress.say(f"building {name}:{tag} for {specs}")
    started = time.monotonic()
    top = service.manifest(name, tag, accept, client="nixery-build")
    image: ExportedImage = exported_image(top, service.manifest_by_digest)
    layers = len({layer.digest for i in image.images for layer in i.layers})
    progress.say(
        f"built in {time.monotonic() - started:.1f}s: {len(image.images)} platform(s), "
        f"{layers} layers"
    )
    open_blob = storage.open
    if output.kind == "oci":
        progress.stage(f"writing {output.location}")
        write_oci_layout(image, Path(output.location), output.name or tag, open_blob, progress.step)
    elif output.kind == "docker-archive":
        progress.stage(f"writing {output.location}")
        reference = output.name or f"{name}:{tag}"
        write_docker_archive(image, Path(output.location), reference, open_blob, progress.step)
        progress.say(f"image ID {image.images[0].config.digest} (docker load tags it {reference})")
    else:
        destination = Destination.parse(output.location)
        client = RegistryClient(
            destination, credentials or docker_config_credentials(destination.host)
        )
        progress.stage(f"pushing to {destination.host}/{destination.repository}")
        push_image(image, client, open_blob, progress.step)
        progress.say(f"pushed {output.location}")
    return top.digest


def build_command(args: argparse.Namespace, settings: dict[str, str | None]) -> int:
    """The `nixery build` subcommand; `settings` are the command-line setting overrides."""
    name, tag = split_name(str(args.name), args.tag)
    cache_dir = args.cache_dir or str(default_cache_dir())
    config = load_config(os.environ, {**settings, "storage_path": cache_dir})
    progress = Progress(sys.stderr)
    username, password = args.username, args.password
    if args.password_stdin:
        password = sys.stdin.read().rstrip("\n")
    credentials = Credentials(username, password or "") if username else None
    try:
        output = Output.parse(str(args.output))
        digest = run_build(
            config, name, tag, output, list(args.platform or []), credentials, progress
        )
    except Exception as error:  # every failure is told as the registry would tell it
        known = registry_error(error)
        if known is None and not isinstance(error, ValueError | OSError | RuntimeError):
            raise
        progress.say(f"error: {known.message if known else error}")
        if known is not None and known.detail:
            progress.say("detail: " + json.dumps(known.detail, sort_keys=True))
        return 1
    print(digest)
    return 0
