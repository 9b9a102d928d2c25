"""JobSet's controller manager as a local process beside the test cluster.

The binary is built from JobSet's Go module by `hack/tools.sh jobset` (pinned in
hack/versions.env, cached); its CRD and webhook manifests are read from that module in the Go
module cache at run time, not copied here.

JobSet cannot run without its webhooks: its controllers are registered together with them, the
JobSet defaulting webhook fills in what the controller relies on (e.g. the success policy), and
the pod webhooks manage exclusive placement. So they are served, not disabled: the controller
listens on 127.0.0.1 with a certificate made for that address, and the webhook configurations of
the module are registered with a `url` pointing there (the test cluster's API server is a local
process too). On stop, those configurations go first: their failure policy is `Fail`, so left
behind they would refuse every JobSet and every JobSet pod of the cluster.

    with JobSetController(cluster) as jobsets:   # or start() / stop()
        cluster.apply(jobset_manifest(namespace, "js", workers=2))

Run one controller per cluster at a time: two would both act on every JobSet, and a start
removes the webhook configurations any earlier one left.

`JobSetUnavailable` says why the controller cannot be had here (no Go toolchain, the module not
served, no openssl); a fixture turns it into a skip with that reason.
"""

from __future__ import annotations

import base64
import copy
import json
import subprocess
import tempfile
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from tests.support.cluster import HACK, Cluster
from tests.support.scenario import free_port
from tests.support.waiting import wait_until

GROUP, VERSION = "jobset.x-k8s.io", "v1alpha2"
CRD_NAME = f"jobsets.{GROUP}"
JOBSET_NAME_LABEL = "jobset.sigs.k8s.io/jobset-name"
REPLICATED_JOB_LABEL = "jobset.sigs.k8s.io/replicatedjob-name"
# Marks the webhook configurations this helper registers, so that leftovers of a killed run
# are found and removed before the next start.
WEBHOOK_LABEL = "tsunagu.io/test-jobset-webhooks"


class JobSetUnavailable(RuntimeError):
    """The JobSet controller cannot be built or run on this machine; the message says why."""


def _tools(*args: str, timeout: float) -> str:
    try:
        result = subprocess.run(
            [str(HACK / "tools.sh"), *args],
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired as error:
        command = " ".join(args)
        raise JobSetUnavailable(f"hack/tools.sh {command} took over {timeout:.0f}s") from error
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise JobSetUnavailable(f"hack/tools.sh {' '.join(args)} failed: {last}")
    return result.stdout.strip()


def jobset_binary(build_timeout: float = 1200) -> str:
    """The JobSet controller manager, built first if the cache does not have it (~2–4 min cold)."""
    _tools("jobset", timeout=build_timeout)
    return _tools("path", "jobset-manager", timeout=30)


def jobset_module() -> Path:
    """JobSet's source in the Go module cache (where its CRD and webhook manifests are)."""
    found = Path(_tools("module", "jobset", timeout=300))
    if not (found / "config" / "components").is_dir():
        raise JobSetUnavailable(f"no config/components in JobSet's module at {found}")
    return found


def install_crds(cluster: Cluster, module: Path | None = None) -> None:
    """Applies JobSet's CRD from its module and waits until it is Established."""
    bases = (module or jobset_module()) / "config" / "components" / "crd" / "bases"
    for crd in sorted(bases.glob("*.yaml")):
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crd))

    def established() -> bool:
        crd = cluster.get_json("crd", CRD_NAME)
        conditions = (crd.get("status") or {}).get("conditions") or []
        return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)

    wait_until(established, timeout=60, interval=0.2, message=f"crd/{CRD_NAME} to be Established")


