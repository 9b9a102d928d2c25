"""Static checks of the CRDs in crds/: bounded, described, structural schemas (no cluster needed).

The API server enforces only part of this (it accepts an unbounded string or an undescribed field),
so these rules are checked here: every field explains itself in `kubectl explain`, every value has
bounds so CEL costs stay within the server's budget, and unknown fields are never preserved
outside the pod template.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CRD_DIR = REPO_ROOT / "crds"
API_DOC = REPO_ROOT / "docs" / "api.md"

# Where unknown fields may be preserved: the PodTemplateSpec, validated when pods are created.
PRESERVE_ALLOWED_UNDER = ".spec.template"

# Short names of built-in kinds (kubectl api-resources) that ours must not shadow.
# fmt: off
BUILTIN_SHORT_NAMES = frozenset({
    "cm", "cs", "csr", "crd", "crds", "cj", "deploy", "ds", "ep", "ev", "hpa", "ing", "ingclass",
    "limits", "netpol", "no", "ns", "pc", "pdb", "po", "psp", "pv", "pvc", "quota", "rc", "rs",
    "sa", "sc", "sts", "svc",
})
# fmt: on


@dataclass(frozen=True)
class ExpectedKind:
    file: str
    kind: str
    plural: str
    scope: str
    short_name: str
    columns: tuple[str, ...]  # printer columns shown without -o wide, in order


EXPECTED_KINDS = (
    ExpectedKind(
        "regions.tsunagu.io.yaml",
        "Region",
        "regions",
        "Cluster",
        "rgn",
        ("Prefecture", "GPUs", "Cordoned", "Age"),
    ),
    ExpectedKind(
        "datasets.tsunagu.io.yaml",
        "Dataset",
        "datasets",
        "Namespaced",
        "dset",
        ("Home", "Residency", "Age"),
    ),
    ExpectedKind(
        "trainingjobs.tsunagu.io.yaml",
        "TrainingJob",
        "trainingjobs",
        "Namespaced",
        "tj",
        ("Region", "State", "Scheduled", "RTT-ms", "Predicted-Loss", "Age"),
    ),
    ExpectedKind(
        "throughputprofiles.tsunagu.io.yaml",
        "ThroughputProfile",
        "throughputprofiles",
        "Namespaced",
        "tprof",
        ("Class", "Trusted", "K", "Samples", "Age"),
    ),
)
KIND_PARAMS = [pytest.param(expected, id=expected.kind) for expected in EXPECTED_KINDS]


def load_crd(file: str) -> dict[str, Any]:
    with (CRD_DIR / file).open(encoding="utf-8") as stream:
        document: dict[str, Any] = yaml.safe_load(stream)
    return document


def only_version(crd: Mapping[str, Any]) -> Mapping[str, Any]:
    versions = crd["spec"]["versions"]
    assert len(versions) == 1, "v1alpha1 is the only version"
    version: Mapping[str, Any] = versions[0]
    return version


def root_schema(crd: Mapping[str, Any]) -> Mapping[str, Any]:
    schema: Mapping[str, Any] = only_version(crd)["schema"]["openAPIV3Schema"]
    return schema


def schema_nodes(
    node: Mapping[str, Any], path: str = ""
) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """Every sub-schema with its path: `.spec.links[]`, `.spec.nodeSelector{}`, …"""
    yield path, node
    for name, child in node.get("properties", {}).items():
        yield from schema_nodes(child, f"{path}.{name}")
    if isinstance(node.get("additionalProperties"), Mapping):
        yield from schema_nodes(node["additionalProperties"], f"{path}{{}}")
    if "items" in node:
        yield from schema_nodes(node["items"], f"{path}[]")


def field_nodes(crd: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """All sub-schemas below the root (the root is the kind itself)."""
    for path, node in schema_nodes(root_schema(crd)):
        if path:
            yield path, node


def missing_description(path: str, node: Mapping[str, Any]) -> bool:
    # The server forbids anything but name/generateName restrictions on metadata itself.
    return path != ".metadata" and not str(node.get("description", "")).strip()


def unbounded_string(path: str, node: Mapping[str, Any]) -> bool:
    return node.get("type") == "string" and "enum" not in node and "maxLength" not in node


def unbounded_array(path: str, node: Mapping[str, Any]) -> bool:
    return node.get("type") == "array" and "maxItems" not in node


def unbounded_number(path: str, node: Mapping[str, Any]) -> bool:
    return node.get("type") in ("integer", "number") and not (
        "minimum" in node and "maximum" in node
    )


def unbounded_map(path: str, node: Mapping[str, Any]) -> bool:
    return isinstance(node.get("additionalProperties"), Mapping) and "maxProperties" not in node


def preserves_unknown_outside_template(path: str, node: Mapping[str, Any]) -> bool:
    inside_template = path == PRESERVE_ALLOWED_UNDER or path.startswith(
        PRESERVE_ALLOWED_UNDER + "."
    )
    inside_template = inside_template or path.startswith(PRESERVE_ALLOWED_UNDER + "[")
    return bool(node.get("x-kubernetes-preserve-unknown-fields")) and not inside_template


def untyped(path: str, node: Mapping[str, Any]) -> bool:
    return "type" not in node


def object_without_fields(path: str, node: Mapping[str, Any]) -> bool:
    """A structural object names its fields (or a value schema), or explicitly keeps unknowns."""
    return (
        node.get("type") == "object"
        and "properties" not in node
        and not isinstance(node.get("additionalProperties"), Mapping)
        and not node.get("x-kubernetes-preserve-unknown-fields")
    )


SCHEMA_RULES = [
    pytest.param(missing_description, id="every-field-has-a-description"),
    pytest.param(unbounded_string, id="every-string-has-maxLength-or-enum"),
    pytest.param(unbounded_array, id="every-array-has-maxItems"),
    pytest.param(unbounded_number, id="every-number-has-minimum-and-maximum"),
    pytest.param(unbounded_map, id="every-map-has-maxProperties"),
    pytest.param(preserves_unknown_outside_template, id="preserve-unknown-only-in-template"),
    pytest.param(untyped, id="every-field-has-a-type"),
    pytest.param(object_without_fields, id="every-object-is-structural"),
]


@pytest.mark.parametrize("expected", KIND_PARAMS)
@pytest.mark.parametrize("violates", SCHEMA_RULES)
def test_every_field_follows_the_schema_rule(expected: ExpectedKind, violates: Any) -> None:
    offenders = [
        path for path, node in field_nodes(load_crd(expected.file)) if violates(path, node)
    ]
    assert offenders == [], f"{expected.kind}: {violates.__name__}: {offenders}"


@pytest.mark.parametrize("expected", KIND_PARAMS)
def test_names_scope_and_version(expected: ExpectedKind) -> None:
    crd = load_crd(expected.file)
    spec = crd["spec"]
    version = only_version(crd)
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["metadata"]["name"] == f"{expected.plural}.tsunagu.io"
    assert spec["group"] == "tsunagu.io"
    assert spec["scope"] == expected.scope
    assert spec["names"]["kind"] == expected.kind
    assert spec["names"]["plural"] == expected.plural
    assert spec["names"]["shortNames"] == [expected.short_name]
    assert spec["names"]["categories"] == ["tsunagu"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"] == {"status": {}}


@pytest.mark.parametrize("expected", KIND_PARAMS)
def test_short_names_do_not_shadow_built_in_kinds(expected: ExpectedKind) -> None:
    short_names = set(load_crd(expected.file)["spec"]["names"]["shortNames"])
    assert short_names.isdisjoint(BUILTIN_SHORT_NAMES)


def resolve(schema: Mapping[str, Any], json_path: str) -> Mapping[str, Any] | None:
    """The sub-schema a simple JSONPath (`.a.b`, `.a[?(…)].b`, `.a[0]`) points at, if any."""
    node: Mapping[str, Any] | None = schema
    for step in re.findall(r"\.([A-Za-z0-9_]+)|\[[^\]]*\]", json_path):
        if node is None:
            return None
        node = node.get("properties", {}).get(step) if step else node.get("items")
    return node


@pytest.mark.parametrize("expected", KIND_PARAMS)
def test_printer_columns_point_at_fields_of_the_schema(expected: ExpectedKind) -> None:
    crd = load_crd(expected.file)
    columns = only_version(crd)["additionalPrinterColumns"]
    default_columns = tuple(column["name"] for column in columns if not column.get("priority"))
    assert default_columns == expected.columns
    schema = root_schema(crd)
    for column in columns:
        if column["jsonPath"] == ".metadata.creationTimestamp":
            continue
        target = resolve(schema, column["jsonPath"])
        assert target is not None, f"{expected.kind} column {column['name']} points nowhere"
        assert column["type"] == target["type"], f"{expected.kind} column {column['name']}"


def validation_rules(
    crd: Mapping[str, Any],
) -> Iterator[tuple[str, Mapping[str, Any], Mapping[str, Any]]]:
    for path, node in schema_nodes(root_schema(crd)):
        for rule in node.get("x-kubernetes-validations", ()):
            yield path, node, rule


@pytest.mark.parametrize("expected", KIND_PARAMS)
def test_every_cel_rule_explains_itself_and_names_a_real_field(expected: ExpectedKind) -> None:
    rules = list(validation_rules(load_crd(expected.file)))
    assert rules, f"{expected.kind} has cross-field rules"
    for path, node, rule in rules:
        assert rule.get("message", "").strip(), f"{expected.kind}{path}: rule without message"
        if "fieldPath" in rule:
            assert resolve(node, rule["fieldPath"]) is not None, (
                f"{expected.kind}{path}: fieldPath {rule['fieldPath']} is not a field"
            )


# The root (apiVersion, kind) and metadata (namespace, labels, …) are the server's, not ours.
OPEN_PATHS = frozenset({"", ".metadata"})


def schema_errors(schema: Mapping[str, Any], value: Any, path: str = "") -> list[str]:
    """A small structural validator: types, unknown and required fields, enums and bounds.

    CEL rules are left to the API server (tests/integration/test_crds.py); this catches a field
    name in an example that the schema would silently prune.
    """
    kind = schema.get("type")
    checks = {
        "object": isinstance(value, dict),
        "array": isinstance(value, list),
        "string": isinstance(value, str),
        "integer": isinstance(value, int) and not isinstance(value, bool),
        "number": isinstance(value, (int, float)) and not isinstance(value, bool),
        "boolean": isinstance(value, bool),
    }
    if kind in checks and not checks[kind]:
        return [f"{path}: expected {kind}, got {value!r}"]
    errors: list[str] = []
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: {value!r} not in {schema['enum']}")
    if kind in ("integer", "number") and not (
        schema.get("minimum", value) <= value <= schema.get("maximum", value)
    ):
        errors.append(f"{path}: {value} out of bounds")
    if kind == "string":
        if not schema.get("minLength", 0) <= len(value) <= schema.get("maxLength", len(value)):
            errors.append(f"{path}: length {len(value)} out of bounds")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errors.append(f"{path}: {value!r} does not match {schema['pattern']}")
    if kind == "array":
        if not schema.get("minItems", 0) <= len(value) <= schema.get("maxItems", len(value)):
            errors.append(f"{path}: {len(value)} items out of bounds")
        for index, item in enumerate(value):
            errors += schema_errors(schema.get("items", {}), item, f"{path}[{index}]")
    if kind == "object":
        errors += [
            f"{path}.{name}: required" for name in schema.get("required", ()) if name not in value
        ]
        properties = schema.get("properties", {})
        value_schema = schema.get("additionalProperties")
        for name, item in value.items():
            if name in properties:
                errors += schema_errors(properties[name], item, f"{path}.{name}")
            elif isinstance(value_schema, Mapping):
                errors += schema_errors(value_schema, item, f"{path}.{name}")
            elif not schema.get("x-kubernetes-preserve-unknown-fields") and path not in OPEN_PATHS:
                errors.append(f"{path}.{name}: unknown field")
    return errors


def schema_for_kind(kind: str) -> Mapping[str, Any]:
    expected = next(candidate for candidate in EXPECTED_KINDS if candidate.kind == kind)
    return root_schema(load_crd(expected.file))


@pytest.mark.parametrize("expected", KIND_PARAMS)
def test_every_default_satisfies_its_own_schema(expected: ExpectedKind) -> None:
    defaulted = [
        (path, node) for path, node in field_nodes(load_crd(expected.file)) if "default" in node
    ]
    for path, node in defaulted:
        assert schema_errors(node, node["default"], path) == []


def documented_examples() -> list[Any]:
    text = API_DOC.read_text(encoding="utf-8")
    blocks = re.findall(r"```yaml\n(.*?)```", text, flags=re.DOTALL)
    return [
        pytest.param(document, id=f"{document['kind']}-{document['metadata']['name']}")
        for block in blocks
        for document in yaml.safe_load_all(block)
        if document and document.get("apiVersion") == "tsunagu.io/v1alpha1"
    ]


@pytest.mark.parametrize("document", documented_examples())
def test_documented_examples_use_only_fields_of_the_schema(document: dict[str, Any]) -> None:
    assert schema_errors(schema_for_kind(document["kind"]), document) == []


VALIDATOR_CASES = [
    pytest.param(
        "TrainingJob", {"spec": {"replicas": 2}}, ".spec.template: required", id="required"
    ),
    pytest.param(
        "TrainingJob",
        {"spec": {"template": {"spec": {"containers": [{}]}}, "replica": 2}},
        ".spec.replica: unknown field",
        id="misspelt-field",
    ),
    pytest.param(
        "Dataset",
        {"spec": {"homeRegion": "tokyo", "residency": {"mode": "Anywhere"}}},
        ".spec.residency.mode: 'Anywhere' not in",
        id="enum",
    ),
    pytest.param("Region", {"spec": {"prefecture": "Tokyo"}}, ".spec.prefecture", id="pattern"),
]


@pytest.mark.parametrize(("kind", "document", "expected_error"), VALIDATOR_CASES)
def test_the_local_validator_catches_what_it_should(
    kind: str, document: dict[str, Any], expected_error: str
) -> None:
    errors = schema_errors(schema_for_kind(kind), document)
    assert any(error.startswith(expected_error) for error in errors), errors


def test_the_api_reference_has_examples_of_every_kind() -> None:
    kinds = {param.values[0]["kind"] for param in documented_examples()}
    assert kinds == {expected.kind for expected in EXPECTED_KINDS}
