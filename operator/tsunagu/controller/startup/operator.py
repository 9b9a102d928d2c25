"""The operator as one object: every part built from the settings with its dependencies named,
started once the cluster has been listed, stopped together. Kopf's handlers reach it through
`memo.operator`; nothing here knows Kopf.

Every replica keeps its view warm (the watches, the catalog, the job tracker, latency
measurements); only the holder of the Lease acts (`LeaderDuties`), and every write asks the
Lease first (`Kube.gate`)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tsunagu.api.names import CLUSTERS, DATASETS, REGIONS, THROUGHPUT_PROFILES, TRAINING_JOBS
from tsunagu.api.parse import SpecError
from tsunagu.api.podgroups import is_group_key
from tsunagu.api.types import JobKey
from tsunagu.controller.catalog import Catalog
from tsunagu.controller.cluster.client import Kube, Lane
from tsunagu.controller.cluster.connection import ClusterConnection, ClusterSet
from tsunagu.controller.cluster.lease import LeaderElector, LeaseTimings
from tsunagu.controller.groups import PodGroupTracker
from tsunagu.controller.jobs import JobTracker
from tsunagu.controller.lifecycle.datasets import DatasetGuard
from tsunagu.controller.lifecycle.jobs import JobLifecycle
from tsunagu.controller.lifecycle.latency_budget import LatencyBudgetMonitor
from tsunagu.controller.lifecycle.learning import ThroughputLearner
from tsunagu.controller.lifecycle.memberobjects import MemberObjects
from tsunagu.controller.lifecycle.members import MemberClusters
from tsunagu.controller.lifecycle.podgroups import PodGroupLifecycle
from tsunagu.controller.report.events import EventRecorder
from tsunagu.controller.report.podgroups import PodGroupReporter
from tsunagu.controller.report.regions import RegionStatusWriter
from tsunagu.controller.report.statusbook import StatusBook
from tsunagu.controller.report.writer import ReportWriter
from tsunagu.controller.scheduling.assume import AssumeCache
from tsunagu.controller.scheduling.binder import GangBinder
from tsunagu.controller.scheduling.groupbinder import PodGroupBinder
from tsunagu.controller.scheduling.inflight import InFlight
from tsunagu.controller.scheduling.queue import SchedulingQueue
from tsunagu.controller.scheduling.scheduler import Scheduler
from tsunagu.controller.settings import OperatorSettings, toleration_body
from tsunagu.controller.startup.duties import LeaderDuties, TermTasks
from tsunagu.controller.startup.memberduties import MemberDuties
from tsunagu.controller.tasks import TaskGroup
from tsunagu.placement.latency import Measurement
from tsunagu.sources.latency import LatencySource, latency_source
from tsunagu.sources.prometheus_http import connect as connect_prometheus

logger = logging.getLogger(__name__)

# Without leader election nothing else asks the API server regularly; /healthz needs to know.
PING_SECONDS = 5.0
# Connections for a member's gang writes: each holds a 256 KiB read buffer, and 32 (the hub's)
# raised the operator's peak memory in a burst spread over two members from ~160 to ~220 MB with
# the same pods/s (docs/benchmarks.md, member clusters).
MEMBER_GANG_CONNECTIONS = 16
# The longest a member's API server may take to answer the check.
MEMBER_CHECK_TIMEOUT_SECONDS = 5.0

# Reads run in threads (the generated client blocks): the lists at start and the look for pods
# still terminating before a rollback; the default pool of min(32, cpus + 4) threads would
# serialise the latter.
READ_THREADS = 32
THROUGHPUT_QUERY_TIMEOUT = 10.0


def connect(settings: OperatorSettings, configuration: Any = None) -> Kube:
    """The client of the operator's own cluster. Writes are coroutines: gangs being bound keep
    up to 8 requests each in flight, reports share a few connections (see `Lane`)."""
    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(max_workers=READ_THREADS, thread_name_prefix="tsunagu-api")
    )
    return Kube(
        configuration,
        pool_size=READ_THREADS + 1,  # and one for the pod watch
        connections={
            Lane.GANGS: max(32, settings.scheduling.bind_concurrency * 8),
            Lane.REPORTS: 16,
        },
    )


class Operator:
    def __init__(self, settings: OperatorSettings, client: Kube) -> None:
        self.settings = settings
        engine = settings.scheduling.engine()
        # The leader's tasks (one term at a time), and those every replica runs.
        self.tasks = TermTasks()
        self.background = TaskGroup()
        self.catalog = Catalog(
            staleness_seconds=settings.latency.staleness_seconds,
            declared_fallback=settings.latency.declared_fallback,
            default_profiles_namespace=settings.scheduling.default_profiles_namespace,
        )
        self.cluster = ClusterConnection("", client, on_pods_changed=self.pods_changed)
        self.clusters = ClusterSet(self.cluster)
        # Other clusters: their kubeconfigs are Secrets of the operator's own namespace.
        check = settings.scheduling.member_check_seconds
        self.members = MemberClusters(
            client=client, namespace=settings.leader_election.namespace, catalog=self.catalog,
            clusters=self.clusters, on_pods_changed=self.pods_changed,
            on_nodes_changed=self.member_nodes_changed, on_reachability=self.member_reachability,
            gang_connections=MEMBER_GANG_CONNECTIONS,
            timeout_seconds=min(MEMBER_CHECK_TIMEOUT_SECONDS, check),
        )  # fmt: skip
        self.member_objects = MemberObjects(
            hub=client, clusters=self.clusters, members=self.members
        )
        defaults = settings.scheduling.default_profiles_namespace
        if settings.namespaces and defaults and defaults not in settings.namespaces:
            # Kopf watches only the namespaces given: the defaults would be those listed at start.
            logger.warning(
                "the default ThroughputProfiles' namespace %s is not watched (--namespace): "
                "changes to them are seen only after a restart",
                defaults,
            )
        self.queue = SchedulingQueue()
        self.assumed = AssumeCache()
        self.inflight = InFlight()
        self.statuses = StatusBook(client)
        self.reports = ReportWriter(
            self.statuses, client, gangs_idle=self.inflight.idle,
            max_hold=settings.reporting.hold_seconds,
        )  # fmt: skip
        self.jobs = JobTracker(
            also_forget=(self.queue, self.assumed, self.statuses),
            gang_tolerations=settings.scheduling.gang_tolerations,
        )
        self.events = EventRecorder(self.reports, self.jobs)
        self.lifecycle = JobLifecycle(
            jobs=self.jobs, clusters=self.clusters, members=self.members,
            member_objects=self.member_objects, queue=self.queue, statuses=self.statuses,
            events=self.events, assumed=self.assumed, inflight=self.inflight, tasks=self.tasks,
            node_lost_grace_seconds=settings.scheduling.node_lost_grace_seconds,
        )  # fmt: skip
        self.binder = GangBinder(
            client=client, clusters=self.clusters, member_spec=self.members.spec,
            catalog=self.catalog, jobs=self.jobs, statuses=self.statuses,
            events=self.events, assumed=self.assumed, inflight=self.inflight,
            concurrency=settings.scheduling.bind_concurrency,
            create_pods_bound=settings.scheduling.create_pods_bound,
            gang_tolerations=[toleration_body(t) for t in settings.scheduling.gang_tolerations],
            on_bound=self.lifecycle.reconcile_soon, on_rolled_back=self.lifecycle.reconcile,
        )  # fmt: skip
        # Pod groups: gangs of pods other controllers create (an Indexed Job, a JobSet).
        self.groups = PodGroupTracker()
        group_reports = PodGroupReporter(client=client, events=self.events, groups=self.groups)
        self.group_lifecycle = PodGroupLifecycle(
            groups=self.groups, view=self.cluster.view, catalog=self.catalog, queue=self.queue,
            assumed=self.assumed, inflight=self.inflight, reporter=group_reports, tasks=self.tasks,
        )  # fmt: skip
        self.group_binder = PodGroupBinder(
            client=client, view=self.cluster.view, groups=self.groups, reporter=group_reports,
            assumed=self.assumed, inflight=self.inflight,
            concurrency=settings.scheduling.bind_concurrency,
            on_done=self.group_lifecycle.reconcile_soon,
        )  # fmt: skip
        self.scheduler = Scheduler(
            queue=self.queue, catalog=self.catalog, clusters=self.clusters,
            assumed=self.assumed, inflight=self.inflight, jobs=self.jobs,
            statuses=self.statuses, events=self.events, binder=self.binder,
            groups=self.groups, group_binder=self.group_binder, tasks=self.tasks,
            engine=engine, retry_interval=settings.scheduling.retry_interval,
        )  # fmt: skip
        self.budgets = LatencyBudgetMonitor(
            jobs=self.jobs, catalog=self.catalog, statuses=self.statuses, events=self.events,
            inflight=self.inflight, lifecycle=self.lifecycle, engine=engine,
        )  # fmt: skip
        self.datasets = DatasetGuard(
            jobs=self.jobs, catalog=self.catalog, statuses=self.statuses, events=self.events,
            inflight=self.inflight, lifecycle=self.lifecycle, client=client,
        )  # fmt: skip
        self.region_status = RegionStatusWriter(
            self.catalog, self.clusters, settings.reporting, self.events
        )
        self.latency = latency_source(settings.latency)
        self.learning = self._learner(settings, client)
        self.member_duties = MemberDuties(self)
        self.duties = LeaderDuties(self)
        election = settings.leader_election
        self.elector: LeaderElector | None = None
        if election.enabled:
            self.elector = LeaderElector(
                client, namespace=election.namespace, name=election.lease_name,
                identity=election.identity,
                timings=LeaseTimings(
                    election.lease_duration, election.renew_deadline, election.retry_period
                ),
            )  # fmt: skip
            client.gate = self.elector
            self.members.gate = self.elector
        self.synced = False
        self._election: asyncio.Task[None] | None = None

    def _learner(self, settings: OperatorSettings, client: Kube) -> ThroughputLearner | None:
        """The throughput learner, reading the Prometheus of the latency section; None without
        one or with learning off."""
        url = settings.latency.prometheus_url
        if not url or settings.learning.interval_seconds <= 0:
            return None
        return ThroughputLearner(
            jobs=self.jobs, catalog=self.catalog, statuses=self.statuses, events=self.events,
            client=client, prometheus=connect_prometheus(url, THROUGHPUT_QUERY_TIMEOUT),
            settings=settings.learning, on_learned=self.queue.wake,
        )  # fmt: skip

    # --- leadership and health ---------------------------------------------------------------
    @property
    def leading(self) -> bool:
        """This replica acts: its term runs and its Lease allows writes."""
        return self.duties.active and (self.elector is None or self.elector.leading)

    def ready(self) -> bool:
        """Leader, or a standby whose view is synced (it could take over at once)."""
        return self.synced

    def api_unreachable_for(self) -> float:
        return time.monotonic() - self.cluster.client.last_answer

    # --- start and stop --------------------------------------------------------------------
    async def list_everything(self) -> None:
        """Lists everything once so the first decisions see the whole cluster, not a partial
        watch."""
        client = self.cluster.client
        await _list_each(client, REGIONS, self.catalog.upsert_region)
        await _list_each(client, CLUSTERS, self.members.observe)
        await self.members.check_all(write=False)
        await _list_each(client, DATASETS, self._prime_dataset)
        await _list_each(client, THROUGHPUT_PROFILES, self.catalog.upsert_profile)
        await self.cluster.prime()
        await _list_each(client, TRAINING_JOBS, self._prime_job)

    async def start(self) -> None:
        """Starts what every replica runs (after `list_everything`), and the candidacy for the
        Lease; the leader's loops start when it is taken."""
        self.synced = True
        self.background.spawn(self.cluster.pod_watch().run(), name="pod watch")
        self.background.spawn(
            self.members.run(self.settings.scheduling.member_check_seconds, lambda: self.leading),
            name="member clusters",
        )
        if self.latency is not None:
            self.background.spawn(self._follow_latency(self.latency), name="latency")
        if self.elector is None:
            self.background.spawn(self._keep_in_touch(), name="api ping")
            await self.duties.start()
            return
        self._election = asyncio.create_task(
            self.elector.run(self.duties.start, self.duties.stop), name="leader election"
        )
        self._election.add_done_callback(_log_failure)

    async def stop(self) -> None:
        """Stops the candidacy, then the term (what was held still goes out while the Lease
        allows it), gives the Lease up, and stops the rest."""
        if self._election is not None:
            self._election.cancel()
            await asyncio.gather(self._election, return_exceptions=True)
        await self.duties.stop(flush=True)
        if self.elector is not None:
            await self.elector.release()
        await self.background.cancel_all()
        await self.members.close()
        await self.cluster.close()

    async def _follow_latency(self, source: LatencySource) -> None:
        """Measurements go into the catalog on every replica (a new leader decides on fresh
        numbers at once); only the leader judges budgets on them."""

        def update(measurements: tuple[Measurement, ...]) -> None:
            self.catalog.take_measurements(measurements)
            self.queue.wake()
            self.duties.measurements_updated()

        await source.poll(update, known_regions=lambda: set(self.catalog.regions))

    async def _keep_in_touch(self) -> None:
        client = self.cluster.client
        while True:
            await asyncio.sleep(PING_SECONDS)
            if time.monotonic() - client.last_answer < PING_SECONDS:
                continue
            try:
                await client.ping(within=PING_SECONDS)
            except Exception as error:
                logger.debug("the API server did not answer: %s", error)

    def _prime_dataset(self, dataset: dict[str, Any]) -> None:
        try:
            self.catalog.upsert_dataset(dataset)
        except SpecError as error:
            logger.warning("ignoring dataset: %s", error)

    def _prime_job(self, job: dict[str, Any]) -> None:
        metadata = job["metadata"]
        namespaces = self.settings.namespaces
        if namespaces and metadata["namespace"] not in namespaces:
            return
        self.statuses.seed((metadata["namespace"], metadata["name"]), job.get("status"))
        self.jobs.observe(job)

    # --- what the watches report -----------------------------------------------------------
    def pods_changed(self, jobs: set[JobKey], released: bool) -> None:
        """GPUs came free: pending jobs deserve another look; pods changed: so do their jobs
        (on the leader: a standby only keeps its view)."""
        if released:
            self.queue.wake()
        if not self.leading:
            return
        for key in jobs:
            if is_group_key(key):
                self.group_lifecycle.reconcile_soon(key)
            elif key in self.jobs:
                self.lifecycle.reconcile_soon(key)

    async def member_changed(self, name: str) -> None:
        """A Cluster was created, edited or deleted: checked at once; pending jobs look again."""
        if name in self.members.members:
            await self.members.check(name, write=self.leading)
        self.queue.wake()

    def pod_group_changed(self, key: JobKey) -> None:
        if self.leading:
            self.group_lifecycle.reconcile_soon(key)

    async def node_changed(self, node: str) -> None:
        """A node lost or cordoned may leave a gang on a dead node: let the lifecycle look."""
        self.queue.wake()
        if not self.leading or self.cluster.view.node_alive(node):
            return
        for key, pods in list(self.cluster.view.job_pods.items()):
            if any(pod.node_name == node for pod in pods.values()):
                await self.lifecycle.reconcile(key)

    def member_nodes_changed(self, nodes: set[str]) -> None:
        self.member_duties.nodes_changed(nodes)

    async def member_reachability(self, name: str) -> None:
        await self.member_duties.reachability_changed(name)

    async def job_changed(self, body: Mapping[str, Any]) -> None:
        metadata = body["metadata"]
        key = (metadata["namespace"], metadata["name"])
        previous, current = self.jobs.observe(body)
        same_object = previous is not None and previous.uid == current.uid
        if not self.leading:
            # A standby follows the status the leader writes, so that as the next leader it
            # starts from it.
            self.statuses.forget(key)
            self.statuses.seed(key, body.get("status"))
            return
        if previous is not None and not same_object:
            self.statuses.forget(key)  # same name, new object
        self.statuses.seed(key, body.get("status"))
        if same_object and previous is not None and previous.generation == current.generation:
            # Most often the echo of our own status write: looking at once would write the next
            # step of a gang coming up right away, one patch per pod instead of one per gang.
            self.lifecycle.reconcile_soon(key)
        else:
            await self.lifecycle.reconcile(key)

    def job_deleted(self, key: JobKey) -> None:
        self.jobs.forget(key)
        self.queue.wake()  # its GPUs come free as the garbage collector deletes its pods


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error(
            "%s ended: this replica will not lead", task.get_name(), exc_info=task.exception()
        )


async def _list_each(client: Kube, kind: str, record: Callable[[dict[str, Any]], object]) -> None:
    token = None
    while True:
        page = await client.call(client.list_page, kind, token)
        for item in page.items:
            record(item)
        token = page.next_token
        if token is None:
            return