def webhook_configurations(module: Path, url: str, ca_bundle: bytes, tag: str) -> list[Any]:
    """The module's webhook configurations as its kustomization makes them (the patches give the
    pod webhooks their object selector), each webhook sent to `url` + its path instead of the
    in-cluster Service, under names of our own."""
    folder = module / "config" / "components" / "webhook"
    documents = [d for d in yaml.safe_load_all((folder / "manifests.yaml").read_text()) if d]
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    for patch in kustomization.get("patches") or []:
        target = patch["target"]
        for document in documents:
            named = document["metadata"]["name"] == target["name"]
            if document["kind"] == target["kind"] and named:
                _json_patch(document, yaml.safe_load((folder / patch["path"]).read_text()))
    encoded = base64.b64encode(ca_bundle).decode()
    for document in documents:
        kind = "mutating" if document["kind"] == "MutatingWebhookConfiguration" else "validating"
        document["metadata"] = {
            "name": f"jobset-{kind}-{tag}", "labels": {WEBHOOK_LABEL: "true"},
        }  # fmt: skip
        for webhook in document["webhooks"]:
            path = webhook["clientConfig"]["service"]["path"]
            webhook["clientConfig"] = {"url": url + path, "caBundle": encoded}
    return documents


def _json_patch(document: dict[str, Any], operations: list[dict[str, Any]]) -> None:
    """The JSON-patch operations kustomize applies to these manifests: replace and add."""
    for operation in operations:
        *parents, last = [part for part in operation["path"].split("/") if part]
        node: Any = document
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if operation["op"] not in ("replace", "add"):
            raise JobSetUnavailable(f"JSON-patch op {operation['op']!r} in JobSet's webhooks")
        if isinstance(node, list):
            index = len(node) if last == "-" else int(last)
            if operation["op"] == "add":
                node.insert(index, operation["value"])
            else:
                node[index] = operation["value"]
        else:
            node[last] = operation["value"]


def _serving_certificate(folder: Path) -> bytes:
    """A CA and a serving certificate for 127.0.0.1 signed by it, as controller-runtime reads them
    (tls.crt, tls.key in the cert dir); returns the CA for the webhooks' caBundle."""

    def openssl(*args: str) -> None:
        try:
            subprocess.run(["openssl", *args], cwd=folder, capture_output=True, check=True)
        except FileNotFoundError as error:
            raise JobSetUnavailable("openssl is not installed (the webhooks need TLS)") from error
        except subprocess.CalledProcessError as error:
            detail = error.stderr.decode()[-300:]
            raise JobSetUnavailable(f"openssl {args[0]} failed: {detail}") from error

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
            "/CN=tsunagu-test-jobset-ca", "-keyout", "ca.key", "-out", "ca.crt")  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
            "-keyout", "tls.key", "-out", "tls.csr")  # fmt: skip
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "tls.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", "tls.crt")  # fmt: skip
    return (folder / "ca.crt").read_bytes()


