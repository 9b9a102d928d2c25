"""Kopf handlers: thin. Each one records what it observed in the cluster view and hands the
consequences to the scheduler or the lifecycle; none of them decides anything itself. Pods are
the exception: they come through the operator's own watch (`podwatch`), started here."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import kopf

from tsunagu.api.names import (
    API_VERSION,
    DATASETS,
    GROUP,
    REGIONS,
    TRAINING_JOB_KIND,
    TRAINING_JOBS,
    VERSION,
)
from tsunagu.api.parse import SpecError
from tsunagu.controller.config import OperatorConfig
from tsunagu.controller.kube import Kube, Lane
from tsunagu.controller.lifecycle import check_latency_budgets, reconcile_job, reconcile_soon
from tsunagu.controller.podwatch import PodWatch, list_pods
from tsunagu.controller.regionstatus import RegionStatusWriter, region_status_loop
from tsunagu.controller.runtime import Runtime
from tsunagu.controller.scheduler import decision_loop
from tsunagu.controller.statusbook import StatusBook
from tsunagu.controller.view import ClusterView, lean
from tsunagu.placement.engine import EngineSettings

logger = logging.getLogger(__name__)

PREFIX = "tsunagu.io"
FINAL_FLUSH_SECONDS = 10.0


def engine_settings(config: OperatorConfig) -> EngineSettings:
    return EngineSettings(
        default_max_rtt_ms=config.default_max_rtt_ms,
        default_max_throughput_loss=config.default_max_throughput_loss,
    )


class NoDiffBase(kopf.DiffBaseStorage):
    """No last-handled state: the operator has event handlers only, which never read it.

    Kopf's default builds one on every watch event by deep-copying the whole object; for pods
    with their managedFields that copy is the largest cost of an event, paid thousands of times
    a second during a burst."""

    def build(
        self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None
    ) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    config: OperatorConfig = memo.config
    settings.persistence.finalizer = f"{PREFIX}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PREFIX)
    settings.persistence.diffbase_storage = NoDiffBase()
    # Our own Events carry the condition's reason; Kopf's per-handler log Events would be noise.
    settings.posting.enabled = False
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 60
    # A worker holds one of these slots until it has idled for `idle_timeout`: 256 slots and a
    # 0.1 s idle let 10,000 objects listed at start be handled in seconds, not tens of seconds
    # during which every one of them waits in memory as a full watch event.
    settings.queueing.worker_limit = 256
    settings.queueing.idle_timeout = 0.1
    settings.watching.chunk_size = 500
    if config.namespaces:
        settings.scanning.disabled = True

    # Reads run in threads (the generated client blocks): the lists at start and the look for
    # pods still terminating before a rollback; the default pool of min(32, cpus + 4) threads
    # would serialise the latter. Writes are coroutines: gangs being bound keep up to 8 requests
    # each in flight, reports share a few connections (see `Lane`).
    read_threads = 32
    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(max_workers=read_threads, thread_name_prefix="tsunagu-api")
    )
    kube = Kube(
        pool_size=read_threads + 1,  # and one for the pod watch
        connections={Lane.GANGS: max(32, config.bind_concurrency * 8), Lane.REPORTS: 16},
    )
    rt = Runtime(
        config=config,
        kube=kube,
        settings=engine_settings(config),
        view=ClusterView(staleness_seconds=config.staleness_seconds),
        statuses=StatusBook(kube),
        bind_slots=asyncio.Semaphore(config.bind_concurrency),
    )
    pods_version = await _prime(rt)
    memo.runtime = rt
    rt.spawn(PodWatch(rt, pods_version).run(), name="pod watch")
    rt.spawn(decision_loop(rt), name="decision loop")
    rt.spawn(region_status_loop(rt, RegionStatusWriter()), name="region status")
    rt.spawn(rt.reports.run(), name="reports")
    if config.prometheus_url:
        rt.spawn(_poll_latency(rt), name="latency")
    for key in list(rt.view.jobs):
        await reconcile_job(rt, key)


async def _prime(rt: Runtime) -> str:
    """Lists everything once so the first decisions see the whole cluster, not a partial watch;
    returns the pod list's resourceVersion, where the operator's own pod watch starts."""
    recorders: dict[str, Callable[[dict[str, Any]], object]] = {
        "nodes": rt.view.upsert_node,
        REGIONS: rt.view.upsert_region,
        DATASETS: functools.partial(_prime_dataset, rt),
    }
    for kind, record in recorders.items():
        await _list_each(rt, kind, record)
    pods_version = await list_pods(rt)
    await _list_each(rt, TRAINING_JOBS, functools.partial(_prime_job, rt))
    return pods_version


async def _list_each(rt: Runtime, kind: str, record: Callable[[dict[str, Any]], object]) -> None:
    token = None
    while True:
        page = await rt.kube.call(rt.kube.list_page, kind, token)
        for item in page.items:
            record(item)
        token = page.next_token
        if token is None:
            return


def _prime_dataset(rt: Runtime, dataset: dict[str, Any]) -> None:
    try:
        rt.view.upsert_dataset(dataset)
    except SpecError as error:
        logger.warning("ignoring dataset: %s", error)


def _prime_job(rt: Runtime, job: dict[str, Any]) -> None:
    # Items of a list may come without apiVersion and kind; Events need them.
    job.setdefault("apiVersion", API_VERSION)
    job.setdefault("kind", TRAINING_JOB_KIND)
    metadata = job["metadata"]
    if rt.config.namespaces and metadata["namespace"] not in rt.config.namespaces:
        return
    key = (metadata["namespace"], metadata["name"])
    rt.statuses.seed(key, job.get("status"))
    rt.view.jobs[key] = lean(job)


async def _poll_latency(rt: Runtime) -> None:
    from tsunagu.sources.latency_settings import PrometheusLatencySettings
    from tsunagu.sources.prometheus_latency import PrometheusLatencySource

    config = rt.config
    overrides = {"url": config.prometheus_url, "intervalSeconds": config.latency_interval,
                 "stalenessSeconds": config.staleness_seconds}  # fmt: skip
    if config.latency_query:
        overrides["rttQuery"] = config.latency_query
    if config.jitter_query:
        overrides["jitterQuery"] = config.jitter_query
    source = PrometheusLatencySource(PrometheusLatencySettings.from_mapping(overrides))

    last_update = time.monotonic()

    async def update(measurements: tuple[Any, ...]) -> None:
        nonlocal last_update
        last_update = time.monotonic()
        rt.view.measurements = measurements
        rt.queue.wake()
        await check_latency_budgets(rt)

    async def check_staleness_too() -> None:
        # When Prometheus stops answering no update arrives, yet measurements still age out;
        # while updates do arrive, they run the check themselves.
        while True:
            await asyncio.sleep(config.latency_interval)
            if time.monotonic() - last_update >= config.latency_interval:
                await check_latency_budgets(rt)
                rt.queue.wake()

    rt.spawn(check_staleness_too(), name="latency ageing")
    await source.poll(update, known_regions=lambda: set(rt.view.regions))


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    rt: Runtime | None = getattr(memo, "runtime", None)
    if rt is None:
        return
    for task in list(rt.tasks):
        task.cancel()
    await asyncio.gather(*rt.tasks, return_exceptions=True)
    try:  # what was held back for gangs still goes out, unless the API server does not answer
        await asyncio.wait_for(rt.reports.flush(), timeout=FINAL_FLUSH_SECONDS)
    except Exception as error:
        logger.warning("statuses or Events not written at shutdown: %s", error)
    await rt.kube.close()


def _runtime(memo: kopf.Memo) -> Runtime | None:
    return getattr(memo, "runtime", None)


@kopf.on.event("", "v1", "nodes")
async def node_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    rt = _runtime(memo)
    if rt is None:
        return
    body = event["object"]
    if event["type"] == "DELETED":
        changed = rt.view.delete_node(body["metadata"]["name"])
    else:
        changed = rt.view.upsert_node(body)
    if changed:
        rt.queue.wake()
        await _reconcile_jobs_on_node(rt, body["metadata"]["name"])


async def _reconcile_jobs_on_node(rt: Runtime, node: str) -> None:
    """A node lost or cordoned may leave a gang on a dead node: let the lifecycle look."""
    if rt.view.node_alive(node):
        return
    for key, pods in list(rt.view.job_pods.items()):
        if any(pod.node_name == node for pod in pods.values()):
            await reconcile_job(rt, key)


@kopf.on.event(GROUP, VERSION, REGIONS)
async def region_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    rt = _runtime(memo)
    if rt is None:
        return
    body = event["object"]
    if event["type"] == "DELETED":
        rt.view.delete_region(body["metadata"]["name"])
    else:
        rt.view.upsert_region(body)
    rt.queue.wake()


@kopf.on.event(GROUP, VERSION, DATASETS)
async def dataset_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    rt = _runtime(memo)
    if rt is None:
        return
    body = event["object"]
    metadata = body["metadata"]
    if event["type"] == "DELETED":
        rt.view.delete_dataset(metadata["namespace"], metadata["name"])
    else:
        try:
            rt.view.upsert_dataset(body)
        except SpecError as error:
            logger.warning("dataset not usable: %s", error)
    rt.queue.wake()


@kopf.on.event(GROUP, VERSION, TRAINING_JOBS)
async def training_job_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    rt = _runtime(memo)
    if rt is None:
        return
    body = event["object"]
    metadata = body["metadata"]
    key = (metadata["namespace"], metadata["name"])
    if event["type"] == "DELETED":
        rt.forget_job(key)
        rt.queue.wake()  # its GPUs come free as the garbage collector deletes its pods
        return
    previous = (rt.view.jobs.get(key) or {}).get("metadata") or {}
    same_object = previous.get("uid") == metadata.get("uid")
    if previous and not same_object:
        rt.statuses.forget(key)  # same name, new object
    rt.statuses.seed(key, body.get("status"))
    rt.view.jobs[key] = lean(body)
    if same_object and previous.get("generation") == metadata.get("generation"):
        # Most often the echo of our own status write: looking at once would write the next
        # step of a gang coming up right away, one patch per pod instead of one per gang.
        reconcile_soon(rt, key)
    else:
        await reconcile_job(rt, key)
