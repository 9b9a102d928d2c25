"""Names of the tsunagu API and of the Kubernetes objects it reads and writes.

Every other layer spells group, plurals, labels and resource names through these constants so
that a rename is one edit.
"""

from __future__ import annotations

from typing import Final

GROUP: Final = "tsunagu.io"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"

# Kinds as written in `kind:`.
REGION_KIND: Final = "Region"
CLUSTER_KIND: Final = "Cluster"
DATASET_KIND: Final = "Dataset"
TRAINING_JOB_KIND: Final = "TrainingJob"
NODE_KIND: Final = "Node"
POD_KIND: Final = "Pod"

# Plurals as used in API paths and by Kopf handlers.
REGIONS: Final = "regions"
CLUSTERS: Final = "clusters"
DATASETS: Final = "datasets"
TRAINING_JOBS: Final = "trainingjobs"
THROUGHPUT_PROFILES: Final = "throughputprofiles"

GPU_RESOURCE: Final = "nvidia.com/gpu"
CPU_RESOURCE: Final = "cpu"
MEMORY_RESOURCE: Final = "memory"
EPHEMERAL_STORAGE_RESOURCE: Final = "ephemeral-storage"
# status.allocatable.pods: how many pods the node runs at most.
PODS_RESOURCE: Final = "pods"
# The taint a cordoned node is treated as carrying (NodeUnschedulable plugin).
UNSCHEDULABLE_TAINT_KEY: Final = "node.kubernetes.io/unschedulable"
REGION_LABEL: Final = "topology.kubernetes.io/region"
GPU_PRODUCT_LABEL: Final = "nvidia.com/gpu.product"

# Labels tsunagu puts on the pods of a TrainingJob.
JOB_LABEL: Final = "tsunagu.io/job"
RANK_LABEL: Final = "tsunagu.io/rank"
REGION_POD_LABEL: Final = "tsunagu.io/region"

SCHEDULER_NAME: Final = "tsunagu"
