"""A job's gang in a member cluster, judged before the state machine acts (MemberJobs): never on
a member that cannot be reached, unless the job's policy accepts a second copy after a grace;
the copy left behind never counted, and removed once its member answers."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

from tests.unit import test_placement_fixtures as fixtures
from tsunagu.api.types import UnreachableAction
from tsunagu.controller.cluster.client import Kube
from tsunagu.controller.cluster.connection import ClusterConnection, ClusterSet
from tsunagu.controller.cluster.view import JobPod
from tsunagu.controller.lifecycle.memberjobs import MemberJobs
from tsunagu.controller.report.status import timestamp
from tsunagu.controller.report.statusbook import StatusBook

NOW = 1_800_000_000.0
KEY = ("team-a", "llm")


class Members:
    """What MemberJobs asks of MemberClusters: whether a member can be acted on."""

    def __init__(self, **verdicts: tuple[str, str]) -> None:
        self.verdicts = verdicts
        self.members = dict.fromkeys(verdicts)

    def usable(self, name: str) -> tuple[str, str]:
        return self.verdicts[name]


class Objects:
    def __init__(self) -> None:
        self.removed: list[tuple[str, Any, str]] = []

    async def remove_from(self, member: str, key: Any, uid: str) -> None:
        self.removed.append((member, key, uid))


class Events:
    def __init__(self) -> None:
        self.posted: list[tuple[str, str]] = []

    def job_event(self, key: Any, kind: str, reason: str, message: str) -> None:
        self.posted.append((kind, reason))


def pod(name: str, cluster: str | None) -> JobPod:
    node = f"{cluster}/gpu-1" if cluster else "gpu-1"
    return JobPod(name, 0, node, "Running", False, "uid-1", "fukuoka", "TrainingJob",
                  cluster=cluster)  # fmt: skip


def judge_of(members: Members, status: dict[str, Any]) -> tuple[MemberJobs, StatusBook, Events]:
    statuses = StatusBook(Kube.__new__(Kube))
    statuses.seed(KEY, status)
    events = Events()
    hub = ClusterConnection("", Kube.__new__(Kube), on_pods_changed=lambda jobs, freed: None)
    judge = MemberJobs(
        clusters=ClusterSet(hub), members=members, member_objects=Objects(),  # type: ignore[arg-type]
        statuses=statuses, events=events, look_again=lambda key: None,  # type: ignore[arg-type]
    )  # fmt: skip
    return judge, statuses, events


def job(action: UnreachableAction = UnreachableAction.Wait, grace: int = 600) -> Any:
    base = fixtures.job("llm", dataset_name=None)
    placement = replace(base.placement, on_cluster_unreachable=action,
                        cluster_unreachable_grace_seconds=grace)  # fmt: skip
    return replace(base, namespace="team-a", placement=placement)


PLACED = {"region": "fukuoka", "cluster": "m"}
BODY = {"metadata": {"uid": "uid-1", "finalizers": ["tsunagu.io/member-objects"]}}


def test_a_job_in_a_member_that_cannot_be_reached_is_left_as_it_is_and_says_so() -> None:
    judge, statuses, events = judge_of(Members(m=("ClusterUnreachable", "no answer")), PLACED)
    pods = {"m/llm-0": pod("llm-0", "m")}
    verdict = asyncio.run(judge.judge(job(), 1, NOW, pods, BODY, finished=False))
    assert not verdict.act
    assert verdict.requeue is None
    condition = statuses.condition(KEY, "ClusterReachable")
    assert condition is not None
    assert (condition["status"], condition["reason"]) == ("False", "ClusterUnreachable")
    assert condition["message"] == "cluster m: no answer"
    assert events.posted == [("Warning", "ClusterUnreachable")]
    # Said once, however often it is looked at.
    asyncio.run(judge.judge(job(), 1, NOW + 5, pods, BODY, finished=False))
    assert events.posted == [("Warning", "ClusterUnreachable")]


def test_a_member_still_being_listed_holds_the_job_without_a_word() -> None:
    judge, statuses, events = judge_of(Members(m=("Syncing", "being listed")), PLACED)
    verdict = asyncio.run(judge.judge(job(), 1, NOW, {}, BODY, finished=False))
    assert not verdict.act
    assert statuses.condition(KEY, "ClusterReachable") is None
    assert events.posted == []


def test_a_reachable_member_lets_the_job_be_acted_on_and_the_condition_says_it_is_back() -> None:
    judge, statuses, _ = judge_of(Members(m=("Connected", "answers")), PLACED)
    verdict = asyncio.run(judge.judge(job(), 1, NOW, {}, BODY, finished=False))
    assert verdict.act
    assert statuses.condition(KEY, "ClusterReachable") is None  # never unreachable: not said
    judge.members.verdicts["m"] = ("ClusterUnreachable", "no answer")  # type: ignore[attr-defined]
    asyncio.run(judge.judge(job(), 1, NOW, {}, BODY, finished=False))
    judge.members.verdicts["m"] = ("Connected", "answers")  # type: ignore[attr-defined]
    assert asyncio.run(judge.judge(job(), 1, NOW, {}, BODY, finished=False)).act
    back = statuses.condition(KEY, "ClusterReachable")
    assert back is not None
    assert (back["status"], back["reason"]) == ("True", "Connected")


def test_requeue_waits_for_the_grace_then_leaves_the_copy_behind() -> None:
    since = {"type": "ClusterReachable", "status": "False", "reason": "ClusterUnreachable",
             "message": "x", "lastTransitionTime": timestamp(NOW - 100)}  # fmt: skip
    status = {**PLACED, "conditions": [since]}
    judge, _, _ = judge_of(Members(m=("ClusterUnreachable", "no answer")), status)

    async def judged(grace: int) -> Any:
        return await judge.judge(job(UnreachableAction.Requeue, grace), 1, NOW, {}, BODY, False)

    assert asyncio.run(judged(600)).requeue is None  # 100 s of 600
    verdict = asyncio.run(judged(60))
    assert verdict.left_in == "m"
    assert verdict.requeue is not None
    assert "may still run" in verdict.requeue


def test_the_copy_left_in_a_member_never_counts_and_goes_once_it_answers() -> None:
    status = {"region": "tokyo", "leftInCluster": "m"}
    judge, statuses, _ = judge_of(Members(m=("ClusterUnreachable", "no answer")), status)
    pods = {"m/llm-0": pod("llm-0", "m"), "llm-0": pod("llm-0", None)}
    verdict = asyncio.run(judge.judge(job(), 1, NOW, pods, BODY, finished=False))
    assert verdict.act
    assert list(verdict.pods) == ["llm-0"]
    objects = judge.member_objects
    assert objects.removed == []  # type: ignore[attr-defined]

    judge.members.verdicts["m"] = ("Connected", "answers")  # type: ignore[attr-defined]
    asyncio.run(judge.judge(job(), 1, NOW, pods, BODY, finished=False))
    assert objects.removed == [("m", KEY, "uid-1")]  # type: ignore[attr-defined]
    assert statuses.current(KEY)["leftInCluster"] == "m"
    # Its pods gone: the field is cleared.
    asyncio.run(judge.judge(job(), 1, NOW, {"llm-0": pod("llm-0", None)}, BODY, finished=False))
    assert "leftInCluster" not in statuses.current(KEY)
