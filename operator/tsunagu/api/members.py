"""Names of what the hub makes in a member cluster, and how a member's nodes are told apart.

A member's node names are qualified by the member's name inside the operator (`<cluster>/<node>`:
a Kubernetes name has no `/`, so two clusters' `gpu-0001` never meet); the objects sent to the
member carry the plain name again.

In a member the hub's TrainingJob does not exist, so its pods cannot be owned by it: an anchor
ConfigMap per job (`tsunagu-<job>`) owns the gang's pods and Service there, and labels carry the hub
job's namespace, name and uid. Deleting the anchor lets the member's garbage collector remove the
rest.
"""

from __future__ import annotations

from typing import Final

# On every object the hub makes in a member.
HUB_NAMESPACE_LABEL: Final = "tsunagu.io/hub-namespace"
HUB_JOB_LABEL: Final = "tsunagu.io/hub-job"
HUB_JOB_UID_LABEL: Final = "tsunagu.io/hub-job-uid"
# On a hub TrainingJob while objects of it may exist in a member: its deletion waits for them.
MEMBER_OBJECTS_FINALIZER: Final = "tsunagu.io/member-objects"
ANCHOR_KIND: Final = "ConfigMap"
_ANCHOR_PREFIX: Final = "tsunagu-"
_SEPARATOR: Final = "/"


def anchor_name(job_name: str) -> str:
    return f"{_ANCHOR_PREFIX}{job_name}"


def qualified_node(cluster: str | None, node: str) -> str:
    """The operator's name of a node: plain in the hub, `<cluster>/<node>` in a member."""
    return f"{cluster}{_SEPARATOR}{node}" if cluster else node


def split_node(qualified: str) -> tuple[str | None, str]:
    """(member or None for the hub, the node's own name)."""
    cluster, separator, node = qualified.partition(_SEPARATOR)
    return (cluster, node) if separator else (None, qualified)
