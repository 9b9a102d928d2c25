"""--gang-toleration: the toleration of the taint that keeps other schedulers off the GPU nodes,
added to every gang pod and counted when placing."""

from __future__ import annotations

import argparse

import pytest

from tsunagu.api.scheduling import TaintEffect, Toleration, TolerationOperator
from tsunagu.controller.builders import build_pod
from tsunagu.controller.jobs import JobTracker
from tsunagu.controller.settings import (
    OperatorSettings,
    add_arguments,
    from_args,
    gang_toleration,
    toleration_body,
)

JOB = {
    "apiVersion": "tsunagu.io/v1alpha1",
    "kind": "TrainingJob",
    "metadata": {"name": "j", "namespace": "team", "uid": "u1", "generation": 1},
    "spec": {
        "replicas": 1,
        "gpusPerReplica": 1,
        "template": {
            "spec": {
                "containers": [{"name": "t", "image": "i"}],
                "tolerations": [{"key": "own", "operator": "Exists"}],
            }
        },
    },
}


def settings(*argv: str) -> OperatorSettings:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return from_args(parser.parse_args(list(argv)))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("dedicated=infer:NoSchedule",
         Toleration("dedicated", TolerationOperator.Equal, "infer", TaintEffect.NoSchedule)),
        ("nvidia.com/gpu:NoExecute",
         Toleration("nvidia.com/gpu", TolerationOperator.Exists, "", TaintEffect.NoExecute)),
    ],
)  # fmt: skip
def test_the_flag_reads_like_kubectl_taint(text: str, expected: Toleration) -> None:
    assert gang_toleration(text) == expected
    assert settings("--gang-toleration", text).scheduling.gang_tolerations == (expected,)


@pytest.mark.parametrize("text", ["dedicated=infer", ":NoSchedule", "a=b:Sometimes"])
def test_a_bad_toleration_is_refused_naming_the_flag(text: str) -> None:
    with pytest.raises(SystemExit, match="--gang-toleration"):
        settings("--gang-toleration", text)


def test_the_placement_counts_the_gang_toleration_and_the_pod_carries_it() -> None:
    extra = gang_toleration("dedicated=infer:NoSchedule")
    tracker = JobTracker(gang_tolerations=(extra,))
    _, tracked = tracker.observe(JOB)
    assert tracked.spec is not None
    tolerations = tracked.spec.pod_requirements.tolerations
    assert tolerations[-1] == extra
    assert tolerations[0].key == "own"  # the template's own are kept
    pod = build_pod(tracked.spec, JOB, 0, "osaka", None, None, [toleration_body(extra)])
    assert pod["spec"]["tolerations"] == [
        {"key": "own", "operator": "Exists"},
        {"key": "dedicated", "operator": "Equal", "value": "infer", "effect": "NoSchedule"},
    ]
