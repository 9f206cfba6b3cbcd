"""`knative/` is what the code would generate, valid against the upstream CRDs, and fed
by the same routing declaration as the local stack.

Strict validation: the vendored CRD schemas in `tests/specs/` (see its
SOURCES.md) get `additionalProperties: false` on every object schema that
does not preserve unknown fields, so a misspelt key fails here rather than
being dropped silently by the API server. Overlays are built with `kubectl
kustomize` when kubectl is installed (skipped otherwise) and checked the same way.
"""

from __future__ import annotations

import ast
import copy
import inspect
import os
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped,unused-ignore]
import pytest
import yaml  # type: ignore[import-untyped,unused-ignore]

from local import manifests
from local.kafkasource import KafkaSourceEmulator
from local.triggers import kafka_triggered, scheduled
from shared import migrations
from shared.domain.events import DEAD_LETTER_TOPIC, REGISTRY
from shared.runtime.routing import load

ROOT = Path(__file__).resolve().parents[2]
SPECS = ROOT / "tests" / "specs"
CRDS = ("service.yaml", "kafkasource.yaml", "kafkasink.yaml", "pingsource.yaml",
        "containersource.yaml")
NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")

# Topics no function reacts to, on purpose (a catch-all subscriber such as the
# analytics indexer, which reads every topic, does not count: it would hide a
# missing consumer forever).
IGNORED_TOPICS = {
    "user.updated": "the profile lives in the accounts table; nothing else keeps a copy",
    "course.deactivated": "reserve_ticket reads the course's status when a booking comes;"
                          " open bookings keep their ticket",
}
# The booking saga: each reacts to events keyed by booking id, which must not overtake each other.
SAGA = {"reserve_ticket", "reject_booking", "open_hold", "open_payment", "settle_booking",
        "expire_booking", "settle_ticket", "cancel_open_payment"}


# --- strict schemas --------------------------------------------------------------

