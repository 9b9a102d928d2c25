"""`tsunagu plan`: output shape on YAML fixtures, and bad input → exit 2 with one clear line."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tsunagu.cli import main

DATA = Path(__file__).parent / "data" / "plan"
FIXTURES = [str(DATA / name) for name in ("regions.yaml", "nodes.yaml", "jobs.yaml")]
JOB_KEYS = {
    "namespace",
    "name",
    "placed",
    "region",
    "reason",
    "rttMs",
    "predictedThroughputLoss",
    "nodes",
    "candidates",
}
CANDIDATE_KEYS = {"region", "feasible", "reason", "rttMs", "predictedThroughputLoss", "score"}


def run_plan(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["plan", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def plan_files(*args: str) -> list[str]:
    return [part for path in FIXTURES for part in ("-f", path)] + list(args)


@pytest.fixture
def planned(capsys: pytest.CaptureFixture[str]) -> dict[str, dict[str, Any]]:
    code, out, err = run_plan(capsys, *plan_files("-o", "json"))
    assert (code, err) == (0, "")
    return {f"{job['namespace']}/{job['name']}": job for job in json.loads(out)}


def test_json_has_one_object_per_job_in_input_order(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_plan(capsys, *plan_files("-o", "json"))
    jobs = json.loads(out)
    assert code == 0
    assert [(job["namespace"], job["name"]) for job in jobs] == [
        ("team-a", "llm-ft"),
        ("team-a", "eval"),
        ("team-b", "vision"),
    ]
    for job in jobs:
        assert set(job) == JOB_KEYS
        assert {c["region"] for c in job["candidates"]} == {"tokyo", "fukuoka", "osaka", "sapporo"}
        for candidate in job["candidates"]:
            assert set(candidate) == CANDIDATE_KEYS


def test_placed_job(planned: dict[str, dict[str, Any]]) -> None:
    job = planned["team-a/llm-ft"]
    assert job["placed"] is True
    assert (job["region"], job["reason"]) == ("fukuoka", "Placed")
    assert job["rttMs"] == 15.0
    assert job["predictedThroughputLoss"] == pytest.approx(0.12, abs=0.001)
    assert job["nodes"] == ["fk-gpu-1", "fk-gpu-2"]
    reasons = {c["region"]: (c["feasible"], c["reason"]) for c in job["candidates"]}
    assert reasons == {
        "fukuoka": (True, "Placed"),
        "tokyo": (False, "InsufficientCapacity"),  # the resident pod holds all 8 GPUs
        "osaka": (False, "InsufficientCapacity"),  # A100s only
        "sapporo": (False, "LatencyBudget"),  # 25 ms over maxRttMs 20
    }
    scores = {c["region"]: c["score"] for c in job["candidates"]}
    assert scores["fukuoka"] is not None
    assert scores["sapporo"] is None


def test_capacity_is_consumed_in_input_order(planned: dict[str, dict[str, Any]]) -> None:
    job = planned["team-a/eval"]
    assert (job["placed"], job["region"], job["nodes"]) == (False, None, [])
    assert job["reason"] == "InsufficientCapacity"
    assert (job["rttMs"], job["predictedThroughputLoss"]) == (None, None)


def test_pinned_dataset_stays_home(planned: dict[str, dict[str, Any]]) -> None:
    job = planned["team-b/vision"]
    assert (job["region"], job["rttMs"], job["nodes"]) == ("osaka", 0.0, ["os-gpu-1", "os-gpu-1"])
    rejected = {c["region"]: c["reason"] for c in job["candidates"] if not c["feasible"]}
    assert rejected == {r: "DataResidency" for r in ("tokyo", "fukuoka", "sapporo")}


def test_table_lists_jobs_and_rejected_regions(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_plan(capsys, *plan_files())
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].split() == ["JOB", "REGION", "RTT", "LOSS", "REASON"]
    assert lines[1].split() == ["team-a/llm-ft", "fukuoka", "15.0", "ms", "12.0%", "Placed"]
    assert lines[2].split() == ["team-a/eval", "-", "-", "-", "InsufficientCapacity"]
    assert lines[3].split() == ["team-b/vision", "osaka", "0.0", "ms", "0.0%", "Placed"]
    assert "team-a/llm-ft → fukuoka on fk-gpu-1, fk-gpu-2" in lines
    assert "team-a/eval not placed (InsufficientCapacity)" in lines
    assert "team-b/vision → osaka on os-gpu-1 ×2" in lines
    sapporo = next(line for line in lines if line.strip().startswith("sapporo  LatencyBudget"))
    assert "RTT 25.0 ms to tokyo is over maxRttMs 20" in sapporo


def test_reads_standard_input(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    text = "\n---\n".join(Path(path).read_text() for path in FIXTURES)
    monkeypatch.setattr(sys, "stdin", io.StringIO(text))
    code, out, _ = run_plan(capsys, "-f", "-", "-o", "json")
    assert code == 0
    assert [job["name"] for job in json.loads(out)] == ["llm-ft", "eval", "vision"]


def test_input_without_jobs(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_plan(capsys, "-f", FIXTURES[0], "-o", "json")
    assert (code, json.loads(out)) == (0, [])


def test_table_explains_job_without_candidates(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    lonely = tmp_path / "lonely.yaml"
    lonely.write_text(job_yaml("{replicas: 1}"))
    code, out, _ = run_plan(capsys, "-f", str(lonely))
    assert code == 0
    assert "team-a/x not placed (NoRegions): no Region objects exist" in out.splitlines()


REGION = "apiVersion: tsunagu.io/v1alpha1\nkind: Region\nmetadata: {name: tokyo}\nspec: {}\n"
DATASET = (
    "apiVersion: tsunagu.io/v1alpha1\nkind: Dataset\nmetadata: {name: d, namespace: team-a}\n"
    "spec: {homeRegion: tokyo}\n"
)


def job_yaml(spec: str) -> str:
    return (
        "apiVersion: tsunagu.io/v1alpha1\nkind: TrainingJob\n"
        f"metadata: {{name: x, namespace: team-a}}\nspec: {spec}\n"
    )


@pytest.mark.parametrize(
    ("documents", "expected"),
    [
        pytest.param(
            [REGION, "kind: Region\nmetadata: {name: [unclosed\n"],
            "bad.yaml document 2: not valid YAML: ",
            id="not-yaml",
        ),
        pytest.param(
            [REGION, DATASET, job_yaml("{replicas: two, gpusPerReplica: 8}")],
            "bad.yaml document 3 (TrainingJob team-a/x): spec.replicas: must be an integer ≥ 1",
            id="wrong-type",
        ),
        pytest.param(
            [REGION, job_yaml("{datasetRef: {name: nowhere}}")],
            "bad.yaml document 2 (TrainingJob team-a/x): spec.datasetRef.name: "
            "Dataset team-a/nowhere is not in the input",
            id="dataset-not-there",
        ),
        pytest.param(
            [
                REGION,
                "apiVersion: tsunagu.io/v1alpha1\nkind: Dataset\n"
                "metadata: {name: d, namespace: team-a}\nspec: {sizeGiB: 5}\n",
            ],
            "bad.yaml document 2 (Dataset team-a/d): spec.homeRegion: is required",
            id="missing-field",
        ),
        pytest.param(
            [REGION, "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n"],
            "bad.yaml document 2: kind: unsupported kind 'Deployment' "
            "(expected Region, Dataset, TrainingJob, Node, Pod, ThroughputProfile)",
            id="unknown-kind",
        ),
        pytest.param(
            ["apiVersion: v1\nmetadata: {name: n}\n"],
            "bad.yaml document 1: kind: is required",
            id="no-kind",
        ),
        pytest.param(
            ["- just\n- a list\n"],
            "bad.yaml document 1: must be a Kubernetes object (a map with apiVersion and kind)",
            id="not-an-object",
        ),
        pytest.param(
            [REGION, REGION],
            "bad.yaml document 2 (Region tokyo): metadata.name: "
            "Region tokyo is already in bad.yaml document 1",
            id="duplicate",
        ),
        pytest.param(
            ["apiVersion: tsunagu.io/v1\nkind: Region\nmetadata: {name: tokyo}\n"],
            "bad.yaml document 1 (Region tokyo): apiVersion: must be tsunagu.io/v1alpha1",
            id="wrong-api-version",
        ),
        pytest.param(
            [
                "apiVersion: v1\nkind: Node\nmetadata: {name: n1}\n"
                "status: {allocatable: {nvidia.com/gpu: lots}}\n"
            ],
            "bad.yaml document 1 (Node n1): status.allocatable.nvidia.com/gpu: "
            "is not a valid quantity: 'lots'",
            id="bad-quantity",
        ),
        pytest.param(
            ["apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Pod, metadata: {}}\n"],
            "bad.yaml document 1 item 1 (Pod <unnamed>): metadata.name: is required",
            id="bad-list-item",
        ),
    ],
)
def test_bad_input_exits_2_with_one_line(
    documents: list[str],
    expected: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (tmp_path / "bad.yaml").write_text("---\n".join(documents))
    monkeypatch.chdir(tmp_path)
    code, out, err = run_plan(capsys, "-f", "bad.yaml", "-o", "json")
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith(f"error: {expected}")
    assert "Traceback" not in err


def test_missing_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run_plan(capsys, "-f", str(tmp_path / "absent.yaml"))
    assert code == 2
    assert err == f"error: {tmp_path / 'absent.yaml'}: cannot read: No such file or directory\n"


def test_subprocess_bad_input_has_no_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(REGION + "---\n" + job_yaml("{replicas: -3}"))
    result = subprocess.run(
        [sys.executable, "-m", "tsunagu.cli", "plan", "-f", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == (
        f"error: {bad} document 2 (TrainingJob team-a/x): spec.replicas: must be an integer ≥ 1\n"
    )


def test_subprocess_json() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tsunagu.cli", "plan", *plan_files("-o", "json")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stderr) == (0, "")
    assert [job["region"] for job in json.loads(result.stdout)] == ["fukuoka", None, "osaka"]


NODE_RULES_INPUT = """\
apiVersion: tsunagu.io/v1alpha1
kind: Region
metadata: {name: tokyo}
spec: {}
---
apiVersion: v1
kind: Node
metadata:
  name: tk-infer
  labels: {topology.kubernetes.io/region: tokyo}
