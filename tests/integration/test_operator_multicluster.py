"""Regions in other clusters (issue 17, docs/clusters.md), on real API servers: the hub (the test
cluster) and two member clusters of their own (tests/support/members.py), member 1 reached
through a delay proxy adding 15 ms per round trip.

A job whose home is full overflows into a member region within its RTT budget and runs there,
its status on the hub and its gang in the member under an anchor ConfigMap; a Pinned job waits
at home; a gang that fits nowhere makes nothing anywhere. Deleting the hub job removes what it
had in the member. The hub operator killed mid-burst across three clusters duplicates and
over-commits nothing. A member cut off keeps its running job (ClusterReachable=False, not started
elsewhere) and takes no new work; back, it is reconciled. A member without the job's namespace
gets no gang, and an Event names the namespace. An anchor no hub job owns is removed.

Every check reads the API servers of the hub and the members, never the operator's own view."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client, watch

from tests.support.cluster import Cluster, OperatorProcess
from tests.support.members import (
    HUB_LABELS,
    MEMBER1_ADDED_RTT_MS,
    MEMBER_FINALIZER,
    Connection,
    Member,
    Members,
)
from tests.support.replicas import start_replica, wait_holder
from tests.support.scenario import (
    assert_no_gpu_overcommitted,
    assert_no_pod_duplicated,
    condition,
    dataset,
    events_for,
    fill_region,
    job,
    job_pods,
    set_outcome,
    training_job,
    wait_condition,
)
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

HUB = "hub"
# Placing in a member goes through its API server (member 1: 15 ms further per round trip).
PLACED_TIMEOUT = 90
# For the tests that kill the hub: the next one takes the dead one's Lease after 5 s, not 15.
SHORT_LEASE = (
    "--leader-elect-lease-duration", "5", "--leader-elect-renew-deadline", "4",
    "--leader-elect-retry-period", "1",
)  # fmt: skip
# Members are checked every 2 s instead of 10: a member cut off or back is noticed sooner.
MEMBER_CHECK = ("--member-check-interval", "2")


@pytest.fixture
def start_operator(
    connect_members: Callable[..., Connection],
    start_operator: Callable[..., OperatorProcess],
) -> Callable[..., OperatorProcess]:
    """As everywhere, with the members' fixture set up first: what a test connected is removed
    only after every operator of the test has stopped (nothing acts in a member meanwhile); the
    members checked every 2 s."""
    return lambda *args: start_operator(*MEMBER_CHECK, *args)


# --- reading the three clusters -------------------------------------------------------------


def live_pods(cluster: Cluster, namespace: str, name: str) -> list[dict[str, Any]]:
    return [
        p for p in job_pods(cluster, namespace, name) if not p["metadata"].get("deletionTimestamp")
    ]


def where(cluster: Cluster, members: Members, namespace: str, name: str) -> dict[str, list[Any]]:
    """The live pods of a job in each cluster that has any (the hub as "hub")."""
    found = {HUB: live_pods(cluster, namespace, name)}
    for member in members:
        found[member.name] = member.pods(namespace, name)
    return {place: pods for place, pods in found.items() if pods}


def running_in(member: Member, namespace: str, name: str, replicas: int) -> list[dict[str, Any]]:
    pods = member.pods(namespace, name)
    ok = len(pods) == replicas and all(p["status"].get("phase") == "Running" for p in pods)
    return pods if ok else []


def verdicts(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each region's verdict in the job's last decision (the chosen one as `Placed`)."""
    placement = (body.get("status") or {}).get("placement") or {}
    found = {a["region"]: a for a in placement.get("alternatives") or []}
    if body["status"].get("region"):
        found[body["status"]["region"]] = {"region": body["status"]["region"], "reason": "Placed"}
    return found


def hub_condition(cluster: Cluster, kind: str, name: str, type_: str) -> dict[str, Any] | None:
    body = cluster.get_json(kind, name)
    for item in (body.get("status") or {}).get("conditions") or []:
        if item["type"] == type_:
            return dict(item)
    return None


def wait_hub_condition(
    cluster: Cluster, kind: str, name: str, type_: str, status: str, reason: str | None = None,
    timeout: float = 60,
) -> dict[str, Any]:  # fmt: skip
    def reached() -> dict[str, Any] | None:
        found = hub_condition(cluster, kind, name, type_)
        ok = found and found["status"] == status and reason in (None, found["reason"])
        return found if ok else None

    return wait_until(reached, timeout=timeout, message=f"{kind} {name} {type_}={status} {reason}")


def only_in(region: str, connection: Connection, hub_regions: list[str]) -> dict[str, Any]:
    """Placement fields that leave the job one region: every other one excluded."""
    return only_in_any([region], connection, hub_regions)


def only_in_any(
    allowed: list[str], connection: Connection, hub_regions: list[str]
) -> dict[str, Any]:
    others = [r for r in [*hub_regions, *connection.region_names()] if r not in allowed]
    return {"excludedRegions": sorted(others)}


def placed_in_member_1_with_member_2_free_again(
    cluster: Cluster, namespace: str, members: Members, jobs: list[dict[str, Any]]
) -> None:
    """Places jobs that may run in either member in member 1 (member 2 full meanwhile), then
    frees member 2: a hub that gave up on member 1 would have somewhere else to start them."""
    m1, m2 = members.m1, members.m2
    fillers = fill_region(m2.kube, namespace, m2.region)
    cluster.apply(jobs)
    for body in jobs:
        name = body["metadata"]["name"]
        placed = wait_condition(
            cluster, namespace, name, "Running", "True", "PodsRunning", PLACED_TIMEOUT
        )
        assert placed["status"]["cluster"] == m1.name, name
    m2.kube.kubectl("delete", "pod", *fillers, "-n", namespace, "--grace-period=0")
    wait_until(
        lambda: not m2.kube.get_json("pods", "-n", namespace)["items"],
        message="member 2's fillers gone",
    )  # fmt: skip


def events_named(cluster: Cluster, namespace: str, name: str, reason: str) -> list[dict[str, Any]]:
    return [e for e in events_for(cluster, namespace, name) if e["reason"] == reason]


# --- the harness itself ---------------------------------------------------------------------


def test_the_hub_reaches_both_members_member_1_through_its_delay_proxy(
    cluster: Cluster,
    members: Members,
    connect_members: Callable[..., Connection],
    start_operator: Callable[..., OperatorProcess],
) -> None:
    connect_members()
    proxy = members.m1.proxy
    assert proxy is not None
    before = proxy.accepted
    start_operator()
    for member in members:
        found = wait_hub_condition(
            cluster, "cluster.tsunagu.io", member.name, "Reachable", "True", "Connected"
        )
        assert "answers" in found["message"]
        version = cluster.get_json("cluster.tsunagu.io", member.name)["status"]["serverVersion"]
        assert version.startswith("v1.34")
    # The hub's connections to member 1 went through the proxy: its 15 ms are really there.
    assert proxy.accepted > before
    assert proxy.delays.added_rtt_seconds == pytest.approx(0.015)


