"""Validate: the post-check. Rollback images still present; space measured.

The store is listed again: every image the current spec and the retained
versions resolved to before removal must still be there. Reclaimed space is
measured on the storage filesystem (free bytes after minus before) and shown
next to the estimate from the removed images' unique sizes; shared layers are
never counted as freed.

Each store that took part in removal is checked and measured; an artifact
that a current image-backed volume resolved to must still be there too.
Losing another user's store now only leaves it unchecked (reported).
"""

from __future__ import annotations

from controller.context import RunContext, StoreRun, present
from controller.disk import disk_usage
from controller.podman import PodmanUnavailable
from controller.references import ImageIndex


class RollbackImageLost(RuntimeError):
    """An image a rollback needs disappeared during the run."""


def handle(ctx: RunContext) -> str:
    present(ctx.plan, "plan")
    lost: list[str] = []
    for run in ctx.active_stores:
        try:
            lost += _lost_in(run)
        except PodmanUnavailable as error:
            if run.target.agent:
                raise
            ctx.note(f"store {run.user}: not post-checked, lost: {error}")
    if lost:
        raise RollbackImageLost(
            f"image(s) needed for rollback disappeared during the run: {', '.join(sorted(lost))}"
        )
    return "validated"


def _lost_in(run: StoreRun) -> list[str]:
    plan, before = present(run.plan, "plan"), present(run.inventory, "inventory")
    assert run.store is not None
    present_ids = run.store.image_ids()
    index = ImageIndex(before.images)
    suffix = "" if run.target.agent else f" (store {run.user})"
    lost: list[str] = []
    for ref in (*plan.required_refs, *plan.retained_refs):
        ids = {image.id for image in index.lookup(ref)}
        if ids and not ids & present_ids:
            lost.append(ref + suffix)
    if run.listing is not None and run.artifact_outcomes and plan.required_volumes:
        assert run.artifacts is not None
        had = ImageIndex(a.as_image() for a in run.listing.artifacts)
        now = {a.as_image().id for a in run.artifacts.list().artifacts}
        for ref in plan.required_volumes:
            ids = {item.id for item in had.lookup(ref)}
            if ids and not ids & now:
                lost.append(ref + suffix)
    run.disk_after = disk_usage(before.storage_path)
    return lost
