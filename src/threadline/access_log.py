"""What ``threadline serve`` logs about requests: paths, never their query strings,
which can carry a credential (a signed attachment URL's ``sig``, a WebSocket token).
"""

from __future__ import annotations

import copy
import logging
from typing import Any


class WithoutQueryStrings(logging.Filter):
    """Cuts ``?...`` off every argument of a record that is a request path."""

    def filter(self, record: logging.LogRecord) -> bool:
        # uvicorn passes the target as an argument ('%s - "%s %s HTTP/%s" %d'), quoted but
        # for its query, in any form ("/p?", "http://h/p?", "*?"); no other argument has a "?".
        if isinstance(record.args, tuple):
            record.args = tuple(
                arg.partition("?")[0] if isinstance(arg, str) else arg for arg in record.args
            )
        return True


def log_config(uvicorn_config: dict[str, Any]) -> dict[str, Any]:
    """uvicorn's ``LOGGING_CONFIG`` with the filter on each handler (a dictionary, so
    that every ``--workers`` process builds the same configuration)."""
    config = copy.deepcopy(uvicorn_config)
    config.setdefault("filters", {})["without_query_strings"] = {
        "()": f"{__name__}.{WithoutQueryStrings.__name__}"
    }
    for handler in config["handlers"].values():
        handler.setdefault("filters", []).append("without_query_strings")
    return config
