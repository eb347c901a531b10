"""Validate: the post-check. Rollback images still present; space measured.

The store is listed again: every image the current spec and the retained
versions resolved to before removal must still be there. Reclaimed space is
measured on the storage filesystem (free bytes after minus before) and shown
next to the estimate from the removed images' unique sizes; shared layers are
never counted as freed.
"""

from __future__ import annotations

from controller.context import RunContext, present
from controller.disk import disk_usage
from controller.references import ImageIndex


class RollbackImageLost(RuntimeError):
    """An image a rollback needs disappeared during the run."""


def handle(ctx: RunContext) -> str:
    plan = present(ctx.plan, "plan")
    before = present(ctx.inventory, "inventory")
    present_ids = ctx.store.image_ids()
    index = ImageIndex(before.images)
    lost: list[str] = []
    for ref in (*plan.required_refs, *plan.retained_refs):
        ids = {image.id for image in index.lookup(ref)}
        if ids and not ids & present_ids:
            lost.append(ref)
    ctx.disk_after = disk_usage(before.storage_path)
    if lost:
        raise RollbackImageLost(
            f"image(s) needed for rollback disappeared during the run: {', '.join(sorted(lost))}"
        )
    return "validated"
