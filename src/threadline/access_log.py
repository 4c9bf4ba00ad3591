"""What ``threadline serve`` logs about requests: paths, never their query strings.

A query string can carry a credential: a signed attachment URL's ``exp`` and ``sig``
(valid for up to an hour), a token a WebSocket client put in its URL. uvicorn logs
the full path of every request (``uvicorn.access``) and WebSocket handshake
(``uvicorn.error``); the filter below cuts the query off before a line is written.
"""

from __future__ import annotations

import copy
import logging
from typing import Any


class WithoutQueryStrings(logging.Filter):
    """Cuts ``?...`` off every argument of a record that is a request path."""

    def filter(self, record: logging.LogRecord) -> bool:
        # uvicorn passes the path as an argument ('%s - "%s %s HTTP/%s" %d'); the
        # client address ("1.2.3.4:5") and the method never start with "/".
        if isinstance(record.args, tuple):
            record.args = tuple(_without_query(arg) for arg in record.args)
        return True


def _without_query(value: object) -> object:
    if isinstance(value, str) and value.startswith("/"):
        return value.partition("?")[0]
    return value


def log_config(uvicorn_config: dict[str, Any]) -> dict[str, Any]:
    """uvicorn's logging configuration (``uvicorn.config.LOGGING_CONFIG``), with the
    filter on each of its handlers.

    A dictionary (not a filter added at run time) so that every ``--workers`` process
    builds the same configuration.
    """
    config = copy.deepcopy(uvicorn_config)
    config.setdefault("filters", {})["without_query_strings"] = {
        "()": f"{__name__}.{WithoutQueryStrings.__name__}"
    }
    for handler in config["handlers"].values():
        handler.setdefault("filters", []).append("without_query_strings")
    return config
