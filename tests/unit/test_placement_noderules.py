"""The node predicates against the semantics of kube-scheduler v1.34's Filter plugins."""

from __future__ import annotations

import pytest

from tsunagu.api.scheduling import (
    HostPort,
    PodRequirements,
    Taint,
    TaintEffect,
    Toleration,
    TolerationOperator,
)
from tsunagu.api.types import NodeInfo
from tsunagu.placement.noderules import (
    UNBOUNDED,
    Rule,
    blocked_by_cordon,
    copies_that_fit,
    format_amount,
    port_conflicts,
    port_in_use,
    resource_verdict,
    static_verdict,
    tolerates,
    untolerated_preferences,
    untolerated_taint,
)

NO_SCHEDULE = TaintEffect.NoSchedule
NO_EXECUTE = TaintEffect.NoExecute
PREFER = TaintEffect.PreferNoSchedule
EXISTS = TolerationOperator.Exists
EQUAL = TolerationOperator.Equal
DEDICATED = Taint("dedicated", "infer", NO_SCHEDULE)


@pytest.mark.parametrize(
    ("toleration", "taint", "expected"),
    [
        pytest.param(
            Toleration("dedicated", EQUAL, "infer", NO_SCHEDULE), DEDICATED, True, id="equal"
        ),
        pytest.param(
            Toleration("dedicated", EQUAL, "train", NO_SCHEDULE),
            DEDICATED,
            False,
            id="equal-other-value",
        ),
        pytest.param(
            Toleration("dedicated", EQUAL, "", NO_SCHEDULE),
            DEDICATED,
            False,
            id="equal-empty-value",
        ),
        pytest.param(
            Toleration("dedicated", EXISTS, "", NO_SCHEDULE), DEDICATED, True, id="exists-any-value"
        ),
        pytest.param(
            Toleration("other", EXISTS, "", NO_SCHEDULE), DEDICATED, False, id="exists-other-key"
        ),
        pytest.param(Toleration("", EXISTS), DEDICATED, True, id="empty-key-exists-tolerates-all"),
        pytest.param(
            Toleration("", EXISTS, "", NO_EXECUTE), DEDICATED, False, id="empty-key-other-effect"
        ),
        pytest.param(
            Toleration("dedicated", EQUAL, "infer"), DEDICATED, True, id="empty-effect-all"
        ),
        pytest.param(
            Toleration("dedicated", EQUAL, "infer"),
            Taint("dedicated", "infer", NO_EXECUTE),
            True,
            id="empty-effect-noexecute",
        ),
        pytest.param(
            Toleration("dedicated", EQUAL, "infer", NO_EXECUTE),
            DEDICATED,
            False,
            id="effect-differs",
        ),
        pytest.param(
            Toleration("gpu", EQUAL, ""), Taint("gpu", "", NO_SCHEDULE), True, id="equal-both-empty"
        ),
    ],
)
def test_tolerates(toleration: Toleration, taint: Taint, expected: bool) -> None:
    assert tolerates(toleration, taint) is expected


@pytest.mark.parametrize(
    ("taints", "tolerations", "expected"),
    [
        pytest.param((), (), None, id="no-taints"),
        pytest.param((DEDICATED,), (), DEDICATED, id="noschedule-untolerated"),
        pytest.param(
            (Taint("x", "", NO_EXECUTE),),
            (),
            Taint("x", "", NO_EXECUTE),
            id="noexecute-untolerated",
        ),
        pytest.param((Taint("x", "", PREFER),), (), None, id="prefer-never-filters"),
        pytest.param((DEDICATED,), (Toleration("dedicated", EXISTS),), None, id="tolerated"),
        pytest.param(
            (DEDICATED, Taint("gpu", "", NO_EXECUTE)),
            (Toleration("dedicated", EXISTS),),
            Taint("gpu", "", NO_EXECUTE),
            id="second-untolerated",
        ),
        pytest.param(
            (DEDICATED, Taint("gpu", "", NO_EXECUTE)),
            (Toleration("", EXISTS),),
            None,
            id="wildcard",
        ),
    ],
)
def test_untolerated_taint(
    taints: tuple[Taint, ...], tolerations: tuple[Toleration, ...], expected: Taint | None
) -> None:
    assert untolerated_taint(taints, tolerations) == expected


