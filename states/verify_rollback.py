"""VerifyRollback: the pre-check that guards rollback images before any removal.

1. Every image the current spec runs from (in this store) must be present; if
   one is missing the device could not even restart its apps offline, so
   nothing is removed and the run fails.
2. Retained previous versions that are missing only degrade the rollback: the
   run goes on and the report says which.
3. Independently of the planner, no planned removal may resolve to an image
   or artifact that a spec or a retained version names. This catches a
   planner bug before it costs a rollback.

Each store is checked against its own plan. An image-backed volume of the
current spec counts as required like the app's images (the app cannot
restart offline without its content): it must resolve to an image or, where
the store's artifacts could be listed, to an artifact. A failed check in the
agent's store fails the run; in another user's store it leaves that store
out of removal (reported), since the agent's store has nothing to do with it.
"""

from __future__ import annotations

import logging

from controller.artifacts import Access
from controller.context import RunContext, StoreRun, present
from controller.references import ImageIndex

log = logging.getLogger("edgeprune")


class RollbackCheckFailed(RuntimeError):
    """The pre-check refused the plan; nothing was removed."""


def handle(ctx: RunContext) -> str:
    present(ctx.plan, "plan")
    for run in ctx.active_stores:
        try:
            _check_store(run)
        except RollbackCheckFailed as error:
            if run.target.agent:
                raise
            run.skipped = f"pre-check refused its plan: {error}"
            ctx.note(f"store {run.user}: skipped: {run.skipped}")
            log.warning("store of %s left out of removal: %s", run.user, error)
    return "dry_run_done" if ctx.dry_run else "verified"


def _check_store(run: StoreRun) -> None:
    plan, inventory = present(run.plan, "plan"), present(run.inventory, "inventory")
    index = ImageIndex(inventory.images)
    listing = run.listing
    artifacts = listing.artifacts if listing is not None else ()
    both = ImageIndex((*inventory.images, *(a.as_image() for a in artifacts)))
    where = "the store" if run.target.agent else f"the store of {run.user}"

    missing = [ref for ref in plan.required_refs if not index.lookup(ref)]
    if listing is not None and listing.access is not Access.NONE:
        missing += [ref for ref in plan.required_volumes if not both.lookup(ref)]
    if missing:
        raise RollbackCheckFailed(
            "image(s) of the current spec (generation "
            f"{plan.spec_generation or '?'}) are not in {where}: {', '.join(missing)}; "
            "refusing to remove anything until the device's own images are present"
        )

    run.rollback_missing = [ref for ref in plan.retained_refs if not index.lookup(ref)]
    for ref in run.rollback_missing:
        log.warning(
            "rollback degraded: retained previous-version image %s is not in %s", ref, where
        )

    protected: dict[str, str] = {}
    for ref in plan.protected_refs:
        for image in both.lookup(ref):
            protected.setdefault(image.id, ref)
    clashes = [
        f"{d.image.short_id} (needed by {protected[d.image.id]})"
        for d in plan.removals
        if d.image.id in protected
    ]
    clashes += [
        f"artifact {d.artifact.label} (needed by {protected[key]})"
        for d in plan.artifact_removals
        if (key := d.artifact.as_image().id) in protected
    ]
    if clashes:
        raise RollbackCheckFailed(f"plan would remove protected item(s): {', '.join(clashes)}")
