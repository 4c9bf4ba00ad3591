"""What joins a graphql-transport-ws operation to the process's live fan-out.

The transport gives each operation an ``OperationRoot`` (its direct sink, the frame
renderer) as root value; a broadcast threadEvents joins ``realtime.fanout`` with a
``BroadcastFrames`` and detaches from its GraphQL stream.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

from strawberry import Info

from threadline.realtime.sinks import DirectSink
from threadline.runtime import Runtime
from threadline.services.events import LoggedEvent, shows_deleted
from threadline.subscriptions.broadcast import FrameRenderer, OperationTemplate
from threadline.subscriptions.rendering import rendered


@dataclass(slots=True, eq=False)
class OperationRoot:
    """The root value of one graphql-transport-ws operation."""

    sink: DirectSink
    frames: FrameRenderer


def operation_root(info: Info) -> OperationRoot | None:
    """The operation's root, when its transport can take frames directly."""
    root = info.root_value
    return root if isinstance(root, OperationRoot) else None


class BroadcastFrames:
    """A broadcast operation's frames, as the fan-out asks for them (``FrameSource``)."""

    __slots__ = ("_frames", "_runtime", "key", "template")

    def __init__(
        self, template: OperationTemplate, frames: FrameRenderer, runtime: Runtime
    ) -> None:
        self.template = template
        self.key: tuple[Hashable, ...] = template.key
        self._frames = frames
        self._runtime = runtime

    async def render(self, event: LoggedEvent, horizon: int) -> str:
        runtime = self._runtime
        # By the horizon too: a frame rendered live shows the messages it nests (a
        # reply's parent) as they were then; one of them deleted since must not come
        # back in the same event replayed from the log (whose horizon is later).
        return await self._frames.render(
            self.template,
            (event.thread_id, event.seq, shows_deleted(event), horizon),
            lambda: rendered(runtime, event),
        )
