"""`tsunagu run`: start the operator."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import os

from tsunagu.controller.settings import add_arguments as add_operator_arguments
from tsunagu.controller.settings import from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_operator_arguments(parser)


def _name_the_user() -> None:
    """Kopf names the operator after its user (`getpass.getuser`), which fails for a UID with
    no passwd entry and no USER in the environment — the image's 65532, in any cluster."""
    try:
        getpass.getuser()
    except (KeyError, OSError):
        os.environ["USER"] = "tsunagu"


def execute(args: argparse.Namespace) -> int:
    import kopf
    from prometheus_client import start_http_server

    import tsunagu.controller.handlers  # noqa: F401 - registers the Kopf handlers

    settings = from_args(args)
    _name_the_user()
    serving = settings.serving
    kopf.configure(
        verbose=serving.verbose,
        log_format=kopf.LogFormat.JSON if serving.log_format == "json" else kopf.LogFormat.PLAIN,
    )
    if serving.metrics_port:
        start_http_server(serving.metrics_port)
    liveness = f"http://0.0.0.0:{serving.liveness_port}/healthz" if serving.liveness_port else None
    logging.getLogger("tsunagu").setLevel(logging.DEBUG if serving.verbose else logging.INFO)
    if not serving.verbose:
        # "Handler succeeded" for every watch event would drown what matters.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    try:
        asyncio.run(
            kopf.operator(
                standalone=True,
                clusterwide=not settings.namespaces,
                namespaces=list(settings.namespaces),
                liveness_endpoint=liveness,
                memo=kopf.Memo(settings=settings),
            )
        )
    except KeyboardInterrupt:
        return 130
    return 0
