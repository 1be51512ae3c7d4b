"""terraform/ provisions the cloud deployment: a module (terraform/modules/nixery-registry) and
an example root configuration that uses it (terraform/examples/team-registry). Checked offline
with terraform fmt, HCL parsing against the code's own names, and checkov (no provider, no
registry, no cloud needed)."""

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

from nixery.config import (
    BUILDER_OPTIONAL_SETTINGS,
    BUILDER_SETTINGS,
    ENVIRONMENT,
    FUNCTION_OPTIONAL_SETTINGS,
    FUNCTION_SETTINGS,
    Config,
)
from nixery.index.firestore import FirestoreIndex
from nixery.storage.gcs import STAGING_PREFIX
from tests.builder_image import FRAMEWORK_SETTINGS, Dockerfile
from tests.conftest import REPO, unavailable

TERRAFORM = REPO / "terraform"
MODULE_DIR = TERRAFORM / "modules" / "nixery-registry"
EXAMPLE_DIR = TERRAFORM / "examples" / "team-registry"
PUBLIC_MEMBERS = {"allUsers", "allAuthenticatedUsers"}
IAM_SUFFIXES = ("_iam_member", "_iam_binding", "_iam_policy")
SETTING_OF_VARIABLE = {variable: name for name, variable in ENVIRONMENT.items()}

REGISTRY = "${google_service_account.registry.member}"
BUILDER = "${google_service_account.builder.member}"
FUNCTION_BUILD = "${google_service_account.function_build.member}"
GC_SCHEDULER = "${google_service_account.gc_scheduler.member}"
BLOBS = "${google_storage_bucket.blobs.name}"
PROJECT = "${var.project_id}"
# Every IAM grant the module makes: (resource type, role, member, what it is granted on).
LEAST_PRIVILEGE = {
    # The function reads blobs, signs URLs as itself, uses Firestore, invokes the builder and
    # reads the robot token secret (only when one is configured).
    ("google_storage_bucket_iam_member", "roles/storage.objectViewer", REGISTRY, BLOBS),
    ("google_project_iam_member", "roles/datastore.user", REGISTRY, PROJECT),
    (
        "google_service_account_iam_member",
        "roles/iam.serviceAccountTokenCreator",
        REGISTRY,
        "${google_service_account.registry.name}",
    ),
    (
        "google_cloud_run_service_iam_member",
        "roles/run.invoker",
        REGISTRY,
        "${google_cloud_run_v2_service.builder.name}",
    ),
    (
        "google_secret_manager_secret_iam_member",
        "roles/secretmanager.secretAccessor",
        REGISTRY,
        "${var.robot_tokens_secret_id}",
    ),
    # The builder writes objects and uses Firestore.
    ("google_storage_bucket_iam_member", "roles/storage.objectUser", BUILDER, BLOBS),
    ("google_project_iam_member", "roles/datastore.user", BUILDER, PROJECT),
    # The garbage collection job invokes the builder's /gc, and nothing else.
    (
        "google_cloud_run_service_iam_member",
        "roles/run.invoker",
        GC_SCHEDULER,
        "${google_cloud_run_v2_service.builder.name}",
    ),
    # Docker clients cannot present Google ID tokens: the function is invokable by allUsers
    # in both access modes and checks team access itself.
    (
        "google_cloud_run_service_iam_member",
        "roles/run.invoker",
        "allUsers",
        "${google_cloudfunctions2_function.registry.service_config[0].service}",
    ),
    # Build time only: Cloud Functions (2nd gen) builds the function's container with Cloud
    # Build under this account, which writes build logs, reads the source Cloud Functions
    # copies into its own gcf-v2-sources-* bucket (created on first deployment, so only a
    # project-level grant can name it) and pushes the container to the module's repository.
    ("google_project_iam_member", "roles/logging.logWriter", FUNCTION_BUILD, PROJECT),
    ("google_project_iam_member", "roles/storage.objectViewer", FUNCTION_BUILD, PROJECT),
    (
        "google_artifact_registry_repository_iam_member",
        "roles/artifactregistry.writer",
        FUNCTION_BUILD,
        "${google_artifact_registry_repository.images.name}",
    ),
}
# The list, plus the IAM API that creates the service accounts and grants.
APIS = {
    "cloudfunctions.googleapis.com",
    "run.googleapis.com",
    "cloudbuild.googleapis.com",
    "artifactregistry.googleapis.com",
    "firestore.googleapis.com",
    "storage.googleapis.com",
    "iamcredentials.googleapis.com",
    "iam.googleapis.com",
    # The garbage collection job.
    "cloudscheduler.googleapis.com",
}

