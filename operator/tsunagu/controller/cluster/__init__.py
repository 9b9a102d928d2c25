"""One connection per cluster: its API client, its pod watch and the view of its nodes and pods."""
