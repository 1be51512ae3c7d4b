"""terraform/ checked against the providers' own schemas (tests/terraform_schema.py), offline:
every block of the module and the example, and planted mistakes of each kind are caught."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.terraform_schema import Checker, Schema, load_schemas

TERRAFORM = Path(__file__).resolve().parents[1] / "terraform"
DIRECTORIES = [TERRAFORM / "modules" / "nixery-registry", TERRAFORM / "examples" / "team-registry"]


@pytest.fixture(scope="module")
def schemas() -> dict[str, Schema]:
    return load_schemas()


def test_the_schemas_hold_what_the_module_uses(schemas: dict[str, Schema]) -> None:
    bucket = schemas["resource.google_storage_bucket"]
    assert bucket["arguments"]["name"]["required"] and bucket["arguments"]["location"]["required"]
    assert "lifecycle_rule" in bucket["blocks"] and "url" in bucket["attributes"]
    function = schemas["resource.google_cloudfunctions2_function"]
    assert "uri" in function["attributes"]["service_config"]
    assert "output_path" in schemas["data.archive_file"]["attributes"]


@pytest.mark.parametrize("directory", DIRECTORIES, ids=lambda d: d.name)
def test_every_block_matches_the_provider_schema(
    schemas: dict[str, Schema], directory: Path
) -> None:
    assert Checker(schemas).check_directory(directory) == []


PLANTED = [
    # (file, text to replace, replacement, what the checker must say)
    (
        "storage.tf",
        'resource "google_storage_bucket"',
        'resource "google_storage_buckets"',
        "no such resource type",
    ),
    (
        "storage.tf",
        "uniform_bucket_level_access = true",
        "uniform_bucket_level_acess = true",
        "no argument or block named uniform_bucket_level_acess",
    ),
    (
        "storage.tf",
        'storage_class               = "STANDARD"',
        'storage_class               = ["STANDARD"]',
        "storage_class wants a string",
    ),
    (
        "storage.tf",
        "uniform_bucket_level_access = true",
        'uniform_bucket_level_access = "yes"',
        "uniform_bucket_level_access wants a bool",
    ),
    (
        "storage.tf",
        "      age            = 1",
        '      age            = "one"',
        "age wants a number",
    ),
    (
        "main.tf",
        "google_cloudfunctions2_function.registry.service_config[0].uri",
        "google_cloudfunctions2_function.registry.service_config[0].url",
        "has no attribute url",
    ),
    (
        "registry.tf",
        "google_service_account.function_build.id",
        "google_service_account.function_builder.id",
        "is referenced but not declared",
    ),
]


@pytest.mark.parametrize(("file", "old", "new", "expected"), PLANTED, ids=[p[3] for p in PLANTED])
def test_planted_mistakes_are_caught(
    schemas: dict[str, Schema], tmp_path: Path, file: str, old: str, new: str, expected: str
) -> None:
    module = tmp_path / "nixery-registry"
    shutil.copytree(DIRECTORIES[0], module)
    path = module / file
    text = path.read_text()
    assert old in text, f"{file} no longer holds {old!r}: update the planted mistake"
    path.write_text(text.replace(old, new, 1))
    problems = Checker(schemas).check_directory(module)
    assert any(expected in problem for problem in problems), problems


def test_a_missing_required_argument_is_caught(schemas: dict[str, Schema], tmp_path: Path) -> None:
    (tmp_path / "main.tf").write_text(
        'resource "google_storage_bucket" "b" {\n  location = "EU"\n}\n'
        'resource "google_service_account" "a" {\n  display_name = "x"\n}\n'
    )
    problems = Checker(schemas).check_directory(tmp_path)
    assert any("required name is missing" in p for p in problems), problems
    assert any("required account_id is missing" in p for p in problems), problems


def test_a_block_written_as_an_argument_is_caught(
    schemas: dict[str, Schema], tmp_path: Path
) -> None:
    (tmp_path / "main.tf").write_text(
        'resource "google_storage_bucket" "b" {\n  name = "n"\n  location = "EU"\n'
        "  versioning = { enabled = true }\n}\n"
    )
    problems = Checker(schemas).check_directory(tmp_path)
    assert any("versioning is a block" in p for p in problems), problems
