"""Inventory: read the agent's specs and the ledger, list the store, learn history."""

from __future__ import annotations

import logging

from controller.context import RunContext
from controller.disk import disk_usage
from controller.ledger import load_ledger, save_ledger
from controller.spec import read_spec_dir

log = logging.getLogger("edgeprune")


def handle(ctx: RunContext) -> str:
    # A pull or update in progress changes what the plan must keep: plan after it.
    ctx.control.wait_for_release()
    # Specs and ledger first: unreadable input must stop the run before any
    # Podman call, let alone a removal.
    specs = read_spec_dir(ctx.config.spec_dir)
    ledger = load_ledger(ctx.config.state_dir)
    now = ctx.clock()
    inventory = ctx.store.inventory(now)
    if ctx.disk_before is None:  # a replan keeps the run's first measurement
        ctx.disk_before = disk_usage(inventory.storage_path)

    ledger.record_specs(specs, now)
    ledger.record_images((image.id for image in inventory.images), now)
    ledger.trim(ctx.config.retain_previous + 1)
    if not ctx.dry_run:
        save_ledger(ctx.config.state_dir, ledger)

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