def strict(schema: Any) -> Any:
    """Close every object schema that does not preserve unknown fields (kubeconform -strict)."""
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    for key in ("properties", "patternProperties"):
        if key in out:
            out[key] = {name: strict(sub) for name, sub in out[key].items()}
    for key in ("items", "additionalProperties", "not"):
        if isinstance(out.get(key), dict):
            out[key] = strict(out[key])
    for key in ("allOf", "anyOf", "oneOf"):
        if key in out:
            out[key] = [strict(sub) for sub in out[key]]
    is_object = out.get("type") == "object" or "properties" in out
    if (is_object and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


@cache
def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> the strict schema of each served version of the vendored CRDs."""
    schemas = {}
    for file in CRDS:
        crd = yaml.safe_load((SPECS / file).read_text())
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if version["served"]:
                root = copy.deepcopy(version["schema"]["openAPIV3Schema"])
                # apiVersion, kind and metadata are checked by check_header()
                for key in ("apiVersion", "kind", "metadata", "status"):
                    root.get("properties", {}).pop(key, None)
                schemas[(f"{group}/{version['name']}", kind)] = strict(root)
    return schemas


STR = {"type": "string"}
STRINGS = {"type": "array", "items": STR}
STR_MAP = {"type": "object", "additionalProperties": STR}
ENV_FROM = {"type": "array", "items": {"type": "object", "properties": {
    "configMapRef": {"type": "object", "properties": {"name": STR}},
    "secretRef": {"type": "object", "properties": {"name": STR}}}}}
SECURITY = {"type": "object", "properties": {
    "runAsNonRoot": {"type": "boolean"}, "allowPrivilegeEscalation": {"type": "boolean"},
    "capabilities": {"type": "object", "properties": {"drop": STRINGS}},
    "seccompProfile": {"type": "object", "properties": {"type": STR}}}}
# Hand-written, from the Kubernetes API reference: only the fields the generator uses.
K8S_SCHEMAS: dict[tuple[str, str], dict[str, Any]] = {
    ("v1", "ConfigMap"): {"type": "object", "required": ["data"],
                          "properties": {"data": STR_MAP}},
    ("batch/v1", "Job"): {"type": "object", "required": ["spec"], "properties": {"spec": {
        "type": "object", "required": ["template"], "properties": {
            "backoffLimit": {"type": "integer"}, "ttlSecondsAfterFinished": {"type": "integer"},
            "template": {"type": "object", "properties": {"spec": {
                "type": "object", "required": ["containers", "restartPolicy"], "properties": {
                    "restartPolicy": {"enum": ["OnFailure", "Never"]},
                    "containers": {"type": "array", "minItems": 1, "items": {
                        "type": "object", "required": ["name", "image"], "properties": {
                            "name": STR, "image": STR, "command": STRINGS,
                            "env": {"type": "array", "items": {
                                "type": "object", "required": ["name"],
                                "properties": {"name": STR, "value": STR}}},
                            "envFrom": ENV_FROM, "securityContext": SECURITY}}}}}}}}}}},
    ("networking.k8s.io/v1", "Ingress"): {"type": "object", "properties": {"spec": {
        "type": "object", "properties": {
            "ingressClassName": STR,
            "rules": {"type": "array", "items": {"type": "object", "properties": {
                "host": STR,
                "http": {"type": "object", "required": ["paths"], "properties": {
                    "paths": {"type": "array", "items": {
                        "type": "object", "required": ["path", "pathType", "backend"],
                        "properties": {
                            "path": {"type": "string", "pattern": "^/"},
                            "pathType": {"enum": ["Prefix", "Exact",
                                                  "ImplementationSpecific"]},
                            "backend": {"type": "object", "properties": {"service": {
                                "type": "object", "required": ["name", "port"], "properties": {
                                    "name": STR, "port": {"type": "object", "properties": {
                                        "number": {"type": "integer"}}}}}}}}}}}}}}}}}}},
}
KUSTOMIZATION = strict({"type": "object", "required": ["apiVersion", "kind"], "properties": {
    "apiVersion": {"const": "kustomize.config.k8s.io/v1beta1"},
    "kind": {"const": "Kustomization"}, "namespace": STR, "resources": STRINGS,
    "images": {"type": "array", "items": {"type": "object", "required": ["name"],
               "properties": {"name": STR, "newName": STR, "newTag": STR}}},
    "patches": {"type": "array", "items": {"type": "object", "required": ["path"], "properties": {
        "path": STR, "target": {"type": "object", "properties": {
            "group": STR, "version": STR, "kind": STR, "name": STR, "labelSelector": STR,
            "annotationSelector": STR}}}}}}})
JSON6902 = strict({"type": "array", "minItems": 1, "items": {
    "type": "object", "required": ["op", "path"], "properties": {
        "op": {"enum": ["add", "remove", "replace", "test"]},
        "path": {"type": "string", "pattern": "^/"}, "value": {}}}})
METADATA = strict({"type": "object", "required": ["name"], "properties": {
    "name": {"type": "string", "pattern": NAME.pattern}, "namespace": STR,
    "labels": STR_MAP, "annotations": STR_MAP}})


@cache
def validator(api_version: str, kind: str) -> Any:
    """Built once per kind: checking the large Service schema itself is the slow part."""
    key = (api_version, kind)
    schema = crd_schemas().get(key) or strict(K8S_SCHEMAS.get(key))
    assert schema is not None, f"no schema for {key}: add the CRD to tests/specs"
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def validate(doc: dict[str, Any]) -> None:
    """Strictly: header and metadata by hand, the rest against the CRD or the k8s schema."""
    jsonschema.validate(doc["metadata"], METADATA)
    body = {k: v for k, v in doc.items() if k not in ("apiVersion", "kind", "metadata")}
    validator(doc.get("apiVersion", ""), doc.get("kind", "")).validate(body)


# --- the generated files -------------------------------------------------------------

@cache
def rendered() -> dict[str, str]:
    return manifests.render()


def docs_of(files: dict[str, str], under: str = "knative/base/") -> list[dict[str, Any]]:
    return [doc for path, text in sorted(files.items())
            if path.startswith(under) and not path.endswith("kustomization.yaml")
            for doc in yaml.safe_load_all(text) if doc]


@cache
def base_docs() -> tuple[dict[str, Any], ...]:
    return tuple(docs_of(rendered()))


def by_kind(kind: str) -> dict[str, dict[str, Any]]:
    """A fresh copy, so a test may change what it gets."""
    return {d["metadata"]["name"]: copy.deepcopy(d) for d in base_docs() if d["kind"] == kind}


def test_committed_files_are_what_the_code_generates() -> None:
    committed = {p.relative_to(ROOT).as_posix(): p.read_text()
                 for p in (ROOT / "knative").rglob("*") if p.is_file()}
    expected = rendered()
    stale = sorted(p for p in committed.keys() | expected.keys()
                   if committed.get(p) != expected.get(p))
    assert not stale, f"knative/ is out of date, run `make manifests`: {stale}"


def test_every_generated_object_is_valid_against_its_schema() -> None:
    docs = base_docs()
    kinds = {d["kind"] for d in docs}
    assert {"Service", "KafkaSource", "PingSource", "KafkaSink", "ContainerSource"} <= kinds
    for doc in docs:
        validate(doc)


def test_strict_validation_rejects_unknown_and_misspelt_fields() -> None:
    source = copy.deepcopy(next(iter(by_kind("KafkaSource").values())))
    source["spec"]["delivery"]["backoffpolicy"] = "exponential"
    with pytest.raises(jsonschema.ValidationError, match="backoffpolicy"):
        validate(source)
    service = copy.deepcopy(next(iter(by_kind("Service").values())))
    service["spec"]["template"]["spec"]["containers"][0]["envfrom"] = []
    with pytest.raises(jsonschema.ValidationError, match="envfrom"):
        validate(service)
    sink = copy.deepcopy(next(iter(by_kind("KafkaSink").values())))
    sink["metadata"]["labls"] = {}
    with pytest.raises(jsonschema.ValidationError, match="labls"):
        validate(sink)


def test_kustomizations_and_patches_are_well_formed() -> None:
    files = rendered()
    for path, text in files.items():
        directory = path.rsplit("/", 1)[0]
        if path.endswith("kustomization.yaml"):
            kustomization = yaml.safe_load(text)
            jsonschema.validate(kustomization, KUSTOMIZATION)
            for resource in kustomization.get("resources", []):
                target = os.path.normpath(f"{directory}/{resource}")
                assert target in files or any(f.startswith(target + "/") for f in files), (
                    path, resource)
            for patch in kustomization.get("patches", []):
                assert f"{directory}/{patch['path']}" in files, (path, patch)
        elif "/patches/" in path:
            patch = yaml.safe_load(text)
            if isinstance(patch, list):
                jsonschema.validate(patch, JSON6902)
    base = yaml.safe_load(files["knative/base/kustomization.yaml"])
    listed = {f"knative/base/{r}" for r in base["resources"]}
    assert listed == {p for p in files
                      if p.startswith("knative/base/") and not p.endswith("kustomization.yaml")}


@pytest.mark.parametrize("overlay", [o.name for o in manifests.OVERLAYS])
def test_each_overlay_builds_with_kubectl_and_stays_valid(overlay: str) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: overlays checked only structurally")
    built = subprocess.run([kubectl, "kustomize", str(ROOT / "knative" / "overlays" / overlay)],
                           capture_output=True, text=True, timeout=120)
    assert built.returncode == 0, built.stderr
    docs = [d for d in yaml.safe_load_all(built.stdout) if d]
    assert len(docs) == len(base_docs())
    spec = next(o for o in manifests.OVERLAYS if o.name == overlay)
    image = f"{spec.image}:{spec.tag}"
    for doc in docs:
        validate(doc)
        assert doc["metadata"]["namespace"] == spec.namespace
        text = yaml.safe_dump(doc)
        assert "image: marketplace\n" not in text, doc["metadata"]["name"]
        if doc["kind"] in ("KafkaSource", "KafkaSink"):
            assert doc["spec"]["bootstrapServers"] == list(spec.bootstrap)
        if doc["kind"] == "Service":
            annotations = doc["spec"]["template"]["metadata"]["annotations"]
            assert annotations["autoscaling.knative.dev/max-scale"] == str(spec.max_scale)
            assert doc["spec"]["template"]["spec"]["containers"][0]["image"] == image
        if doc["kind"] == "ContainerSource":
            assert doc["spec"]["template"]["spec"]["containers"][0]["image"] == image
        if doc["kind"] == "ConfigMap":
            assert doc["data"]["KAFKA_BOOTSTRAP_SERVERS"] == ",".join(spec.bootstrap)
            assert doc["data"]["TOPIC_PARTITIONS"] == str(spec.partitions)
        if doc["kind"] == "Ingress":
            assert doc["spec"]["rules"][0]["host"] == spec.host
        keda = doc["metadata"].get("annotations", {})
        if "autoscaling.eventing.knative.dev/max-scale" in keda:
            assert keda["autoscaling.eventing.knative.dev/max-scale"] == str(spec.partitions)


# --- one declaration for the local stack and the cluster --------------------------------

def test_the_local_runner_and_the_manifests_are_fed_by_the_same_declaration() -> None:
    reactions, endpoints = load()
    sources = by_kind("KafkaSource")
    assert {r.name: (list(r.topics), r.consumer_group, r.ordering)
            for r in kafka_triggered(reactions)} == {
        name: (s["spec"]["topics"], s["spec"]["consumerGroup"], s["spec"]["ordering"])
        for name, s in sources.items()}
    assert {r.name: r.schedule for r in scheduled(reactions)} == {
        name: p["spec"]["schedule"] for name, p in by_kind("PingSource").items()}
    services = by_kind("Service")
    targets = {name: s["spec"]["template"]["spec"]["containers"][0]["env"][0]
               for name, s in services.items()}
    functions = {r.name: r.target for r in reactions} | {e.name: e.target for e in endpoints}
    assert targets == {name: {"name": "FUNCTION_TARGET", "value": target}
                       for name, target in functions.items()}
    for source in [*sources.values(), *by_kind("PingSource").values()]:
        assert source["spec"]["sink"]["ref"]["name"] in services
    ingress = by_kind("Ingress")[manifests.INGRESS]
    routes = {p["path"]: p["backend"]["service"]["name"]
              for p in ingress["spec"]["rules"][0]["http"]["paths"]}
    assert routes == {prefix: e.name for e in endpoints for prefix in e.prefixes}
    assert len(ingress["spec"]["rules"]) == 1, "the HTTP edge is one host"


def test_each_service_starts_on_its_own_module() -> None:
    for name, service in by_kind("Service").items():
        env = {e["name"]: e["value"]
               for e in service["spec"]["template"]["spec"]["containers"][0]["env"]}
        source = env["FUNCTION_SOURCE"]
        assert source == f"{manifests.APP_DIR}/functions/{env['FUNCTION_TARGET']}.py", name
        assert (ROOT / source.removeprefix(manifests.APP_DIR + "/")).is_file(), source


def test_migrations_run_as_a_job_named_after_the_files() -> None:
    jobs = {j["metadata"]["labels"]["app.kubernetes.io/component"]: j
            for j in by_kind("Job").values()}
    job = jobs["migrations"]
    assert job["metadata"]["name"] == f"marketplace-migrations-{migrations.digest()}"
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["python", "-m", "shared.migrations"]
    assert container["image"] == manifests.IMAGE  # the functions' image, same code
    assert {"secretRef": {"name": manifests.SECRET}} in container["envFrom"]
    assert len(migrations.files()) >= 3 and migrations.latest() == migrations.files()[-1].name


def test_cluster_delivery_is_the_local_emulators() -> None:
    defaults = inspect.signature(KafkaSourceEmulator.__init__).parameters
    for source in by_kind("KafkaSource").values():
        delivery = source["spec"]["delivery"]
        assert delivery["retry"] == defaults["retry"].default
        assert delivery["backoffPolicy"] == defaults["backoff_policy"].default
        assert delivery["backoffDelay"] == f"PT{defaults['backoff_delay'].default:g}S"
        assert delivery["timeout"] == f"PT{defaults['timeout'].default:g}S"
        if DEAD_LETTER_TOPIC in source["spec"]["topics"]:  # a dead letter never loops back
            assert "deadLetterSink" not in delivery
        else:
            assert delivery["deadLetterSink"]["ref"]["name"] == manifests.DEAD_LETTER_SINK
        assert source["spec"]["initialOffset"] == "earliest"
    assert by_kind("KafkaSink")[manifests.DEAD_LETTER_SINK]["spec"]["topic"] == DEAD_LETTER_TOPIC


def _seconds(iso: str) -> float:
    match = re.fullmatch(r"PT(\d+(?:\.\d+)?)S", iso)
    assert match, iso
    return float(match.group(1))


def test_services_scale_to_zero_and_match_concurrency_to_threads() -> None:
    sources = by_kind("KafkaSource").values()
    for name, service in by_kind("Service").items():
        template = service["spec"]["template"]
        spec, container = template["spec"], template["spec"]["containers"][0]
        env = {e["name"]: e["value"] for e in container["env"]}
        assert template["metadata"]["annotations"]["autoscaling.knative.dev/min-scale"] == "0"
        assert spec["containerConcurrency"] == int(env["THREADS"]), name
        assert env["WORKERS"] == "1"
        assert container["resources"]["requests"].keys() == {"cpu", "memory"}
        assert "readinessProbe" in container
        assert {"secretRef": {"name": manifests.SECRET}} in container["envFrom"]
        assert container["securityContext"]["runAsNonRoot"] is True
        for source in sources:
            if source["spec"]["sink"]["ref"]["name"] == name:
                timeout = _seconds(source["spec"]["delivery"]["timeout"])
                assert timeout < spec["timeoutSeconds"], name


def test_saga_sources_are_ordered_and_the_busiest_scale_on_lag() -> None:
    sources = by_kind("KafkaSource")
    for target in SAGA:
        assert sources[target.replace("_", "-")]["spec"]["ordering"] == "ordered", target
    keda = {n for n, s in sources.items()
            if s["metadata"].get("annotations", {}).get("autoscaling.eventing.knative.dev/class")
            == "keda.autoscaling.knative.dev"}
    assert {"reserve-ticket", "open-hold", "open-payment", "settle-booking",
            "settle-ticket"} <= keda
    for name in keda:
        annotations = sources[name]["metadata"]["annotations"]
        assert int(annotations["autoscaling.eventing.knative.dev/lag-threshold"]) > 0


def test_watcher_and_sweeper_feed_reservation_expired() -> None:
    watcher = by_kind("ContainerSource")[manifests.WATCHER]
    container = watcher["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["python", "-m", "functions.hold_expiry_watcher"]
    sink = by_kind("KafkaSink")[watcher["spec"]["sink"]["ref"]["name"]]
    assert sink["spec"]["topic"] == "reservation.expired"
    assert sink["spec"]["contentMode"] == "binary"
    assert "sweep-expired-holds" in by_kind("PingSource")


# --- topics and events -----------------------------------------------------------------

def test_every_topic_a_source_reads_is_in_the_registry_and_created() -> None:
    for source in by_kind("KafkaSource").values():
        assert set(source["spec"]["topics"]) <= {*REGISTRY, DEAD_LETTER_TOPIC}, (
            source["metadata"]["name"])
    for sink in by_kind("KafkaSink").values():
        assert sink["spec"]["topic"] in {*REGISTRY, DEAD_LETTER_TOPIC}
    (job,) = (j for j in by_kind("Job").values()
               if j["metadata"]["labels"]["app.kubernetes.io/component"] == "topics")
    env = {e["name"]: e["value"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert set(env["TOPICS"].split()) == {*REGISTRY, DEAD_LETTER_TOPIC}


def emitted_topics() -> dict[str, set[str]]:
    """Topic -> the modules that construct its event: what the code emits, read from the AST.

    An event model is only ever built to be emitted (returned by a reaction,
    passed to `uow.emit`, or wrapped by `holds.expiry_event`), so a call to a
    model's class anywhere in `functions/` or `shared/` counts.
    """
    models = {spec.model.__name__: topic for topic, spec in REGISTRY.items()}
    found: dict[str, set[str]] = {}
    for path in sorted([*(ROOT / "functions").glob("*.py"), *(ROOT / "shared").rglob("*.py")]):
        if path.name == "events.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
                if name in models:
                    found.setdefault(models[name], set()).add(path.stem)
    return found


def test_the_event_scan_finds_the_known_emitters() -> None:
    emitted = emitted_topics()
    assert "reserve_ticket" in emitted["ticket.reserved"]
    assert "holds" in emitted["reservation.expired"]
    assert "settle_booking" in emitted["payment.refund_requested"]
    assert "payments" in emitted["payment.refunded"]


def test_orphan_topics_are_exactly_the_deliberately_ignored_ones() -> None:
    reactions, _ = load()
    consumed = {t for r in reactions if set(r.topics) != REGISTRY.keys() for t in r.topics}
    emitted = emitted_topics()
    assert emitted.keys() <= REGISTRY.keys()
    orphans = sorted((emitted.keys() | REGISTRY.keys()) - consumed)
    assert orphans == sorted(IGNORED_TOPICS), (
        "every event type is consumed or listed in IGNORED_TOPICS with a reason; orphans now: "
        f"{orphans}")