# --- overflow into a member -----------------------------------------------------------------


def test_a_remote_job_whose_home_is_full_runs_in_a_member_within_its_budget(
    cluster: Cluster,
    namespace: str,
    members: Members,
    connect_members: Callable[..., Connection],
    start_operator: Callable[..., OperatorProcess],
) -> None:
    m1, m2 = members.m1, members.m2
    connect_members()
    fill_region(cluster, namespace, "tokyo")
    # Both member regions are allowed; only member 1 (15 ms from tokyo) is within 20 ms,
    # member 2 (25 ms) is not.
    cluster.apply(
        dataset(namespace, "claims", "tokyo", "RemoteAccess", allowedRegions=[m1.region, m2.region])
    )
    cluster.apply(training_job(namespace, "overflow", "claims", replicas=2, gpus=8, maxRttMs=20))
    start_operator()

    body = wait_condition(
        cluster, namespace, "overflow", "Running", "True", "PodsRunning", PLACED_TIMEOUT
    )
    assert body["status"]["region"] == m1.region
    assert body["status"]["cluster"] == m1.name
    assert body["status"]["state"] == "Running"
    assert MEMBER_FINALIZER in (body["metadata"].get("finalizers") or [])
    scheduled = condition(body, "Scheduled")
    assert scheduled is not None
    assert scheduled["reason"] == "Placed"
    assert m1.name in scheduled["message"]
    assert m1.region in scheduled["message"]
    placed = events_named(cluster, namespace, "overflow", "Placed")
    assert any(m1.name in event["message"] for event in placed), placed
    seen = verdicts(body)
    assert seen[m2.region]["reason"] == "LatencyBudget"
    assert seen["tokyo"]["reason"] == "InsufficientCapacity"

    # The gang is in member 1, in the namespace of the job's name, under its anchor.
    uid = body["metadata"]["uid"]
    anchor = m1.anchor(namespace, "overflow")
    assert anchor is not None, "no anchor ConfigMap tsunagu-overflow in member 1"
    expected_labels = {
        "tsunagu.io/hub-namespace": namespace,
        "tsunagu.io/hub-job": "overflow",
        "tsunagu.io/hub-job-uid": uid,
        "tsunagu.io/job": "overflow",
    }
    assert expected_labels.items() <= anchor["metadata"]["labels"].items()
    pods = wait_until(
        lambda: running_in(m1, namespace, "overflow", 2), message="the gang Running in member 1"
    )
    assert [p["metadata"]["name"] for p in pods] == ["overflow-0", "overflow-1"]
    nodes = set(m1.nodes())
    for rank, pod in enumerate(pods):
        labels = pod["metadata"]["labels"]
        assert labels["tsunagu.io/job"] == "overflow"
        assert labels["tsunagu.io/rank"] == str(rank)
        assert labels["tsunagu.io/region"] == m1.region
        assert {key: labels.get(key) for key in HUB_LABELS} == {
            key: expected_labels[key] for key in HUB_LABELS
        }
        assert pod["spec"]["nodeName"] in nodes
        assert_owned_by_anchor(pod, anchor)
    service = m1.service(namespace, "overflow")
    assert service is not None, "no Service overflow in member 1"
    assert service["spec"].get("clusterIP") == "None"
    assert_owned_by_anchor(service, anchor)
    # Nowhere else.
    assert set(where(cluster, members, namespace, "overflow")) == {m1.name}
    assert not m2.anchors(namespace)
    assert_no_gpu_overcommitted(m1.kube)


def assert_owned_by_anchor(item: dict[str, Any], anchor: dict[str, Any]) -> None:
    owners = [o for o in item["metadata"].get("ownerReferences") or [] if o.get("controller")]
    assert len(owners) == 1, f"{item['metadata']['name']}: controllers {owners}"
    owner = owners[0]
    assert (owner["kind"], owner["name"], owner["uid"]) == (
        "ConfigMap", anchor["metadata"]["name"], anchor["metadata"]["uid"]
    )  # fmt: skip


def test_a_pinned_job_whose_home_is_full_waits_there_and_makes_nothing_in_a_member(
    cluster: Cluster,
    namespace: str,
    members: Members,
    connect_members: Callable[..., Connection],
    start_operator: Callable[..., OperatorProcess],
) -> None:
    connect_members()
    fill_region(cluster, namespace, "tokyo")
    cluster.apply(dataset(namespace, "records", "tokyo", "Pinned"))
    cluster.apply(training_job(namespace, "pinned", "records", replicas=2, gpus=8))
    start_operator()

    body = wait_condition(
        cluster, namespace, "pinned", "Scheduled", "False", "InsufficientCapacity", PLACED_TIMEOUT
    )
    assert not body["status"].get("region")
    assert not body["status"].get("cluster")
    seen = verdicts(body)
    for member in members:
        assert seen[member.region]["reason"] == "DataResidency"
    assert where(cluster, members, namespace, "pinned") == {}
    for member in members:
        assert not member.anchors(namespace)


def test_a_gang_that_fits_nowhere_creates_nothing_in_any_cluster(
    cluster: Cluster,
    namespace: str,
    members: Members,
    connect_members: Callable[..., Connection],
    start_operator: Callable[..., OperatorProcess],
) -> None:
    connect_members()
    # 5 × 8 GPUs: every region, in the hub and in the members, has 4 nodes of 8.
    cluster.apply(training_job(namespace, "huge", None, replicas=5, gpus=8))
    start_operator()

    body = wait_condition(
        cluster, namespace, "huge", "Scheduled", "False", "InsufficientCapacity", PLACED_TIMEOUT
    )
    # The members' regions were judged on their capacity, not passed over as unavailable.
    seen = verdicts(body)
    for member in members:
        assert seen[member.region]["reason"] == "InsufficientCapacity", seen[member.region]
    assert where(cluster, members, namespace, "huge") == {}
    for member in members:
        assert not member.anchors(namespace)
        assert member.service(namespace, "huge") is None
    assert not cluster.get_json("services", "-n", namespace)["items"]


