"""The one declaration of every setting (nixery.config) and what is made from it: flags,
start-up validation, the component lists and README.md's settings tables."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from nixery.cli import main
from nixery.config import (
    BUILDER_OPTIONAL_SETTINGS,
    BUILDER_SETTINGS,
    ENVIRONMENT,
    FUNCTION_OPTIONAL_SETTINGS,
    FUNCTION_SETTINGS,
    SERVE_SETTINGS,
    SETTINGS,
    Config,
    ConfigError,
    load_config,
    markdown_table,
)
from tests.conftest import REPO

README = REPO / "README.md"
TABLE_RE = re.compile(
    r"<!-- settings table (?P<kind>\w+): [^>]*-->\n(?P<table>.*?)<!-- end of settings table -->",
    re.DOTALL,
)


def test_every_config_field_is_a_declared_setting() -> None:
    assert [setting.name for setting in SETTINGS] == list(Config.__dataclass_fields__)
    assert len(set(ENVIRONMENT.values())) == len(SETTINGS), "two settings share a variable"


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda setting: setting.variable)
def test_each_default_is_a_value_the_setting_accepts(setting: object) -> None:
    from nixery.config import Setting

    assert isinstance(setting, Setting)
    value = getattr(Config(), setting.name)
    if value is None:
        return
    if setting.choices:
        assert value in setting.choices
    else:
        assert isinstance(value, setting.kind)
    if setting.bounds is not None:
        assert setting.bounds.low <= value <= setting.bounds.high
    # Every default survives the round trip through its environment variable.
    text = value if isinstance(value, str) else f"{value}"
    if text:
        assert getattr(load_config({setting.variable: text}, {}), setting.name) == value


def test_bounds_are_checked_at_both_ends() -> None:
    with pytest.raises(ConfigError, match=r"NIXERY_LAYER_BUDGET must be between 1 and 120"):
        load_config({"NIXERY_LAYER_BUDGET": "121"}, {})
    assert load_config({"NIXERY_LAYER_BUDGET": "1"}, {}).layer_budget == 1
    assert load_config({"NIXERY_LAYER_BUDGET": "120"}, {}).layer_budget == 120
    with pytest.raises(ConfigError, match=r"NIXERY_SIGNED_URL_EXPIRY must be between 60"):
        load_config({"NIXERY_SIGNED_URL_EXPIRY": "59"}, {})
    with pytest.raises(ConfigError, match="NIXERY_ACCESS must be 'public' or 'team'"):
        load_config({"NIXERY_ACCESS": "private"}, {})


def test_component_lists_come_from_the_declaration() -> None:
    assert "gcs_bucket" in FUNCTION_SETTINGS and "gcs_bucket" in BUILDER_SETTINGS
    assert "max_packages" in FUNCTION_OPTIONAL_SETTINGS
    assert "layer_budget" in BUILDER_OPTIONAL_SETTINGS
    assert "gcs_bucket" not in SERVE_SETTINGS and "build_concurrency" in SERVE_SETTINGS
    # Local development only: read, but never part of what the deployment sets.
    cloud = {*FUNCTION_SETTINGS, *FUNCTION_OPTIONAL_SETTINGS}
    cloud |= {*BUILDER_SETTINGS, *BUILDER_OPTIONAL_SETTINGS}
    assert {"pkgs_path", "id_token_key_file", "id_token_public_keys"}.isdisjoint(cloud)


def test_serve_flags_and_help_are_the_declaration(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    usage = capsys.readouterr().out
    for setting in SETTINGS:
        assert (setting.flag in usage) == setting.reads("serve"), setting.name
    # argparse wraps lines; compare without the wrapping.
    flat = " ".join(usage.split())
    assert "(default 64) [env NIXERY_LAYER_BUDGET]" in flat
    assert "(default $XDG_DATA_HOME/nixery) [env STORAGE_PATH]" in flat


def _readme_tables() -> dict[str, str]:
    return {match["kind"]: match["table"] for match in TABLE_RE.finditer(README.read_text())}


@pytest.mark.parametrize("kind", ["serve", "cloud"])
def test_readme_table_is_made_from_the_declaration(kind: str) -> None:
    expected = markdown_table(kind)  # type: ignore[arg-type]
    written = _readme_tables().get(kind)
    assert written == expected, (
        f"README.md's {kind} settings table differs from nixery.config; regenerate it with\n"
        f"  python -m nixery settings --markdown {kind}\nand paste:\n{expected}"
    )


def test_settings_command_prints_the_tables(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["settings", "--markdown", "cloud"]) == 0
    assert capsys.readouterr().out == markdown_table("cloud")


def test_docs_name_only_declared_variables() -> None:
    # Every NIXERY_* variable the docs mention is a setting (catches renamed settings).
    platform = {"NIXERY_"}
    for doc in [README, *Path(REPO / "docs").glob("*.md"), REPO / "terraform" / "README.md"]:
        for variable in set(re.findall(r"\bNIXERY_[A-Z_]+\b", doc.read_text())) - platform:
            assert variable in ENVIRONMENT.values(), f"{doc.name} names unknown {variable}"


def test_defaults_written_in_prose_are_the_declared_ones() -> None:
    # "`NIXERY_MAX_PACKAGES` (default 64)": a default the docs repeat must not drift.
    shown = {s.variable: s.shown_default.replace("`", "") for s in SETTINGS}
    mention = re.compile(r"`([A-Z_]+)`[^`(]{0,40}\(default ([^;)]+)[;)]")
    checked = 0
    for doc in [README, *Path(REPO / "docs").glob("*.md"), REPO / "terraform" / "README.md"]:
        for variable, default in mention.findall(doc.read_text()):
            if variable in shown:
                written = default.replace("`", "")
                assert written == shown[variable], f"{doc.name}: {variable} (default {default})"
                checked += 1
    assert checked >= 3