Block = dict[str, Any]


def _parse(path: Path) -> dict[str, Any]:
    options = hcl2.SerializationOptions(
        strip_string_quotes=True, explicit_blocks=False, with_comments=False
    )
    with path.open() as file:
        return hcl2.load(file, serialization_options=options)


class TerraformDir:
    """Every .tf file of one Terraform directory, merged by block kind, type and name."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.resources: dict[str, dict[str, Block]] = {}
        self.data: dict[str, dict[str, Block]] = {}
        self.locals: dict[str, Any] = {}
        self.variables: dict[str, Block] = {}
        self.outputs: dict[str, Block] = {}
        self.modules: dict[str, Block] = {}
        self.terraform: list[Block] = []
        self.providers: list[Block] = []
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
            for kind, named_target in (
                ("locals", self.locals),
                ("variable", self.variables),
                ("output", self.outputs),
                ("module", self.modules),
            ):
                for entry in parsed.get(kind, []):
                    named_target.update(entry)
            self.terraform.extend(parsed.get("terraform", []))
            self.providers.extend(parsed.get("provider", []))

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

    def text(self) -> str:
        blocks = [self.resources, self.data, self.locals, self.variables, self.outputs]
        return json.dumps([*blocks, self.modules, self.providers])

    def required_providers(self) -> dict[str, Block]:
        providers: dict[str, Block] = {}
        for block in self.terraform:
            for entry in block.get("required_providers", []):
                providers.update(entry)
        return providers


@pytest.fixture(scope="module")
def module() -> TerraformDir:
    return TerraformDir(MODULE_DIR)


@pytest.fixture(scope="module")
def example() -> TerraformDir:
    return TerraformDir(EXAMPLE_DIR)


def _builder_container(module: TerraformDir) -> Block:
    template = module.resource("google_cloud_run_v2_service", "builder")["template"][0]
    return template["containers"][0]


def _builder_env(module: TerraformDir) -> dict[str, str]:
    container = _builder_container(module)
    env = {block["name"]: block.get("value", "") for block in container.get("env", [])}
    for dynamic in container.get("dynamic", []):
        if "env" in dynamic:
            generated = module.resolve(dynamic["env"]["for_each"])
            assert isinstance(generated, dict), "the builder's env must come from a literal map"
            assert dynamic["env"]["content"][0] == {"name": "${env.key}", "value": "${env.value}"}
            env.update(generated)
    return env


def _function(module: TerraformDir) -> Block:
    return module.resource("google_cloudfunctions2_function", "registry")


def _function_env(module: TerraformDir) -> dict[str, str]:
    env = module.resolve(_function(module)["service_config"][0]["environment_variables"])
    assert isinstance(env, dict), "the function's environment must be a literal map"
    return env


def _function_secret_env(module: TerraformDir) -> dict[str, Block]:
    service = _function(module)["service_config"][0]
    secrets = {block["key"]: block for block in service.get("secret_environment_variables", [])}
    for dynamic in service.get("dynamic", []):
        if "secret_environment_variables" in dynamic:
            content = dynamic["secret_environment_variables"]["content"][0]
            secrets[content["key"]] = content
    return secrets


def _settings(names: set[str], component: str) -> set[str]:
    """Config field names of environment variables; framework settings are not Config's."""
    unknown = names - SETTING_OF_VARIABLE.keys() - FRAMEWORK_SETTINGS
    assert unknown == set(), f"the {component} gets variables nixery does not read: {unknown}"
    return {SETTING_OF_VARIABLE[name] for name in names if name in SETTING_OF_VARIABLE}


def _assert_sets_exactly(
    component: str, given: set[str], required: tuple[str, ...], optional: tuple[str, ...]
) -> None:
    missing = set(required) - given
    assert missing == set(), f"the deployment does not set the {component}'s {missing}"
    unread = given - set(required) - set(optional)
    assert unread == set(), f"the deployment sets what the {component} never reads: {unread}"


