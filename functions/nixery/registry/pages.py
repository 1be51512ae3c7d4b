"""The registry's pages for people: `/` (how to pull, the package source, recent builds) and
`/builds/<id>` (one build: phases, layers, pull by digest, the Nix log of a failure).

Server-rendered with Jinja2 (autoescaped: image names, tags and logs are the client's or Nix's
words), no script, no external asset: the one stylesheet is inline and allowed by its hash in
the Content-Security-Policy, the timeline is inline SVG with presentation attributes. Each page
has a JSON form (`?format=json` or `Accept: application/json`) for scripts.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from jinja2 import DictLoader, Environment, select_autoescape

from nixery.index import BuildRecord
from nixery.registry.names import ALWAYS_ADDED, SHELL_PACKAGES

RECENT_BUILDS = 50
TIMELINE_WIDTH = 600

_STYLE = """
body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#1b1b1b;background:#fff}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #ddd}
code,pre{font-family:ui-monospace,monospace;font-size:.9em;background:#f3f3f3;padding:.1em .3em;border-radius:3px}
pre{padding:.7em;overflow-x:auto;white-space:pre-wrap;word-break:break-all}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.25em .5em;border-bottom:1px solid #eee;vertical-align:top}
td.n,th.n{text-align:right;white-space:nowrap}.muted{color:#666}
.built,.cached{color:#17692d}.failed{color:#b00020}.refused{color:#8a5a00}
.paths{font-size:.85em;word-break:break-all}svg text{font:12px system-ui,sans-serif}
"""
STYLE_HASH = "sha256-" + base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()
# Nothing may load or run but the inline stylesheet; no framing, no form posts, no base tag.
CONTENT_SECURITY_POLICY = (
    f"default-src 'none'; style-src '{STYLE_HASH}'; img-src 'self' data:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
PHASE_COLOURS = {
    "resolve": "#8e7cc3",
    "evaluate": "#6fa8dc",
    "realise": "#3d85c6",
    "layering": "#93c47d",
    "layers": "#38761d",
    "publish": "#e69138",
}

_BASE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{% block title %}{% endblock %}</title>
<link rel="icon" href="data:,">
<style>{{ style }}</style>
</head>
<body>
{% block body %}{% endblock %}
</body>
</html>
"""

_BUILDS_TABLE = """{% if builds %}
<table>
<thead><tr><th>Image</th><th>Outcome</th><th class="n">Duration</th><th class="n">Layers</th>
<th class="n">Size</th><th>When (UTC)</th>{% if show_clients %}<th>Who</th>{% endif %}</tr></thead>
<tbody>
{% for b in builds %}<tr>
<td><a href="/builds/{{ b.id }}">{{ b.repository }}:{{ b.tag }}</a></td>
<td class="{{ b.outcome }}">{{ b.outcome }}</td>
<td class="n">{{ seconds(b.seconds) }}</td>
<td class="n">{{ b.layer_count if b.layers else "" }}</td>
<td class="n">{{ size(b.total_bytes) if b.layers else "" }}</td>
<td>{{ when(b.started_at) }}</td>{% if show_clients %}<td>{{ b.client }}</td>{% endif %}
</tr>
{% endfor %}</tbody>
</table>
{% else %}<p class="muted">No builds yet: pull an image and it appears here.</p>{% endif %}"""

_LANDING = (
    """{% extends "base" %}
{% block title %}Nixery at {{ host }}{% endblock %}
{% block body %}
<h1>Nixery at {{ host }}</h1>
<p>A container registry that builds images on demand from the Nix packages named in the image
path: ask for <code>{{ host }}/shell/git/htop</code> and it builds an image holding a shell, git
and htop, then serves it as any registry would.</p>

<h2>Pull an image</h2>
{% if team %}<p>This registry admits its team only: log in first with
<code>docker login {{ host }}</code> (a Google access token as the password of
<code>oauth2accesstoken</code>, or a robot's name and token).</p>{% endif %}
<pre>docker pull {{ host }}/shell/git/htop
docker run -it --rm {{ host }}/shell/git/htop bash</pre>
<p>The first pull of an image builds it (a minute or more); later pulls are served at once.
Plain HTTP: tell Docker with <code>"insecure-registries": ["{{ host }}"]</code> in
<code>daemon.json</code>, Podman and Skopeo with <code>--tls-verify=false</code>.</p>

<h2>Package source</h2>
<p>Packages come from <code>{{ source }}</code>{% if commit %}, now at commit
<code>{{ commit }}</code>{% elif source_error %} (its current commit cannot be read right now:
{{ source_error }}){% endif %}. The tag chooses the revision: <code>latest</code> is the
source's current one; a 40-hex commit pins it{% if commit %}, as in
<code>{{ host }}/hello:{{ commit }}</code>{% endif %}.</p>

<h2>Naming rules</h2>
<ul>
<li>Each path component is a package: a Nix attribute name, lowercase
(<code>{{ host }}/python3/ripgrep</code>); nested attributes keep their dots
(<code>python3packages.requests</code>).</li>
<li><code>shell</code>, first in the path, adds {% for p in shell_packages %}<code>{{ p }}</code>{{ ", " if not loop.last }}{% endfor %}.</li>
<li><code>arm64</code>, first in the path, builds for aarch64-linux instead of x86_64-linux.</li>
<li>Every image also holds {% for p in always_added %}<code>{{ p }}</code>{{ " and " if not loop.last }}{% endfor %}.</li>
<li>At most {{ max_packages }} components; names that are no package of the source are refused,
each named in the error.</li>
</ul>

<h2>Recent builds</h2>
"""
    + _BUILDS_TABLE
    + """
<p class="muted">Also as JSON: <a href="/?format=json">/?format=json</a>.</p>
{% endblock %}
"""
)

_BUILD = """{% extends "base" %}
{% block title %}{{ b.outcome }}: {{ b.repository }}:{{ b.tag }}{% endblock %}
{% block body %}
<p><a href="/">← Nixery at {{ host }}</a></p>
<h1>{{ b.repository }}:{{ b.tag }}</h1>
<p><span class="{{ b.outcome }}"><strong>{{ b.outcome }}</strong></span>
in {{ seconds(b.seconds) }}, started {{ when(b.started_at) }} UTC{% if show_clients %}
by {{ b.client }}{% endif %}.{% if b.message %} {{ b.message }}{% endif %}</p>
<table>
<tr><th>Build</th><td><code>{{ b.id }}</code></td></tr>
<tr><th>Source</th><td><code>{{ b.source }}</code> at <code>{{ b.commit }}</code></td></tr>
<tr><th>Image key</th><td><code>{{ b.key }}</code></td></tr>
{% if b.layers %}<tr><th>Layers</th><td>{{ b.layer_count }}, {{ size(b.total_bytes) }}</td></tr>{% endif %}
</table>

{% if b.refused %}<h2>Refused packages</h2>
<ul>{% for name, reason in b.refused.items() %}<li><code>{{ name }}</code>: {{ reason }}</li>{% endfor %}</ul>
{% endif %}

{% if b.manifest_digest %}<h2>Pull this image by digest</h2>
<pre>docker pull {{ host }}/{{ b.repository }}@{{ b.manifest_digest }}</pre>{% endif %}

<h2>Phases</h2>
<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="build phases timeline"
 width="{{ timeline.width + 220 }}" height="{{ 24 * timeline.rows|length + 8 }}"
 viewBox="0 0 {{ timeline.width + 220 }} {{ 24 * timeline.rows|length + 8 }}">
{% for row in timeline.rows %}<g>
<text x="0" y="{{ 24 * loop.index0 + 17 }}">{{ row.name }}</text>
<rect x="{{ 80 + row.x }}" y="{{ 24 * loop.index0 + 4 }}" width="{{ row.width }}" height="16" rx="2" fill="{{ row.colour }}"></rect>
<text x="{{ 86 + row.x + row.width }}" y="{{ 24 * loop.index0 + 17 }}">{{ seconds(row.seconds) }}</text>
</g>
{% endfor %}</svg>

{% if b.layers %}<h2>Layers</h2>
<table>
<thead><tr><th>#</th><th>Digest</th><th class="n">Size</th><th>Store paths</th></tr></thead>
<tbody>
{% for layer in b.layers %}<tr><td>{{ loop.index }}</td><td><code>{{ layer.digest[:19] }}…</code></td>
<td class="n">{{ size(layer.size) }}</td>
<td class="paths">{% for path in layer.paths %}{{ path }}{% if not loop.last %}<br>{% endif %}{% endfor %}</td></tr>
{% endfor %}</tbody>
</table>{% endif %}

{% if b.log %}<h2>Nix log</h2>
<p class="muted">The end of Nix's output (at most 64 KiB).</p>
<pre>{{ b.log }}</pre>{% endif %}
<p class="muted">Also as JSON: <a href="/builds/{{ b.id }}?format=json">?format=json</a>.</p>
{% endblock %}
"""

_MISSING = """{% extends "base" %}
{% block title %}No such build{% endblock %}
{% block body %}
<h1>No such build</h1>
<p>This registry keeps no build named <code>{{ build_id }}</code>: records are kept for a
while, then dropped. <a href="/">Recent builds</a></p>
{% endblock %}
"""

_environment = Environment(
    loader=DictLoader({"base": _BASE, "landing": _LANDING, "build": _BUILD, "missing": _MISSING}),
    autoescape=select_autoescape(default=True, default_for_string=True),
)


def _size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def _seconds(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.2f} s"
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min"


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S")


_environment.globals.update(size=_size, seconds=_seconds, when=_when, style=_STYLE)


@dataclass(frozen=True)
class TimelineRow:
    name: str
    x: float
    width: float
    seconds: float
    colour: str


@dataclass(frozen=True)
class Timeline:
    width: int
    rows: tuple[TimelineRow, ...]


def timeline(record: BuildRecord, width: int = TIMELINE_WIDTH) -> Timeline:
    end = max((phase.start + phase.seconds for phase in record.phases), default=0.0)
    scale = width / end if end > 0 else 0.0
    rows = tuple(
        TimelineRow(
            phase.name,
            round(phase.start * scale, 1),
            max(1.0, round(phase.seconds * scale, 1)),
            phase.seconds,
            PHASE_COLOURS.get(phase.name, "#999999"),
        )
        for phase in record.phases
    )
    return Timeline(width, rows)


@dataclass(frozen=True)
class Landing:
    host: str
    source: str
    commit: str | None
    source_error: str | None
    max_packages: int
    team: bool
    builds: list[BuildRecord]


def public_record(record: BuildRecord, show_clients: bool) -> dict[str, Any]:
    """A record as the JSON pages give it: in public mode, without the client's address."""
    data = record.to_dict()
    if not show_clients:
        data.pop("client", None)
    data["seconds"] = round(record.seconds, 3)
    data["layer_count"] = record.layer_count
    data["total_bytes"] = record.total_bytes
    return data


def render_landing(page: Landing) -> str:
    return _environment.get_template("landing").render(
        host=page.host,
        source=page.source,
        commit=page.commit,
        source_error=page.source_error,
        max_packages=page.max_packages,
        team=page.team,
        show_clients=page.team,
        builds=page.builds,
        shell_packages=SHELL_PACKAGES,
        always_added=ALWAYS_ADDED,
    )


def landing_json(page: Landing) -> str:
    return json.dumps(
        {
            "host": page.host,
            "pull": f"docker pull {page.host}/shell/git/htop",
            "source": page.source,
            "commit": page.commit,
            "meta_packages": {"shell": list(SHELL_PACKAGES), "arm64": "aarch64-linux"},
            "always_added": list(ALWAYS_ADDED),
            "max_packages": page.max_packages,
            "builds": [public_record(record, page.team) for record in page.builds],
        },
        separators=(",", ":"),
    )


def render_build(host: str, record: BuildRecord, show_clients: bool) -> str:
    return _environment.get_template("build").render(
        host=host, b=record, show_clients=show_clients, timeline=timeline(record)
    )


def render_missing(build_id: str) -> str:
    return _environment.get_template("missing").render(build_id=build_id)