def test_a_delegated_job_in_a_member_is_bound_by_the_member_s_own_scheduler(
    cluster: Cluster,
    namespace: str,
    regions: list[str],
    members: Members,
    connect_members: Callable[..., Connection],
    start_operator: Callable[..., OperatorProcess],
) -> None:
    m1 = members.m1
    connection = connect_members()
    here = only_in(m1.region, connection, regions)
    cluster.apply(
        training_job(namespace, "delegated", None, replicas=2, gpus=8, mode="Delegate", **here)
    )
    start_operator()

    wait_condition(
        cluster, namespace, "delegated", "Running", "True", "PodsRunning", PLACED_TIMEOUT
    )
    pods = running_in(m1, namespace, "delegated", 2)
    assert len(pods) == 2
    nodes = set(m1.nodes())
    for pod in pods:
        # Made unbound, for the default scheduler, kept to the region by a node affinity.
        assert pod["spec"].get("schedulerName", "default-scheduler") == "default-scheduler"
        assert pod["spec"]["nodeName"] in nodes
        required = pod["spec"]["affinity"]["nodeAffinity"][
            "requiredDuringSchedulingIgnoredDuringExecution"
        ]
        expressions = [
            e for term in required["nodeSelectorTerms"] for e in term.get("matchExpressions") or []
        ]
        assert {"key": "topology.kubernetes.io/region", "operator": "In",
                "values": [m1.region]} in expressions  # fmt: skip
        scheduled = [
            e for e in events_for(m1.kube, namespace, pod["metadata"]["name"])
            if e["reason"] == "Scheduled"
        ]  # fmt: skip
        assert scheduled, f"{pod['metadata']['name']}: no Scheduled Event of the member's scheduler"
    assert_no_gpu_overcommitted(m1.kube)


def test_a_replica_failing_in_a_member_restarts_the_gang_there_then_fails_the_job(
    cluster: Cluster,
    namespace: str,
    regions: list[str],
    members: Members,
    connect_members: Callable[..., Connection],
    start_operator: Callable[..., OperatorProcess],
) -> None:
    m1 = members.m1
    connection = connect_members()
    body = training_job(namespace, "flaky", None, replicas=2, gpus=8,
                        **only_in(m1.region, connection, regions))  # fmt: skip
    body["spec"]["backoffLimit"] = 1
    cluster.apply(body)
    start_operator()
    first = wait_until(
        lambda: running_in(m1, namespace, "flaky", 2),
        timeout=PLACED_TIMEOUT, message="the gang Running in member 1",
    )  # fmt: skip
    first_uids = {p["metadata"]["uid"] for p in first}

    set_outcome(m1.kube, namespace, "flaky-1", "Failed")

    def recreated() -> list[dict[str, Any]]:
        pods = running_in(m1, namespace, "flaky", 2)
        return pods if pods and not first_uids & {p["metadata"]["uid"] for p in pods} else []

    second = wait_until(recreated, timeout=PLACED_TIMEOUT, message="the gang made again")
    restarted = wait_condition(cluster, namespace, "flaky", "Running", "True", "PodsRunning")
    assert restarted["status"]["restarts"] == 1
    assert restarted["status"]["cluster"] == m1.name

    set_outcome(m1.kube, namespace, second[0]["metadata"]["name"], "Failed")
    final = wait_condition(cluster, namespace, "flaky", "Finished", "True", "Failed")
    assert final["status"]["restarts"] == 1
    wait_until(
        lambda: all(
            p["status"].get("phase") in ("Succeeded", "Failed")
            for p in m1.pods(namespace, "flaky")
        ),
        message="the failed job to release its GPUs in member 1",
    )  # fmt: skip


def test_a_gang_the_member_admits_only_in_part_is_rolled_back_there_whole(
    cluster: Cluster,
    namespace: str,
    regions: list[str],
    members: Members,
    connect_members: Callable[..., Connection],
    start_operator: Callable[..., OperatorProcess],
) -> None:
    m1 = members.m1
    connection = connect_members()
    # The member's namespace admits one pod: the second rank of the gang is refused there.
    m1.kube.apply(
        {
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": {"name": "one-pod", "namespace": namespace},
            "spec": {"hard": {"pods": "1"}},
        }
    )
    wait_until(
        lambda: "pods" in (m1.kube.get_json("resourcequota", "one-pod", "-n", namespace)
                           .get("status", {}).get("hard") or {}),
        message="the member's quota in force",
    )  # fmt: skip
    cluster.apply(training_job(namespace, "halved", None, replicas=2, gpus=8,
                               **only_in(m1.region, connection, regions)))  # fmt: skip
    start_operator()

    def refused() -> list[dict[str, Any]]:
        return [
            e for e in events_for(cluster, namespace, "halved")
            if e["type"] == "Warning" and "quota" in e["message"]
        ]  # fmt: skip

    said = wait_until(refused, timeout=PLACED_TIMEOUT, message="an Event naming the member's quota")
    # Rolled back before it was said: no rank of it is left in member 1, none anywhere else.
    assert not m1.pods(namespace, "halved"), said
    assert where(cluster, members, namespace, "halved") == {}
    body = job(cluster, namespace, "halved")
    assert (condition(body, "Running") or {}).get("status") != "True"
    assert not (body.get("status") or {}).get("cluster")

    # The member's quota, not the job, stood in the way: lifted, the retry makes the gang.
    m1.kube.kubectl("delete", "resourcequota", "one-pod", "-n", namespace)
    wait_condition(cluster, namespace, "halved", "Running", "True", "PodsRunning", 150)
    assert len(running_in(m1, namespace, "halved", 2)) == 2


def test_a_member_region_s_node_selector_picks_nodes_of_its_own_cluster_only(
    cluster: Cluster,
    namespace: str,
    regions: list[str],
    members: Members,
    connect_members: Callable[..., Connection],
    start_operator: Callable[..., OperatorProcess],
) -> None:
    m1, m2 = members.m1, members.m2
    # One node of member 1 by its host name, which member 2's node of that name has too.
    solo = {
        "apiVersion": "tsunagu.io/v1alpha1",
        "kind": "Region",
        "metadata": {"name": "fukuoka-solo"},
        "spec": {
            "prefecture": "JP-40",
            "nodeSelector": {"kubernetes.io/hostname": "gpu-0001"},
            "links": [{"to": "tokyo", "rttMs": 15}],
        },
    }
    connection = connect_members(regions={m1.name: [solo]})
    assert "gpu-0001" in m2.nodes()
    here = only_in("fukuoka-solo", connection, regions)
    # Two nodes of that name in all, one of them in the region's cluster: room for one rank.
    cluster.apply(training_job(namespace, "pair", None, replicas=2, gpus=8, **here))
    start_operator()
    waiting = wait_condition(cluster, namespace, "pair", "Scheduled", "False", timeout=60)
    assert verdicts(waiting)["fukuoka-solo"]["reason"] == "InsufficientCapacity"
    # The region that got furthest speaks for the job.
    scheduled = condition(waiting, "Scheduled")
    assert scheduled is not None
    assert "room for 1 of 2" in scheduled["message"], scheduled

    cluster.apply(training_job(namespace, "single", None, replicas=1, gpus=8, **here))
    running = wait_condition(
        cluster, namespace, "single", "Running", "True", "PodsRunning", PLACED_TIMEOUT
    )
    assert (running["status"]["region"], running["status"]["cluster"]) == ("fukuoka-solo", m1.name)
    (pod,) = running_in(m1, namespace, "single", 1)
    assert pod["spec"]["nodeName"] == "gpu-0001"
    assert where(cluster, members, namespace, "pair") == {}
    assert not m2.pods(namespace)


