"""Remove: one planned image at a time, never with force.

Before each item the spec generation is read again: if the agent applied or
started a new spec since Plan, the plan may be stale, so removal stops and the
run goes back to Inventory (at most `max_replans` times). An image is removed
by each of its planned names rather than by ID, so a name the agent added
after Plan survives (removing one name of several only untags).
"""

from __future__ import annotations

import logging

from controller.context import RunContext, present
from controller.model import Image, RemovalOutcome
from controller.podman import ImageInUse, PodmanError, PodmanUnavailable
from controller.spec import read_generations

log = logging.getLogger("edgeprune")


class ReplanLimitReached(RuntimeError):
    """The spec kept changing under the run; stop and let the next request retry."""


def _remove_one(ctx: RunContext, image: Image) -> RemovalOutcome:
    targets = image.names or (image.id,)
    deleted = False
    for target in targets:
        try:
            result = ctx.store.remove_image(target)
        except ImageInUse as error:
            return RemovalOutcome(image, "in-use", str(error), error.containers)
        except PodmanUnavailable:
            raise  # the store is gone: nothing else can be removed either
        except PodmanError as error:
            return RemovalOutcome(image, "error", str(error))
        deleted = deleted or result.status == "removed"
    return RemovalOutcome(image, "removed" if deleted else "already-gone")


def handle(ctx: RunContext) -> str:
    plan = present(ctx.plan, "plan")
    done = {o.image.id for o in ctx.outcomes}
    for decision in plan.removals:
        if decision.image.id in done:
            continue
        if ctx.should_pause():
            ctx.notes.append("removal paused by a hold; replanning")
            return _replan(ctx, "a hold is open")
        current, desired = read_generations(ctx.config.spec_dir)
        if (current, desired) != (plan.spec_generation, plan.desired_generation):
            return _replan(
                ctx,
                f"spec generation changed since Plan (current {plan.spec_generation}->{current},"
                f" desired {plan.desired_generation}->{desired})",
            )
        outcome = _remove_one(ctx, decision.image)
        ctx.outcomes.append(outcome)
        _log_outcome(outcome)
    return "removed"


def _replan(ctx: RunContext, why: str) -> str:
    if ctx.replans >= ctx.max_replans:
        raise ReplanLimitReached(f"{why}; replanned {ctx.replans} times already")
    ctx.replans += 1
    log.info("stopping removal and replanning: %s", why)
    return "replan"


def _log_outcome(outcome: RemovalOutcome) -> None:
    image = outcome.image
    names = ", ".join(image.names) or "<none>"
    if outcome.status == "removed":
        log.info(
            "removed image %s (%s), %s bytes",
            names,
            image.short_id,
            image.unique_size if image.unique_size is not None else "unknown",
        )
    elif outcome.status == "already-gone":
        log.info("image %s (%s) was already gone", names, image.short_id)
    elif outcome.status == "in-use":
        log.warning(
            "kept image %s (%s): in use by %s",
            names,
            image.short_id,
            ", ".join(outcome.containers) or "a container",
        )
    else:
        log.warning("failed to remove image %s (%s): %s", names, image.short_id, outcome.detail)
