"""VerifyRollback: the pre-check that guards rollback images before any removal.

1. Every image the current spec runs from (in this store) must be present; if
   one is missing the device could not even restart its apps offline, so
   nothing is removed and the run fails.
2. Retained previous versions that are missing only degrade the rollback: the
   run goes on and the report says which.
3. Independently of the planner, no planned removal may resolve to an image
   that a spec or a retained version names. This catches a planner bug before
   it costs a rollback.
"""

from __future__ import annotations

import logging

from controller.context import RunContext, present
from controller.references import ImageIndex

log = logging.getLogger("edgeprune")


class RollbackCheckFailed(RuntimeError):
    """The pre-check refused the plan; nothing was removed."""


def handle(ctx: RunContext) -> str:
    plan = present(ctx.plan, "plan")
    inventory = present(ctx.inventory, "inventory")
    index = ImageIndex(inventory.images)

    missing = [ref for ref in plan.required_refs if not index.lookup(ref)]
    if missing:
        raise RollbackCheckFailed(
            "image(s) of the current spec (generation "
            f"{plan.spec_generation or '?'}) are not in the store: {', '.join(missing)}; "
            "refusing to remove anything until the device's own images are present"
        )

    ctx.rollback_missing = [ref for ref in plan.retained_refs if not index.lookup(ref)]
    for ref in ctx.rollback_missing:
        log.warning(
            "rollback degraded: retained previous-version image %s is not in the store", ref
        )

    protected: dict[str, str] = {}
    for ref in plan.protected_refs:
        for image in index.lookup(ref):
            protected.setdefault(image.id, ref)
    clashes = [
        f"{d.image.short_id} (needed by {protected[d.image.id]})"
        for d in plan.removals
        if d.image.id in protected
    ]
    if clashes:
        raise RollbackCheckFailed(f"plan would remove protected image(s): {', '.join(clashes)}")
    return "dry_run_done" if ctx.dry_run else "verified"