def test_terraform_fmt_covers_module_and_example() -> None:
    # Never skipped in CI (Terraform is not a Debian package, so the machine provides it; `fmt`
    # needs no provider and no network).
    terraform = shutil.which("terraform")
    if terraform is None:
        unavailable(
            "terraform is not installed: `terraform fmt -check` cannot run",
            "HashiCorp's apt repository (https://developer.hashicorp.com/terraform/install)",
        )
    result = subprocess.run(
        [terraform, "fmt", "-check", "-recursive", "-diff", "terraform"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert list(MODULE_DIR.glob("*.tf")) and list(EXAMPLE_DIR.glob("*.tf"))


@pytest.mark.parametrize("directory", [MODULE_DIR, EXAMPLE_DIR], ids=["module", "example"])
def test_every_reference_is_declared(directory: Path) -> None:
    # No provider can validate here: catch misspelt variables, locals and resources ourselves.
    config = TerraformDir(directory)
    text = config.text()
    assert set(re.findall(r"\bvar\.(\w+)", text)) - config.variables.keys() == set()
    assert set(re.findall(r"\blocal\.(\w+)", text)) - config.locals.keys() == set()
    for type_name, name in set(re.findall(r"\b(google_\w+)\.(\w+)", text)):
        assert name in config.resources.get(type_name, {}), f"{type_name}.{name} is not declared"
    for name in set(re.findall(r"\bdata\.archive_file\.(\w+)", text)):
        assert name in config.data.get("archive_file", {})


def test_example_uses_the_module_as_declared(example: TerraformDir, module: TerraformDir) -> None:
    call = example.modules["registry"]
    assert (EXAMPLE_DIR / call["source"]).resolve() == MODULE_DIR
    arguments = call.keys() - {"source", "version", "providers", "depends_on", "count"}
    assert arguments - module.variables.keys() == set(), "unknown module arguments"
    required = {name for name, body in module.variables.items() if "default" not in body}
    assert required - arguments == set(), "the example leaves required module variables unset"
    for name, output in example.outputs.items():
        for used in re.findall(r"\bmodule\.registry\.(\w+)", json.dumps(output)):
            assert used in module.outputs, f"output {name} reads a missing module output"


def test_providers_are_pinned(example: TerraformDir, module: TerraformDir) -> None:
    # A reusable module configures no provider; the root pins and configures them.
    assert module.providers == []
    for config in (module, example):
        providers = config.required_providers()
        assert {"google", "archive"} <= providers.keys()
        for name, requirement in providers.items():
            assert requirement["source"] == f"hashicorp/{name}"
            assert re.search(r"\d", requirement["version"]), f"{name} has no version constraint"
    for name, requirement in example.required_providers().items():
        assert re.fullmatch(r"~> \d+\.\d+", requirement["version"]), f"{name} is not pinned"
    assert [next(iter(p)) for p in example.providers] == ["google"]


def test_outputs_give_host_pull_command_bucket_and_builder(
    module: TerraformDir, example: TerraformDir
) -> None:
    for config in (module, example):
        assert {"registry_host", "docker_pull_example", "blob_bucket", "builder_url"} <= (
            config.outputs.keys()
        )
    assert module.outputs["docker_pull_example"]["value"] == (
        "docker pull ${local.registry_host}/shell/git"
    )
    host = module.locals["registry_host"]
    assert "var.custom_domain" in host and "local.function_uri" in host


def test_apis_enabled(module: TerraformDir) -> None:
    apis = module.resource("google_project_service", "apis")
    assert apis["for_each"] == "${local.apis}"
    assert set(re.findall(r"[\w.]+\.googleapis\.com", module.locals["apis"])) == APIS
    secret_manager = module.resource("google_project_service", "secret_manager")
    assert secret_manager["service"] == "secretmanager.googleapis.com"
    assert secret_manager["count"] == '${var.robot_tokens_secret_id != "" ? 1 : 0}'


def test_settings_declarations_name_config_fields() -> None:
    fields = Config.__dataclass_fields__.keys()
    for declared in (
        FUNCTION_SETTINGS,
        FUNCTION_OPTIONAL_SETTINGS,
        BUILDER_SETTINGS,
        BUILDER_OPTIONAL_SETTINGS,
    ):
        assert set(declared) <= fields and len(set(declared)) == len(declared)
    assert set(FUNCTION_SETTINGS) & set(FUNCTION_OPTIONAL_SETTINGS) == set()
    assert set(BUILDER_SETTINGS) & set(BUILDER_OPTIONAL_SETTINGS) == set()
    # Local development only: never part of a cloud component's settings.
    local_only = {"pkgs_path", "id_token_key_file", "id_token_public_keys", "port"}
    for declared in (FUNCTION_SETTINGS, FUNCTION_OPTIONAL_SETTINGS):
        assert local_only & set(declared) == set()
    for declared in (BUILDER_SETTINGS, BUILDER_OPTIONAL_SETTINGS):
        assert local_only & set(declared) == set()


def test_function_gets_exactly_the_settings_it_reads(module: TerraformDir) -> None:
    names = _function_env(module).keys() | _function_secret_env(module).keys()
    given = _settings(set(names), "function")
    _assert_sets_exactly("function", given, FUNCTION_SETTINGS, FUNCTION_OPTIONAL_SETTINGS)


def test_builder_gets_exactly_the_settings_it_reads(module: TerraformDir) -> None:
    # The process environment the image sets for its programs, not settings of nixery's.
    image_env = Dockerfile.load().env.keys() - {"PATH", "HOME"}
    overlap = image_env & _builder_env(module).keys()
    assert overlap == set(), f"set by both the image and Terraform: {overlap}"
    given = _settings(image_env | _builder_env(module).keys(), "builder")
    _assert_sets_exactly("builder", given, BUILDER_SETTINGS, BUILDER_OPTIONAL_SETTINGS)


def test_function_and_builder_share_storage_and_index(module: TerraformDir) -> None:
    builder, function = _builder_env(module), _function_env(module)
    assert builder["GCS_BUCKET"] == BLOBS
    for name in (
        "GCS_BUCKET",
        "GOOGLE_CLOUD_PROJECT",
        "NIXERY_FIRESTORE_DATABASE",
        "NIXERY_FIRESTORE_PREFIX",
    ):
        assert builder[name] == function[name], f"{name} differs between builder and function"
    assert function["NIXERY_BUILDER_URL"] == "${google_cloud_run_v2_service.builder.uri}"


def test_access_settings_come_from_the_access_variables(module: TerraformDir) -> None:
    function = _function_env(module)
    assert function["NIXERY_ACCESS"] == "${var.access}"
    assert function["NIXERY_TEAM_MEMBERS"] == '${join(",", var.team_members)}'
    assert function["NIXERY_TEAM_DOMAINS"] == '${join(",", var.team_domains)}'
    assert "public" in module.variables["access"]["validation"][0]["condition"]
    assert "default" not in module.variables["access"], "public or team is a deliberate choice"
    robot_tokens = _function_secret_env(module)["NIXERY_ROBOT_TOKENS"]
    assert robot_tokens["secret"] == "${secret_environment_variables.value}"
    service = _function(module)["service_config"][0]
    (dynamic,) = [d for d in service["dynamic"] if "secret_environment_variables" in d]
    assert dynamic["secret_environment_variables"]["for_each"] == (
        '${var.robot_tokens_secret_id != "" ? [var.robot_tokens_secret_id] : []}'
    )
    grant = module.resource(
        "google_secret_manager_secret_iam_member", "registry_reads_robot_tokens"
    )
    assert grant["count"] == '${var.robot_tokens_secret_id != "" ? 1 : 0}'


def test_build_wait_is_below_the_function_timeout(module: TerraformDir) -> None:
    service = _function(module)["service_config"][0]
    build_wait = module.default_number(_function_env(module)["NIXERY_BUILD_WAIT"])
    timeout = module.default_number(str(service["timeout_seconds"]))
    assert build_wait < timeout
    preconditions = _function(module)["lifecycle"][0]["precondition"]
    assert any(
        "var.build_wait_seconds < var.function_timeout_seconds" in p["condition"]
        for p in preconditions
    )


def _iam_bindings(config: TerraformDir) -> Iterator[tuple[str, str, Block]]:
    for type_name, name, body in config.all_resources():
        if type_name.endswith(IAM_SUFFIXES):
            yield type_name, name, body


def _members(binding: Block) -> set[str]:
    members = binding.get("members", [])
    return {binding["member"], *members} if "member" in binding else set(members)


def _target(binding: Block) -> str:
    for key in ("bucket", "service_account_id", "service", "secret_id", "repository"):
        if key in binding:
            return str(binding[key])
    return str(binding["project"])


def test_iam_grants_are_exactly_least_privilege(module: TerraformDir) -> None:
    granted = set()
    for type_name, name, binding in _iam_bindings(module):
        assert type_name.endswith("_iam_member"), f"{name}: bindings/policies replace others"
        granted.add((type_name, binding["role"], binding["member"], _target(binding)))
    assert granted == LEAST_PRIVILEGE
    assert len(list(_iam_bindings(module))) == len(LEAST_PRIVILEGE)


def test_builder_is_invoked_only_by_the_registry_function_and_the_gc_job(
    module: TerraformDir,
) -> None:
    builder_bindings = [
        body
        for _, _, body in _iam_bindings(module)
        if any("google_cloud_run_v2_service.builder" in str(value) for value in body.values())
    ]
    assert sorted((b["role"], sorted(_members(b))) for b in builder_bindings) == [
        ("roles/run.invoker", [GC_SCHEDULER]),
        ("roles/run.invoker", [REGISTRY]),
    ]
    builder = module.resource("google_cloud_run_v2_service", "builder")
    assert builder["deletion_protection"] == "${var.deletion_protection}"
    assert module.variables["deletion_protection"]["type"] == "bool"


def test_function_is_invokable_by_all_in_both_access_modes(module: TerraformDir) -> None:
    public = [
        (type_name, name, body)
        for type_name, name, body in _iam_bindings(module)
        if _members(body) & PUBLIC_MEMBERS
    ]
    assert [name for _, name, _ in public] == ["registry_invokable_by_all"]
    binding = public[0][2]
    assert "count" not in binding and "for_each" not in binding
    assert _function(module)["service_config"][0]["service_account_email"] == (
        "${google_service_account.registry.email}"
    )


def test_builder_is_sized_for_nix_and_scales_as_configured(module: TerraformDir) -> None:
    builder = module.resource("google_cloud_run_v2_service", "builder")
    template = builder["template"][0]
    assert template["timeout"] == "${var.builder_timeout_seconds}s"
    condition = module.variables["builder_timeout_seconds"]["validation"][0]["condition"]
    assert "<= 3600" in condition
    assert template["max_instance_request_concurrency"] == "${var.builder_request_concurrency}"
    assert template["scaling"][0] == {
        "min_instance_count": 0,
        "max_instance_count": "${var.builder_max_instances}",
    }
    assert template["service_account"] == "${google_service_account.builder.email}"
    limits = _builder_container(module)["resources"][0]["limits"]
    assert limits == {"cpu": "${var.builder_cpu}", "memory": "${var.builder_memory}"}
    assert int(module.variables["builder_cpu"]["default"]) >= 2
    assert module.variables["builder_memory"]["default"].endswith("Gi")
    threads = int(Dockerfile.load().env["THREADS"])
    assert module.variables["builder_request_concurrency"]["default"] <= threads
    assert _function(module)["service_config"][0]["min_instance_count"] == 0
    function_max = _function(module)["service_config"][0]["max_instance_count"]
    assert function_max == "${var.function_max_instances}"


def test_builder_port_and_command_match_the_dockerfile(module: TerraformDir) -> None:
    container = _builder_container(module)
    # The image's CMD runs: Terraform overrides neither the command nor its arguments.
    assert "command" not in container and "args" not in container
    dockerfile = Dockerfile.load()
    assert [int(p["container_port"]) for p in container["ports"]] == dockerfile.exposed_ports()


def test_blob_bucket_is_private_and_expires_staged_uploads(module: TerraformDir) -> None:
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
    # Retention is a setting; a retention policy would stop the builder deleting staged copies.
    assert bucket["soft_delete_policy"] == [
        {"retention_duration_seconds": "${var.blob_soft_delete_seconds}"}
    ]
    assert "retention_policy" not in bucket


def test_lease_ttl_targets_the_leases_collection(module: TerraformDir) -> None:
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


def test_artifact_registry_repository_holds_docker_images(module: TerraformDir) -> None:
    repository = module.resource("google_artifact_registry_repository", "images")
    assert repository["format"] == "DOCKER"
    assert repository["repository_id"] == "${var.name_prefix}"
    # cloudbuild.yaml pushes to <region>-docker.pkg.dev/<project>/<repository>/builder:<tag>;
    # the example composes builder_image the same way.
    builder_image = TerraformDir(EXAMPLE_DIR).modules["registry"]["builder_image"]
    assert builder_image.startswith(
        "${var.region}-docker.pkg.dev/${var.project_id}/${var.name_prefix}/builder:"
    )


def test_custom_domain_maps_to_the_function(module: TerraformDir) -> None:
    mapping = module.resource("google_cloud_run_domain_mapping", "registry")
    assert mapping["count"] == '${var.custom_domain != "" ? 1 : 0}'
    assert mapping["name"] == "${var.custom_domain}"
    assert mapping["spec"][0]["route_name"] == (
        '${reverse(split("/", google_cloudfunctions2_function.registry.service_config[0].service))[0]}'
    )


def _doublestar(pattern: str) -> re.Pattern[str]:
    """archive_file's `excludes` glob (bmatcuk/doublestar) as a regular expression."""
    out = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out))


