"""The throughput learner: the leader reads the running jobs' throughput from Prometheus every
interval, turns it into samples per workload class (region, RTT to the nearest copy of the
data at the time, throughput per GPU), merges them into the class's ThroughputProfile in the
job's namespace, refits it and writes its status when something changed (docs/throughput.md).

A failed query keeps every profile as it was and the next round tries again; a bad series is
counted by reason and skipped; one profile that cannot be written does not stop the others.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tsunagu.api.conditions import FINISHED, RUNNING
from tsunagu.api.names import API_VERSION
from tsunagu.api.profiles import (
    THROUGHPUT_PROFILE_KIND,
    ThroughputProfile,
    ThroughputSample,
    merge_samples,
    status_of,
)
from tsunagu.api.types import JobKey
from tsunagu.controller import metrics
from tsunagu.controller.catalog import Catalog
from tsunagu.controller.cluster.client import Conflict, Kube, NotLeading
from tsunagu.controller.jobs import JobTracker
from tsunagu.controller.lifecycle.jobs import is_true
from tsunagu.controller.report.events import EventRecorder, event_body
from tsunagu.controller.report.status import parse_timestamp, timestamp
from tsunagu.controller.report.statusbook import StatusBook
from tsunagu.controller.settings import LearningSettings
from tsunagu.placement.calibration import LOCAL_RTT_MS, Calibration, TrustRule, calibrate
from tsunagu.placement.datapath import nearest_copy
from tsunagu.placement.residency import data_sites
from tsunagu.sources.throughput_prometheus import (
    InstantQuery,
    ObservedRate,
    RejectReason,
    RunningJob,
    query_vector,
    samples_by_class,
)

logger = logging.getLogger(__name__)

# Why a series that parsed is still not learned from (beside parse_vector's reasons).
UNKNOWN_JOB = "unknown_job"  # no running job of a class by that name: finished, requeued, not ours
WARMING_UP = "warming_up"  # running for less than the warm-up: the window mixes other pods
RTT_UNKNOWN = "rtt_unknown"  # no RTT from the job's region to its data now (or no dataset)
# The rule the engine's refit (catalog.engine_for) applies too: one rule for both.
DEFAULT_RULE = TrustRule()
# Optional status fields: a merge patch sets the ones a status no longer has to null.
_OPTIONAL_STATUS = ("baseline", "model", "rmsError", "confidence")

for _reason in (*RejectReason, UNKNOWN_JOB, WARMING_UP, RTT_UNKNOWN):
    metrics.THROUGHPUT_REJECTED.labels(str(_reason))


@dataclass(frozen=True, slots=True)
class Learned:
    """One class's profile after a round: the fit and the status to write."""

    calibration: Calibration
    status: dict[str, object]
    added: int  # samples new to the profile


