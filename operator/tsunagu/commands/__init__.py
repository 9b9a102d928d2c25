"""Subcommands of the `tsunagu` CLI, one module each."""
