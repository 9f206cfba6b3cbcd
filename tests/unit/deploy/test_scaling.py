"""Scaling out: one partition count for every place that creates topics, and no
KafkaSource with more consumers than its topics have partitions.

Partitions bound what runs in parallel for an ordered function (README, "Scaling
out"), so the local stack, docker-compose and the cluster's topics Job must all
create what `TOPIC_PARTITIONS` (or the overlay) says, and a consumer count above
it would only idle. Overlays are built with `kubectl kustomize` when it is
installed; the patches are checked structurally either way.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped,unused-ignore]

from local.deploy import manifests
from local.stack import embedded, stack
from shared.domain.events import DEAD_LETTER_TOPIC, REGISTRY

ROOT = Path(__file__).resolve().parents[3]
KEDA_CLASS = "autoscaling.eventing.knative.dev/class"
KEDA_MAX = "autoscaling.eventing.knative.dev/max-scale"
KEDA_MIN = "autoscaling.eventing.knative.dev/min-scale"


def docs(text: str) -> list[Any]:
    return [d for d in yaml.safe_load_all(text) if d]


@cache
def rendered() -> dict[str, str]:
    return manifests.render()


def base_sources() -> list[Any]:
    return [d for path, text in rendered().items() if "/base/" in path
            for d in docs(text) if d["kind"] == "KafkaSource"]


def overlay_file(overlay: manifests.Overlay, name: str) -> Any:
    return yaml.safe_load(rendered()[f"knative/overlays/{overlay.name}/{name}"])


# --- the local stack -------------------------------------------------------------------

def test_topic_partitions_default_to_the_manifests_base_and_read_the_variable() -> None:
    assert stack.PARTITIONS == manifests.BASE_PARTITIONS == 4
    assert stack.topic_partitions({}) == stack.PARTITIONS
    assert stack.topic_partitions({"TOPIC_PARTITIONS": ""}) == stack.PARTITIONS
    assert stack.topic_partitions({"TOPIC_PARTITIONS": " 12 "}) == 12
    for bad in ("0", "-3", "four", "2.5", "1001"):
        with pytest.raises(ValueError, match="TOPIC_PARTITIONS"):
            stack.topic_partitions({"TOPIC_PARTITIONS": bad})


class _Created(Exception):
    """Stops the stack right after it created its topics: nothing else needs to run."""


def test_the_stack_creates_every_topic_with_the_configured_partitions(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    calls: list[tuple[str, list[str], int]] = []

    def create_topics(bootstrap: str, topics: Any, partitions: int = 4) -> dict[str, int]:
        calls.append((bootstrap, sorted(topics), partitions))
        raise _Created

    monkeypatch.setattr(embedded, "create_topics", create_topics)
    # every backing service "configured", so nothing embedded starts
    configured = {"KAFKA_BOOTSTRAP_SERVERS": "kafka.invalid:9092",
                  "DATABASE_URL": "postgresql://nobody@db.invalid/marketplace",
                  "REDIS_URL": "redis://redis.invalid:6379/0",
                  "ELASTICSEARCH_URL": "http://search.invalid:9200",
                  "AWS_ENDPOINT_URL": "http://aws.invalid:4566"}
    for partitions in ("7", None):
        env = dict(configured)
        if partitions is None:
            monkeypatch.delenv("TOPIC_PARTITIONS", raising=False)
        else:
            env["TOPIC_PARTITIONS"] = partitions
        with pytest.raises(_Created):
            stack.Stack(stack.StackConfig(workdir=tmp_path, env=env)).start()
    assert calls == [("kafka.invalid:9092", sorted([*REGISTRY, DEAD_LETTER_TOPIC]), 7),
                     ("kafka.invalid:9092", sorted([*REGISTRY, DEAD_LETTER_TOPIC]), 4)]


def test_docker_compose_creates_topics_with_the_same_variable() -> None:
    topics = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["topics"]
    assert topics["environment"]["TOPIC_PARTITIONS"] == "${TOPIC_PARTITIONS:-4}"
    assert '--partitions "$$TOPIC_PARTITIONS"' in " ".join(topics["command"])


# --- the topics Job ------------------------------------------------------------------

def topics_job() -> Any:
    (job,) = (d for d in docs(rendered()["knative/base/topics.yaml"])
              if d["kind"] == "Job")
    return job


def test_the_topics_job_reads_the_partitions_from_the_config_map_each_overlay_sets() -> None:
    container = topics_job()["spec"]["template"]["spec"]["containers"][0]
    assert {"configMapRef": {"name": manifests.CONFIG}} in container["envFrom"]
    assert "TOPIC_PARTITIONS" not in {e["name"] for e in container["env"]}  # nothing shadows it
    (config,) = docs(rendered()["knative/base/config.yaml"])
    assert config["data"]["TOPIC_PARTITIONS"] == str(manifests.BASE_PARTITIONS)
    for overlay in manifests.OVERLAYS:
        patch = overlay_file(overlay, "patches/config.yaml")
        assert patch["data"]["TOPIC_PARTITIONS"] == str(overlay.partitions)


def test_the_topics_job_creates_each_topic_with_the_configured_partitions(
    tmp_path: Path,
) -> None:
    """Run the Job's own script with kafka-topics.sh replaced by a recorder."""
    container = topics_job()["spec"]["template"]["spec"]["containers"][0]
    command = container["command"]
    assert command[:2] == ["sh", "-c"]
    recorder = tmp_path / "kafka-topics.sh"
    recorder.write_text('#!/bin/sh\necho "$@" >> "$RECORDED"\n')
    recorder.chmod(recorder.stat().st_mode | stat.S_IEXEC)
    script = command[2].replace("/opt/kafka/bin/kafka-topics.sh", str(recorder))
    assert script != command[2]
    env = {**{e["name"]: e["value"] for e in container["env"]},
           "PATH": os.environ["PATH"], "RECORDED": str(tmp_path / "calls"),
           "KAFKA_BOOTSTRAP_SERVERS": "kafka:9092", "TOPIC_PARTITIONS": "12",
           "TOPIC_REPLICATION_FACTOR": "3"}
    subprocess.run(["sh", "-c", script], env=env, check=True, timeout=30)
    calls = [line.split() for line in (tmp_path / "calls").read_text().splitlines()]
    assert sorted(c[c.index("--topic") + 1] for c in calls) == sorted(
        [*REGISTRY, DEAD_LETTER_TOPIC])
    for call in calls:
        assert call[call.index("--partitions") + 1] == "12"
        assert call[call.index("--replication-factor") + 1] == "3"
        assert "--if-not-exists" in call  # an existing topic keeps its partitions


