"""Wiring and shutdown: the operator built from its settings, and how Kopf runs it."""
