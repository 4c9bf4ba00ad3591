"""Domain errors: what went wrong, as a code that clients switch on (``extensions.code``);
the GraphQL layer masks anything else as INTERNAL_SERVER_ERROR."""

from __future__ import annotations

import math
from enum import StrEnum
from typing import Any, ClassVar


class ErrorCode(StrEnum):
    UNAUTHENTICATED = "UNAUTHENTICATED"
    FORBIDDEN = "FORBIDDEN"
    NOT_FOUND = "NOT_FOUND"
    BAD_USER_INPUT = "BAD_USER_INPUT"
    CONFLICT = "CONFLICT"
    RATE_LIMITED = "RATE_LIMITED"
    PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
    QUERY_TOO_COSTLY = "QUERY_TOO_COSTLY"
    SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"
    INTERNAL_SERVER_ERROR = "INTERNAL_SERVER_ERROR"


class DomainError(Exception):
    """Base of every error a client may see; ``extensions`` add structured fields."""

    code: ClassVar[ErrorCode] = ErrorCode.INTERNAL_SERVER_ERROR

    def __init__(self, message: str, **extensions: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extensions = extensions


class Unauthenticated(DomainError):
    code = ErrorCode.UNAUTHENTICATED


class SignedOut(Unauthenticated):
    """A valid token whose Clerk session ended or whose user was deleted: no fresh
    token of it will do (a WebSocket closes with 4401, not 4403)."""


class Forbidden(DomainError):
    code = ErrorCode.FORBIDDEN


class NotFound(DomainError):
    code = ErrorCode.NOT_FOUND


class BadInput(DomainError):
    code = ErrorCode.BAD_USER_INPUT


class Conflict(DomainError):
    code = ErrorCode.CONFLICT


class PayloadTooLarge(DomainError):
    code = ErrorCode.PAYLOAD_TOO_LARGE


class QueryTooCostly(DomainError):
    """A document whose estimated cost is over the limit, refused before it runs."""

    code = ErrorCode.QUERY_TOO_COSTLY

    def __init__(self, cost: int, max_cost: int) -> None:
        super().__init__(
            f"the query's estimated cost {cost} is over the limit of {max_cost}; "
            "ask for smaller pages or fewer nested connections",
            cost=cost,
            maxCost=max_cost,
        )


class _RetryLater(DomainError):
    def __init__(self, message: str, retry_after: float = 1) -> None:
        # Whole seconds, rounded up, so that a client that waits that long gets through.
        seconds = max(1, math.ceil(retry_after))
        super().__init__(message, retryAfter=seconds)
        self.retry_after = seconds


class RateLimited(_RetryLater):
    code = ErrorCode.RATE_LIMITED


class ServiceUnavailable(_RetryLater):
    """A dependency the operation needs (Redis, for presence and typing) is down;
    nothing was changed."""

    code = ErrorCode.SERVICE_UNAVAILABLE
