"""Inventory: read the agent's specs and the ledger, list the store, learn history."""

from __future__ import annotations

import logging
from dataclasses import replace

from controller.bootc import read_bootc_images
from controller.context import RunContext
from controller.disk import disk_usage
from controller.ledger import LedgerError, load_ledger, save_ledger
from controller.packages import MAX_PACKAGE_BYTES, resolve_packages
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

    ledger.record_specs(specs, now)
    ledger.record_images((image.id for image in inventory.images), now)
    ledger.trim(ctx.config.retain_previous + 1)
    try:
        save_ledger(ctx.config.state_dir, ledger)
    except (LedgerError, OSError) as error:
        # A dry run only observes (`edgeprune plan` may run without write access):
        # it goes on without saving; a real run must not remove what it cannot record.
        if not ctx.dry_run:
            raise
        ctx.notes.append(f"dry run: ledger not saved: {error}")

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
