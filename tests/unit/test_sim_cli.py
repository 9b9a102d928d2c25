"""`tsunagu simulate` from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tsunagu.cli import main

METRICS = {
    "meanJctSeconds",
    "p95JctSeconds",
    "meanQueueSeconds",
    "meanPredictedSlowdown",
    "gpuUtilization",
    "residencyViolations",
    "cost",
    "co2Kg",
}
REQUIRED_POLICIES = {"tsunagu", "home-only", "latency-blind", "nearest-free"}


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["simulate", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_json_shape_on_small(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, "--topology", "small", "--seed", "2", "-o", "json")
    assert (code, err) == (0, "")
    policies = json.loads(out)["policies"]
    expected = REQUIRED_POLICIES | {
        "tsunagu-fastest",
        "tsunagu-cheapest",
        "tsunagu-greenest",
        "optimal",
    }
    assert set(policies) == expected
    for name, metrics in policies.items():
        assert set(metrics) == METRICS, name
        assert all(isinstance(value, int | float) for value in metrics.values()), name
        assert metrics["meanJctSeconds"] > 0
        assert 0 < metrics["gpuUtilization"] <= 1
    assert policies["optimal"]["meanJctSeconds"] <= policies["tsunagu"]["meanJctSeconds"]


def test_optimal_can_be_turned_off(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "--topology", "small", "--optimal", "never", "-o", "json")
    assert code == 0
    assert "optimal" not in json.loads(out)["policies"]


def test_table_names_every_policy(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "--topology", "small", "--jobs", "6")
    assert code == 0
    first_cells = {line.split()[0] for line in out.splitlines() if line.strip()}
    assert REQUIRED_POLICIES | {"optimal"} <= first_cells
    assert "tsunagu mean JCT vs home-only" in out


def test_trace_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    trace = tmp_path / "trace.csv"
    trace.write_text(
        "name,arrivalSeconds,durationSeconds,gpusPerReplica,datasetHome,residency\n"
        "a,0,3600,8,tokyo,RemoteAccess\n"
        "b,60,3600,8,tokyo,RemoteAccess\n"
        "c,120,3600,8,tokyo,Pinned\n",
        encoding="utf-8",
    )
    code, out, _ = _run(capsys, "--topology", "small", "--trace", str(trace), "-o", "json")
    assert code == 0
    document = json.loads(out)
    assert document["jobs"] == 3
    assert document["policies"]["home-only"]["meanQueueSeconds"] > 0


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        pytest.param(["--topology", "atlantis"], "atlantis: --topology:", id="unknown-topology"),
        pytest.param(
            ["--topology", "{tmp}/bad.yaml"],
            "bad.yaml: regions[0].gpuHourPrice:",
            id="bad-topology-file",
        ),
        pytest.param(
            ["--topology", "small", "--trace", "{tmp}/bad.csv"],
            "bad.csv: row 2 (a).durationSeconds:",
            id="bad-trace-file",
        ),
        pytest.param(
            ["--topology", "small", "--trace", "{tmp}/missing.csv"],
            "missing.csv: ",
            id="missing-trace-file",
        ),
        pytest.param(
            ["--topology", "small", "--trace", "{tmp}/elsewhere.csv"],
            "elsewhere.csv: job a.datasetHome:",
            id="trace-region-not-in-topology",
        ),
    ],
)
def test_bad_input_exits_2_with_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: list[str], expected: str
) -> None:
    (tmp_path / "bad.yaml").write_text("regions: [{name: a, gpuHourPrice: -3}]\n")
    (tmp_path / "bad.csv").write_text("name,arrivalSeconds,durationSeconds\na,0,soon\n")
    (tmp_path / "elsewhere.csv").write_text(
        "name,arrivalSeconds,durationSeconds,datasetHome\na,0,5,okinawa\n"
    )
    code, out, err = _run(capsys, *[arg.replace("{tmp}", str(tmp_path)) for arg in argv])
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1
    assert expected in err
    assert "Traceback" not in err


def test_plots_are_png_files(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = _run(capsys, "--topology", "small", "--jobs", "6", "--plot", str(tmp_path))
    assert code == 0
    names = sorted(path.name for path in tmp_path.iterdir())
    assert names == [
        "gpu_use_by_region.png",
        "jct_distribution.png",
        "latency_heatmap.png",
        "loss_curve.png",
    ]
    for name in names:
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert str(tmp_path / name) in err


def test_nothing_placeable_gives_null_means_not_nan(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    trace = tmp_path / "trace.yaml"
    trace.write_text(
        "- {name: a, arrivalSeconds: 0, durationSeconds: 60, replicas: 64, gpusPerReplica: 8}\n"
    )
    code, out, _ = _run(capsys, "--topology", "small", "--trace", str(trace), "-o", "json")
    assert code == 0
    document = json.loads(out)
    assert document["policies"]["tsunagu"]["meanJctSeconds"] is None
    assert document["unplacedJobs"]["tsunagu"] == 1
