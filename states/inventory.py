"""Inventory: read the agent's specs and the ledger, list the stores, learn history.

The agent's own store is listed first; failing to reach it fails the run
(it holds the OS images, the packages and the apps without runAs). Every
other user's store is reached in turn; one that cannot be resolved or
reached is skipped and reported, and the others still run. Each store's
artifacts are listed next to its images; a Podman without artifacts is
reported once per store, and artifacts that cannot be listed are left alone.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from opentelemetry import trace

from controller.artifacts import ArtifactStore
from controller.bootc import read_bootc_images
from controller.context import RunContext, StoreRun
from controller.disk import disk_usage
from controller.ledger import Ledger, LedgerError, load_ledger, save_ledger
from controller.packages import MAX_PACKAGE_BYTES, resolve_packages
from controller.podman import PodmanError, PodmanUnavailable
from controller.spec import SpecSet, read_spec_dir
from controller.stores import StoreTarget, resolve_stores, run_as_users

log = logging.getLogger("edgeprune")


def handle(ctx: RunContext) -> str:
    # A pull or update in progress changes what the plan must keep: plan after it.
    ctx.control.wait_for_release()
    # Specs and ledger first: unreadable input must stop the run before any
    # Podman call, let alone a removal.
    specs = read_spec_dir(ctx.config.spec_dir)
    ledger = load_ledger(ctx.config.state_dir)
    now = ctx.clock()
    # Learn the applied generation before any Podman call: a run that fails
    # later (Podman restarting, a store unreachable) must not lose it, or the
    # next generation's run would not know this one's images as the previous.
    if ledger.record_specs(specs, now):
        _save(ctx, ledger)
    inventory = ctx.store.inventory(now)
    # bootc's deployments stay bootable offline; a bootc that answers badly fails the run.
    bootc_command = ctx.config.bootc_command
    bootc = read_bootc_images(str(bootc_command) if bootc_command else None)
    if bootc is not None:
        inventory = replace(inventory, os_images=bootc.refs)
    # Packages' inner references join their apps before history is learned.
    resolution = resolve_packages(
        specs,
        inventory,
        ledger,
        lambda image_id: ctx.store.export_image(image_id, MAX_PACKAGE_BYTES),
        now,
    )
    specs = resolution.specs
    for note in resolution.notes:
        if note not in ctx.notes:
            ctx.notes.append(note)
            log.warning("%s", note)
    if ctx.disk_before is None:  # a replan keeps the run's first measurement
        ctx.disk_before = disk_usage(inventory.storage_path)
    ctx.inventory = inventory
    _list_artifacts(ctx, ctx.agent_store)  # unreachable here fails the run, like the images
    _inventoried(ctx.agent_store)
    _inventory_other_stores(ctx, specs, ledger, now)

    ledger.record_specs(specs, now)
    # IDs and artifacts of every store reached; a skipped store's are forgotten
    # (its min-age clock restarts when it is back: the safe direction).
    ledger.record_images(_seen_keys(ctx), now)
    ledger.trim(ctx.config.retain_previous + 1)
    _save(ctx, ledger)

    ctx.specs, ctx.ledger, ctx.inventory = specs, ledger, inventory
    for problem in specs.current.resource_problems:  # reported, but no reason to stop
        note = f"{specs.current.file}: malformed disk monitor ignored: {problem}"
        if note not in ctx.notes:
            ctx.notes.append(note)
    log.debug(
        "inventory: %d images, %d containers, current generation %s",
        len(inventory.images),
        len(inventory.containers),
        specs.current.generation or "?",
    )
    return "inventoried"


def _save(ctx: RunContext, ledger: Ledger) -> None:
    try:
        save_ledger(ctx.config.state_dir, ledger)
    except (LedgerError, OSError) as error:
        # A dry run only observes (`edgeprune plan` may run without write access):
        # it goes on without saving; a real run must not remove what it cannot record.
        if not ctx.dry_run:
            raise
        note = f"dry run: ledger not saved: {error}"
        if note not in ctx.notes:
            ctx.notes.append(note)


def _inventory_other_stores(ctx: RunContext, specs: SpecSet, ledger: Ledger, now: float) -> None:
    targets, unresolved = resolve_stores(ctx.config, run_as_users(specs, ledger))
    runs = {run.user: run for run in ctx.stores}
    for skipped in unresolved:
        if skipped.user not in runs:
            run = StoreRun(StoreTarget(skipped.user, skipped.url, users=frozenset({skipped.user})))
            ctx.stores.append(run)
            _skip(ctx, run, skipped.reason)
    for target in targets[1:]:
        run = runs.get(target.user)
        if run is None:
            run = StoreRun(target)
            ctx.stores.append(run)
        if run.skipped is not None:  # a replan does not return to a store given up on
            continue
        try:
            if run.store is None:
                run.store = ctx.connect(target)
                run.store.tracer = ctx.store.tracer
            run.inventory = run.store.inventory(now)
            _list_artifacts(ctx, run)
        except Exception as error:  # any failure of another user's store skips it alone
            _skip(ctx, run, f"not reached at {target.url}: {error}")
            continue
        _refuse_shared_store(ctx, run)
        if run.disk_before is None:
            run.disk_before = disk_usage(run.inventory.storage_path)
        _inventoried(run)


class SharedStoreError(RuntimeError):
    """Two store targets reach one store: each plan would miss the other's keep-set."""


