"""`knative/` is what the code would generate, valid against the upstream CRDs, fed
by the same routing declaration as the local stack, and locked down: each pod is
given the secret keys its code reads and no others (a scan of the code), runs
read-only without an API token, and takes only the connections Knative, the
eventing dispatchers, the redrive and Prometheus need (docs/pages/security/cluster.md).

Strict validation: the vendored CRD schemas in `tests/specs/` (see its
SOURCES.md) get `additionalProperties: false` on every object schema that
does not preserve unknown fields, so a misspelt key fails here rather than
being dropped silently by the API server. Overlays are built with `kubectl
kustomize` when kubectl is installed (skipped otherwise) and checked the same way.
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import inspect
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped,unused-ignore]
import pytest
import yaml  # type: ignore[import-untyped,unused-ignore]

from local.deploy import manifests
from local.knative.kafkasource import KafkaSourceEmulator
from local.knative.triggers import kafka_triggered, scheduled
from shared import migrations
from shared.domain.events import DEAD_LETTER_TOPIC, REGISTRY
from shared.runtime.config import Settings
from shared.runtime.routing import load

ROOT = Path(__file__).resolve().parents[3]
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
    "ticket.reserved": "reserve_ticket holds the ticket and opens the payment in the same"
                       " transaction; the event says so to whoever else listens",
    "payment.requested": "the same: the payment is open by the time the event is out",
    "ticket.unavailable": "the same: reserve_ticket rejects the booking in that transaction",
}
# The booking saga: each reacts to events keyed by booking id, which must not overtake each other.
SAGA = {"reserve_ticket", "settle_booking", "expire_booking", "cancel_open_payment"}


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
BOOL = {"type": "boolean"}
INT = {"type": "integer"}
QUANTITY = {"type": "string", "pattern": r"^[0-9]+(m|Mi|Gi)?$"}
# A secret arrives one key at a time: no `secretRef` (the whole Secret) is accepted.
ENV = {"type": "array", "items": {"type": "object", "required": ["name"], "properties": {
    "name": STR, "value": STR,
    "valueFrom": {"type": "object", "required": ["secretKeyRef"], "properties": {
        "secretKeyRef": {"type": "object", "required": ["name", "key"],
                         "properties": {"name": STR, "key": STR}}}}}}}
ENV_FROM = {"type": "array", "items": {"type": "object", "properties": {
    "configMapRef": {"type": "object", "properties": {"name": STR}}}}}
SECURITY = {"type": "object", "properties": {
    "runAsNonRoot": BOOL, "runAsUser": INT, "runAsGroup": INT,
    "allowPrivilegeEscalation": BOOL, "readOnlyRootFilesystem": BOOL,
    "capabilities": {"type": "object", "properties": {"drop": STRINGS}},
    "seccompProfile": {"type": "object", "properties": {"type": STR}}}}
RESOURCES = {"type": "object", "required": ["requests", "limits"], "properties": {
    "requests": {"type": "object", "required": ["cpu", "memory"],
                 "properties": {"cpu": QUANTITY, "memory": QUANTITY}},
    "limits": {"type": "object", "required": ["memory"],
               "properties": {"cpu": QUANTITY, "memory": QUANTITY}}}}
# The pods of the Jobs and of the ContainerSource (whose CRD does not describe its template).
POD_SPEC = {"type": "object", "required": ["containers"], "properties": {
    "restartPolicy": {"enum": ["OnFailure", "Never"]},
    "automountServiceAccountToken": BOOL,
    "containers": {"type": "array", "minItems": 1, "items": {
        "type": "object", "required": ["name", "image", "resources"], "properties": {
            "name": STR, "image": STR, "command": STRINGS, "env": ENV, "envFrom": ENV_FROM,
            "resources": RESOURCES, "securityContext": SECURITY,
            "volumeMounts": {"type": "array", "items": {
                "type": "object", "required": ["name", "mountPath"],
                "properties": {"name": STR, "mountPath": STR, "readOnly": BOOL}}}}}},
    "volumes": {"type": "array", "items": {"type": "object", "required": ["name"], "properties": {
        "name": STR, "emptyDir": {"type": "object", "properties": {
            "medium": {"enum": ["", "Memory"]}, "sizeLimit": QUANTITY}}}}}}}
POD_TEMPLATE = strict({"type": "object", "required": ["spec"], "properties": {
    "metadata": {"type": "object", "properties": {"labels": STR_MAP}}, "spec": POD_SPEC}})
SELECTOR = {"type": "object", "properties": {
    "matchLabels": STR_MAP,
    "matchExpressions": {"type": "array", "items": {
        "type": "object", "required": ["key", "operator"], "properties": {
            "key": STR, "operator": {"enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
            "values": STRINGS}}}}}
POLICY_RULE = {"type": "object", "properties": {
    "from": {"type": "array", "items": {"type": "object", "minProperties": 1, "properties": {
        "namespaceSelector": SELECTOR, "podSelector": SELECTOR}}},
    "ports": {"type": "array", "items": {"type": "object", "required": ["port"], "properties": {
        "protocol": {"enum": ["TCP", "UDP", "SCTP"]}, "port": INT}}}}}
# Hand-written, from the Kubernetes API reference: only the fields the generator uses.
K8S_SCHEMAS: dict[tuple[str, str], dict[str, Any]] = {
    ("v1", "ConfigMap"): {"type": "object", "required": ["data"],
                          "properties": {"data": STR_MAP}},
    ("batch/v1", "Job"): {"type": "object", "required": ["spec"], "properties": {"spec": {
        "type": "object", "required": ["template"], "properties": {
            "backoffLimit": INT, "ttlSecondsAfterFinished": INT,
            "template": {"type": "object", "required": ["spec"], "properties": {
                "metadata": {"type": "object", "properties": {"labels": STR_MAP}},
                "spec": {**POD_SPEC, "required": ["containers", "restartPolicy"]}}}}}}},
    ("networking.k8s.io/v1", "NetworkPolicy"): {"type": "object", "required": ["spec"],
                                                "properties": {"spec": {
        "type": "object", "required": ["podSelector", "policyTypes"], "properties": {
            "podSelector": SELECTOR,
            "policyTypes": {"type": "array", "items": {"enum": ["Ingress", "Egress"]}},
            "ingress": {"type": "array", "items": POLICY_RULE}}}}},
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
    if doc.get("kind") == "ContainerSource":  # its CRD keeps the pod template unchecked
        jsonschema.validate(doc["spec"]["template"], POD_TEMPLATE)


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


def plain_env(container: dict[str, Any]) -> dict[str, str]:
    """The container's literal settings (its secrets come by reference: `secret_keys`)."""
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


