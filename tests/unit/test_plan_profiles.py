"""`tsunagu plan` with ThroughputProfiles: a trusted profile of the job's namespace, or of the
default profiles' namespace, predicts its class's loss."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tsunagu.cli import main
from tsunagu.placement.throughput import REFERENCE_K, curve_loss

K = REFERENCE_K / 10  # an insensitive class: 1.3 % at 15 ms

WORLD = """
apiVersion: tsunagu.io/v1alpha1
kind: Region
metadata: {name: tokyo}
spec: {prefecture: JP-13, links: [{to: fukuoka, rttMs: 15}]}
---
apiVersion: tsunagu.io/v1alpha1
kind: Region
metadata: {name: fukuoka}
spec: {prefecture: JP-40}
---
apiVersion: v1
kind: Node
metadata: {name: fk-1, labels: {topology.kubernetes.io/region: fukuoka}}
status: {allocatable: {nvidia.com/gpu: "8"}}
---
apiVersion: tsunagu.io/v1alpha1
kind: Dataset
metadata: {name: data, namespace: team-a}
spec: {homeRegion: tokyo, residency: {mode: RemoteAccess}}
---
apiVersion: tsunagu.io/v1alpha1
kind: TrainingJob
metadata: {name: stream, namespace: team-a}
spec:
  datasetRef: {name: data}
  workloadClass: streaming
  gpusPerReplica: 8
  placement: {maxThroughputLoss: 0.05}
  template: {spec: {containers: [{name: trainer, image: trainer}]}}
"""


def _profile(namespace: str) -> dict[str, object]:
    samples = [{"rttMs": 0, "throughput": 100.0}]
    samples += [
        {"rttMs": rtt, "throughput": 100.0 * (1 - curve_loss(K, 0.0, rtt))}
        for rtt in (5.0, 10.0, 14.3, 15.0, 20.0)
    ]
    return {
        "apiVersion": "tsunagu.io/v1alpha1",
        "kind": "ThroughputProfile",
        "metadata": {"name": "streaming", "namespace": namespace},
        "spec": {"workloadClass": "streaming"},
        "status": {"samples": samples, "sampleCount": len(samples)},
    }


@pytest.mark.parametrize(
    ("profile_namespace", "defaults", "placed"),
    [
        (None, [], False),
        ("team-a", [], True),
        ("team-b", [], False),
        ("team-b", ["--default-profiles-namespace", "team-b"], True),
    ],
    ids=["no-profile", "same-namespace", "other-namespace", "default-namespace"],
)
def test_a_trusted_profile_places_what_the_reference_curve_refuses(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    profile_namespace: str | None,
    defaults: list[str],
    placed: bool,
) -> None:
    text = WORLD
    if profile_namespace is not None:
        text += "---\n" + yaml.safe_dump(_profile(profile_namespace))
    path = tmp_path / "world.yaml"
    path.write_text(text, encoding="utf-8")
    code = main(["plan", "-f", str(path), "-o", "json", *defaults])
    captured = capsys.readouterr()
    assert (code, captured.err) == (0, "")
    (job,) = json.loads(captured.out)
    assert job["placed"] is placed
    if placed:
        assert job["region"] == "fukuoka"
        assert job["predictedThroughputLoss"] == pytest.approx(curve_loss(K, 0.0, 15.0), abs=1e-4)
    else:
        assert job["reason"] == "ThroughputLossBudget"