# --- deletion -------------------------------------------------------------------------------


def test_deleting_the_hub_job_removes_its_anchor_pods_and_service_in_the_member(
    cluster: Cluster,
    namespace: str,
    regions: list[str],
    members: Members,
    connect_members: Callable[..., Connection],
    start_operator: Callable[..., OperatorProcess],
) -> None:
    m1 = members.m1
    connection = connect_members()
    cluster.apply(
        training_job(namespace, "short", None, replicas=2, gpus=8,
                     **only_in(m1.region, connection, regions))
    )  # fmt: skip
    start_operator()
    wait_until(
        lambda: running_in(m1, namespace, "short", 2),
        timeout=PLACED_TIMEOUT, message="the gang Running in member 1",
    )  # fmt: skip
    assert m1.anchor(namespace, "short") is not None
    assert m1.service(namespace, "short") is not None
    finalizers = job(cluster, namespace, "short")["metadata"].get("finalizers") or []
    assert MEMBER_FINALIZER in finalizers

    cluster.kubectl("delete", "trainingjob", "short", "-n", namespace, "--wait=false")

    def member_objects_gone() -> bool:
        return (
            m1.anchor(namespace, "short") is None
            and not m1.pods(namespace, "short")
            and m1.service(namespace, "short") is None
        )

    wait_until(member_objects_gone, timeout=60, message="anchor, pods and Service gone in member 1")

    def hub_job_gone() -> bool:
        found = cluster.kubectl(
            "get", "trainingjob", "short", "-n", namespace, "--ignore-not-found", "-o", "name"
        )
        return not found.stdout.strip()

    wait_until(hub_job_gone, timeout=60, message="the hub job gone (its finalizer lifted)")


# --- the hub operator killed in the middle of a burst -----------------------------------------