def node(
    name: str = "n1",
    *,
    labels: dict[str, str] | None = None,
    taints: tuple[Taint, ...] = (),
    unschedulable: bool = False,
    product: str | None = None,
) -> NodeInfo:
    return NodeInfo(
        name,
        "a",
        8,
        product,
        not unschedulable,
        tuple(sorted((labels or {}).items())),
        taints,
        None,
        unschedulable,
    )


@pytest.mark.parametrize(
    ("tolerations", "blocked"),
    [
        pytest.param((), True, id="cordoned"),
        pytest.param(
            (Toleration("node.kubernetes.io/unschedulable", EXISTS, "", NO_SCHEDULE),),
            False,
            id="tolerated",
        ),
        pytest.param((Toleration("", EXISTS),), False, id="wildcard"),
        pytest.param(
            (Toleration("node.kubernetes.io/unschedulable", EXISTS, "", NO_EXECUTE),),
            True,
            id="wrong-effect",
        ),
    ],
)
def test_node_unschedulable(tolerations: tuple[Toleration, ...], blocked: bool) -> None:
    assert blocked_by_cordon(node(unschedulable=True), tolerations) is blocked
    assert blocked_by_cordon(node(), tolerations) is False


@pytest.mark.parametrize(
    ("wanted", "used", "expected"),
    [
        pytest.param(HostPort(80), (), False, id="free"),
        pytest.param(HostPort(80), (HostPort(80),), True, id="same-port"),
        pytest.param(HostPort(80), (HostPort(81),), False, id="other-port"),
        pytest.param(HostPort(80), (HostPort(80, "UDP"),), False, id="other-protocol"),
        pytest.param(
            HostPort(80, "TCP", "10.0.0.1"),
            (HostPort(80, "TCP", "10.0.0.2"),),
            False,
            id="other-ip",
        ),
        pytest.param(
            HostPort(80, "TCP", "10.0.0.1"), (HostPort(80, "TCP", "10.0.0.1"),), True, id="same-ip"
        ),
        pytest.param(HostPort(80), (HostPort(80, "TCP", "10.0.0.2"),), True, id="wanted-all-ips"),
        pytest.param(HostPort(80, "TCP", "10.0.0.1"), (HostPort(80),), True, id="used-all-ips"),
    ],
)
def test_port_conflicts(wanted: HostPort, used: tuple[HostPort, ...], expected: bool) -> None:
    assert port_conflicts(wanted, used) is expected
    assert (port_in_use((HostPort(9999), wanted), used) == wanted) is expected


GI = 2**30


@pytest.mark.parametrize(
    ("requests", "free", "bounded", "copies"),
    [
        pytest.param({"nvidia.com/gpu": 2}, {"nvidia.com/gpu": 8, "pods": 110}, True, 4, id="gpus"),
        pytest.param(
            {"nvidia.com/gpu": 2, "cpu": 60_000},
            {"nvidia.com/gpu": 8, "cpu": 96_000, "pods": 110},
            True,
            1,
            id="cpu-binds",
        ),
        pytest.param({"memory": 3 * GI}, {"memory": 8 * GI, "pods": 110}, True, 2, id="memory"),
        pytest.param(
            {"ephemeral-storage": 10},
            {"ephemeral-storage": 9, "pods": 110},
            True,
            0,
            id="ephemeral-storage",
        ),
        pytest.param({"example.com/fpga": 1}, {"pods": 110}, True, 0, id="extended-not-on-node"),
        pytest.param(
            {"example.com/fpga": 1}, {"example.com/fpga": 3, "pods": 110}, True, 3, id="extended"
        ),
        pytest.param(
            {"nvidia.com/gpu": 1}, {"nvidia.com/gpu": 8, "pods": 3}, True, 3, id="pods-count"
        ),
        pytest.param(
            {"nvidia.com/gpu": 1}, {"nvidia.com/gpu": 8}, True, 0, id="no-pods-allocatable"
        ),
        pytest.param({}, {"pods": 5}, True, 5, id="zero-request-only-pods"),
        pytest.param({"cpu": 0}, {"pods": 5}, True, 5, id="zero-cpu-counts-as-zero"),
        pytest.param(
            {"nvidia.com/gpu": 2, "cpu": 60_000},
            {"nvidia.com/gpu": 8},
            False,
            4,
            id="gpu-only-node",
        ),
        pytest.param({}, {"nvidia.com/gpu": 8}, False, UNBOUNDED, id="gpu-only-node-nothing-asked"),
    ],
)
def test_copies_that_fit(
    requests: dict[str, int], free: dict[str, int], bounded: bool, copies: int
) -> None:
    assert copies_that_fit(sorted(requests.items()), free, bounded) == copies
    verdict = resource_verdict(sorted(requests.items()), free, bounded)
    assert (verdict is None) is (copies > 0)


