"""tsunagu: place GPU training jobs by measured inter-site latency and data residency."""

__version__ = "0.1.0"
