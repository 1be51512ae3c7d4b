"""Pulls by the content-addressed clients: containerd (`ctr`) and podman, the incremental pairs
per layout, on loopback and over a bandwidth-limited link.

    python -m benchmarks.bench_clients [--quick]

containerd and podman reuse any layer whose digest they hold, so what they download for B is the
content-addressed count of `bench_incremental`; what each layer costs them in time is what this
measures. Every layout has its own `nixery serve` on fresh storage, all running at once, and
every image is built before timing; for each client and link, each pair's A then B is pulled
into fresh client storage (a fresh private dockerd for its containerd, a fresh podman root),
each pull timed, with every layout in turn (in rotated order) before the next pair, so that
the drifting load of this shared machine falls on all layouts alike. The
layers a client reused for B are predicted from the manifests (B's digests that A lists) and
checked against the blobs the client really fetched while pulling B (the registry's access log).

Layouts: the default, one layer per path (`per-path`, which sends B's new paths alone), one layer
per image and Nixery's grouping. Links: loopback and `benchmarks/_throttle.py`'s 20 Mbit/s.
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from benchmarks._serving import ManifestLayer, blobs_served, manifest_layers, start_nixery
from benchmarks._throttle import link as link_to
from benchmarks.bench_docker import rotated
from benchmarks.bench_incremental import QUICK_SIZES, SIZES, Pair, choose_pairs
from nixery.build.layering import DEFAULT_BUDGET, DEFAULT_LAYERING
from tests.current_engines import CurrentEngines, engines_available
from tests.daemons import Dockerd, Podman, docker_available, podman_available

FULL_PAIRS = 8
QUICK_PAIRS = 1
LOOPBACK = "loopback"
LINKS: dict[str, float | None] = {LOOPBACK: None, "20 Mbit/s": 20e6}
QUICK_LINKS = (LOOPBACK,)
DEFAULT_LABEL = f"`{DEFAULT_LAYERING}` {DEFAULT_BUDGET} (default)"
# Label -> (NIXERY_LAYERING, NIXERY_LAYER_BUDGET); the default first.
LAYOUTS: dict[str, tuple[str, int]] = {
    DEFAULT_LABEL: (DEFAULT_LAYERING, DEFAULT_BUDGET),
    "`per-path` 94": ("per-path", 94),
    "one layer": ("prefix", 1),
    "`nixery` 94": ("nixery", 94),
}
QUICK_LAYOUTS = (DEFAULT_LABEL, "`per-path` 94")


@dataclass(frozen=True)
class PairPull:
    a_seconds: float
    b_seconds: float
    b_layers: int
    b_reused: int  # B's layers whose digests A lists
    b_bytes: int  # compressed bytes of B's layers A does not list
    b_fetched: int  # B's layer blobs the client GET while pulling B (the access log)

    @property
    def b_downloaded(self) -> int:
        return self.b_layers - self.b_reused


Puller = Callable[[str], None]


CONTAINERD_1_6, PODMAN_4_3 = "containerd 1.6", "podman 4.3"  # Debian 12's
CONTAINERD_2_1, PODMAN_5_8 = "containerd 2.1", "podman 5.8"  # Debian sid's
CLIENTS = (CONTAINERD_1_6, PODMAN_4_3, CONTAINERD_2_1, PODMAN_5_8)


@contextlib.contextmanager
def _client(name: str, scratch: Path) -> Iterator[Puller]:
    """A function that pulls a reference into fresh, private storage of the client."""
    if name in (CONTAINERD_2_1, PODMAN_5_8):
        with CurrentEngines() as engines:
            if name == CONTAINERD_2_1:
                yield lambda reference: _check(
                    engines.ctr("images", "pull", "--plain-http", f"{reference}:latest")
                )
            else:
                yield lambda reference: _check(
                    engines.podman("pull", "--tls-verify=false", reference)
                )
        return
    if name == CONTAINERD_1_6:
        with Dockerd(scratch / "docker") as docker:
            yield lambda reference: _check(
                docker.ctr("images", "pull", "--plain-http", f"{reference}:latest")
            )
        return
    with Podman(scratch / "podman") as podman:
        yield lambda reference: _check(podman.run("pull", "--tls-verify=false", reference))


def _check(result: subprocess.CompletedProcess[str]) -> None:
    if result.returncode != 0:
        raise RuntimeError(f"{result.args} failed: {result.stderr}")


def _timed(pull: Puller, reference: str) -> float:
    started = time.monotonic()
    pull(reference)
    return time.monotonic() - started


def _pair_pull(
    client: str,
    scratch: Path,
    host_port: str,
    pair: Pair,
    manifests: dict[str, list[ManifestLayer]],
    access_log: Path,
) -> PairPull:
    with _client(client, scratch) as pull:
        first = _timed(pull, f"{host_port}/{pair.a_image}")
        offset = access_log.stat().st_size
        second = _timed(pull, f"{host_port}/{pair.b_image}")
        fetched = set(blobs_served(access_log, offset))
    held = {layer.digest for layer in manifests[pair.a_image]}
    wanted = {layer.digest: layer.size for layer in manifests[pair.b_image]}
    return PairPull(
        first,
        second,
        len(wanted),
        sum(digest in held for digest in wanted),
        sum(size for digest, size in wanted.items() if digest not in held),
        len(fetched & set(wanted)),
    )


# (layout label, client, link) -> the pairs' pulls
Results = dict[tuple[str, str, str], list[PairPull]]


def clients_available() -> list[str]:
    available = {
        CONTAINERD_1_6: docker_available(),
        PODMAN_4_3: podman_available(),
        CONTAINERD_2_1: engines_available(),
        PODMAN_5_8: engines_available(),
    }
    return [name for name in CLIENTS if available[name]]


def measure(quick: bool) -> Results:
    pairs = choose_pairs(QUICK_PAIRS if quick else FULL_PAIRS, QUICK_SIZES if quick else SIZES)
    links = QUICK_LINKS if quick else tuple(LINKS)
    layouts = QUICK_LAYOUTS if quick else tuple(LAYOUTS)
    clients = clients_available()
    if not clients:
        raise RuntimeError("no containerd nor podman can run here (scripts/setup-system --test)")
    images = sorted({image for pair in pairs for image in (pair.a_image, pair.b_image)})
    results: Results = {}
    with (
        tempfile.TemporaryDirectory(prefix="nixery-bench-clients-") as name,
        contextlib.ExitStack() as stack,
    ):
        servers = {}
        manifests = {}
        for number, label in enumerate(layouts):
            layering, budget = LAYOUTS[label]
            env = {"NIXERY_LAYERING": layering, "NIXERY_LAYER_BUDGET": str(budget)}
            server = start_nixery(Path(name) / str(number), env)
            stack.callback(server.stop)
            servers[label] = server
            manifests[label] = {image: manifest_layers(server.host_port, image) for image in images}
        for link in links:
            with contextlib.ExitStack() as throttled:
                host_ports = {
                    label: throttled.enter_context(link_to(server.port, LINKS[link]))
                    for label, server in servers.items()
                }
                for client in clients:
                    started = time.monotonic()
                    for number, pair in enumerate(pairs):
                        for label in rotated(layouts, number):
                            pulled = _pair_pull(
                                client,
                                Path(name) / "client",
                                host_ports[label],
                                pair,
                                manifests[label],
                                Path(servers[label].log_path),
                            )
                            results.setdefault((label, client, link), []).append(pulled)
                    _progress(f"{client}, {link}: {time.monotonic() - started:.1f} s")
    return results


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def report(results: Results, quick: bool) -> str:
    layouts = list(dict.fromkeys(label for label, _, _ in results))
    clients = list(dict.fromkeys(client for _, client, _ in results))
    links = list(dict.fromkeys(link for _, _, link in results))
    pair_count = len(next(iter(results.values())))
    lines = [
        "## Content-addressed pulls: containerd and podman",
        "",
        ("The first pair" if pair_count == 1 else f"The first {pair_count} pairs")
        + " of `Incremental pulls`, A then B into fresh client "
        "storage: containerd's `ctr images pull --plain-http` and `podman pull "
        "--tls-verify=false`, Debian 12's (containerd 1.6 of dockerd 20.10, podman 4.3) and "
        "Debian sid's (`tests/current_engines.py`), from `nixery serve` with each layout, images built before "
        "timing. Links: loopback and `benchmarks/_throttle.py`'s proxy. Seconds are the pairs' "
        "totals (A pulls + B pulls); B's layers reused and downloaded bytes are counted from the "
        "manifests (digests A lists)."
        + (" **Quick mode**: one small pair, loopback, two layouts." if quick else ""),
        "",
        "| client | link | "
        + " | ".join(f"{label} s (vs default) | B reused / layers, kB" for label in layouts)
        + " |",
        "|---|---|" + "--:|--:|" * len(layouts),
    ]
    for client in clients:
        for link in links:
            default = _total(results[DEFAULT_LABEL, client, link])
            cells = []
            for label in layouts:
                pulls = results[label, client, link]
                total = _total(pulls)
                reused = sum(pull.b_reused for pull in pulls)
                layers = sum(pull.b_layers for pull in pulls)
                kilobytes = sum(pull.b_bytes for pull in pulls) / 1000
                cells.append(f"{total:.2f} ({total / default:.2f}x)")
                cells.append(f"{reused} / {layers}, {kilobytes:,.0f}")
            lines.append(f"| {client} | {link} | " + " | ".join(cells) + " |")
    disagreeing = [
        pull for pulls in results.values() for pull in pulls if pull.b_fetched != pull.b_downloaded
    ]
    lines += [
        "",
        "- Reuse counted from the manifests checked against the blobs each client fetched for B "
        "(the registry's access log): "
        + (
            f"every pull agrees ({sum(len(pulls) for pulls in results.values())} pulls)."
            if not disagreeing
            else f"**{len(disagreeing)} pulls disagree**."
        ),
        "",
    ]
    return "\n".join(lines)


def _total(pulls: list[PairPull]) -> float:
    return sum(pull.a_seconds + pull.b_seconds for pull in pulls)


def run(quick: bool) -> str:
    return report(measure(quick), quick)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one pair, loopback (CI)")
    print(run(parser.parse_args().quick))


if __name__ == "__main__":
    main()
