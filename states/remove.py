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

Stores are handled in turn (the agent's first), each store's images before
its artifacts. An artifact is removed by name, never with force; one Podman
cannot remove (unnamed) is reported, not fatal. Losing the agent's store
fails the run; losing another user's store ends removal there only.
"""

from __future__ import annotations

import logging

from opentelemetry import trace

from controller.artifacts import ArtifactStore
from controller.context import HOLD, STOP, RunContext, StoreRun, artifact_key, present
from controller.model import (
    ArtifactDecision,
    ArtifactOutcome,
    Decision,
    Image,
    RemovalOutcome,
)
from controller.podman import ImageInUse, PodmanError, PodmanStore, PodmanUnavailable
from controller.report import Item
from controller.spec import read_generations

log = logging.getLogger("edgeprune")


class ReplanLimitReached(RuntimeError):
    """The spec kept changing under the run; stop and let the next request retry."""


_UNTAGGED = "gained a name after Plan; only the planned names were removed, the image stays"
_RENAMED = "gained a name after Plan; not removed"


def _remove_one(store: PodmanStore, image: Image) -> RemovalOutcome:
    if not image.names:
        # Removal by ID deletes the image whatever names it has now: a pull that
        # landed on this content since Plan gave it one. Look again first.
        try:
            current = store.image_names(image.id)
        except PodmanUnavailable:
            raise
        except PodmanError as error:
            return RemovalOutcome(image, "error", str(error))
        if current is None:
            return RemovalOutcome(image, "already-gone")
        if current:
            return RemovalOutcome(image, "renamed", _RENAMED)
    targets = image.names or (image.id,)
    # A list's name given to remove_image would delete the image it lists.
    remove = store.remove_manifest_list if image.is_manifest_list else store.remove_image
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
        return RemovalOutcome(image, "untagged", _UNTAGGED)
    return RemovalOutcome(image, "already-gone")


def _remove_artifact(artifacts: ArtifactStore, decision: ArtifactDecision) -> ArtifactOutcome:
    artifact = decision.artifact
    try:
        removal = artifacts.remove(artifact)  # by name; Podman has no force for artifacts
    except PodmanUnavailable:
        raise
    except PodmanError as error:
        return ArtifactOutcome(artifact, "error", str(error))
    return ArtifactOutcome(artifact, removal.status, removal.detail)


Pending = Decision | ArtifactDecision


def _pending(run: StoreRun) -> list[Pending]:
    plan = present(run.plan, "plan")
    done_images = {o.image.id for o in run.outcomes}
    done_artifacts = {artifact_key(o) for o in run.artifact_outcomes}
    images: list[Pending] = [d for d in plan.removals if d.image.id not in done_images]
    return images + [d for d in plan.artifact_removals if artifact_key(d) not in done_artifacts]


def handle(ctx: RunContext) -> str:
    agent_plan = present(ctx.plan, "plan")
    for run in ctx.active_stores:
        for decision in _pending(run):
            # The guard keeps the check and the removal together: a hold opened
            # meanwhile waits for this one item instead of racing it.
            with ctx.control.removal() as halt:
                if halt == STOP:
                    return _stop(ctx)
                if halt == HOLD:
                    ctx.hold_replans += 1
                    if ctx.hold_replans == 1:
                        ctx.notes.append("removal paused by a hold; replanned")
                    log.info("stopping removal and replanning: the host opened a hold")
                    return "replan"
                current, desired = read_generations(ctx.config.spec_dir)
                plan = agent_plan
                if (current, desired) != (plan.spec_generation, plan.desired_generation):
                    return _replan(
                        ctx,
                        "spec generation changed since Plan (current "
                        f"{plan.spec_generation}->{current}, desired "
                        f"{plan.desired_generation}->{desired})",
                    )
                try:
                    _remove_and_record(run, decision)
                except PodmanUnavailable as error:
                    if run.target.agent:
                        raise  # the agent's store is gone: the run fails, as before
                    run.skipped = f"lost during removal: {error}"
                    ctx.note(f"store {run.user}: {run.skipped}")
                    log.warning("store of %s lost during removal: %s", run.user, error)
                    break
    return "removed"


def _remove_and_record(run: StoreRun, decision: Pending) -> None:
    assert run.store is not None
    if isinstance(decision, Decision):
        outcome = _remove_one(run.store, decision.image)
        run.outcomes.append(outcome)
        item = Item.of(outcome.image, decision.reasons, store=run.user)
        _log_outcome(item, outcome.status, outcome.detail, outcome.containers)
    else:
        assert run.artifacts is not None
        result = _remove_artifact(run.artifacts, decision)
        run.artifact_outcomes.append(result)
        item = Item.of_artifact(result.artifact, decision.reasons, store=run.user)
        _log_outcome(item, result.status, result.detail, ())


def _stop(ctx: RunContext) -> str:
    left = sum(len(_pending(run)) for run in ctx.active_stores)
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


def _log_outcome(item: Item, status: str, detail: str, containers: tuple[str, ...]) -> None:
    """One log line and one `removal` event on the Remove span per item."""
    names = ", ".join(item.names) or "<none>"
    short_id = item.id.removeprefix("sha256:")[:12]
    fields: dict[str, object] = {
        "result": status,
        "kind": item.kind,
        "store": item.store,
        "names": list(item.names),
        "id": item.id,
        "bytes": item.size_bytes,
        "reasons": list(item.reasons),  # why the plan let it go
    }
    if detail:
        fields["detail"] = detail
    if containers:
        fields["containers"] = list(containers)
    trace.get_current_span().add_event("removal", fields)  # type: ignore[arg-type]
    extra = {"fields": {"event": "item." + status, **fields}}
    if status == "removed":
        log.info(
            "removed %s %s (%s), %d bytes", item.kind, names, short_id, item.size_bytes, extra=extra
        )
    elif status == "already-gone":
        log.info("%s %s (%s) was already gone", item.kind, names, short_id, extra=extra)
    elif status == "untagged":
        log.info("untagged %s %s (%s): %s", item.kind, names, short_id, detail, extra=extra)
    elif status == "renamed":
        log.info("kept %s %s (%s): %s", item.kind, names, short_id, detail, extra=extra)
    elif status == "not-removable":
        log.warning("kept %s %s (%s): %s", item.kind, names, short_id, detail, extra=extra)
    elif status == "in-use":
        holders = ", ".join(containers) or "a container"
        log.warning(
            "kept %s %s (%s): in use by %s", item.kind, names, short_id, holders, extra=extra
        )
    else:
        log.warning(
            "failed to remove %s %s (%s): %s",
            item.kind,
            names,
            short_id,
            detail,
            extra=extra,
        )