def _zipped(source: Path, excludes: list[str]) -> set[str]:
    """The files archive_file zips: a file goes unless it or a parent directory matches."""
    patterns = [_doublestar(pattern) for pattern in excludes]
    kept = set()
    for path in source.rglob("*"):
        if not path.is_file():
            continue
        relative = path.relative_to(source).as_posix()
        parts = relative.split("/")
        prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        if not any(p.fullmatch(prefix) for p in patterns for prefix in prefixes):
            kept.add(relative)
    return kept


def test_function_zip_holds_the_code_without_tests_or_caches(
    module: TerraformDir, tmp_path: Path
) -> None:
    archive = module.data["archive_file"]["function_source"]
    source_dir = Path(archive["source_dir"].replace("${path.module}", str(MODULE_DIR)))
    assert source_dir.resolve() == REPO / "functions"
    excludes = archive["excludes"]
    # A copy of functions/ with what a developer's checkout accumulates.
    tree = tmp_path / "functions"
    shutil.copytree(REPO / "functions", tree, ignore=shutil.ignore_patterns("__pycache__"))
    litter = [
        "nixery/__pycache__/api.cpython-311.pyc",
        "__pycache__/main.cpython-312.pyc",
        "nixery/stale.pyc",
        ".pytest_cache/v/cache/lastfailed",
        ".ruff_cache/0.6.0/123",
        ".mypy_cache/3.11/api.json",
        "tests/test_api.py",
        "nixery/tests/helpers.py",
        "nixery/test_layers.py",
        "nixery/layers_test.py",
        "conftest.py",
    ]
    for name in litter:
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / name).write_text("x")
    zipped = _zipped(tree, excludes)
    assert zipped & set(litter) == set()
    code = {p.relative_to(REPO / "functions").as_posix() for p in (REPO / "functions").rglob("*")}
    code = {
        name for name in code if (REPO / "functions" / name).is_file() and "__pycache__" not in name
    }
    assert "main.py" in code and "requirements.txt" in code and "nixery/registry/api.py" in code
    assert zipped == code, "the zip must hold every source file of functions/"


