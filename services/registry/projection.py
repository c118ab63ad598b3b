"""The registry's read model as a projection: HostsView, fed by potluck.events' Fold.

HostsView (potluck.readmodels.hosts) is the pure fold of host events that the
allocator and `potluck ops replay` share; this adapter only gives it the shape
a `Fold` feeds (`categories`, `apply(event, record)`), so the registry folds
the log the one way every reader does: an event it cannot decode is counted in
`fold.skipped`, logged, and folding goes on.

The view's `position` says how far the log has been folded, host events or
not (`replay --check` compares the registry at that position); a projection
only sees host events, so the Fold's position is copied back after each batch.
"""

from potluck.events import Event, EventStore, Fold, RecordedEvent, SkippedEvents
from potluck.events.checkpoints import Checkpoints
from potluck.readmodels.hosts import HOST_FOLD_VERSION, HostsView

__all__ = [
    "HOST_CATEGORIES",
    "READER",
    "HostsProjection",
    "host_checkpoints",
    "hosts_fold",
    "rebuild_view",
    "resumed_view",
]

HOST_CATEGORIES = frozenset({"host"})

#: The registry's name as a reader of the log (its checkpoints are kept under it).
READER = "registry"


class HostsProjection:
    """HostsView under the `Projection` protocol."""

    categories = HOST_CATEGORIES

    def __init__(self, view: HostsView) -> None:
        self.view = view

    def apply(self, event: Event, record: RecordedEvent) -> None:
        self.view.apply(event, position=record.position, version=record.version, at=record.recorded_at)

    def passed_over(self, record: RecordedEvent) -> None:
        """A host event the Fold could not read: its version still counts (VersionedProjection)."""
        self.view.passed_over(record.stream.partition("-")[2], version=record.version)

    def caught_up(self, fold: Fold) -> None:
        """The view has folded everything up to the fold's position (the events of other categories too)."""
        self.view.position = max(self.view.position, fold.position)


def hosts_fold(view: HostsView, *, reader: str = "registry") -> Fold:
    """A Fold of the log into `view`, from the position the view has reached, keeping its position."""
    projection = HostsProjection(view)
    fold = Fold(projection, reader=reader, position=view.position)
    fold.after_batch.append(lambda _batch: projection.caught_up(fold))
    return fold


async def rebuild_view(
    store: EventStore, view: HostsView, batch: int = 5000, *, reader: str = "registry"
) -> SkippedEvents:
    """Fold what the log holds now into `view`; returns the events it could not decode."""
    projection = HostsProjection(view)
    fold = Fold(projection, reader=reader, position=view.position)
    await fold.catch_up(store, batch_size=batch)
    projection.caught_up(fold)
    return fold.skipped


def host_checkpoints(store: EventStore) -> Checkpoints:
    """The registry's checkpoints of its view: (HostsView, SkippedEvents) at a log position."""
    return Checkpoints(store, READER, "registry-hosts", HOST_FOLD_VERSION)


async def resumed_view(store: EventStore) -> HostsView:
    """The hosts as the log has them now: from the registry's newest checkpoint this code can
    read, then the log after it (a fold from zero without one). What the registry itself does
    as it starts; `potluck ops replay` never reads checkpoints, and compares."""
    view = HostsView()
    checkpoint = await host_checkpoints(store).load()
    if checkpoint is not None:
        view, _ = checkpoint.state
        view.position = max(view.position, checkpoint.position)
    await rebuild_view(store, view)
    return view