def secret_keys(container: dict[str, Any]) -> set[str]:
    """The keys of the Secret the container is given, each checked to arrive under its name."""
    keys = set()
    for entry in container.get("env", []):
        if "valueFrom" in entry:
            ref = entry["valueFrom"]["secretKeyRef"]
            assert ref["name"] == manifests.SECRET and ref["key"] == entry["name"], entry
            keys.add(ref["key"])
    return keys


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
        env = plain_env(service["spec"]["template"]["spec"]["containers"][0])
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
    assert secret_keys(container) == {"DATABASE_URL"}
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
        env = plain_env(container)
        assert template["metadata"]["annotations"]["autoscaling.knative.dev/min-scale"] == "0"
        assert spec["containerConcurrency"] == int(env["THREADS"]), name
        assert env["WORKERS"] == "1"
        assert container["resources"]["requests"].keys() == {"cpu", "memory"}
        assert "readinessProbe" in container
        assert container["envFrom"] == [{"configMapRef": {"name": manifests.CONFIG}}]
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
    assert {"reserve-ticket", "settle-booking", "send-notifications"} <= keda
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
    env = plain_env(job["spec"]["template"]["spec"]["containers"][0])
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


# --- secrets: each pod gets what its code reads ------------------------------------------
# Which Settings field holds which key of the Secret, and the libraries that read one from
# the environment themselves; shared/runtime/config.py only loads them (it is not scanned).
FIELD_SECRETS = {
    "database_url": "DATABASE_URL", "redis_url": "REDIS_URL",
    "elasticsearch_url": "ELASTICSEARCH_URL", "admin_password": "ADMIN_PASSWORD",
    "stripe_api_key": "STRIPE_API_KEY", "stripe_webhook_secrets": "STRIPE_WEBHOOK_SECRET",
    "jwt_private_key": "JWT_PRIVATE_KEY",
}
LIBRARY_SECRETS = {"botocore.session": {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}}
CONFIG_MODULE = "shared.runtime.config"
TOP = "<module>"
Node = tuple[str, str]  # (module, TOP | "function" | "Class" | "Class.method")
DEFS = (ast.FunctionDef, ast.AsyncFunctionDef)