def test_function_deploys_the_zip_and_redeploys_on_change(module: TerraformDir) -> None:
    obj = module.resource("google_storage_bucket_object", "function_source")
    assert re.search(r"\$\{data\.archive_file\.function_source\.output_(md5|sha\w*)\}", obj["name"])
    assert obj["source"] == "${data.archive_file.function_source.output_path}"
    build = _function(module)["build_config"][0]
    assert build["source"][0]["storage_source"][0]["object"] == (
        "${google_storage_bucket_object.function_source.name}"
    )
    assert module.variables["function_runtime"]["default"] in {"python311", "python312"}


def test_entry_point_names_match_functions_main(module: TerraformDir) -> None:
    main = (REPO / "functions" / "main.py").read_text()
    entry_point = _function(module)["build_config"][0]["entry_point"]
    assert re.search(rf"^@functions_framework\.http\ndef {entry_point}\(", main, re.MULTILINE), (
        f"functions/main.py has no HTTP function {entry_point!r}"
    )


def test_every_checkov_skip_says_why() -> None:
    skips = []
    for path in TERRAFORM.rglob("*.tf"):
        for line in path.read_text().splitlines():
            if "checkov:skip" in line:
                match = re.fullmatch(r"\s*#checkov:skip=(CKV\w*_\d+):(.+)", line)
                assert match, f"{path.name}: malformed skip {line.strip()!r}"
                assert len(match.group(2).split()) >= 8, f"{path.name}: give the reason"
                skips.append(match.group(1))
    assert skips, "no inline skips found: the parser above is wrong"
    script = (REPO / "scripts" / "checkov").read_text()
    assert "--skip-check" not in script and "--soft-fail" not in script
    assert "--skip-download" in script and "-d terraform" in script