class JobSetController:
    """The JobSet controller manager run against one cluster, with its webhooks on loopback."""

    def __init__(self, cluster: Cluster, args: tuple[str, ...] = ()) -> None:
        self.cluster = cluster
        self.args = args
        self.process: subprocess.Popen[bytes] | None = None
        self._folder = Path(tempfile.mkdtemp(prefix="tsunagu-jobset-"))
        self.log_path = self._folder / "controller.log"
        self.webhook_port = free_port()
        self.health_port = free_port()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def output(self) -> str:
        if not self.log_path.exists():
            return ""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def start(self, timeout: float = 90) -> JobSetController:
        """Builds (if needed), installs the CRD, starts the controller, registers its webhooks and
        returns once the API server admits a JobSet through them."""
        binary = jobset_binary()
        module = jobset_module()
        install_crds(self.cluster, module)
        self._remove_webhooks()
        ca = _serving_certificate(self._folder)
        config = {
            "apiVersion": "config.jobset.x-k8s.io/v1alpha1", "kind": "Configuration",
            "leaderElection": {"leaderElect": False},
            "internalCertManagement": {"enable": False},
            "webhook": {"port": self.webhook_port, "host": "127.0.0.1",
                        "certDir": str(self._folder)},
            "health": {"healthProbeBindAddress": f"127.0.0.1:{self.health_port}"},
            "clientConnection": {"qps": 500, "burst": 500},
        }  # fmt: skip
        (self._folder / "config.yaml").write_text(yaml.safe_dump(config))
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [binary, "--kubeconfig", self.cluster.kubeconfig,
                 "--config", str(self._folder / "config.yaml"),
                 "--metrics-bind-address", "0", "--zap-devel=false", *self.args],
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        try:
            wait_until(self._ready, timeout=timeout, interval=0.5,
                       message="the JobSet controller to become ready")  # fmt: skip
            url = f"https://127.0.0.1:{self.webhook_port}"
            self.cluster.apply(webhook_configurations(module, url, ca, str(self.webhook_port)))
            wait_until(self._admits, timeout=timeout, interval=0.5,
                       message="the API server to admit a JobSet through its webhooks")  # fmt: skip
        except BaseException:
            self.stop()
            raise
        return self

    def _ready(self) -> bool:
        if not self.running:
            raise AssertionError(f"the JobSet controller exited:\n{self.output()[-4000:]}")
        with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/readyz", timeout=2) as r:
            return bool(r.status == 200)

    def _admits(self) -> bool:
        """A server-side dry run goes through the defaulting and validating webhooks."""
        probe = jobset_manifest("default", "webhook-probe", workers=1)
        result = self.cluster.kubectl(
            "create", "--dry-run=server", "-o", "json", "-f", "-", input=json.dumps(probe),
            check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise AssertionError(result.stderr.strip())
        # The defaulting webhook fills in the success policy: proof that it was called.
        return bool(json.loads(result.stdout)["spec"].get("successPolicy"))

    def _remove_webhooks(self) -> None:
        self.cluster.kubectl(
            "delete", "mutatingwebhookconfigurations,validatingwebhookconfigurations",
            "-l", f"{WEBHOOK_LABEL}=true", "--ignore-not-found", "--wait=true", check=False,
        )  # fmt: skip

    def stop(self, timeout: float = 30) -> None:
        """Webhook configurations first (they fail closed), then the process (SIGTERM, then
        SIGKILL after `timeout`)."""
        self._remove_webhooks()
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        # The log stays for a failing test to show; the keys and certificates go.
        for name in ("ca.key", "ca.crt", "ca.srl", "tls.key", "tls.csr", "tls.crt", "san.ext"):
            (self._folder / name).unlink(missing_ok=True)

    def __enter__(self) -> JobSetController:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@contextmanager
def running_jobset_controller(cluster: Cluster, *args: str) -> Iterator[JobSetController]:
    """For a fixture: `with running_jobset_controller(cluster) as c: yield c`."""
    controller = JobSetController(cluster, args)
    controller.start()
    try:
        yield controller
    finally:
        controller.stop()


def jobset_manifest(
    namespace: str,
    name: str,
    *,
    leaders: int = 1,
    workers: int = 2,
    pod_template: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A JobSet of a `leader` replicated job (one Job of `leaders` pods) and a `workers` one (one
    Job of `workers` pods), both from `pod_template` (a PodTemplateSpec; default: one container
    asking for 1 GPU). Labels, annotations and the scheduler name go in the template."""
    template = copy.deepcopy(dict(pod_template)) if pod_template else {
        "spec": {"containers": [{"name": "trainer", "image": "trainer",
                                 "resources": {"limits": {"nvidia.com/gpu": "1"}}}]},
    }  # fmt: skip
    template.setdefault("spec", {}).setdefault("restartPolicy", "Never")

    def replicated(job: str, pods: int) -> dict[str, Any]:
        return {
            "name": job, "replicas": 1,
            "template": {"spec": {"parallelism": pods, "completions": pods, "backoffLimit": 0,
                                  "template": copy.deepcopy(template)}},
        }  # fmt: skip

    jobs = [replicated("leader", leaders)] if leaders else []
    jobs.append(replicated("workers", workers))
    return {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "JobSet",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"replicatedJobs": jobs},
    }  # fmt: skip
