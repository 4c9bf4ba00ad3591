"""The root value a graphql-transport-ws operation gets from its transport.

It carries the operation's direct sink and the frame renderer: a broadcast threadEvents
joins ``realtime.fanout`` with ``broadcast.BroadcastFrames`` and detaches from its
GraphQL stream.
"""

from __future__ import annotations

from dataclasses import dataclass

from strawberry import Info

from threadline.realtime.sinks import DirectSink
from threadline.subscriptions.broadcast import FrameRenderer


@dataclass(slots=True, eq=False)
class OperationRoot:
    sink: DirectSink
    frames: FrameRenderer


def operation_root(info: Info) -> OperationRoot | None:
    """The operation's root, when its transport can take frames directly."""
    root = info.root_value
    return root if isinstance(root, OperationRoot) else None