@pytest.mark.cloud
@pytest.mark.checkov
@pytest.mark.parametrize("access", ["public", "team"])
def test_checkov_passes(access: str, tmp_path: Path) -> None:
    # Installs checkov into its own .venv-checkov on first use (about 40 s), then ~5 s a run.
    var_file = tmp_path / "registry.tfvars"
    # The team variant also turns on the conditional parts: the robot token secret's grant
    # and the custom domain mapping.
    team = 'robot_tokens_secret_id = "robots"\ncustom_domain = "registry.example.com"\n'
    var_file.write_text(
        f'project_id = "p"\naccess = "{access}"\nbuilder_image_tag = "v1"\n'
        'team_domains = ["example.com"]\n' + (team if access == "team" else "")
    )
    result = subprocess.run(
        ["./scripts/checkov", "--var-file", str(var_file)],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]


# Module variables whose default is tuned for the cloud on purpose, unlike nixery's own default.
TUNED_DEFAULTS = {
    # The deployment's function may wait up to its own (longer) timeout for a cold build.
    "NIXERY_BUILD_WAIT": "1500 s, under the module's function timeout",
}


def test_module_defaults_are_the_declared_defaults(module: TerraformDir) -> None:
    """A Terraform variable that only passes a setting through defaults to nixery's default, so
    the value is written twice but cannot drift (nixery.config owns it)."""
    environment = {**_function_env(module), **_builder_env(module)}
    compared = set()
    for variable, expression in environment.items():
        match = re.fullmatch(r"\$\{(?:tostring\()?var\.(\w+)\)?\}", str(expression))
        name = SETTING_OF_VARIABLE.get(variable)
        if match is None or name is None:
            continue
        default = module.variables[match.group(1)].get("default")
        declared = getattr(Config(), name)
        if default is None or declared is None or variable in TUNED_DEFAULTS:
            continue
        compared.add(variable)
        same = default == declared or str(default).strip('"') == str(declared)
        assert same, f"var.{match.group(1)} defaults to {default!r}, {variable} to {declared!r}"
    assert {"NIXERY_LAYER_BUDGET", "NIXERY_MAX_PACKAGES", "NIXERY_CLIENT_BUILD_LIMIT"} <= compared


def test_gc_job_posts_to_the_builder_with_its_own_oidc_token(module: TerraformDir) -> None:
    job = module.resource("google_cloud_scheduler_job", "gc")
    target = job["http_target"][0]
    assert target["http_method"] == "POST"
    assert target["uri"] == "${google_cloud_run_v2_service.builder.uri}/gc"
    token = target["oidc_token"][0]
    assert token["service_account_email"] == "${google_service_account.gc_scheduler.email}"
    assert token["audience"] == "${google_cloud_run_v2_service.builder.uri}"
    assert "${google_cloud_run_service_iam_member.scheduler_invokes_builder}" in job["depends_on"]
    assert "${google_project_service.apis}" in job["depends_on"]
    env = _builder_env(module)
    assert {"NIXERY_GC_RETENTION_DAYS", "NIXERY_GC_GRACE_SECONDS"} <= env.keys()
