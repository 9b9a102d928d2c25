"""`tsunagu run`: start the operator. What can be checked before it starts is (the kubeconfig,
the API server, the CRDs, the ports): a problem there is one line naming the flag or the file,
and exit status 2."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import os
import sys
from typing import Any

from tsunagu.controller.settings import OperatorSettings, from_args
from tsunagu.controller.settings import add_arguments as add_operator_arguments

EXIT_STARTUP_ERROR = 2


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

    from tsunagu.controller.startup.preflight import StartupError

    settings = from_args(args)
    _name_the_user()
    serving = settings.serving
    kopf.configure(
        verbose=serving.verbose,
        log_format=kopf.LogFormat.JSON if serving.log_format == "json" else kopf.LogFormat.PLAIN,
    )
    logging.getLogger("tsunagu").setLevel(logging.DEBUG if serving.verbose else logging.INFO)
    if not serving.verbose:
        # "Handler succeeded" for every watch event would drown what matters.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    try:
        asyncio.run(_run(settings))
    except StartupError as error:
        print(f"tsunagu run: {error}", file=sys.stderr)
        return EXIT_STARTUP_ERROR
    except KeyboardInterrupt:
        return 130
    return 0


async def _run(settings: OperatorSettings) -> None:
    import kopf
    from prometheus_client import start_http_server

    import tsunagu.controller.handlers  # noqa: F401 - registers the Kopf handlers
    from tsunagu.controller.startup import preflight
    from tsunagu.controller.startup.health import HealthServer
    from tsunagu.controller.startup.operator import connect

    serving = settings.serving
    configuration = await preflight.client_configuration()
    client = connect(settings, configuration)
    health = HealthServer(settings.health)
    try:
        await preflight.check_crds(client)
        if serving.liveness_port:
            await preflight.bind("--liveness-port", serving.liveness_port, health.listen)
        if serving.metrics_port:
            await preflight.bind("--metrics-port", serving.metrics_port, start_http_server)
    except BaseException:
        await health.close()
        await client.close()
        raise
    memo: Any = kopf.Memo(settings=settings, client=client, health=health)
    try:
        await kopf.operator(
            standalone=True,
            clusterwide=not settings.namespaces,
            namespaces=list(settings.namespaces),
            memo=memo,
        )
    finally:
        await health.close()