# --- consumers never above partitions --------------------------------------------------

def test_keda_owns_the_hot_sources_consumers_and_the_others_have_a_fixed_count() -> None:
    for source in base_sources():
        name = source["metadata"]["name"]
        annotations = source["metadata"].get("annotations", {})
        if KEDA_CLASS in annotations:
            # spec.consumers is the scale subresource KEDA writes: never in the manifest
            assert "consumers" not in source["spec"], name
            assert 1 <= int(annotations[KEDA_MIN]) <= int(annotations[KEDA_MAX])
            assert int(annotations[KEDA_MAX]) <= manifests.BASE_PARTITIONS, name
        else:
            assert source["spec"]["consumers"] == manifests.BASE_CONSUMERS, name
            assert 1 <= source["spec"]["consumers"] <= manifests.BASE_PARTITIONS, name
        assert source["spec"]["ordering"] in ("ordered", "unordered")  # as declared


def test_each_overlay_patches_consumers_and_keda_bounds_within_its_partitions() -> None:
    for overlay in manifests.OVERLAYS:
        (consumers,) = overlay_file(overlay, "patches/consumers.yaml")
        assert consumers == {"op": "replace", "path": "/spec/consumers",
                             "value": overlay.consumers}
        (keda,) = overlay_file(overlay, "patches/keda-max-scale.yaml")
        assert 1 <= consumers["value"] <= overlay.partitions
        assert int(keda["value"]) == overlay.partitions
        kustomization = overlay_file(overlay, "kustomization.yaml")
        targets = {p["path"]: p.get("target", {}) for p in kustomization["patches"]}
        assert targets["patches/consumers.yaml"]["annotationSelector"] == f"!{KEDA_CLASS}"


def test_an_overlay_refuses_more_consumers_than_partitions() -> None:
    dev = manifests.OVERLAYS[0]
    fields = {k: getattr(dev, k) for k in dev.__dataclass_fields__}
    manifests.Overlay(**{**fields, "partitions": 3, "consumers": 3})
    for partitions, consumers in ((3, 4), (4, 0), (0, 1)):
        with pytest.raises(ValueError, match="partitions"):
            manifests.Overlay(**{**fields, "partitions": partitions, "consumers": consumers})


@pytest.mark.parametrize("overlay", manifests.OVERLAYS, ids=lambda o: o.name)
def test_built_overlays_never_give_a_source_more_consumers_than_partitions(
    overlay: manifests.Overlay,
) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: the patches are checked structurally above")
    built = subprocess.run([kubectl, "kustomize", str(ROOT / "knative/overlays" / overlay.name)],
                           capture_output=True, text=True, timeout=120)
    assert built.returncode == 0, built.stderr
    sources = [d for d in docs(built.stdout) if d["kind"] == "KafkaSource"]
    assert len(sources) == len(base_sources())
    for source in sources:
        name = source["metadata"]["name"]
        annotations = source["metadata"].get("annotations", {})
        if KEDA_CLASS in annotations:
            assert "consumers" not in source["spec"], name
            assert int(annotations[KEDA_MAX]) == overlay.partitions, name
        else:
            assert source["spec"]["consumers"] == overlay.consumers, name
    (config,) = (d for d in docs(built.stdout) if d["kind"] == "ConfigMap")
    assert config["data"]["TOPIC_PARTITIONS"] == str(overlay.partitions)
