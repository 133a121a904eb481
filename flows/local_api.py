"""A local Prefect API for the length of one command-line run, where no API is configured.

Without `PREFECT_API_URL` (no `make serve`, no deployment), Prefect starts a temporary API server of its own
when the flow starts: uvicorn serving `prefect.server.api.server:create_app`, no UI, no background services
(`prefect.server.api.server.SubprocessASGIServer`). That costs a warm re-run most of its time: the server takes
5-7 s to boot, and before it is even started this process spends ~2 s importing Prefect's server module, after
~2 s importing Prefect and our steps. So `python -m flows.retrain` starts the same server itself, first thing,
before those imports (`TemporaryAPI.start`, standard library only): it boots while they run.

Once Prefect is imported, `for_run` decides: with an API configured after all (a Prefect profile can set one),
the early server is stopped unused; otherwise the run waits for it, uses it, and stops it at the end. The same
server serves a `runner=dask` run's worker processes (its URL goes into their environment), which Prefect's
own temporary API could not: each worker would start another.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from flows.serve import free_port, wait_for_api


class TemporaryAPI:
    """Prefect's temporary API server as a child process of this one (in its process group, so whatever kills
    the run's group kills it too). Start it with `start()`, wait for it with `wait()`, end it with `stop()`."""

    def __init__(self, process: subprocess.Popen, port: int):
        self.process, self.port = process, port
        self.url = f"http://127.0.0.1:{port}/api"

    @classmethod
    def start(cls) -> TemporaryAPI:
        """Spawn the server on a free port of 127.0.0.1 and return at once (it boots in the background). The
        command and environment are those of Prefect's own `SubprocessASGIServer` (Prefect 3)."""
        # Prefect creates its home (where the server's default database lives) when its settings load; this
        # process has not loaded them yet, and the server could otherwise fail with "unable to open database file".
        Path(os.environ.get("PREFECT_HOME") or "~/.prefect").expanduser().mkdir(parents=True, exist_ok=True)
        port = free_port()
        env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
        env.pop("PREFECT_API_URL", None)
        process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", "prefect.server.api.server:create_app", "--host",
             "127.0.0.1", "--port", str(port), "--log-level", "error", "--lifespan", "on"],
            env=env, stdin=subprocess.DEVNULL)
        return cls(process, port)

    def wait(self, timeout: float) -> None:
        """Block until the API answers its health check; raises RuntimeError if the server exits or does not
        answer within `timeout` seconds (PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, as Prefect's)."""
        try:
            wait_for_api(self.url, self.process, timeout, interval=0.1)
        except (RuntimeError, TimeoutError) as exc:
            raise RuntimeError(f"Prefect's temporary API did not come up: {exc}. Point PREFECT_API_URL at a running "
                               "server (`make serve`), or raise PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS "
                               "on a busy machine") from None

    def stop(self) -> None:
        """Terminate the server (SIGTERM, then SIGKILL after 5 s, as Prefect does) and reap it."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def wanted(argv: list[str]) -> bool:
    """Whether `python -m flows.retrain argv` will run the flow with no API in the environment: not for
    `--help` or `--validate-only` (no flow), nor when `PREFECT_API_URL` is set."""
    return not os.environ.get("PREFECT_API_URL") and not {"-h", "--help", "--validate-only"} & set(argv)


@contextlib.contextmanager
def for_run(runner: str, early: TemporaryAPI | None) -> Iterator[None]:
    """The API for the block's flow run: a configured one (environment or Prefect profile) as it is; otherwise
    `early` (started at process start; or now, if there is none), pointed at by this process and, through the
    environment, by a Dask run's workers, and stopped after the block."""
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, temporary_settings

    if PREFECT_API_URL.value():
        if early is not None:
            early.stop()  # a profile configures an API: the early server is not needed
        yield
        return
    api = early or TemporaryAPI.start()
    try:
        api.wait(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value())
        print(f"Prefect API: a temporary one at {api.url} for this run (no PREFECT_API_URL set; `make serve` keeps "
              f"one running){', for the Dask workers too' if runner == 'dask' else ''}", file=sys.stderr)
        os.environ["PREFECT_API_URL"] = api.url  # inherited by Dask worker processes
        try:
            with temporary_settings(updates={PREFECT_API_URL: api.url}):
                yield
        finally:
            # Deliver the run's last logs and events while the API is still up: otherwise Prefect's background
            # workers retry against a stopped server at interpreter exit, for over a minute.
            from prefect.events.worker import EventsWorker
            from prefect.logging.handlers import APILogWorker

            for worker in (APILogWorker, EventsWorker):
                worker.drain_all(timeout=15)
            os.environ.pop("PREFECT_API_URL", None)
    finally:
        api.stop()
