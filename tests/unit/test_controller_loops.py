"""Loops that one bad item cannot stop: the latency-budget monitor and the decision loop go on
with every other job when one job fails, and count the failure by loop.

The operator is the real object graph (`startup.Operator`) over a stand-in API client that
records writes; nothing here reaches an API server."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from prometheus_client import REGISTRY

from tsunagu.controller.cluster.client import Kube
from tsunagu.controller.settings import OperatorSettings
from tsunagu.controller.startup.operator import Operator


class NoApi:
    """Every write is accepted and dropped."""

    async def patch_job_status(self, *_: Any) -> None:
        return None

    async def create_event(self, *_: Any) -> None:
        return None


def region(name: str, links: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "tsunagu.io/v1alpha1",
        "kind": "Region",
        "metadata": {"name": name},
        "spec": {"prefecture": "JP-13", "links": links or []},
    }


def dataset(name: str, home: str) -> dict[str, Any]:
    return {
        "apiVersion": "tsunagu.io/v1alpha1",
        "kind": "Dataset",
        "metadata": {"name": name, "namespace": "team"},
        "spec": {"homeRegion": home, "residency": {"mode": "RemoteAccess"}},
    }


def job(name: str, generation: int = 1, **placement: Any) -> dict[str, Any]:
    return {
        "apiVersion": "tsunagu.io/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": name, "namespace": "team", "uid": f"uid-{name}",
                     "generation": generation},
        "spec": {
            "datasetRef": {"name": "data"},
            "replicas": 1,
            "gpusPerReplica": 1,
            "placement": {"mode": "Bind", **placement},
        },
    }  # fmt: skip


def errors(loop: str) -> float:
    return REGISTRY.get_sample_value("tsunagu_internal_errors_total", {"loop": loop}) or 0.0


def placed_operator(*names: str, status_region: Any = "osaka") -> Operator:
    operator = Operator(OperatorSettings(), cast(Kube, NoApi()))
    operator.catalog.upsert_region(region("tokyo"))
    operator.catalog.upsert_region(region("osaka", [{"to": "tokyo", "rttMs": 8}]))
    operator.catalog.upsert_dataset(dataset("data", "tokyo"))
    for name in names:
        body = job(name, maxRttMs=20)
        operator.jobs.observe(body)
        operator.statuses.seed(("team", name), {"region": "osaka"})
    return operator


def budget_reason(operator: Operator, name: str) -> str | None:
    condition = operator.statuses.condition(("team", name), "LatencyBudgetMet")
    return None if condition is None else str(condition["reason"])


def test_one_job_that_breaks_the_budget_check_does_not_stop_the_others() -> None:
    async def scenario() -> None:
        operator = placed_operator("first", "broken", "last")
        # A status the monitor cannot use (a region that is not a name): its check raises.
        operator.statuses.forget(("team", "broken"))
        operator.statuses.seed(("team", "broken"), {"region": ["osaka"]})
        before = errors("latency-budget")
        await operator.budgets.check_all()
        assert errors("latency-budget") == before + 1
        assert budget_reason(operator, "first") == "WithinBudget"
        assert budget_reason(operator, "last") == "WithinBudget"
        assert budget_reason(operator, "broken") is None

    asyncio.run(scenario())


def test_a_job_without_an_rtt_budget_whose_region_is_gone_is_within_budget() -> None:
    """The Region under a running job is deleted: no RTT is known any more, and a job with no
    RTT budget is still within it — said in words, not a formatting error."""

    async def scenario() -> None:
        operator = Operator(OperatorSettings(), cast(Kube, NoApi()))
        operator.catalog.upsert_region(region("tokyo"))
        operator.catalog.upsert_dataset(dataset("data", "tokyo"))
        operator.jobs.observe(job("unbudgeted"))
        operator.statuses.seed(("team", "unbudgeted"), {"region": "deleted-region"})
        before = errors("latency-budget")
        await operator.budgets.check_all()
        assert errors("latency-budget") == before
        condition = operator.statuses.condition(("team", "unbudgeted"), "LatencyBudgetMet")
        assert condition is not None
        assert (condition["reason"], condition["message"]) == ("WithinBudget", "no RTT budget")

    asyncio.run(scenario())


def test_one_job_the_engine_cannot_decide_does_not_stop_the_pass() -> None:
    async def scenario() -> None:
        operator = placed_operator()
        for name in ("a-first", "b-broken", "c-last"):
            tracked = operator.jobs.observe(job(name))[1]
            assert tracked.spec is not None
            operator.queue.add(tracked.spec)
        real_decide = operator.scheduler._decide_one

        def decide_one(spec: Any, snapshot: Any, now: float) -> Any:
            if spec.name == "b-broken":
                raise RuntimeError("engine fault")
            return real_decide(spec, snapshot, now)

        operator.scheduler._decide_one = decide_one  # type: ignore[method-assign]
        before = errors("decision")
        await operator.scheduler.schedule_pending()
        assert errors("decision") == before + 1
        # No node exists, so both healthy jobs are decided and reported unplaced.
        for name in ("a-first", "c-last"):
            scheduled = operator.statuses.condition(("team", name), "Scheduled")
            assert scheduled is not None
            assert scheduled["status"] == "False"
        assert operator.statuses.condition(("team", "b-broken"), "Scheduled") is None

    asyncio.run(scenario())
