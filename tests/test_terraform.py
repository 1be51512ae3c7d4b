"""terraform/ provisions the cloud deployment: checked offline with terraform fmt, HCL parsing
against the code's own names, and checkov (no provider, no registry, no cloud needed)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hcl2
import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import firestore

from nixery.config import ENVIRONMENT
from nixery.index.firestore import FirestoreIndex
from nixery.storage.gcs import STAGING_PREFIX
from tests.conftest import REPO

TERRAFORM = REPO / "terraform"
# Read by functions-framework rather than nixery.config; each must be documented in the README.
FRAMEWORK_SETTINGS = {"THREADS", "WORKERS"}
PUBLIC_MEMBERS = {"allUsers", "allAuthenticatedUsers"}
IAM_SUFFIXES = ("_iam_member", "_iam_binding", "_iam_policy")

Block = dict[str, Any]


def _parse(path: Path) -> dict[str, Any]:
    options = hcl2.SerializationOptions(
        strip_string_quotes=True, explicit_blocks=False, with_comments=False
    )
    with path.open() as file:
        return hcl2.load(file, serialization_options=options)


class Module:
    """Every .tf file of terraform/, merged: resources and data by type and name."""

    def __init__(self, directory: Path) -> None:
        self.resources: dict[str, dict[str, Block]] = {}
        self.data: dict[str, dict[str, Block]] = {}
        self.locals: dict[str, Any] = {}
        self.variables: dict[str, Block] = {}
        for path in sorted(directory.glob("*.tf")):
            parsed = _parse(path)
            for kind, target in (("resource", self.resources), ("data", self.data)):
                for entry in parsed.get(kind, []):
                    for type_name, named in entry.items():
                        for name, body in named.items():
                            assert name not in target.get(type_name, {}), (
                                f"{type_name}.{name} twice"
                            )
                            target.setdefault(type_name, {})[name] = body
            for entry in parsed.get("locals", []):
                self.locals.update(entry)
            for entry in parsed.get("variable", []):
                self.variables.update(entry)

    def resource(self, type_name: str, name: str) -> Block:
        assert name in self.resources.get(type_name, {}), f"no resource {type_name}.{name}"
        return self.resources[type_name][name]

    def all_resources(self) -> Iterator[tuple[str, str, Block]]:
        for type_name, named in self.resources.items():
            for name, body in named.items():
                yield type_name, name, body

    def resolve(self, value: Any) -> Any:
        """`${local.x}` becomes the local's value; anything else stays as it is."""
        while isinstance(value, str) and (match := re.fullmatch(r"\$\{local\.(\w+)\}", value)):
            value = self.locals[match.group(1)]
        return value

    def default_number(self, expression: str) -> float:
        """The default of the variable behind `${var.x}` or `${tostring(var.x)}`."""
        match = re.fullmatch(r"\$\{(?:tostring\()?var\.(\w+)\)?\}", expression)
        assert match, f"not a plain variable reference: {expression!r}"
        default = self.variables[match.group(1)]["default"]
        assert isinstance(default, int | float), f"{match.group(1)} has no numeric default"
        return default


@pytest.fixture(scope="module")
def module() -> Module:
    return Module(TERRAFORM)


def _builder_env(module: Module) -> dict[str, str]:
    container = module.resource("google_cloud_run_v2_service", "builder")["template"][0][
        "containers"
    ][0]
    env = {block["name"]: block.get("value", "") for block in container.get("env", [])}
    for dynamic in container.get("dynamic", []):
        if "env" in dynamic:
            generated = module.resolve(dynamic["env"]["for_each"])
            assert isinstance(generated, dict), "the builder's env must come from a literal map"
            assert dynamic["env"]["content"][0] == {"name": "${env.key}", "value": "${env.value}"}
            env.update(generated)
    return env


def _function(module: Module) -> Block:
    return module.resource("google_cloudfunctions2_function", "registry")


def _function_env(module: Module) -> dict[str, str]:
    env = module.resolve(_function(module)["service_config"][0]["environment_variables"])
    assert isinstance(env, dict), "the function's environment must be a literal map"
    return env


