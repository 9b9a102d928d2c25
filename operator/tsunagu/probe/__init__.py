"""The inter-region latency probe (`tsunagu probe`): TCP echo, round-trip timing, metrics."""
