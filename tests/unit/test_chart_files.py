"""Static checks of what tsunagu ships besides the package: the Helm chart's files, the Dockerfile
and the examples (no cluster and no Helm needed; rendering is checked in tests/e2e/test_chart.py).
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from tsunagu.api.parse import parse_dataset, parse_region, parse_training_job

REPO_ROOT = Path(__file__).resolve().parents[2]
CRD_DIR = REPO_ROOT / "crds"
CHART_DIR = REPO_ROOT / "charts" / "tsunagu"
EXAMPLES_DIR = REPO_ROOT / "examples"
TOPOLOGY = REPO_ROOT / "hack" / "topology" / "japan.yaml"

# --- the chart's CRDs are copies of crds/ (hack/sync-chart-crds.sh) -----------------------------

SOURCE_CRDS = sorted(path.name for path in CRD_DIR.glob("*.yaml"))


def test_there_are_crds_to_ship() -> None:
    assert len(SOURCE_CRDS) == 6, SOURCE_CRDS


@pytest.mark.parametrize("name", SOURCE_CRDS)
def test_chart_crd_is_an_exact_copy_of_crds(name: str) -> None:
    copy = CHART_DIR / "crds" / name
    assert copy.is_file(), f"charts/tsunagu/crds/{name} is missing: run hack/sync-chart-crds.sh"
    assert copy.read_bytes() == (CRD_DIR / name).read_bytes(), (
        f"charts/tsunagu/crds/{name} differs from crds/{name}: run hack/sync-chart-crds.sh"
    )


def test_chart_ships_no_crd_that_crds_does_not_have() -> None:
    extra = sorted({p.name for p in (CHART_DIR / "crds").iterdir()} - set(SOURCE_CRDS))
    assert not extra, f"charts/tsunagu/crds/ has files without a source in crds/: {extra}"


# --- values: documented and strictly validated ----------------------------------------------

VALUES = yaml.safe_load((CHART_DIR / "values.yaml").read_text(encoding="utf-8"))
SCHEMA = json.loads((CHART_DIR / "values.schema.json").read_text(encoding="utf-8"))
README = (CHART_DIR / "README.md").read_text(encoding="utf-8")
VALUES_TABLE = README.split("\n## Values\n", 1)[1]
DOCUMENTED_KEYS = frozenset(re.findall(r"^\| `([^`]+)` \|", VALUES_TABLE, flags=re.MULTILINE))


def _value_paths(values: Mapping[str, Any], prefix: str = "") -> Iterator[str]:
    """Every key a user may set, stopping at a mapping the README documents as a whole."""
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value and path not in DOCUMENTED_KEYS:
            yield from _value_paths(value, f"{path}.")
        else:
            yield path


VALUE_PATHS = sorted(_value_paths(VALUES))


@pytest.mark.parametrize("path", VALUE_PATHS)
def test_every_value_is_in_the_readme_table(path: str) -> None:
    assert path in DOCUMENTED_KEYS, f"values.yaml key {path} has no row in the chart README"


@pytest.mark.parametrize("path", sorted(DOCUMENTED_KEYS))
def test_every_readme_row_is_a_value(path: str) -> None:
    node: Any = VALUES
    for part in path.split("."):
        known = node if isinstance(node, Mapping) else {}
        assert part in known, f"README documents unknown value {path}"
        node = known[part]


def _schema_objects(schema: Mapping[str, Any], path: str = "") -> Iterator[tuple[str, Any]]:
    if "properties" in schema:
        yield path or "(root)", schema
        for key, child in schema["properties"].items():
            yield from _schema_objects(child, f"{path}.{key}")
    for key, child in schema.get("definitions", {}).items():
        yield from _schema_objects(child, f"#{key}")


# Kubernetes types passed through verbatim (EnvVar), validated by the API server instead.
OPEN_SCHEMA_OBJECTS = frozenset({".operator.extraEnv"})


def test_values_schema_rejects_unknown_keys_in_every_section() -> None:
    open_objects = {
        path
        for path, node in _schema_objects(SCHEMA)
        if node.get("additionalProperties") is not False
    }
    assert open_objects <= OPEN_SCHEMA_OBJECTS, (
        f"schema objects that accept any key: {open_objects}"
    )


def test_values_schema_describes_every_top_level_value() -> None:
    assert set(VALUES) <= set(SCHEMA["properties"]), set(VALUES) - set(SCHEMA["properties"])


# --- the Dockerfile --------------------------------------------------------------------------

DOCKERFILE = (REPO_ROOT / "Dockerfile").read_text(encoding="utf-8")
INSTRUCTIONS = [
    line.strip()
    for line in re.sub(r"\\\n", " ", DOCKERFILE).splitlines()
    if line.strip() and not line.lstrip().startswith("#")
]
STAGES = [line for line in INSTRUCTIONS if line.startswith("FROM ")]
FINAL_STAGE = INSTRUCTIONS[INSTRUCTIONS.index(STAGES[-1]) :]


def test_dockerfile_pins_one_python_311_base_for_both_stages() -> None:
    pinned = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", DOCKERFILE, flags=re.MULTILINE)
    assert pinned, "the base image must be pinned in ARG PYTHON_IMAGE"
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", pinned.group(1))
    assert len(STAGES) == 2
    assert all(stage.split()[1] == "${PYTHON_IMAGE}" for stage in STAGES), STAGES


@pytest.mark.parametrize(
    ("instruction", "expected"),
    [
        pytest.param("USER", "65532:65532", id="numeric-non-root-user"),
        pytest.param("ENTRYPOINT", '["tsunagu"]', id="entrypoint"),
        pytest.param("CMD", '["run"]', id="default-command"),
    ],
)
def test_dockerfile_final_stage(instruction: str, expected: str) -> None:
    found = [line.split(None, 1)[1] for line in FINAL_STAGE if line.split()[0] == instruction]
    assert found == [expected]


def test_final_stage_copies_only_the_venv_from_the_builder() -> None:
    copies = [line for line in FINAL_STAGE if line.startswith("COPY")]
    assert copies == ["COPY --from=builder /opt/tsunagu /opt/tsunagu"]


def test_dockerignore_lets_every_build_input_through() -> None:
    builder = INSTRUCTIONS[: INSTRUCTIONS.index(STAGES[-1])]
    inputs = [
        source.rstrip("/")
        for line in builder
        if line.startswith("COPY ") and "--from" not in line
        for source in shlex.split(line)[1:-1]
    ]
    allowed = {
        line[1:].rstrip("/")
        for line in (REPO_ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.startswith("!")
    }
    assert inputs, "the builder stage copies nothing"
    assert set(inputs) <= allowed, f"excluded by .dockerignore: {set(inputs) - allowed}"


# --- the examples ----------------------------------------------------------------------------

PARSERS = {"Region": parse_region, "Dataset": parse_dataset, "TrainingJob": parse_training_job}


def _example_documents() -> list[Any]:
    cases = []
    for path in sorted(EXAMPLES_DIR.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            label = f"{path.name}:{document['kind']}/{document['metadata']['name']}"
            cases.append(pytest.param(document, id=label))
    return cases


EXAMPLES = _example_documents()


@pytest.mark.parametrize("document", EXAMPLES)
def test_example_is_a_valid_object(document: dict[str, Any]) -> None:
    parse = PARSERS.get(document["kind"])
    if parse is None:
        assert document["apiVersion"] in ("v1", "apps/v1"), document["apiVersion"]
        return
    parsed = parse(document)
    assert parsed.name == document["metadata"]["name"]


def test_example_regions_are_the_test_cluster_topology() -> None:
    """The demo applies the examples to nodes made from the topology: both must agree."""
    topology = yaml.safe_load(TOPOLOGY.read_text(encoding="utf-8"))
    fields = ("prefecture", "displayName", "gpuHourPrice", "carbonIntensity", "location", "links")
    expected = {
        region["name"]: {key: region[key] for key in fields if key in region}
        for region in topology["regions"]
    }
    examples = {
        doc["metadata"]["name"]: {key: doc["spec"][key] for key in fields if key in doc["spec"]}
        for doc in (case.values[0] for case in EXAMPLES)
        if doc["kind"] == "Region"
    }
    assert examples == expected


def test_the_demo_hub_and_member_together_are_the_test_cluster_topology() -> None:
    """`make demo` makes the same GPU nodes in two clusters: the hub's sites and the Fukuoka
    cloud's, each site in exactly one of them, as japan.yaml has them all in one."""

    def load(name: str) -> dict[str, Any]:
        loaded: dict[str, Any] = yaml.safe_load(
            (TOPOLOGY.parent / name).read_text(encoding="utf-8")
        )
        return loaded

    japan, hub, member = load("japan.yaml"), load("tokyo-hub.yaml"), load("fukuoka-cloud.yaml")

    def sites(topology: dict[str, Any]) -> dict[str, str]:
        return {region["name"]: region["gpuProduct"] for region in topology["regions"]}

    assert not sites(hub).keys() & sites(member).keys()
    assert sites(hub) | sites(member) == sites(japan)
    for topology in (hub, member):
        assert (topology["nodesPerRegion"], topology["gpusPerNode"]) == (
            japan["nodesPerRegion"], japan["gpusPerNode"],
        )  # fmt: skip


