"""Computed states the domain reports: presence and a message's delivery status."""

from __future__ import annotations

from enum import StrEnum


class PresenceStatus(StrEnum):
    ONLINE = "ONLINE"
    AWAY = "AWAY"
    OFFLINE = "OFFLINE"


class MessageStatus(StrEnum):
    SENT = "SENT"
    DELIVERED = "DELIVERED"
    READ = "READ"