class ThroughputLearner:
    def __init__(
        self,
        *,
        jobs: JobTracker,
        catalog: Catalog,
        statuses: StatusBook,
        events: EventRecorder,
        client: Kube,
        prometheus: InstantQuery,
        settings: LearningSettings,
        rule: TrustRule = DEFAULT_RULE,
        on_learned: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.jobs = jobs
        self.catalog = catalog
        self.statuses = statuses
        self.events = events
        self.client = client
        self.prometheus = prometheus
        self.settings = settings
        self.rule = rule
        self.on_learned = on_learned
        self.clock = clock

    async def run(self) -> None:
        while True:
            try:
                await self.learn_once()
            except NotLeading:
                pass  # the term is over; its tasks are being cancelled
            except Exception:
                metrics.INTERNAL_ERRORS.labels(loop="throughput-learning").inc()
                logger.exception("throughput learning round failed")
            await asyncio.sleep(self.settings.interval_seconds)

    async def learn_once(self) -> None:
        """One round: query, sample, merge, refit and write every class that got samples."""
        try:
            conversion = await asyncio.to_thread(query_vector, self.prometheus, self.settings.query)
        except Exception as error:
            metrics.THROUGHPUT_QUERY_FAILURES.inc()
            logger.warning("throughput query failed, profiles kept as they are: %s", error)
            return
        for rejected in conversion.rejected:
            self._reject(str(rejected.reason), rejected.detail)
        now = self.clock()
        by_namespace: dict[str, list[ObservedRate]] = {}
        running: dict[JobKey, RunningJob] = {}
        for rate in conversion.rates:
            job = self._running_job(rate.key, now)
            if isinstance(job, str):
                self._reject(job, "/".join(rate.key))
                continue
            running[rate.key] = job
            by_namespace.setdefault(rate.namespace, []).append(rate)
        for namespace, rates in sorted(by_namespace.items()):
            for workload_class, samples in sorted(samples_by_class(tuple(rates), running).items()):
                try:
                    await self._learn(namespace, workload_class, samples, now)
                except NotLeading:
                    raise
                except Exception:
                    metrics.INTERNAL_ERRORS.labels(loop="throughput-learning").inc()
                    logger.exception(
                        "throughput profile of class %s in %s not updated; going on",
                        workload_class, namespace,
                    )  # fmt: skip

    def _reject(self, reason: str, detail: str) -> None:
        metrics.THROUGHPUT_REJECTED.labels(reason).inc()
        logger.debug("throughput series not learned from (%s): %s", reason, detail)

    def _running_job(self, key: JobKey, now: float) -> RunningJob | str:
        """What is known of a running job of a class, or why it cannot be sampled."""
        tracked = self.jobs.get(key)
        spec = tracked.spec if tracked is not None else None
        region = self.statuses.current(key).get("region")
        running = self.statuses.condition(key, RUNNING)
        if (
            spec is None
            or not spec.workload_class
            or not region
            or not is_true(running)
            or is_true(self.statuses.condition(key, FINISHED))
        ):
            return UNKNOWN_JOB
        assert running is not None
        since = parse_timestamp(running.get("lastTransitionTime"))
        if since is None or now - since < self.settings.warmup_seconds:
            return WARMING_UP
        dataset = self.catalog.dataset(spec.namespace, spec.dataset_ref)
        path = (
            nearest_copy(self.catalog.latency(), region, data_sites(dataset), now)
            if dataset is not None
            else None
        )
        if path is None:
            return RTT_UNKNOWN
        rtt = 0.0 if path.local else path.rtt_ms
        return RunningJob(spec.workload_class, region, rtt, spec.total_gpus)

    async def _learn(
        self, namespace: str, workload_class: str, samples: list[ThroughputSample], now: float
    ) -> None:
        profile = self.catalog.profile_for(namespace, workload_class)
        if profile is None:
            if not self.settings.create_profiles:
                return
            profile = await self._create(namespace, workload_class)
            if profile is None:
                return
        learned = refit(profile, samples, now, self.rule)
        if learned is None:
            return
        patch = dict(learned.status)
        for key in _OPTIONAL_STATUS:
            patch.setdefault(key, None)
        await self.client.patch_throughput_profile_status(namespace, profile.name, patch)
        metrics.THROUGHPUT_SAMPLES_LEARNED.inc(learned.added)
        # The catalog has the new fit at once (the watch event follows with the same).
        self.catalog.upsert_profile(_body(profile, learned.status))
        if learned.calibration.trusted != profile.trusted:
            self._trust_event(profile, learned.status)
        self.on_learned()

    async def _create(self, namespace: str, workload_class: str) -> ThroughputProfile | None:
        body = {
            "apiVersion": API_VERSION,
            "kind": THROUGHPUT_PROFILE_KIND,
            "metadata": {"name": workload_class, "namespace": namespace},
            "spec": {"workloadClass": workload_class},
        }
        try:
            created = await self.client.create_throughput_profile(body)
        except Conflict:
            # A profile of that name for another class, or one the watch has not shown yet.
            logger.warning(
                "ThroughputProfile %s/%s exists but is not of class %s (or not seen yet); "
                "its samples wait for the next round", namespace, workload_class, workload_class,
            )  # fmt: skip
            return None
        logger.info("created ThroughputProfile %s/%s", namespace, workload_class)
        metadata = created.get("metadata") or {}
        return ThroughputProfile(
            namespace, workload_class, workload_class,
            uid=metadata.get("uid"), generation=metadata.get("generation"),
        )  # fmt: skip

    def _trust_event(self, profile: ThroughputProfile, status: dict[str, Any]) -> None:
        (condition,) = status["conditions"]
        involved = {
            "apiVersion": API_VERSION,
            "kind": THROUGHPUT_PROFILE_KIND,
            "metadata": {"name": profile.name, "namespace": profile.namespace, "uid": profile.uid},
        }
        kind = "Normal" if condition["status"] == "True" else "Warning"
        body = event_body(
            involved, kind, condition["reason"], condition["message"], timestamp(self.clock())
        )
        # Through the recorder's writer: a new leadership term gets a writer of its own.
        self.events.writer.post_event(body)


def refit(
    profile: ThroughputProfile,
    samples: list[ThroughputSample],
    now: float,
    rule: TrustRule = DEFAULT_RULE,
) -> Learned | None:
    """The profile with `samples` merged in, refitted, and its status; None when every sample
    is one it holds already (nothing changed, nothing to write).

    The baseline is measured from the samples next to the data; once the bounded window holds
    none of them any more, the profile's last baseline stands (calibration.py's order).
    """
    held = {_identity(s) for s in profile.samples}
    new = [s for s in samples if _identity(s) not in held]
    if not new:
        return None
    merged = merge_samples(profile.samples, new)
    local = any(s.rtt_ms <= LOCAL_RTT_MS for s in merged)
    baseline = None if local else profile.baseline
    calibration = calibrate(merged, baseline, profile.workload_class, rule)
    fitted = calibration.fitted
    trusted = calibration.trusted
    since = profile.trusted_since if profile.trusted == trusted else None
    status = status_of(
        merged,
        calibration.baseline,
        fitted.model if fitted is not None else None,
        fitted.rms_error if fitted is not None else None,
        fitted.confidence if fitted is not None else None,
        trusted,
        fitted_at=now,
        untrusted_because=calibration.untrusted_because,
        transitioned_at=since,
        observed_generation=profile.generation,
    )
    return Learned(calibration, status, len(new))


def _identity(sample: ThroughputSample) -> tuple[object, ...]:
    """A sample as the status keeps it (RTT to 4 places, time to the second)."""
    observed = int(sample.observed_at) if sample.observed_at is not None else None
    return (sample.region, round(sample.rtt_ms, 4), sample.throughput, observed)


def _body(profile: ThroughputProfile, status: dict[str, object]) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": profile.name, "namespace": profile.namespace}
    if profile.uid:
        metadata["uid"] = profile.uid
    if profile.generation is not None:
        metadata["generation"] = profile.generation
    return {
        "apiVersion": API_VERSION,
        "kind": THROUGHPUT_PROFILE_KIND,
        "metadata": metadata,
        "spec": {"workloadClass": profile.workload_class},
        "status": status,
    }