def test_examples_tell_the_demo_story_offline(tmp_path: Path) -> None:
    """`tsunagu plan` over the examples, the topology's nodes and a busy Tokyo: data in Tokyo,
    jobs overflow within their budgets, the job on Pinned data waits."""
    nodes = subprocess.run(
        [sys.executable, str(REPO_ROOT / "hack" / "topology.py"), "nodes", str(TOPOLOGY)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    busy_pods = [
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": f"inference-tokyo-{index}", "namespace": "serving"},
            "spec": {
                "nodeName": f"gpu-tokyo-{index:04d}",
                "containers": [
                    {"name": "server", "resources": {"limits": {"nvidia.com/gpu": "8"}}}
                ],
            },
            "status": {"phase": "Running"},
        }
        for index in range(4)
    ]
    (tmp_path / "nodes.yaml").write_text(
        yaml.safe_dump_all([*json.loads(nodes)["items"], *busy_pods]), encoding="utf-8"
    )
    jobs = [case.values[0] for case in EXAMPLES if case.values[0]["kind"] == "TrainingJob"]
    # `plan` takes jobs in the order given: the order the operator uses (priority, then arrival).
    ordered = sorted(jobs, key=lambda job: -job["spec"].get("priority", 0))
    (tmp_path / "jobs.yaml").write_text(yaml.safe_dump_all(ordered), encoding="utf-8")
    files = [
        str(EXAMPLES_DIR / "10-regions.yaml"),
        str(EXAMPLES_DIR / "20-datasets.yaml"),
        str(tmp_path / "nodes.yaml"),
        str(tmp_path / "jobs.yaml"),
    ]
    result = subprocess.run(
        [sys.executable, "-m", "tsunagu.cli", "plan", *(f"-f{f}" for f in files), "-o", "json"],
        capture_output=True, text=True, check=False, cwd=REPO_ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    outcome = {row["name"]: (row["region"], row["reason"]) for row in json.loads(result.stdout)}
    assert outcome == {
        "llm-finetune": ("osaka", "Placed"),
        "vision-pretrain": ("fukuoka", "Placed"),
        "embeddings-refresh": ("hiroshima", "Placed"),
        "scan-segmentation": (None, "InsufficientCapacity"),
        "tokenizer-train": ("fukuoka", "Placed"),
        "hparam-sweep": ("hokkaido", "Placed"),
    }
