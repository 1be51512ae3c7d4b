"""`nixery`: serve the registry, build images, collect garbage, or compute popularity data."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import NoReturn

from nixery.config import (
    ENVIRONMENT,
    SERVE_SETTINGS,
    SETTING,
    ConfigError,
    help_text,
    load_config,
    markdown_table,
)
from nixery.util.logs import LOG_FORMATS, configure_logging


def _add_settings(parser: argparse.ArgumentParser, names: Sequence[str]) -> None:
    for name in names:
        setting = SETTING[name]
        parser.add_argument(setting.flag, dest=name, default=None, help=help_text(setting))


def _settings(args: argparse.Namespace) -> dict[str, str | None]:
    return {name: getattr(args, name, None) for name in ENVIRONMENT}


def serve(args: argparse.Namespace) -> int:
    from nixery.local.assemble import embedded_registry
    from nixery.local.memory import bound_malloc_arenas
    from nixery.local.ownership import StorageInUse
    from nixery.local.server import RegistryServer

    bound_malloc_arenas()
    config = load_config(os.environ, _settings(args))
    configure_logging(config.log_format or "text")
    try:
        registry = embedded_registry(config, own_storage=True)
    except StorageInUse as error:
        print(f"nixery: {error}", file=sys.stderr)
        return 3
    server = RegistryServer(
        registry.app, config.host, config.port, config.threads, registry.stop_builds
    )
    logging.getLogger("nixery").info(
        "serving %s packages on http://%s:%d/ (storage %s)",
        config.source_kind,
        config.host,
        config.port,
        config.storage_path,
    )
    registry.start_source_check()
    server.run()
    print("nixery: stopped", file=sys.stderr)
    return 0


GC_SETTINGS = (
    "storage_path",
    "gc_retention_days",
    "gc_grace_seconds",
    "build_records",
    "build_record_days",
    "log_format",
)


def gc(args: argparse.Namespace) -> int:
    """Collect `nixery serve`'s storage; safe beside a running `nixery serve` and its builds."""
    import json

    from nixery.index.gc import GcPolicy, collect
    from nixery.index.sqlite import SqliteIndex
    from nixery.storage.filesystem import FilesystemStorage

    config = load_config(os.environ, _settings(args))
    configure_logging(config.log_format or "text", level=logging.WARNING)
    if not config.index_path.is_file():
        print(f"nixery gc: no registry storage at {config.storage_path}", file=sys.stderr)
        return 2
    report = collect(
        SqliteIndex(config.index_path),
        FilesystemStorage(config.storage_path),
        GcPolicy.of(config),
        dry_run=args.dry_run,
    )
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print("\n".join(report.lines()))
    return 0


@contextlib.contextmanager
def progress_bar(what: str, unit: str) -> Iterator[Callable[[int, int], None]]:
    """A tqdm bar on stderr when it is a terminal; nothing at all otherwise (CI, pipes)."""
    from tqdm import tqdm

    bar: tqdm[NoReturn] | None = None  # a manual bar: no iterable

    def advance(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, desc=what, unit=unit, file=sys.stderr, disable=None)
        bar.update(done - bar.n)

    try:
        yield advance
    finally:
        if bar is not None:
            bar.close()


def build(args: argparse.Namespace) -> int:
    from nixery.local.buildcmd import build_command

    return build_command(args, _settings(args))


# What `nixery build` reads: where packages come from and how images are built.
BUILD_SETTINGS = (
    "channel",
    "pkgs_repo",
    "pkgs_path",
    "nix_timeout",
    "popularity_url",
    "layer_budget",
    "layering",
    "max_packages",
)


def popcount(args: argparse.Namespace) -> int:
    from nixery.build.nix import Nix
    from nixery.build.popcount import dump_popularity
    from nixery.build.popcount import popcount as count
    from nixery.config import find_nix_dir
    from nixery.registry.sources import package_source

    config = load_config(os.environ, _settings(args))
    revision = package_source(config).resolve(args.tag)
    if revision is None:
        raise ConfigError(f"tag {args.tag!r} names no revision of the package source")
    nix = Nix(find_nix_dir(), config.gcroots_dir, config.nix_timeout)
    with progress_bar("realising", "pkg") as advance:
        counts = count(
            nix,
            revision.nix_source,
            args.system,
            realise=args.realise,
            store=args.store,
            on_realised=advance,
            counting=args.count,
        )
    text = dump_popularity(counts)
    if args.output == "-":
        sys.stdout.write(text)
    else:
        Path(args.output).write_text(text)
    return 0


def robot_token(args: argparse.Namespace) -> int:
    from nixery.auth.access import hash_robot_token, new_robot_token

    token = new_robot_token()
    line = hash_robot_token(args.name, token).line()
    print(line)
    print(token)
    print(
        "nixery: line 1 goes into NIXERY_ROBOT_TOKENS (e.g. via Secret Manager); line 2 is the "
        f"token, shown only now: log in as {args.name!r} with it as the password",
        file=sys.stderr,
    )
    return 0