def test_terraform_fmt() -> None:
    terraform = shutil.which("terraform")
    if terraform is None:
        pytest.skip("the terraform binary is not installed")
    result = subprocess.run(
        [terraform, "fmt", "-check", "-recursive", "-diff", "terraform"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_reference_is_declared(module: Module) -> None:
    # No provider can validate here: catch misspelt variables, locals and resources ourselves.
    text = json.dumps([module.resources, module.data, module.locals, module.variables])
    used_variables = set(re.findall(r"\bvar\.(\w+)", text))
    assert used_variables - module.variables.keys() == set()
    used_locals = set(re.findall(r"\blocal\.(\w+)", text))
    assert used_locals - module.locals.keys() == set()
    for type_name, name in set(re.findall(r"\b(google_\w+)\.(\w+)", text)):
        assert name in module.resources.get(type_name, {}), f"{type_name}.{name} is not declared"
    for name in set(re.findall(r"\bdata\.archive_file\.(\w+)", text)):
        assert name in module.data.get("archive_file", {})


def test_environment_names_are_settings_nixery_reads(module: Module) -> None:
    known = set(ENVIRONMENT.values())
    readme = (REPO / "README.md").read_text()
    for extra in FRAMEWORK_SETTINGS:
        assert f"`{extra}`" in readme, f"{extra} is not documented in the README"
    for component, env in (("builder", _builder_env(module)), ("function", _function_env(module))):
        unknown = env.keys() - known - FRAMEWORK_SETTINGS
        assert unknown == set(), f"the {component} sets settings nixery does not read: {unknown}"


def test_function_and_builder_share_storage_index_and_source(module: Module) -> None:
    builder, function = _builder_env(module), _function_env(module)
    assert builder["NIXERY_STORAGE_BACKEND"] == "gcs"
    assert builder["GCS_BUCKET"] == "${google_storage_bucket.blobs.name}"
    shared = (
        "GCS_BUCKET",
        "GOOGLE_CLOUD_PROJECT",
        "NIXERY_FIRESTORE_DATABASE",
        "NIXERY_FIRESTORE_PREFIX",
        "NIXERY_CHANNEL",
        "NIXERY_PKGS_REPO",
    )
    for name in shared:
        assert builder[name] == function[name], f"{name} differs between builder and function"
    assert function["NIXERY_BUILDER_URL"] == "${google_cloud_run_v2_service.builder.uri}"


def test_build_wait_is_below_the_function_timeout(module: Module) -> None:
    service = _function(module)["service_config"][0]
    build_wait = module.default_number(_function_env(module)["NIXERY_BUILD_WAIT"])
    timeout = module.default_number(str(service["timeout_seconds"]))
    assert build_wait < timeout
    preconditions = _function(module)["lifecycle"][0]["precondition"]
    assert any(
        "var.build_wait_seconds < var.function_timeout_seconds" in p["condition"]
        for p in preconditions
    )


def _iam_bindings(module: Module) -> Iterator[tuple[str, str, Block]]:
    for type_name, name, body in module.all_resources():
        if type_name.endswith(IAM_SUFFIXES):
            yield type_name, name, body


def _members(binding: Block) -> set[str]:
    members = binding.get("members", [])
    return {binding["member"], *members} if "member" in binding else set(members)


def _targets_builder(binding: Block) -> bool:
    return any("google_cloud_run_v2_service.builder" in str(value) for value in binding.values())


def test_builder_is_invoked_only_by_the_registry_function(module: Module) -> None:
    builder_bindings = [body for _, _, body in _iam_bindings(module) if _targets_builder(body)]
    assert builder_bindings, "no IAM binding lets the function invoke the builder"
    for binding in builder_bindings:
        assert _members(binding) & PUBLIC_MEMBERS == set()
    assert {(binding["role"], binding["member"]) for binding in builder_bindings} == {
        ("roles/run.invoker", "${google_service_account.registry.member}")
    }


def test_public_invoker_exists_only_for_a_public_registry(module: Module) -> None:
    public = [
        (type_name, name, body)
        for type_name, name, body in _iam_bindings(module)
        if _members(body) & PUBLIC_MEMBERS
    ]
    assert len(public) == 1, f"expected one public binding, got {[n for _, n, _ in public]}"
    _, _, binding = public[0]
    assert binding["role"] == "roles/run.invoker"
    assert (
        binding["service"]
        == "${google_cloudfunctions2_function.registry.service_config[0].service}"
    )
    assert binding.get("count") == "${var.public ? 1 : 0}"
    assert module.variables["public"]["default"] is False


def test_function_identity_has_what_signing_and_building_need(module: Module) -> None:
    grants = {
        (type_name, body["role"])
        for type_name, _, body in _iam_bindings(module)
        if body.get("member") == "${google_service_account.registry.member}"
    }
    assert ("google_storage_bucket_iam_member", "roles/storage.objectViewer") in grants
    assert ("google_project_iam_member", "roles/datastore.user") in grants
    assert ("google_cloud_run_service_iam_member", "roles/run.invoker") in grants
    signing = module.resource("google_service_account_iam_member", "registry_signs_as_itself")
    assert signing["role"] == "roles/iam.serviceAccountTokenCreator"
    assert signing["service_account_id"] == "${google_service_account.registry.name}"
    assert _function(module)["service_config"][0]["service_account_email"] == (
        "${google_service_account.registry.email}"
    )


def test_blob_bucket_is_private_and_expires_staged_uploads(module: Module) -> None:
    bucket = module.resource("google_storage_bucket", "blobs")
    assert bucket["uniform_bucket_level_access"] is True
    assert bucket["public_access_prevention"] == "enforced"
    expiring = [
        rule
        for rule in bucket.get("lifecycle_rule", [])
        if rule["action"][0]["type"] == "Delete"
        and STAGING_PREFIX in rule["condition"][0].get("matches_prefix", [])
    ]
    assert len(expiring) == 1
    assert expiring[0]["condition"][0]["age"] == 1
    # Nothing but staged uploads may expire: blobs are served for as long as the index says.
    assert all(
        rule["condition"][0].get("matches_prefix") == [STAGING_PREFIX]
        for rule in bucket.get("lifecycle_rule", [])
    )


def test_lease_ttl_targets_the_leases_collection(module: Module) -> None:
    prefix = "team-a-"
    client = firestore.Client(project="offline", credentials=AnonymousCredentials())
    leases = FirestoreIndex(client, prefix=prefix).leases.id
    ttl = module.resource("google_firestore_field", "lease_ttl")
    collection = module.resolve(ttl["collection"]).replace("${var.firestore_prefix}", prefix)
    assert collection == leases
    assert ttl["field"] == "expires_at"
    assert '"expires_at"' in (REPO / "functions/nixery/index/firestore.py").read_text()
    assert ttl["ttl_config"] == [{}]
    assert ttl["database"] == "${local.firestore_database}"
    database = module.resource("google_firestore_database", "index")
    assert database["type"] == "FIRESTORE_NATIVE"


def test_function_deploys_functions_dir_and_redeploys_on_change(module: Module) -> None:
    archive = module.data["archive_file"]["function_source"]
    assert archive["source_dir"] == "${path.module}/../functions"
    source_dir = TERRAFORM / "../functions"
    assert (source_dir / "main.py").is_file() and (source_dir / "requirements.txt").is_file()
    obj = module.resource("google_storage_bucket_object", "function_source")
    assert re.search(r"\$\{data\.archive_file\.function_source\.output_(md5|sha\w*)\}", obj["name"])
    assert obj["source"] == "${data.archive_file.function_source.output_path}"
    build = _function(module)["build_config"][0]
    assert build["entry_point"] == "registry"
    assert re.search(r"^def registry\(", (source_dir / "main.py").read_text(), re.MULTILINE)
    assert build["source"][0]["storage_source"][0]["object"] == (
        "${google_storage_bucket_object.function_source.name}"
    )
    assert module.variables["function_runtime"]["default"] in {"python311", "python312"}


def test_everything_scales_to_zero(module: Module) -> None:
    builder = module.resource("google_cloud_run_v2_service", "builder")
    assert builder["template"][0]["scaling"][0]["min_instance_count"] == 0
    assert builder["deletion_protection"] == "${var.deletion_protection}"
    assert module.variables["deletion_protection"]["default"] is False
    assert _function(module)["service_config"][0]["min_instance_count"] == 0


@pytest.mark.checkov
@pytest.mark.parametrize("public", [False, True], ids=["private", "public"])
def test_checkov_passes(public: bool, tmp_path: Path) -> None:
    # Installs checkov into its own .venv-checkov on first use (about 40 s), then ~5 s a run.
    var_file = tmp_path / "registry.tfvars"
    var_file.write_text(f"public = {json.dumps(public)}\n")
    result = subprocess.run(
        ["./scripts/checkov", "--var-file", str(var_file)],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