def _refuse_shared_store(ctx: RunContext, run: StoreRun) -> None:
    assert run.inventory is not None
    root = run.inventory.storage_path
    for other in ctx.stores:
        if other is run or other.inventory is None or other.skipped is not None:
            continue
        if root and other.inventory.storage_path == root:
            raise SharedStoreError(
                f"the stores of {other.user} and {run.user} are one store (graphRoot {root}):"
                " pruning it as two would remove what the other's apps need; give each user"
                " its own store URL"
            )


def _list_artifacts(ctx: RunContext, run: StoreRun) -> None:
    store, inventory = run.store, run.inventory
    assert store is not None and inventory is not None
    if run.artifacts is None:  # how to reach them is found out once per run
        run.artifacts = ArtifactStore(
            store, ctx.artifact_source(run.target), expect_graph_root=inventory.storage_path
        )
    try:
        run.listing = run.artifacts.list()
    except PodmanUnavailable:
        raise
    except PodmanError as error:
        # Unknown artifacts are never removed; the images are still pruned.
        run.listing = None
        _note(ctx, run, f"artifacts not listed, none removed: {error}")
        return
    for note in run.listing.notes:
        _note(ctx, run, f"artifacts: {note}")


def _skip(ctx: RunContext, run: StoreRun, reason: str) -> None:
    run.skipped, run.inventory, run.plan = reason, None, None
    _note(ctx, run, f"skipped: {reason}")
    log.warning("store of %s skipped: %s", run.user, reason)
    trace.get_current_span().add_event("store.skipped", {"store": run.user, "reason": reason})


def _inventoried(run: StoreRun) -> None:
    inventory = run.inventory
    assert inventory is not None
    listing = run.listing
    trace.get_current_span().add_event(
        "store.inventoried",
        {
            "store": run.user,
            "images": len(inventory.images),
            "containers": len(inventory.containers),
            "artifacts": len(listing.artifacts) if listing is not None else 0,
            "artifact_access": listing.access.value if listing is not None else "unlisted",
        },
    )


def _note(ctx: RunContext, run: StoreRun, text: str) -> None:
    ctx.note(f"store {run.user}: {text}")


def _seen_keys(ctx: RunContext) -> list[str]:
    keys: list[str] = []
    for run in ctx.active_stores:
        assert run.inventory is not None
        ids = [image.id for image in run.inventory.images]
        if run.listing is not None:
            ids += [a.as_image().id for a in run.listing.artifacts]
        keys += [run.target.seen_key(key) for key in ids]
    return keys
