"""The things a user runs: `python -m flows.retrain`, `python -m flows.predict`, `python -m flows.registry`.

Importing this package sets quiet, offline-friendly defaults for the libraries underneath, before they are
imported (each can still be overridden from the environment):
- Prefect's telemetry off (it logs "database is locked" tracebacks under the temporary local API);
- Prefect forwards the `tasks` loggers, so step progress reaches the console and the run's logs in the UI;
- TensorFlow's C++ start-up chatter off.
"""

import os

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# The temporary local API can take a while to start on a busy 2-core machine.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "tasks,core")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Plain step functions also log outside a flow run (--validate-only, tests): nothing to send to the API then.
os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")

import logging  # noqa: E402

# Prefect attaches its handlers to the `tasks` and `core` loggers (above) but not a level: progress is INFO.
for _name in ("tasks", "core"):
    logging.getLogger(_name).setLevel(logging.INFO)
