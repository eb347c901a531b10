"""Remove: one planned image at a time, never with force.

Before each item the spec generation is read again: if the agent applied or
started a new spec since Plan, the plan may be stale, so removal stops and the
run goes back to Inventory (at most `max_replans` times). A hold opened by
the host agent (a pull or update) also stops removal and replans; those
replans are not limited, since each one waits in Inventory for the hold to
close. On shutdown, removal stops after the current item and Validate still
runs. An image is removed by each of its planned names rather than by ID, so
a name the agent added after Plan survives (removing one name of several only
untags).
"""

from __future__ import annotations

import logging

from opentelemetry import trace

from controller.context import HOLD, STOP, RunContext, present
from controller.model import Decision, Image, RemovalOutcome
from controller.podman import ImageInUse, PodmanError, PodmanUnavailable
from controller.report import Item
from controller.spec import read_generations

log = logging.getLogger("edgeprune")


class ReplanLimitReached(RuntimeError):
    """The spec kept changing under the run; stop and let the next request retry."""


def _remove_one(ctx: RunContext, image: Image) -> RemovalOutcome:
    targets = image.names or (image.id,)
    # A list's name given to remove_image would delete the image it lists.
    remove = ctx.store.remove_manifest_list if image.is_manifest_list else ctx.store.remove_image
    deleted = untagged = False
    for target in targets:
        try:
            result = remove(target)
        except ImageInUse as error:
            return RemovalOutcome(image, "in-use", str(error), error.containers)
        except PodmanUnavailable:
            raise  # the store is gone: nothing else can be removed either
        except PodmanError as error:
            return RemovalOutcome(image, "error", str(error))
        deleted = deleted or result.status == "removed"
        untagged = untagged or result.status == "untagged"
    if deleted:
        return RemovalOutcome(image, "removed")
    if untagged:  # every planned name is gone, but the image gained another one
        return RemovalOutcome(
            image,
            "untagged",
            "gained a name after Plan; only the planned names were removed, the image stays",
        )
    return RemovalOutcome(image, "already-gone")


def handle(ctx: RunContext) -> str:
    plan = present(ctx.plan, "plan")
    done = {o.image.id for o in ctx.outcomes}
    for decision in plan.removals:
        if decision.image.id in done:
            continue
        # The guard keeps the check and the removal together: a hold opened
        # meanwhile waits for this one item instead of racing it.
        with ctx.control.removal() as halt:
            if halt == STOP:
                return _stop(ctx, plan.removals, done)
            if halt == HOLD:
                ctx.hold_replans += 1
                if ctx.hold_replans == 1:
                    ctx.notes.append("removal paused by a hold; replanned")
                log.info("stopping removal and replanning: the host opened a hold")
                return "replan"
            current, desired = read_generations(ctx.config.spec_dir)
            if (current, desired) != (plan.spec_generation, plan.desired_generation):
                return _replan(
                    ctx,
                    "spec generation changed since Plan (current "
                    f"{plan.spec_generation}->{current}, desired "
                    f"{plan.desired_generation}->{desired})",
                )
            outcome = _remove_one(ctx, decision.image)
        ctx.outcomes.append(outcome)
        done.add(decision.image.id)
        _log_outcome(outcome, decision)
    return "removed"


def _stop(ctx: RunContext, removals: tuple[Decision, ...], done: set[str]) -> str:
    left = sum(1 for d in removals if d.image.id not in done)
    ctx.stopped = True
    ctx.notes.append(f"stopped by shutdown; {left} planned removal(s) left for the next run")
    log.info("shutdown: removal stopped with %d planned removal(s) left", left)
    return "removed"  # Validate still checks the rollback images and measures


def _replan(ctx: RunContext, why: str) -> str:
    if ctx.replans >= ctx.max_replans:
        raise ReplanLimitReached(f"{why}; replanned {ctx.replans} times already")
    ctx.replans += 1
    log.info("stopping removal and replanning: %s", why)
    return "replan"


def _log_outcome(outcome: RemovalOutcome, decision: Decision) -> None:
    """One log line and one `removal` event on the Remove span per item."""
    item = Item.of(outcome.image, decision.reasons)
    names = ", ".join(item.names) or "<none>"
    short_id = outcome.image.short_id
    fields: dict[str, object] = {
        "result": outcome.status,
        "kind": item.kind,
        "names": list(item.names),
        "id": item.id,
        "bytes": item.size_bytes,
        "reasons": list(item.reasons),  # why the plan let it go
    }
    if outcome.detail:
        fields["detail"] = outcome.detail
    if outcome.containers:
        fields["containers"] = list(outcome.containers)
    trace.get_current_span().add_event("removal", fields)  # type: ignore[arg-type]
    extra = {"fields": {"event": "item." + outcome.status, **fields}}
    if outcome.status == "removed":
        log.info(
            "removed %s %s (%s), %d bytes", item.kind, names, short_id, item.size_bytes, extra=extra
        )
    elif outcome.status == "already-gone":
        log.info("%s %s (%s) was already gone", item.kind, names, short_id, extra=extra)
    elif outcome.status == "untagged":
        log.info("untagged %s %s (%s): %s", item.kind, names, short_id, outcome.detail, extra=extra)
    elif outcome.status == "in-use":
        holders = ", ".join(outcome.containers) or "a container"
        log.warning(
            "kept %s %s (%s): in use by %s", item.kind, names, short_id, holders, extra=extra
        )
    else:
        log.warning(
            "failed to remove %s %s (%s): %s",
            item.kind,
            names,
            short_id,
            outcome.detail,
            extra=extra,
        )
