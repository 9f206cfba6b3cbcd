"""JSON Schemas of the events, generated from the models and committed in `schemas/`.

The committed files are the contract with every consumer. `check()` compares
them with what the models generate now: a compatible change (a new optional
field, a wider enum) only needs `make schemas`; a breaking one (a removed or
retyped field, a new required field, a narrower enum) is refused.

    python -m shared.domain.schemas           # check, exit 1 on drift or breakage
    python -m shared.domain.schemas --write   # regenerate (refuses breaking changes)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from shared.domain.events import REGISTRY

DIRECTORY = Path(__file__).parent / "schemas"
Schema = dict[str, Any]


def generate() -> dict[str, Schema]:
    schemas = {}
    for topic, spec in sorted(REGISTRY.items()):
        schema = spec.model.model_json_schema(mode="validation")
        schemas[topic] = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"https://marketplace.local/schemas/{topic}.json",
            "x-cloudevent-type": spec.ce_type,
            "x-partition-key": spec.key,
            **schema,
        }
    return schemas


def committed() -> dict[str, Schema]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(DIRECTORY.glob("*.json"))}


def _shape(field: Schema, defs: dict[str, Schema]) -> Any:
    """A field's type without its documentation, with `$ref`s resolved."""
    if "$ref" in field:
        return _shape(defs.get(field["$ref"].rsplit("/", 1)[-1], {}), defs)
    ignored = {"title", "description", "default", "examples", "enum", "const"}
    shape = {k: v for k, v in field.items() if k not in ignored}
    for key in ("anyOf", "oneOf", "allOf"):
        if key in shape:
            shape[key] = sorted((_shape(f, defs) for f in shape[key]), key=json.dumps)
    if "items" in shape:
        shape["items"] = _shape(shape["items"], defs)
    return shape


def _values(field: Schema, defs: dict[str, Schema]) -> set[str] | None:
    """The allowed values of an enum-like field, or None when any value of its type is fine."""
    if "$ref" in field:
        return _values(defs.get(field["$ref"].rsplit("/", 1)[-1], {}), defs)
    if "enum" in field:
        return {json.dumps(v) for v in field["enum"]}
    if "const" in field:
        return {json.dumps(field["const"])}
    return None


def breaking_changes(old: Schema, new: Schema) -> list[str]:
    """What a consumer or producer of `old` would trip over in `new`."""
    problems = []
    old_props, new_props = old.get("properties", {}), new.get("properties", {})
    old_defs, new_defs = old.get("$defs", {}), new.get("$defs", {})
    for name, field in old_props.items():
        if name not in new_props:
            problems.append(f"field {name!r} was removed")
            continue
        if _shape(field, old_defs) != _shape(new_props[name], new_defs):
            problems.append(f"field {name!r} changed type")
        old_values, new_values = _values(field, old_defs), _values(new_props[name], new_defs)
        if old_values is not None and (new_values is None or not old_values <= new_values):
            removed = sorted(old_values - (new_values or set()))
            if new_values is not None:
                problems.append(f"field {name!r} no longer allows {', '.join(removed)}")
        elif old_values is None and new_values is not None:
            problems.append(f"field {name!r} now allows only some values")
    for name in sorted(set(new.get("required", [])) - set(old.get("required", []))):
        problems.append(f"field {name!r} is newly required")
    return problems


def check() -> list[str]:
    """Every difference between the committed schemas and the models, as sentences."""
    current, saved = generate(), committed()
    problems = []
    for topic in sorted(set(saved) - set(current)):
        problems.append(f"{topic}: the event type was removed (breaking)")
    for topic, schema in current.items():
        if topic not in saved:
            problems.append(f"{topic}: no committed schema; run `make schemas`")
            continue
        broken = breaking_changes(saved[topic], schema)
        problems += [f"{topic}: {p} (breaking)" for p in broken]
        if not broken and saved[topic] != schema:
            problems.append(f"{topic}: the committed schema is stale; run `make schemas`")
    return problems


def write(allow_breaking: bool = False) -> list[str]:
    breaking = [p for p in check() if p.endswith("(breaking)")]
    if breaking and not allow_breaking:
        return breaking
    DIRECTORY.mkdir(exist_ok=True)
    for old in DIRECTORY.glob("*.json"):
        old.unlink()
    for topic, schema in generate().items():
        (DIRECTORY / f"{topic}.json").write_text(json.dumps(schema, indent=2) + "\n")
    return []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true")
    parser.add_argument("--allow-breaking", action="store_true",
                        help="with --write: accept a breaking change (a new major version)")
    args = parser.parse_args(argv)
    problems = write(args.allow_breaking) if args.write else check()
    for problem in problems:
        print(problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
