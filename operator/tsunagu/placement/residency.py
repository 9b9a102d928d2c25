"""Data residency: where a dataset allows compute, and where copies of its data live."""

from __future__ import annotations

from tsunagu.api.types import DatasetSpec, ResidencyMode


def residency_allows(dataset: DatasetSpec, region: str) -> bool:
    """Whether the dataset's rules let a job compute in `region` (the home always may)."""
    residency = dataset.residency
    if region == dataset.home_region:
        return True
    if residency.mode is ResidencyMode.Pinned:
        return False
    if residency.mode is ResidencyMode.Replicated:
        return region in residency.replica_regions
    if residency.allowed_regions and region not in residency.allowed_regions:
        return False
    return region not in residency.denied_regions


def data_sites(dataset: DatasetSpec) -> tuple[str, ...]:
    """Regions holding a copy of the data: the home, plus replicas of a Replicated dataset."""
    sites = {dataset.home_region}
    if dataset.residency.mode is ResidencyMode.Replicated:
        sites |= dataset.residency.replica_regions
    return tuple(sorted(sites))