def test_kill_9_of_the_hub_mid_burst_across_clusters_duplicates_and_overcommits_nothing(
    cluster: Cluster,
    namespace: str,
    regions: list[str],
    members: Members,
    connect_members: Callable[..., Connection],
    start_operator: Callable[..., OperatorProcess],
) -> None:
    connection = connect_members()
    member_regions = {member.region for member in members}
    # 30 gangs, a third each for member 1, member 2 and the hub; 1 or 2 replicas of 2 GPUs,
    # 30 of the 32 GPUs of each member.
    target: dict[str, str] = {}
    jobs = []
    for i in range(30):
        name = f"burst-{i:02d}"
        if i % 3 == 2:
            target[name] = HUB
            placement: dict[str, Any] = {"excludedRegions": sorted(member_regions)}
        else:
            member = members.members[i % 3]
            target[name] = member.name
            placement = only_in(member.region, connection, regions)
        replicas = 1 + (i // 3) % 2
        jobs.append(training_job(namespace, name, None, replicas=replicas, gpus=2, **placement))
    expected_member_pods = sum(
        body["spec"]["replicas"] for body in jobs if target[body["metadata"]["name"]] != HUB
    )
    # Read with the Python client, not kubectl, to kill soon after the gangs start to appear.
    apis = [client.CoreV1Api(member.kube.api_client()) for member in members]

    def member_pods() -> int:
        return sum(
            len(api.list_namespaced_pod(namespace, label_selector="tsunagu.io/job").items)
            for api in apis
        )

    # The gangs of a burst are made side by side within a few tens of milliseconds; member 1
    # 150 ms away (instead of 15) makes each of its gangs take a few round trips of that, so a
    # kill lands while they are being made.
    proxy = members.m1.proxy
    assert proxy is not None
    proxy.set_rtt_ms(150)
    try:
        operator = start_operator(*SHORT_LEASE)
        # The first kill as the first anchor appears in a member. Watched from before the jobs
        # exist.
        anchored = first_anchor(apis, namespace, timeout=PLACED_TIMEOUT)
        time.sleep(1)  # the watches are open (a missed first event only makes the kill later)
        cluster.apply(jobs)
        anchored()
        operator.kill()
        kills = [member_pods()]
        assert_nothing_twice(cluster, members, namespace)
        operator = start_operator(*SHORT_LEASE)
        # The second once the next leader made more (or, were the burst through already, at
        # once: the restart then at least adopts every gang).
        wait_until(
            lambda: (count := member_pods()) > kills[0] or count >= expected_member_pods,
            timeout=PLACED_TIMEOUT, interval=0.02, message="more pods of the burst in a member",
        )  # fmt: skip
        operator.kill()
        kills.append(member_pods())
        assert_nothing_twice(cluster, members, namespace)
    finally:
        proxy.set_rtt_ms(MEMBER1_ADDED_RTT_MS)
    operator = start_operator(*SHORT_LEASE)
    print(f"killed with {kills} of the {expected_member_pods} member pods made")
    restarted_at = time.monotonic()

    def all_running() -> bool:
        items = cluster.get_json("trainingjobs", "-n", namespace)["items"]
        return len(items) == 30 and all(
            (condition(item, "Running") or {}).get("status") == "True" for item in items
        )

    wait_until(all_running, timeout=300, interval=0.5, message="every job of the burst Running")
    print(f"every job Running {time.monotonic() - restarted_at:.1f} s after the last restart")
    assert_nothing_twice(cluster, members, namespace)
    # One read of each cluster's pods, grouped by job and cluster.
    placed: dict[str, dict[str, list[Any]]] = {}
    hub_pods = [
        (HUB, p) for p in cluster.get_json("pods", "-n", namespace, "-l", "tsunagu.io/job")["items"]
        if not p["metadata"].get("deletionTimestamp")
    ]  # fmt: skip
    member_pods_now = [(member.name, p) for member in members for p in member.pods(namespace)]
    for place, pod in hub_pods + member_pods_now:
        name = pod["metadata"]["labels"]["tsunagu.io/job"]
        placed.setdefault(name, {}).setdefault(place, []).append(pod)
    for item in cluster.get_json("trainingjobs", "-n", namespace)["items"]:
        name = item["metadata"]["name"]
        found = placed.get(name, {})
        assert set(found) == {target[name]}, f"{name}: pods in {sorted(found)}"
        pods = found[target[name]]
        assert sorted(p["metadata"]["labels"]["tsunagu.io/rank"] for p in pods) == [
            str(rank) for rank in range(item["spec"]["replicas"])
        ], name
        assert item["status"].get("cluster") == (None if target[name] == HUB else target[name])
        # Adopted after each restart, never made again: each gang ran once.
        assert item["status"].get("restarts", 0) == 0, name
        if target[name] != HUB:
            uids = {p["metadata"]["labels"].get("tsunagu.io/hub-job-uid") for p in pods}
            assert uids == {item["metadata"]["uid"]}, name
    for member in members:
        anchors = [a["metadata"]["labels"]["tsunagu.io/hub-job"] for a in member.anchors(namespace)]
        assert sorted(anchors) == sorted(n for n, t in target.items() if t == member.name)


def test_a_standby_hub_takes_over_a_burst_in_the_members_without_a_gang_twice(
    cluster: Cluster,
    namespace: str,
    regions: list[str],
    members: Members,
    connect_members: Callable[..., Connection],
    start_operator: Callable[..., OperatorProcess],
    run_operator: Callable[..., OperatorProcess],
) -> None:
    # start_operator is not called: asked for before run_operator, it sets up connect_members
    # first, so what the test connected is removed after both replicas stopped.
    connection = connect_members()
    lease = f"tsunagu-members-{uuid.uuid4().hex[:8]}"
    leader = start_replica(run_operator, lease, *SHORT_LEASE, *MEMBER_CHECK)
    wait_holder(cluster, lease, leader, timeout=30)
    standby = start_replica(run_operator, lease, *SHORT_LEASE, *MEMBER_CHECK)
    # The standby watches the members too: its view of them is current before it leads.
    wait_until(
        lambda: standby.readiness() == (200, "standby, view synced\n"),
        timeout=60, message="a synced standby",
    )  # fmt: skip
    target: dict[str, str] = {}
    jobs = []
    for i in range(20):
        member = members.members[i % 2]
        name = f"over-{i:02d}"
        target[name] = member.name
        jobs.append(training_job(namespace, name, None, replicas=1 + (i // 2) % 2, gpus=2,
                                 **only_in(member.region, connection, regions)))  # fmt: skip
    apis = [client.CoreV1Api(member.kube.api_client()) for member in members]
    anchored = first_anchor(apis, namespace, timeout=PLACED_TIMEOUT)
    time.sleep(1)  # the watches are open
    cluster.apply(jobs)
    anchored()
    leader.process.kill()
    wait_holder(cluster, lease, standby, timeout=30)

    def all_running() -> bool:
        items = cluster.get_json("trainingjobs", "-n", namespace)["items"]
        return len(items) == 20 and all(
            (condition(item, "Running") or {}).get("status") == "True" for item in items
        )

    wait_until(all_running, timeout=180, interval=0.5, message="every job Running")
    assert_nothing_twice(cluster, members, namespace)
    for member in members:
        by_job: dict[str, list[str]] = {}
        for pod in member.pods(namespace):
            labels = pod["metadata"]["labels"]
            by_job.setdefault(labels["tsunagu.io/job"], []).append(labels["tsunagu.io/rank"])
        expected = {n for n, t in target.items() if t == member.name}
        assert set(by_job) == expected, member.name
    for item in cluster.get_json("trainingjobs", "-n", namespace)["items"]:
        assert item["status"].get("cluster") == target[item["metadata"]["name"]]
        assert item["status"].get("restarts", 0) == 0, item["metadata"]["name"]
    assert standby.process.running


def first_anchor(apis: list[Any], namespace: str, timeout: float) -> Callable[[], None]:
    """Starts watching the namespace in every member; the function returned returns as soon as
    an anchor exists in any of them (watched, not polled)."""
    seen = threading.Event()
    streams = [watch.Watch() for _ in apis]

    def follow(api: Any, stream: watch.Watch) -> None:
        try:
            for event in stream.stream(
                api.list_namespaced_config_map, namespace,
                label_selector="tsunagu.io/hub-job-uid", timeout_seconds=int(timeout),
            ):  # fmt: skip
                if event["type"] in ("ADDED", "MODIFIED"):
                    seen.set()
                    return
        except Exception:  # the other member's watch may still see it
            return

    threads = [
        threading.Thread(target=follow, args=(api, stream), daemon=True)
        for api, stream in zip(apis, streams, strict=True)
    ]
    for thread in threads:
        thread.start()

    def wait() -> None:
        found = seen.wait(timeout)
        for stream in streams:
            stream.stop()
        if not found:
            raise AssertionError(f"no anchor appeared in {namespace} within {timeout:.0f} s")

    return wait


def assert_nothing_twice(cluster: Cluster, members: Members, namespace: str) -> None:
    """In every cluster: no rank twice, no node over-committed; and no job in two clusters."""
    assert_no_pod_duplicated(cluster, namespace)
    assert_no_gpu_overcommitted(cluster)
    clusters_of: dict[str, set[str]] = {}
    for pod in cluster.get_json("pods", "-n", namespace, "-l", "tsunagu.io/job")["items"]:
        if not pod["metadata"].get("deletionTimestamp"):
            clusters_of.setdefault(pod["metadata"]["labels"]["tsunagu.io/job"], set()).add(HUB)
    for member in members:
        assert_no_pod_duplicated(member.kube, namespace)
        assert_no_gpu_overcommitted(member.kube)
        for pod in member.pods(namespace):
            clusters_of.setdefault(pod["metadata"]["labels"]["tsunagu.io/job"], set()).add(
                member.name
            )
    twice = {name: places for name, places in clusters_of.items() if len(places) > 1}
    assert not twice, f"jobs with pods in more than one cluster: {twice}"


# --- a member that stops answering ----------------------------------------------------------


def test_a_member_cut_off_keeps_its_running_job_takes_no_new_work_and_is_reconciled_on_return(
    cluster: Cluster,
    namespace: str,
    regions: list[str],
    members: Members,
    connect_members: Callable[..., Connection],
    start_operator: Callable[..., OperatorProcess],
) -> None:
    m1, m2 = members.m1, members.m2
    proxy = m1.proxy
    assert proxy is not None
    connection = connect_members()
    either = only_in_any([m1.region, m2.region], connection, regions)
    start_operator()
    placed_in_member_1_with_member_2_free_again(
        cluster, namespace, members,
        [training_job(namespace, "kept", None, replicas=2, gpus=8, **either),
         training_job(namespace, "doomed", None, replicas=1, gpus=8, **either)],
    )  # fmt: skip
    pods = running_in(m1, namespace, "kept", 2)
    assert pods

    proxy.partition(True)  # the hub's path to member 1 is cut; member 1 itself goes on
    wait_hub_condition(
        cluster, "cluster.tsunagu.io", m1.name, "Reachable", "False", "ClusterUnreachable"
    )
    region = wait_hub_condition(
        cluster, "region.tsunagu.io", m1.region, "Available", "False", "ClusterUnreachable"
    )
    assert m1.name in region["message"]
    body = wait_condition(
        cluster, namespace, "kept", "ClusterReachable", "False", "ClusterUnreachable"
    )
    assert (body["status"]["region"], body["status"]["cluster"]) == (m1.region, m1.name)
    # A job deleted meanwhile waits for its member: its anchor there cannot be deleted yet.
    cluster.kubectl("delete", "trainingjob", "doomed", "-n", namespace, "--wait=false")
    # No new work there.
    here = only_in(m1.region, connection, regions)
    cluster.apply(training_job(namespace, "newcomer", None, replicas=1, gpus=8, **here))
    waiting = wait_condition(cluster, namespace, "newcomer", "Scheduled", "False")
    assert verdicts(waiting)[m1.region]["reason"] == "RegionUnavailable"
    # Meanwhile the gang finishes in member 1, unseen by the hub.
    for pod in pods:
        set_outcome(m1.kube, namespace, pod["metadata"]["name"], "Succeeded")
    wait_until(
        lambda: all(
            p["status"].get("phase") == "Succeeded"
            for p in m1.kube.get_json("pods", "-n", namespace, "-l", "tsunagu.io/job=kept")["items"]
        ),
        message="the gang to finish in member 1",
    )  # fmt: skip
    # Not requeued or started anywhere else while its cluster cannot be asked, though member 2
    # has room for it.
    kept = job(cluster, namespace, "kept")
    assert (condition(kept, "Finished") or {}).get("status") != "True"
    assert (kept["status"]["region"], kept["status"].get("cluster")) == (m1.region, m1.name)
    assert set(where(cluster, members, namespace, "kept")) == {m1.name}
    assert not m2.anchors(namespace)
    assert not m1.pods(namespace, "newcomer")
    doomed = job(cluster, namespace, "doomed")
    assert doomed["metadata"].get("deletionTimestamp")
    assert MEMBER_FINALIZER in (doomed["metadata"].get("finalizers") or [])
    assert m1.anchor(namespace, "doomed") is not None

    proxy.partition(False)
    wait_hub_condition(cluster, "cluster.tsunagu.io", m1.name, "Reachable", "True", "Connected")
    wait_condition(cluster, namespace, "kept", "ClusterReachable", "True", "Connected")
    done = wait_condition(cluster, namespace, "kept", "Finished", "True", "Succeeded")
    assert done["status"]["succeededReplicas"] == 2
    assert done["status"].get("restarts", 0) == 0

    def doomed_gone() -> bool:
        found = cluster.kubectl(
            "get", "trainingjob", "doomed", "-n", namespace, "--ignore-not-found", "-o", "name"
        )
        return not found.stdout.strip() and m1.anchor(namespace, "doomed") is None

    wait_until(doomed_gone, timeout=60, message="the deleted job's anchor, then the job, gone")
    assert not m1.pods(namespace, "doomed")
    # The region takes work again: the newcomer runs on the GPUs the finished gang left.
    placed = wait_condition(
        cluster, namespace, "newcomer", "Running", "True", "PodsRunning", PLACED_TIMEOUT
    )
    assert placed["status"]["cluster"] == m1.name


def test_a_gang_deleted_in_the_member_while_it_was_cut_off_is_placed_again_on_return(
    cluster: Cluster,
    namespace: str,
    regions: list[str],
    members: Members,
    connect_members: Callable[..., Connection],
    start_operator: Callable[..., OperatorProcess],
) -> None:
    m1 = members.m1
    proxy = m1.proxy
    assert proxy is not None
    connection = connect_members()
    cluster.apply(training_job(namespace, "evicted", None, replicas=2, gpus=8,
                               **only_in(m1.region, connection, regions)))  # fmt: skip
    start_operator()
    wait_condition(cluster, namespace, "evicted", "Running", "True", "PodsRunning", PLACED_TIMEOUT)
    anchor = m1.anchor(namespace, "evicted")
    assert anchor is not None
    before = {p["metadata"]["uid"] for p in m1.pods(namespace, "evicted")}

    proxy.partition(True)
    wait_condition(cluster, namespace, "evicted", "ClusterReachable", "False", "ClusterUnreachable")
    # The member's admin removes the gang meanwhile (its garbage collector takes the pods).
    m1.kube.kubectl("delete", "configmap", anchor["metadata"]["name"], "-n", namespace)
    wait_until(
        lambda: not m1.kube.get_json("pods", "-n", namespace, "-l", "tsunagu.io/job=evicted")[
            "items"
        ],
        timeout=60, message="the gang's pods collected in member 1",
    )  # fmt: skip
    assert job(cluster, namespace, "evicted")["status"]["region"] == m1.region

    proxy.partition(False)
    wait_condition(cluster, namespace, "evicted", "ClusterReachable", "True", "Connected")

    def placed_again() -> list[dict[str, Any]]:
        pods = running_in(m1, namespace, "evicted", 2)
        return pods if pods and not before & {p["metadata"]["uid"] for p in pods} else []

    wait_until(placed_again, timeout=PLACED_TIMEOUT, message="the gang made again in member 1")
    again = wait_condition(cluster, namespace, "evicted", "Running", "True", "PodsRunning")
    assert again["status"]["cluster"] == m1.name
    fresh = m1.anchor(namespace, "evicted")
    assert fresh is not None
    assert fresh["metadata"]["uid"] != anchor["metadata"]["uid"]
    assert_no_pod_duplicated(m1.kube, namespace)


def test_a_hub_restarted_while_a_member_is_cut_off_starts_none_of_its_jobs_elsewhere(
    cluster: Cluster,
    namespace: str,
    regions: list[str],
    members: Members,
    connect_members: Callable[..., Connection],
    start_operator: Callable[..., OperatorProcess],
) -> None:
    m1, m2 = members.m1, members.m2
    proxy = m1.proxy
    assert proxy is not None
    connection = connect_members()
    either = only_in_any([m1.region, m2.region], connection, regions)
    operator = start_operator(*SHORT_LEASE)
    placed_in_member_1_with_member_2_free_again(
        cluster, namespace, members,
        [training_job(namespace, "stranded", None, replicas=2, gpus=8, **either)],
    )  # fmt: skip
    before = {p["metadata"]["uid"] for p in m1.pods(namespace, "stranded")}

    # The new hub never sees member 1's pods: it knows of the gang only from the job's status.
    operator.kill()
    proxy.partition(True)
    start_operator(*SHORT_LEASE)
    wait_condition(
        cluster, namespace, "stranded", "ClusterReachable", "False", "ClusterUnreachable",
        timeout=PLACED_TIMEOUT,
    )  # fmt: skip
    # The new leader places in member 2 meanwhile, where member 1's job would fit as well.
    cluster.apply(training_job(namespace, "witness", None, replicas=1, gpus=8,
                               **only_in(m2.region, connection, regions)))  # fmt: skip
    wait_condition(cluster, namespace, "witness", "Running", "True", "PodsRunning", PLACED_TIMEOUT)
    stranded = job(cluster, namespace, "stranded")
    assert (stranded["status"]["region"], stranded["status"].get("cluster")) == (
        m1.region, m1.name
    )  # fmt: skip
    assert set(where(cluster, members, namespace, "stranded")) == {m1.name}
    assert [a["metadata"]["labels"]["tsunagu.io/hub-job"] for a in m2.anchors(namespace)] == [
        "witness"
    ]

    proxy.partition(False)
    wait_condition(cluster, namespace, "stranded", "ClusterReachable", "True", "Connected")
    running = wait_condition(cluster, namespace, "stranded", "Running", "True", "PodsRunning")
    assert running["status"].get("restarts", 0) == 0
    assert {p["metadata"]["uid"] for p in m1.pods(namespace, "stranded")} == before


def test_a_job_that_accepts_requeue_runs_elsewhere_after_the_grace_and_the_copy_left_goes(
    cluster: Cluster,
    namespace: str,
    regions: list[str],
    members: Members,
    connect_members: Callable[..., Connection],
    start_operator: Callable[..., OperatorProcess],
) -> None:
    m1, m2 = members.m1, members.m2
    proxy = m1.proxy
    assert proxy is not None
    connection = connect_members()
    either = only_in_any([m1.region, m2.region], connection, regions)
    start_operator()
    placed_in_member_1_with_member_2_free_again(
        cluster, namespace, members,
        [training_job(namespace, "mobile", None, replicas=2, gpus=8, **either,
                      onClusterUnreachable="Requeue", clusterUnreachableGraceSeconds=5)],
    )  # fmt: skip
    left = {p["metadata"]["uid"] for p in m1.pods(namespace, "mobile")}

    proxy.partition(True)
    wait_condition(cluster, namespace, "mobile", "ClusterReachable", "False", "ClusterUnreachable")

    def running_in_member_2() -> dict[str, Any] | None:
        body = job(cluster, namespace, "mobile")
        running = (condition(body, "Running") or {}).get("status") == "True"
        return body if running and body["status"].get("cluster") == m2.name else None

    moved = wait_until(running_in_member_2, timeout=PLACED_TIMEOUT, message="mobile in member 2")
    assert moved["status"]["region"] == m2.region
    assert moved["status"].get("leftInCluster") == m1.name
    requeued = events_named(cluster, namespace, "mobile", "Requeued")
    assert requeued, "no Requeued Event"
    assert len(running_in(m2, namespace, "mobile", 2)) == 2
    # The copy left in member 1 is still there (it cannot be asked to go) and is not the job's.
    assert {p["metadata"]["uid"] for p in m1.pods(namespace, "mobile")} == left
    assert m1.anchor(namespace, "mobile") is not None
    in_member_2 = {p["metadata"]["uid"] for p in m2.pods(namespace, "mobile")}

    proxy.partition(False)

    def copy_gone() -> bool:
        return m1.anchor(namespace, "mobile") is None and not m1.pods(namespace, "mobile")

    wait_until(copy_gone, timeout=PLACED_TIMEOUT, message="the copy left in member 1 removed")
    cleared = wait_until(
        lambda: (body := job(cluster, namespace, "mobile"))["status"].get("leftInCluster") is None
        and body,
        timeout=60, message="leftInCluster cleared",
    )  # fmt: skip
    assert cleared["status"]["cluster"] == m2.name
    assert (condition(cleared, "Running") or {}).get("status") == "True"
    assert {p["metadata"]["uid"] for p in m2.pods(namespace, "mobile")} == in_member_2


def test_a_member_whose_api_server_stops_keeps_its_job_and_it_runs_on_when_it_is_back(
    cluster: Cluster,
    namespace: str,
    regions: list[str],
    members: Members,
    connect_members: Callable[..., Connection],
    start_operator: Callable[..., OperatorProcess],
) -> None:
    m1, m2 = members.m1, members.m2
    connection = connect_members()
    either = only_in_any([m1.region, m2.region], connection, regions)
    start_operator()
    placed_in_member_1_with_member_2_free_again(
        cluster, namespace, members,
        [training_job(namespace, "steady", None, replicas=2, gpus=8, **either)],
    )  # fmt: skip
    before = {p["metadata"]["uid"] for p in running_in(m1, namespace, "steady", 2)}
    assert len(before) == 2

    plane = m1.kube.control_plane
    assert plane is not None
    here = only_in(m1.region, connection, regions)
    try:
        plane.stop("kube-apiserver")
        wait_hub_condition(
            cluster, "cluster.tsunagu.io", m1.name, "Reachable", "False", "ClusterUnreachable"
        )
        wait_hub_condition(
            cluster, "region.tsunagu.io", m1.region, "Available", "False", "ClusterUnreachable"
        )
        body = wait_condition(
            cluster, namespace, "steady", "ClusterReachable", "False", "ClusterUnreachable"
        )
        assert body["status"]["region"] == m1.region
        cluster.apply(training_job(namespace, "newcomer", None, replicas=1, gpus=8, **here))
        waiting = wait_condition(cluster, namespace, "newcomer", "Scheduled", "False")
        assert verdicts(waiting)[m1.region]["reason"] == "RegionUnavailable"
        # Kept where it is, though member 2 has room for it.
        steady = job(cluster, namespace, "steady")
        assert (steady["status"]["region"], steady["status"].get("cluster")) == (
            m1.region, m1.name
        )  # fmt: skip
        assert not live_pods(cluster, namespace, "steady")
        assert not m2.pods(namespace, "steady")
        assert not m2.anchors(namespace)
    finally:
        m1.kube.ensure_control_plane()

    wait_hub_condition(cluster, "cluster.tsunagu.io", m1.name, "Reachable", "True", "Connected")
    wait_condition(cluster, namespace, "steady", "ClusterReachable", "True", "Connected")
    running = wait_condition(cluster, namespace, "steady", "Running", "True", "PodsRunning")
    assert running["status"].get("restarts", 0) == 0
    # The same pods: nothing was recreated while the member was away.
    assert {p["metadata"]["uid"] for p in m1.pods(namespace, "steady")} == before
    wait_condition(cluster, namespace, "newcomer", "Running", "True", "PodsRunning", PLACED_TIMEOUT)
    assert not m2.pods(namespace)


# --- namespaces in the member ----------------------------------------------------------------


def test_a_member_without_the_namespace_gets_no_gang_and_an_event_names_the_namespace(
    cluster: Cluster,
    namespace: str,
    regions: list[str],
    members: Members,
    connect_members: Callable[..., Connection],
    start_operator: Callable[..., OperatorProcess],
) -> None:
    m1 = members.m1
    connection = connect_members(create_namespaces=False, namespace_in=[members.m2])
    assert not m1.namespace_exists(namespace)
    here = only_in(m1.region, connection, regions)
    cluster.apply(training_job(namespace, "homeless", None, replicas=2, gpus=8, **here))
    start_operator()

    def named() -> list[dict[str, Any]]:
        return [
            event
            for event in events_named(cluster, namespace, "homeless", "BindFailed")
            if namespace in event["message"]
        ]

    failed = wait_until(named, timeout=PLACED_TIMEOUT, message="a BindFailed Event naming it")
    assert failed[0]["type"] == "Warning"
    assert not m1.namespace_exists(namespace), "the hub created the namespace it may not create"
    assert where(cluster, members, namespace, "homeless") == {}
    assert (condition(job(cluster, namespace, "homeless"), "Running") or {}).get("status") != "True"

    # Once the member's admin creates it, the retry makes the gang there.
    m1.kube.kubectl("create", "namespace", namespace)
    wait_condition(cluster, namespace, "homeless", "Running", "True", "PodsRunning", 120)
    assert set(where(cluster, members, namespace, "homeless")) == {m1.name}


def test_a_member_that_may_create_namespaces_gets_the_gang_in_a_new_namespace(
    cluster: Cluster,
    namespace: str,
    regions: list[str],
    members: Members,
    connect_members: Callable[..., Connection],
    start_operator: Callable[..., OperatorProcess],
) -> None:
    m1 = members.m1
    connection = connect_members(create_namespaces=True, namespace_in=[members.m2])
    assert not m1.namespace_exists(namespace)
    here = only_in(m1.region, connection, regions)
    cluster.apply(training_job(namespace, "settler", None, replicas=2, gpus=8, **here))
    start_operator()

    wait_condition(cluster, namespace, "settler", "Running", "True", "PodsRunning", PLACED_TIMEOUT)
    assert m1.namespace_exists(namespace)
    assert len(running_in(m1, namespace, "settler", 2)) == 2


# --- orphans --------------------------------------------------------------------------------


def test_an_anchor_no_hub_job_owns_is_removed_with_its_pods(
    cluster: Cluster,
    namespace: str,
    members: Members,
    connect_members: Callable[..., Connection],
    start_operator: Callable[..., OperatorProcess],
) -> None:
    m1 = members.m1
    connect_members()
    # What a hub that lost its job (deleted while the hub was gone) leaves in a member.
    orphan(m1, namespace, "lost", str(uuid.uuid4()))
    # A hub job of the same name but another uid does not own it.
    cluster.apply(training_job(namespace, "lost", None, replicas=1, gpus=1,
                               excludedRegions=[m.region for m in members]))  # fmt: skip
    start_operator()

    wait_until(
        lambda: m1.anchor(namespace, "lost") is None and not m1.pods(namespace, "lost"),
        timeout=60, message="the orphaned anchor and its pod removed from member 1",
    )  # fmt: skip
    wait_condition(cluster, namespace, "lost", "Running", "True", "PodsRunning", PLACED_TIMEOUT)


def test_the_objects_of_an_earlier_job_of_the_same_name_give_way_to_the_new_gang(
    cluster: Cluster,
    namespace: str,
    regions: list[str],
    members: Members,
    connect_members: Callable[..., Connection],
    start_operator: Callable[..., OperatorProcess],
) -> None:
    m1 = members.m1
    connection = connect_members()
    # An earlier job "again" (another uid) left its anchor and rank 0 in member 1: its
    # finalizer removed by hand while the member was away, say.
    old = orphan(m1, namespace, "again", str(uuid.uuid4()))
    cluster.apply(training_job(namespace, "again", None, replicas=2, gpus=8,
                               **only_in(m1.region, connection, regions)))  # fmt: skip
    start_operator()

    body = wait_condition(
        cluster, namespace, "again", "Running", "True", "PodsRunning", PLACED_TIMEOUT
    )
    anchor = m1.anchor(namespace, "again")
    assert anchor is not None
    assert anchor["metadata"]["uid"] != old
    assert anchor["metadata"]["labels"]["tsunagu.io/hub-job-uid"] == body["metadata"]["uid"]
    pods = running_in(m1, namespace, "again", 2)
    assert [p["metadata"]["name"] for p in pods] == ["again-0", "again-1"]
    for pod in pods:
        assert_owned_by_anchor(pod, anchor)
        assert pod["metadata"]["labels"]["tsunagu.io/hub-job-uid"] == body["metadata"]["uid"]
    assert_no_gpu_overcommitted(m1.kube)


def orphan(member: Member, namespace: str, name: str, uid: str) -> str:
    """An anchor of a hub job `name` with `uid` and its rank 0 on a node of 8 GPUs, as the hub
    makes them; returns the anchor's uid."""
    labels = {
        "tsunagu.io/hub-namespace": namespace,
        "tsunagu.io/hub-job": name,
        "tsunagu.io/hub-job-uid": uid,
        "tsunagu.io/job": name,
    }
    member.kube.apply(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": f"tsunagu-{name}", "namespace": namespace, "labels": labels},
        }
    )
    anchor = member.anchor(namespace, name)
    assert anchor is not None
    owner = {
        "apiVersion": "v1", "kind": "ConfigMap", "name": f"tsunagu-{name}",
        "uid": anchor["metadata"]["uid"], "controller": True,
    }  # fmt: skip
    member.kube.apply(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": f"{name}-0",
                "namespace": namespace,
                "labels": {**labels, "tsunagu.io/rank": "0"},
                "ownerReferences": [owner],
            },
            "spec": {
                "nodeName": member.nodes()[0],
                "containers": [
                    {"name": "trainer", "image": "trainer",
                     "resources": {"limits": {"nvidia.com/gpu": "8"}}}
                ],
            },
        }
    )  # fmt: skip
    return str(anchor["metadata"]["uid"])