@dataclass
class Module:
    """A module of ours: its top-level definitions and what each imported name stands for."""

    name: str
    tree: ast.Module
    defs: dict[str, ast.AST] = field(default_factory=dict)
    imported: dict[str, str] = field(default_factory=dict)  # name -> "module" | "module:name"


def _path_of(name: str) -> Path | None:
    base = ROOT.joinpath(*name.split("."))
    return next((p for p in (base.with_suffix(".py"), base / "__init__.py") if p.is_file()),
                None)


@cache
def module(name: str) -> Module | None:
    """`functions.x` or `shared.y.z` parsed, or None for a library."""
    path = _path_of(name)
    if path is None or not name.startswith(("functions", "shared")):
        return None
    found = Module(name, ast.parse(path.read_text()))
    for stmt in found.tree.body:
        if isinstance(stmt, (*DEFS, ast.ClassDef)):
            found.defs[stmt.name] = stmt
        if isinstance(stmt, ast.ClassDef):
            found.defs.update({f"{stmt.name}.{d.name}": d for d in stmt.body
                               if isinstance(d, DEFS)})
    for node in ast.walk(found.tree):  # lazy imports too: a name means one thing per module
        if isinstance(node, ast.Import):
            for a in node.names:
                found.imported[a.asname or a.name.split(".")[0]] = (
                    a.name if a.asname else a.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for a in node.names:
                full = f"{node.module}.{a.name}"
                found.imported[a.asname or a.name] = (
                    full if _path_of(full) else f"{node.module}:{a.name}")
    return found


def _unannotated(node: ast.AST) -> Iterator[ast.AST]:
    """Every node under `node` but annotations (never evaluated: `from __future__`)."""
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        for name, value in ast.iter_fields(current):
            if name not in {"annotation", "returns"}:
                stack.extend(v for v in (value if isinstance(value, list) else [value])
                             if isinstance(v, ast.AST))


def _runs(mod: Module, qual: str) -> list[ast.AST]:
    """What runs when `qual` does: a module's top level or a class body runs the decorators
    and defaults of its defs, not their bodies; `if TYPE_CHECKING:` never runs."""
    parts: list[ast.AST] = []
    body = mod.tree.body
    if qual != TOP:
        klass = mod.defs[qual]
        if not isinstance(klass, ast.ClassDef):
            return [klass]
        parts, body = [*klass.bases, *klass.keywords], klass.body
    for stmt in body:
        if isinstance(stmt, DEFS):
            parts += [*stmt.decorator_list, stmt.args]
        elif isinstance(stmt, ast.ClassDef):
            parts += [*stmt.decorator_list, *stmt.bases]
        elif not (isinstance(stmt, ast.If) and "TYPE_CHECKING" in ast.unparse(stmt.test)):
            parts.append(stmt)
    return parts


def _env_read(node: ast.AST) -> str | None:
    """The key in `os.environ.get("K")`, `os.getenv("K")` or `os.environ["K"]`."""
    if isinstance(node, ast.Call) and ast.unparse(node.func) in {"os.environ.get", "os.getenv"}:
        key = node.args[0] if node.args else None
    elif isinstance(node, ast.Subscript) and ast.unparse(node.value) == "os.environ":
        key = node.slice
    else:
        return None
    return key.value if isinstance(key, ast.Constant) and isinstance(key.value, str) else None


@dataclass
class SecretScan:
    """What code a workload can run, and which of it reads a secret.

    Reachability from the workload's module: a name or `module.name` leads to
    that definition, a class to its body and dunders, `x.attr` to the method
    `attr` of every class the reachable code instantiates (rapid type
    analysis), and an import to the imported module's top level. A node reads
    a secret when it uses the Settings field holding it (`cfg.stripe_api_key`),
    reads it from the environment, or imports a library that does (botocore).
    `importlib` is not followed: api_docs imports the HTTP modules only for
    their routes, whose declarations read no secret.
    """

    seen: set[Node] = field(default_factory=set)
    todo: list[Node] = field(default_factory=list)
    classes: set[Node] = field(default_factory=set)
    attributes: set[str] = field(default_factory=set)
    readers: dict[str, set[Node]] = field(default_factory=dict)

    def reach(self, node: Node) -> None:
        if node not in self.seen:
            self.seen.add(node)
            self.todo.append(node)

    def instantiate(self, node: Node) -> None:
        mod = module(node[0])
        if node in self.classes or mod is None:
            return
        self.classes.add(node)
        self.reach(node)
        for qual in mod.defs:
            owner, _, method = qual.partition(".")
            if owner == node[1] and (method in self.attributes or method.startswith("__")):
                self.reach((node[0], qual))
        klass = mod.defs[node[1]]
        assert isinstance(klass, ast.ClassDef)
        for base in klass.bases:
            self.follow(self.resolve(mod, base))

    def attribute(self, name: str) -> None:
        if name not in self.attributes:
            self.attributes.add(name)
            for source, klass in list(self.classes):
                mod = module(source)
                if mod is not None and f"{klass}.{name}" in mod.defs:
                    self.reach((source, f"{klass}.{name}"))

    def resolve(self, mod: Module, expr: ast.AST) -> Node | None:
        """The definition of ours `expr` (a name, or `x.name`) refers to, if any."""
        if isinstance(expr, ast.Name):
            if expr.id in mod.defs:
                return (mod.name, expr.id)
            target = mod.imported.get(expr.id, "")
            source, _, name = target.partition(":")
            return (source, name or TOP) if module(source) else None
        if isinstance(expr, ast.Attribute):
            outer = self.resolve(mod, expr.value)
            if outer is None:
                return None
            if outer[1] != TOP:
                return (outer[0], f"{outer[1]}.{expr.attr}")
            full = f"{outer[0]}.{expr.attr}"
            return (full, TOP) if module(full) else (outer[0], expr.attr)
        return None

    def follow(self, target: Node | None) -> None:
        mod = module(target[0]) if target else None
        if target is None or mod is None:
            return
        if isinstance(mod.defs.get(target[1]), ast.ClassDef):
            self.instantiate(target)
        elif target[1] in mod.defs or target[1] == TOP:
            self.reach(target)

    def read(self, key: str, node: Node) -> None:
        self.readers.setdefault(key, set()).add(node)

    def visit(self, node: Node) -> None:
        mod = module(node[0])
        assert mod is not None
        self.reach((node[0], TOP))  # a definition runs only once its module was imported
        scanned = node[0] != CONFIG_MODULE
        for part in _runs(mod, node[1]):
            for sub in _unannotated(part):
                if isinstance(sub, (ast.Import, ast.ImportFrom)):
                    names = ([a.name for a in sub.names] if isinstance(sub, ast.Import) else
                             [sub.module or "", *(f"{sub.module}.{a.name}" for a in sub.names)])
                    for name in names:
                        self.follow((name, TOP))
                        for key in LIBRARY_SECRETS.get(name, ()):
                            self.read(key, node)
                elif isinstance(sub, (ast.Name, ast.Attribute)):
                    self.follow(self.resolve(mod, sub))
                if isinstance(sub, ast.Attribute):
                    self.attribute(sub.attr)
                    if scanned and sub.attr in FIELD_SECRETS:
                        self.read(FIELD_SECRETS[sub.attr], node)
                read = _env_read(sub) if scanned else None
                if read in manifests.SECRET_KEYS:
                    self.read(str(read), node)

    def run(self, *roots: str) -> dict[str, set[Node]]:
        for name in roots:
            mod = module(name)
            assert mod is not None, name
            for qual in [TOP, *mod.defs]:  # whatever the entry point, all of it may run
                self.follow((name, qual))
                self.reach((name, qual))
        while self.todo:
            self.visit(self.todo.pop())
        return self.readers


def workload_roots() -> dict[str, tuple[str, ...]]:
    """Each row of SECRETS_OF and the modules its process starts from."""
    roots = {p.stem: (f"functions.{p.stem}",) for p in sorted((ROOT / "functions").glob("*.py"))
             if p.stem != "__init__"}
    # `python -m shared.migrations`: the package, then its __main__
    return roots | {manifests.MIGRATIONS: ("shared.migrations", "shared.migrations.__main__")}


@cache
def secrets_read() -> dict[str, dict[str, set[Node]]]:
    return {name: SecretScan().run(*roots) for name, roots in workload_roots().items()}


def test_the_secret_scan_knows_every_secret() -> None:
    fields = {f.name for f in dataclasses.fields(Settings)}
    assert set(FIELD_SECRETS) <= fields, "a Settings field was renamed: update FIELD_SECRETS"
    read_by = set(FIELD_SECRETS.values()) | {k for keys in LIBRARY_SECRETS.values() for k in keys}
    assert read_by == set(manifests.SECRET_KEYS)
    assert "JWT_SECRET" not in manifests.SECRET_KEYS  # tokens are signed with JWT_PRIVATE_KEY


def test_the_secret_scan_finds_the_known_readers() -> None:
    found = secrets_read()
    assert ("shared.edge.tokens", "issue_access") in found["accounts"]["JWT_PRIVATE_KEY"]
    assert ("shared.runtime.bootstrap", "build") in found["reserve_ticket"]["DATABASE_URL"]
    assert ("shared.adapters.aws", "session") in found["users"]["AWS_SECRET_ACCESS_KEY"]
    assert ("shared.adapters.search", "_address") in found["analytics"]["ELASTICSEARCH_URL"]
    assert ("shared.migrations.__main__", "main") in found[manifests.MIGRATIONS]["DATABASE_URL"]
    assert any(q.startswith("StripeProvider.") for _, q in found["bookings"]["STRIPE_API_KEY"])


def test_each_workload_is_declared_with_exactly_the_secrets_its_code_reads() -> None:
    declared = {name: set(keys) for name, keys in manifests.SECRETS_OF.items()}
    assert declared.keys() == workload_roots().keys(), "one SECRETS_OF row per workload"
    for name, readers in sorted(secrets_read().items()):
        where = {key: sorted(f"{m}:{q}" for m, q in nodes)[:3] for key, nodes in readers.items()}
        assert declared[name] == set(readers), (
            f"{name}: SECRETS_OF says {sorted(declared[name])}, its code reads {where}")
    nobody = set(manifests.SECRET_KEYS) - {k for keys in declared.values() for k in keys}
    assert nobody == {"ADMIN_PASSWORD"}, "only the operator's tools use the admin's password"
    holders = {name for name, keys in declared.items() if "JWT_PRIVATE_KEY" in keys}
    assert holders == {"accounts"}, "only accounts signs access tokens"


def pod_templates() -> dict[str, tuple[str, dict[str, Any]]]:
    """Each pod the base runs, by SECRETS_OF row: (kind, its pod template)."""
    pods: dict[str, tuple[str, dict[str, Any]]] = {}
    for service in by_kind("Service").values():
        target = plain_env(service["spec"]["template"]["spec"]["containers"][0])
        pods[target["FUNCTION_TARGET"]] = ("Service", service["spec"]["template"])
    for job in by_kind("Job").values():
        pods[job["metadata"]["labels"]["app.kubernetes.io/component"]] = (
            "Job", job["spec"]["template"])
    for source in by_kind("ContainerSource").values():
        command = source["spec"]["template"]["spec"]["containers"][0]["command"]
        pods[command[-1].removeprefix("functions.")] = ("ContainerSource",
                                                        source["spec"]["template"])
    return pods


def test_each_pod_is_given_its_declared_secret_keys_one_by_one() -> None:
    pods = pod_templates()
    assert pods.keys() == manifests.SECRETS_OF.keys() | {"topics"}  # topics: Kafka's own image
    for name, (_, template) in pods.items():
        (container,) = template["spec"]["containers"]
        wanted = set(manifests.SECRETS_OF.get(name, ()))  # the topics Job: no row, no secret
        assert secret_keys(container) == wanted, name
        assert all("secretRef" not in e for e in container.get("envFrom", [])), name
    for text in rendered().values():
        assert "JWT_SECRET" not in text and "secretRef:" not in text
    config = by_kind("ConfigMap")[manifests.CONFIG]["data"]
    assert not set(config) & set(manifests.SECRET_KEYS), "a secret in the ConfigMap"
    assert config["JWT_PUBLIC_KEYS"] == "" and config["JWT_KEY_ID"] == ""  # the operator's
    assert "# Filled by the operator" in rendered()["knative/base/config.yaml"]


# --- pods ------------------------------------------------------------------------------

def test_every_pod_is_hardened() -> None:
    """Read-only root, /tmp in an emptyDir, no API token, bounded resources, no privileges."""
    for name, (kind, template) in pod_templates().items():
        spec = template["spec"]
        assert spec["automountServiceAccountToken"] is False, name
        volumes = {v["name"]: v for v in spec["volumes"]}
        for container in spec["containers"]:
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["runAsNonRoot"] is True, name
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["capabilities"]["drop"] == ["ALL"], name
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert "emptyDir" in volumes[mounts[manifests.TMP]], name
            resources = container["resources"]
            assert resources["requests"].keys() == {"cpu", "memory"}, name
            assert "memory" in resources["limits"], name
            if container["image"] != manifests.IMAGE:  # a name as USER: give the number
                assert security["runAsUser"] > 0, name
        assert kind != "Job" or spec["restartPolicy"] == "OnFailure"


def test_metrics_and_temporary_files_go_under_tmpdir() -> None:
    """The one writable place is $TMPDIR (unset in the image: /tmp)."""
    assert manifests.TMP == "/tmp"
    assert "tempfile.gettempdir()" in (ROOT / "shared" / "runtime" / "metrics.py").read_text()
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "TMPDIR" not in dockerfile and "PROMETHEUS_MULTIPROC_DIR" not in dockerfile
    for _, template in pod_templates().values():
        for container in template["spec"]["containers"]:
            assert not {"TMPDIR", "PROMETHEUS_MULTIPROC_DIR"} & plain_env(container).keys()


# --- network: deny by default, allow what Knative needs -----------------------------------
OWN = "marketplace"  # the namespace the overlay puts everything in (any name: none is named)


@dataclass(frozen=True)
class Peer:
    """Who opens a connection: a namespace, and in ours, a pod's labels."""

    namespace: str
    labels: tuple[tuple[str, str], ...] = ()


SERVING = Peer(manifests.SERVING_NAMESPACE)
EVENTING = Peer(manifests.EVENTING_NAMESPACE)
MONITORING = Peer(manifests.MONITORING_NAMESPACE)
INGRESS_CONTROLLERS = {"nginx": "ingress-nginx"}  # ingressClassName -> its namespace
REDRIVER = Peer(OWN, (("app.kubernetes.io/name", "dead-letters"),
                      ("app.kubernetes.io/part-of", "marketplace")))
STRANGERS = [Peer("default"), Peer(OWN, (("app.kubernetes.io/name", "accounts"),
                                         ("app.kubernetes.io/part-of", "marketplace"))),
             Peer(OWN, (("app.kubernetes.io/name", "dead-letters"),))]


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A Kubernetes label selector's meaning."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for e in selector.get("matchExpressions", []):
        value, op = labels.get(e["key"]), e["operator"]
        if ((op == "In" and value not in e["values"])
                or (op == "NotIn" and value in e.get("values", []))
                or (op == "Exists" and value is None) or (op == "DoesNotExist" and value)):
            return False
    return True


def admits(rule: dict[str, Any], peer: Peer, port: int) -> bool:
    """Whether one ingress rule lets `peer` connect to `port` (a pod of namespace OWN)."""
    if "ports" in rule and not any(p["port"] == port and p.get("protocol", "TCP") == "TCP"
                                   for p in rule["ports"]):
        return False
    if "from" not in rule:
        return True
    for source in rule["from"]:
        namespace = source.get("namespaceSelector")
        if namespace is None:
            in_namespace = peer.namespace == OWN
        else:
            in_namespace = selects(namespace, {manifests.NAMESPACE_LABEL: peer.namespace})
        if in_namespace and selects(source.get("podSelector", {}), dict(peer.labels)):
            return True
    return False


def reaches(pod: dict[str, str], peer: Peer, port: int) -> bool:
    """A pod no policy isolates takes anything; an isolated one, what some policy admits."""
    policies = [p["spec"] for p in by_kind("NetworkPolicy").values()
                if selects(p["spec"]["podSelector"], pod) and "Ingress" in p["spec"]["policyTypes"]]
    return not policies or any(admits(r, peer, port) for p in policies
                               for r in p.get("ingress", []))


def test_a_default_deny_isolates_every_pod_and_egress_is_left_open() -> None:
    policies = by_kind("NetworkPolicy")
    deny = [p for p in policies.values() if p["spec"]["podSelector"] == {}]
    assert len(deny) == 1 and "ingress" not in deny[0]["spec"], "one deny-all, no rules"
    assert deny[0]["spec"]["policyTypes"] == ["Ingress"]
    for policy in policies.values():  # egress stays open: NETWORK_NOTE says why
        assert policy["spec"]["policyTypes"] == ["Ingress"], policy["metadata"]["name"]
    assert "Egress is left open on purpose" in rendered()["knative/base/network-policies.yaml"]
    base = yaml.safe_load(rendered()["knative/base/kustomization.yaml"])
    assert "network-policies.yaml" in base["resources"]


def test_every_allow_names_the_namespaces_or_pods_and_the_ports_it_opens() -> None:
    for name, policy in by_kind("NetworkPolicy").items():
        spec = policy["spec"]
        if spec["podSelector"] == {}:
            continue
        assert spec["podSelector"]["matchLabels"] == {
            "app.kubernetes.io/part-of": manifests.PART_OF}
        assert spec["ingress"], name
        for rule in spec["ingress"]:
            assert rule["ports"] and rule["from"], f"{name}: an allow names peers and ports"
            assert all(p["protocol"] == "TCP" and isinstance(p["port"], int)
                       for p in rule["ports"]), name
            for source in rule["from"]:  # a whole namespace by its name, or pods of ours
                if "namespaceSelector" in source:
                    assert "podSelector" not in source, name
                    assert source["namespaceSelector"].keys() == {"matchLabels"}, name
                    names = source["namespaceSelector"]["matchLabels"]
                    assert names.keys() == {manifests.NAMESPACE_LABEL}, name
                else:
                    assert source["podSelector"]["matchLabels"]["app.kubernetes.io/name"], name


def test_function_pods_take_exactly_what_knative_prometheus_and_the_redrive_send() -> None:
    queue, autoscaler = manifests.QUEUE_PORT, manifests.AUTOSCALER_PORT
    ingress = by_kind("Ingress")[manifests.INGRESS]
    nginx = Peer(INGRESS_CONTROLLERS[ingress["spec"]["ingressClassName"]])
    kafka_fed = {s["spec"]["sink"]["ref"]["name"] for s in by_kind("KafkaSource").values()}
    pinged = {s["spec"]["sink"]["ref"]["name"] for s in by_kind("PingSource").values()}
    routed = {p["backend"]["service"]["name"] for p in ingress["spec"]["rules"][0]["http"]["paths"]}
    for name, service in by_kind("Service").items():
        template = service["spec"]["template"]
        pod = template["metadata"]["labels"]
        scrape = int(template["metadata"]["annotations"]["prometheus.io/port"])
        assert scrape == template["spec"]["containers"][0]["ports"][0]["containerPort"]
        assert reaches(pod, SERVING, queue) and reaches(pod, SERVING, autoscaler), name
        for gateway in manifests.GATEWAY_NAMESPACES:
            assert reaches(pod, Peer(gateway), queue), name
        assert reaches(pod, MONITORING, scrape) and not reaches(pod, MONITORING, queue), name
        assert reaches(pod, nginx, queue) == (name in routed), name
        assert reaches(pod, EVENTING, queue) == (name in kafka_fed | pinged), name
        assert reaches(pod, REDRIVER, queue) == (name in kafka_fed), name  # what dead-letters
        for stranger in STRANGERS:
            assert not any(reaches(pod, stranger, port) for port in (queue, scrape)), name


def test_the_watcher_and_the_jobs_take_no_connection() -> None:
    peers = [SERVING, EVENTING, MONITORING, REDRIVER, *STRANGERS,
             *(Peer(n) for n in manifests.GATEWAY_NAMESPACES)]
    for name, (kind, template) in pod_templates().items():
        if kind == "Service":
            continue
        pod = template["metadata"]["labels"]
        for port in (manifests.QUEUE_PORT, manifests.AUTOSCALER_PORT, manifests.PORT):
            assert not any(reaches(pod, peer, port) for peer in peers), name