def dev_stack(args: argparse.Namespace) -> int:
    from nixery.cloud.devstack import BuilderContainer, DevStack, StackError, start_dev_stack

    state_dir = Path(args.state_dir).absolute()
    try:
        if args.action == "stop":
            DevStack.load(state_dir).stop()
            print(f"nixery: dev stack in {state_dir} stopped", file=sys.stderr)
            return 0
        settings = {
            variable: value
            for name, variable in ENVIRONMENT.items()
            if (value := getattr(args, name, None) or os.environ.get(variable))
        }
        container = BuilderContainer(args.builder_image) if args.builder_image else None
        stack = start_dev_stack(state_dir, settings, builder_container=container)
    except StackError as error:
        print(f"nixery: dev stack: {error}", file=sys.stderr)
        return 1
    print(f"registry  {stack.registry_url}")
    print(f"builder   {stack.builder_url}")
    for name in ("firestore-emulator", "gcs-emulator"):
        print(f"{name:<9} {stack.processes[name].url}")
    print(f"stop with: nixery dev-stack stop --state-dir {state_dir}", file=sys.stderr)
    return 0


def settings(args: argparse.Namespace) -> int:
    sys.stdout.write(markdown_table(args.markdown))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nixery", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser("serve", help="run the registry on this machine")
    _add_settings(serve_parser, SERVE_SETTINGS)
    serve_parser.set_defaults(run=serve)
    build_parser = commands.add_parser(
        "build",
        help="build an image without a registry: to an OCI layout, a docker archive or a push",
    )
    build_parser.add_argument("name", help="the image name as in a pull: shell/git/htop[:TAG]")
    build_parser.add_argument(
        "--output",
        "-o",
        required=True,
        help="oci:DIR[:TAG], docker-archive:FILE[:REF] or docker://HOST/REPO[:TAG]",
    )
    build_parser.add_argument("--tag", default=None, help="revision of the source (default latest)")
    build_parser.add_argument(
        "--platform",
        action="append",
        help="os/arch to build for, repeatable (default NIXERY_PLATFORMS); several make an index",
    )
    build_parser.add_argument(
        "--cache-dir",
        default=None,
        help="storage kept between runs (default ~/.cache/nixery/build)",
    )
    build_parser.add_argument("--username", default=None, help="registry login for docker://")
    build_parser.add_argument("--password", default=None, help="registry password for docker://")
    build_parser.add_argument(
        "--password-stdin", action="store_true", help="read the registry password from stdin"
    )
    _add_settings(build_parser, BUILD_SETTINGS)
    build_parser.set_defaults(run=build)

    gc_parser = commands.add_parser(
        "gc",
        help="delete images not pulled for NIXERY_GC_RETENTION_DAYS, then what only they used",
    )
    gc_parser.add_argument(
        "--dry-run", action="store_true", help="delete nothing; print what would go and its bytes"
    )
    gc_parser.add_argument("--json", action="store_true", help="print the totals as JSON")
    _add_settings(gc_parser, GC_SETTINGS)
    gc_parser.set_defaults(run=gc)

    pop_parser = commands.add_parser(
        "popcount", help="compute popularity data for a package source"
    )
    _add_settings(pop_parser, ["channel", "pkgs_repo", "pkgs_path", "storage_path", "nix_timeout"])
    pop_parser.add_argument(
        "--tag", default="latest", help="revision of the source (default latest)"
    )
    pop_parser.add_argument("--system", default="x86_64-linux")
    pop_parser.add_argument(
        "--store", default=None, help="store or binary cache to read closures from"
    )
    pop_parser.add_argument("--realise", action="store_true", help="build every package first")
    pop_parser.add_argument(
        "--count",
        choices=("closures", "references"),
        default="closures",
        help="per path: the top-level packages whose closures hold it (default), or the paths "
        "that reference it (Nixery's count)",
    )
    pop_parser.add_argument("-o", "--output", default="-", help="output file (default stdout)")
    pop_parser.set_defaults(run=popcount)

    robot_parser = commands.add_parser(
        "robot-token", help="make a robot token for a team registry and print its hash line"
    )
    robot_parser.add_argument("name", help="the robot's name, its Basic username")
    robot_parser.set_defaults(run=robot_token)

    stack_parser = commands.add_parser(
        "dev-stack", help="run the cloud deployment on this machine, on emulators"
    )
    stack_parser.add_argument("action", choices=["start", "stop"])
    stack_parser.add_argument(
        "--state-dir", default="var/dev-stack", help="logs, key and state (default var/dev-stack)"
    )
    stack_parser.add_argument(
        "--builder-image",
        default=None,
        metavar="IMAGE",
        help="run the builder as this image of builder-image/Dockerfile under Docker (the docker "
        "CLI on PATH, DOCKER_HOST from the environment) instead of a local process",
    )
    _add_settings(
        stack_parser, ["channel", "pkgs_repo", "pkgs_path", "nix_timeout", "lease_seconds"]
    )
    stack_parser.set_defaults(run=dev_stack)

    settings_parser = commands.add_parser(
        "settings", help="print a settings table of README.md, made from nixery.config"
    )
    settings_parser.add_argument(
        "--markdown",
        choices=["serve", "cloud"],
        required=True,
        help="serve: `nixery serve`'s variables and flags; cloud: what each component reads",
    )
    settings_parser.set_defaults(run=settings)

    args = parser.parse_args(argv)
    # Until the settings are read (serve re-configures from them); a bad value is theirs to report.
    requested = os.environ.get("NIXERY_LOG_FORMAT")
    # `nixery build` tells its own progress; the builder's log lines would bury it.
    level = logging.WARNING if args.command == "build" else logging.INFO
    configure_logging(requested if requested in LOG_FORMATS else "text", level=level)
    try:
        return int(args.run(args))
    except ConfigError as error:
        print(f"nixery: configuration error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
