"""`nixery`: serve the registry, or compute popularity data."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from nixery.config import ENVIRONMENT, ConfigError, load_config

_SETTING_HELP = {
    "host": "address to listen on (default 127.0.0.1)",
    "port": "TCP port (default 8080)",
    "channel": "nixpkgs channel or 40-hex commit (default nixos-unstable)",
    "pkgs_repo": "git repository holding the package set",
    "pkgs_path": "local path of the package set",
    "storage_backend": "filesystem (gcs is the cloud deployment's)",
    "storage_path": "where blobs, the index and GC roots live",
    "gcs_bucket": "bucket for the gcs backend",
    "nix_timeout": "seconds for the whole Nix step of one build (default 600)",
    "popularity_url": "path or URL of popularity data (Nixery's JSON format)",
    "layer_budget": "maximum store-path layers per image (default 94)",
    "layering": "per-path (default: a layer per store path, shared across images) or nixery (Nixery's popularity and dominator-tree grouping); changes image digests",
    "threads": "request threads (default 16)",
    "layer_workers": "layers compressed in parallel (default 2)",
    "lease_seconds": "build lease lifetime, renewed while building (default 60)",
    "build_concurrency": "builds of different images run at once (default 4)",
    "access": "public (default) or team: team admits only the identities below",
    "team_members": "comma-separated e-mails admitted with a Google access token",
    "team_domains": "comma-separated domains (Workspace hosted domain, else verified e-mail's)",
    "team_audiences": "comma-separated OAuth client ids a Google token must be issued to",
    "robot_tokens": "robot token hash lines from `nixery robot-token` (comma-separated)",
    "tokeninfo_url": "Google's tokeninfo endpoint (default https://oauth2.googleapis.com/tokeninfo)",
    "max_packages": "path components (packages) allowed in one image name (default 64)",
    "client_build_limit": "cold builds one client may run at once (default 2)",
    "allow_unfree": "true: build packages with unfree licences (nixpkgs' allowUnfree; default false)",
    "permitted_insecure": "comma-separated insecure packages to build anyway, with versions, e.g. openssl-1.1.1w (nixpkgs' permittedInsecurePackages)",
}
SERVE_SETTINGS = [name for name in _SETTING_HELP if name != "gcs_bucket"]


def _add_settings(parser: argparse.ArgumentParser, names: Sequence[str]) -> None:
    for name in names:
        parser.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            default=None,
            help=f"{_SETTING_HELP[name]} [env {ENVIRONMENT[name]}]",
        )


def _settings(args: argparse.Namespace) -> dict[str, str | None]:
    return {name: getattr(args, name, None) for name in ENVIRONMENT}


def serve(args: argparse.Namespace) -> int:
    from nixery.local.assemble import embedded_app, start_source_check
    from nixery.local.server import RegistryServer

    config = load_config(os.environ, _settings(args))
    app = embedded_app(config)
    print(
        f"nixery: serving {config.source_kind} packages on http://{config.host}:{config.port}/ "
        f"(storage {config.storage_path})",
        file=sys.stderr,
    )
    RegistryServer(
        app,
        config.host,
        config.port,
        config.threads,
        on_worker_start=lambda: start_source_check(app),
    ).run()
    return 0


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
    counts = count(nix, revision.nix_source, args.system, realise=args.realise, store=args.store)
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
    from nixery.cloud.devstack import DevStack, StackError, start_dev_stack

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
        stack = start_dev_stack(state_dir, settings)
    except StackError as error:
        print(f"nixery: dev stack: {error}", file=sys.stderr)
        return 1
    print(f"registry  {stack.registry_url}")
    print(f"builder   {stack.builder_url}")
    for name in ("firestore-emulator", "gcs-emulator"):
        print(f"{name:<9} {stack.processes[name].url}")
    print(f"stop with: nixery dev-stack stop --state-dir {state_dir}", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nixery", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser("serve", help="run the registry on this machine")
    _add_settings(serve_parser, SERVE_SETTINGS)
    serve_parser.set_defaults(run=serve)
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
    _add_settings(
        stack_parser, ["channel", "pkgs_repo", "pkgs_path", "nix_timeout", "lease_seconds"]
    )
    stack_parser.set_defaults(run=dev_stack)

    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(args.run(args))
    except ConfigError as error:
        print(f"nixery: configuration error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