spec:
  taints: [{key: dedicated, value: infer, effect: NoSchedule}]
status:
  allocatable: {cpu: "96", memory: 1Ti, pods: "110", nvidia.com/gpu: "8"}
---
apiVersion: v1
kind: Node
metadata:
  name: tk-train
  labels: {topology.kubernetes.io/region: tokyo, pool: train}
status:
  allocatable: {cpu: "96", memory: 1Ti, pods: "110", nvidia.com/gpu: "8"}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop}
spec:
  nodeName: tk-train
  containers: [{name: web, resources: {requests: {cpu: "60"}}}]
status: {phase: Running}
---
apiVersion: tsunagu.io/v1alpha1
kind: TrainingJob
metadata: {name: cpu-hungry, namespace: team-a}
spec:
  gpusPerReplica: 1
  template:
    spec:
      containers: [{name: t, resources: {requests: {cpu: "40"}}}]
---
apiVersion: tsunagu.io/v1alpha1
kind: TrainingJob
metadata: {name: tolerant, namespace: team-a}
spec:
  gpusPerReplica: 1
  template:
    spec:
      tolerations: [{key: dedicated, operator: Exists}]
      containers: [{name: t, resources: {requests: {cpu: "40"}}}]
"""


def test_plan_honours_taints_and_every_resource(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_text(NODE_RULES_INPUT, encoding="utf-8")
    code, out, err = run_plan(capsys, "-f", str(path), "-o", "json")
    assert (code, err) == (0, "")
    hungry, tolerant = json.loads(out)
    assert set(hungry) == JOB_KEYS
    assert (hungry["placed"], hungry["reason"]) == (False, "InsufficientCapacity")
    assert tolerant["placed"]
    assert tolerant["nodes"] == ["tk-infer"]
    code, out, _ = run_plan(capsys, "-f", str(path))
    assert code == 0
    assert "1 node tainted dedicated=infer:NoSchedule not tolerated" in out
    assert "1 node short of cpu: 40 requested, 36 free on the best node" in out