def test_resource_verdict_names_the_resource() -> None:
    verdict = resource_verdict(
        [("cpu", 60_000), ("nvidia.com/gpu", 2)],
        {"cpu": 36_000, "nvidia.com/gpu": 8, "pods": 9},
        True,
    )
    assert verdict is not None
    assert (verdict.rule, verdict.resource, verdict.requested, verdict.free) == (
        Rule.NodeResourcesFit,
        "cpu",
        60_000,
        36_000,
    )
    pods = resource_verdict([("cpu", 1)], {"cpu": 8, "pods": 0}, True)
    assert pods is not None
    assert pods.resource == "pods"


@pytest.mark.parametrize(
    ("node_info", "requirements", "product", "rule"),
    [
        pytest.param(node(), PodRequirements.of({}), None, None, id="passes"),
        pytest.param(
            node(unschedulable=True),
            PodRequirements.of({}),
            None,
            Rule.NodeUnschedulable,
            id="cordoned",
        ),
        pytest.param(
            node(product="A100"), PodRequirements.of({}), "H100", Rule.GpuProduct, id="product"
        ),
        pytest.param(
            node(),
            PodRequirements.of({}, node_selector={"zone": "a"}),
            None,
            Rule.NodeAffinity,
            id="selector",
        ),
        pytest.param(
            node(taints=(DEDICATED,)),
            PodRequirements.of({}),
            None,
            Rule.TaintToleration,
            id="taint",
        ),
        pytest.param(
            node(taints=(DEDICATED,), unschedulable=True),
            PodRequirements.of({}, tolerations=(Toleration("", EXISTS),)),
            None,
            None,
            id="wildcard-toleration-passes-cordon-and-taints",
        ),
    ],
)
def test_static_verdict(
    node_info: NodeInfo, requirements: PodRequirements, product: str | None, rule: Rule | None
) -> None:
    verdict = static_verdict(node_info, requirements, product)
    assert (verdict.rule if verdict else None) == rule


def test_taint_verdict_says_which_taint() -> None:
    verdict = static_verdict(node(taints=(DEDICATED,)), PodRequirements.of({}), None)
    assert verdict is not None
    assert verdict.detail == "tainted dedicated=infer:NoSchedule not tolerated"


@pytest.mark.parametrize(
    ("resource", "amount", "text"),
    [
        ("cpu", 60_000, "60"),
        ("cpu", 1_500, "1.5"),
        ("memory", 64 * GI, "64Gi"),
        ("memory", 1_000, "1000"),
        ("ephemeral-storage", 3 * 2**20, "3Mi"),
        ("nvidia.com/gpu", 4, "4"),
    ],
)
def test_format_amount(resource: str, amount: int, text: str) -> None:
    assert format_amount(resource, amount) == text


def test_untolerated_preferences_count_prefer_no_schedule_only() -> None:
    soft = Taint("spot", "", PREFER)
    assert untolerated_preferences((soft, DEDICATED), ()) == 1
    assert untolerated_preferences((soft,), (Toleration("spot", EXISTS, "", PREFER),)) == 0
    assert untolerated_preferences((soft,), (Toleration("spot", EXISTS, "", NO_SCHEDULE),)) == 1
