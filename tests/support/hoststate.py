"""What real nodes change on the host, looked at directly: the check that `hack/realnodes.sh down`
put everything back. The sysctl values, nft tables and directories of before come from what the
script recorded at `up`; everything else is checked against the absence of anything of ours."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.support.cluster import HACK
from tests.support.realnodes import ALL_NODE_NAMES, REAL_STATE

RECORD = REAL_STATE / "real"
OUR_CHAIN = re.compile(r"^(:|-A )(KUBE|CNI)-")
OUR_LINK = re.compile(r"^\d+: (tsn\d+|veth[0-9a-f]+)[@:]", re.MULTILINE)


@dataclass(frozen=True)
class RecordedHost:
    sysctls: dict[str, str]
    nft_tables: set[str]
    dirs: set[str]
    runtime_dirs: tuple[str, ...]


def _lines(path: Path) -> list[str]:
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line]


def recorded_host_state() -> RecordedHost:
    """What hack/realnodes.sh recorded before it started anything; read it before `down`."""
    sysctls = dict(line.split("=", 1) for line in _lines(RECORD / "sysctl.before"))
    script = (HACK / "realnodes-host.sh").read_text(encoding="utf-8")
    runtime = re.search(r"RUNTIME_DIRS=\(([^)]*)\)", script)
    assert runtime, "RUNTIME_DIRS not found in hack/realnodes-host.sh"
    return RecordedHost(
        sysctls=sysctls,
        nft_tables=set(_lines(RECORD / "nft.before")),
        dirs=set(_lines(RECORD / "dirs.before")),
        runtime_dirs=tuple(runtime.group(1).split()),
    )


def _run(*command: str) -> str:
    if shutil.which(command[0]) is None:
        return ""
    return subprocess.run(command, capture_output=True, text=True, check=False).stdout


def host_leftovers(before: RecordedHost) -> list[str]:
    """Everything of the real nodes still on the host, one line each; empty when it is clean."""
    found: list[str] = []
    state = str(REAL_STATE)
    for proc in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            command = proc.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if f"{state}/real" in command:
            found.append(f"process {proc.parent.name}: {command[:120]}")
    for line in Path("/proc/self/mountinfo").read_text(encoding="utf-8").splitlines():
        mount_point = line.split()[4]
        if mount_point.startswith((f"{state}/real", "/run/netns/cni-", "/run/containerd")):
            found.append(f"mount {mount_point}")
    for name in ALL_NODE_NAMES:
        found += [f"cgroup {path}" for path in Path("/sys/fs/cgroup").glob(f"*/tsunagu-{name}")]
        found += [f"cgroup {path}" for path in Path("/sys/fs/cgroup").glob(f"tsunagu-{name}")]
    for family in ("iptables-save", "ip6tables-save"):
        found += [
            f"{family}: {line[:100]}" for line in _run(family).splitlines() if OUR_CHAIN.match(line)
        ]
    found += [f"link {m.group(1)}" for m in OUR_LINK.finditer(_run("ip", "-o", "link", "show"))]
    tables = {line for line in _run("nft", "list", "tables").splitlines() if line}
    found += [f"nft {table}" for table in sorted(tables - before.nft_tables)]
    found += [
        f"directory {path}"
        for path in before.runtime_dirs
        if path not in before.dirs and Path(path).exists()
    ]
    for key, value in before.sysctls.items():
        now = _run("sysctl", "-n", key).strip()
        if now != value:
            found.append(f"sysctl {key}={now} (was {value})")
    return found
