from __future__ import annotations

import pytest

from nixery.build.contract import AMD64, ARM64
from nixery.registry.errormap import as_registry_error
from nixery.registry.names import (
    InvalidName,
    InvalidTag,
    canonical_attribute,
    parse_image_name,
    validate_tag,
)


def test_shell_meta_package_and_always_added() -> None:
    image = parse_image_name("shell/git/htop")
    assert image.packages == (
        "bashinteractive",
        "cacert",
        "coreutils",
        "git",
        "htop",
        "iana-etc",
        "moreutils",
        "nano",
    )
    assert image.platform == AMD64


def test_arm64_selects_the_platform() -> None:
    image = parse_image_name("arm64/shell/hello")
    assert image.platform == ARM64
    assert "hello" in image.packages and "bashinteractive" in image.packages
    assert "arm64" not in image.packages


def test_meta_packages_only_in_the_leading_run() -> None:
    image = parse_image_name("hello/shell/arm64")
    assert image.platform == AMD64
    assert {"shell", "arm64", "hello"} <= set(image.packages)
    assert "bashinteractive" not in image.packages


def test_sorted_and_deduplicated() -> None:
    assert parse_image_name("shell/git/git").packages == parse_image_name("shell/git").packages
    assert parse_image_name("b/a/cacert").packages == ("a", "b", "cacert", "iana-etc")


def test_leading_digits_get_underscores_at_every_level() -> None:
    assert canonical_attribute("1password") == "_1password"
    assert canonical_attribute("python3Packages.7zip") == "python3packages._7zip"
    assert parse_image_name("1password").packages[0] == "_1password"


def test_nested_attributes_keep_their_dots() -> None:
    assert "haskellpackages.shellcheck" in parse_image_name("haskellpackages.shellcheck").packages


@pytest.mark.parametrize(
    "bad",
    ["", "UPPER/case", "a//b", "/lead", "trail/", "a..b", "-dash", "a/_x", "x" * 256, "a b"],
)
def test_invalid_names(bad: str) -> None:
    with pytest.raises(InvalidName) as info:
        parse_image_name(bad)
    error = as_registry_error(info.value)
    assert error.status == 400 and error.code == "NAME_INVALID"


@pytest.mark.parametrize("tag", ["latest", "v1.0", "_x", "A" * 128, "f" * 40])
def test_valid_tags(tag: str) -> None:
    validate_tag(tag)


@pytest.mark.parametrize("tag", ["", ".x", "-x", "a" * 129, "a/b", "a:b"])
def test_invalid_tags(tag: str) -> None:
    with pytest.raises(InvalidTag) as info:
        validate_tag(tag)
    error = as_registry_error(info.value)
    assert error.status == 400 and error.code == "TAG_INVALID"
