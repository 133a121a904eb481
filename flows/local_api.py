"""A real local Prefect API for the length of one command-line run, where the run needs one.

Prefect's temporary in-process API (what a plain `python -m flows.retrain` uses) cannot serve Dask worker
processes: each would start its own. So a `runner=dask` run without a configured API brings up a real
server on 127.0.0.1 (`flows.serve.start_server`), points itself and its workers at it, and stops it after.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def for_runner(runner: str) -> Iterator[None]:
    """With runner=dask and no Prefect API configured, a real local API while the block runs; otherwise (threads,
    or an API already configured by a deployment or `make serve`) nothing changes."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    if runner != "dask" or PREFECT_API_URL.value():
        yield
        return
    from flows import serve

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    api_url = f"http://127.0.0.1:{port}/api"
    print(f"runner=dask: starting a local Prefect API at {api_url} for the Dask workers", file=sys.stderr)
    server = serve.start_server("127.0.0.1", port, serve.prefect_env(api_url))
    os.environ["PREFECT_API_URL"] = api_url  # inherited by the Dask worker processes
    try:
        with temporary_settings(updates={PREFECT_API_URL: api_url}):
            yield
    finally:
        # Deliver the run's last logs and events while the API is still up: otherwise Prefect's background
        # workers retry against a stopped server at interpreter exit, for over a minute.
        from prefect.events.worker import EventsWorker
        from prefect.logging.handlers import APILogWorker

        for worker in (APILogWorker, EventsWorker):
            worker.drain_all(timeout=15)
        os.environ.pop("PREFECT_API_URL", None)
        serve.stop(server)
