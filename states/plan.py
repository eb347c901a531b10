"""Plan: the pure planner. Data in, decisions out; no I/O, no clock.

Every image and artifact gets a decision and every reason that applies (not
just the first), so an operator can see all the rules that protect it. It is
removable only when no keep rule of design.md section 4 holds.

One plan covers one store: only the apps that run from it (by `runAs`) and
their retained versions protect anything there; the OS images belong to the
agent's store. Artifacts go through the same rules as images: each is
indexed as an image with its name and digest, so a reference keeps it
whether it names an artifact or an image.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from controller.context import RunContext, StoreRun, present
from controller.ledger import ANY_STORE, ROOT_STORE, Ledger
from controller.model import (
    Action,
    Artifact,
    ArtifactDecision,
    Decision,
    Image,
    Inventory,
    Plan,
    Reason,
    Rule,
)
from controller.references import ImageIndex, ReferenceError, pattern_matches
from controller.spec import AppSpec, DeviceSpec, SpecSet
from controller.stores import StoreTarget

# Podman's own infrastructure images: removing them breaks pods.
BUILTIN_PINS: tuple[str, ...] = (
    "localhost/podman-pause:*",
    "*/pause:*",
)

_NEVER_SEEN = "never seen in a spec by edgeprune"

SCOPE_MANAGED = "managed"
SCOPE_ALL = "all"

# A plan input without a store: the agent's store, for apps without runAs.
AGENT_STORE = StoreTarget(ROOT_STORE, "", agent=True)


@dataclass(frozen=True)
class PlanInput:
    inventory: Inventory
    specs: SpecSet
    ledger: Ledger
    now: float
    scope: str = SCOPE_MANAGED
    retain_previous: int = 1
    min_age_seconds: float = 120.0
    pinned: tuple[str, ...] = ()
    # The store being planned: only its apps' references protect anything in it.
    store: StoreTarget = AGENT_STORE
    artifacts: tuple[Artifact, ...] = ()


class _Keeps:
    """Keep reasons collected per image ID."""

    def __init__(self, index: ImageIndex) -> None:
        self.index = index
        self.reasons: dict[str, list[Reason]] = defaultdict(list)

    def add(self, image: Image, rule: Rule, detail: str) -> None:
        reason = Reason(rule, detail)
        if reason not in self.reasons[image.id]:
            self.reasons[image.id].append(reason)

    def add_ref(self, ref: str, rule: Rule, detail: str) -> list[Image]:
        images = self.index.lookup(ref)
        for image in images:
            self.add(image, rule, f"{detail}: {ref}")
        return images


def _spec_label(spec: DeviceSpec) -> str:
    name = spec.file.rsplit("/", 1)[-1]
    return f"{name} (generation {spec.generation or '?'})"


def _keep_spec_refs(keeps: _Keeps, spec: DeviceSpec, store: StoreTarget) -> list[str]:
    """Rules 1 and 4: everything a spec file names for this store; returns the refs."""
    label = _spec_label(spec)
    protected: list[str] = []
    for app in _apps_in(spec, store):
        for ref in sorted(app.refs):
            keeps.add_ref(ref, Rule.REFERENCED, f"{label} app '{app.name}'")
            protected.append(ref)
    if spec.os_image and store.agent:
        keeps.add_ref(spec.os_image, Rule.OS_IMAGE, f"OS image of {label}")
        protected.append(spec.os_image)
    return protected


def _apps_in(spec: DeviceSpec, store: StoreTarget) -> list[AppSpec]:
    return [app for app in spec.apps if (app.run_as or ROOT_STORE) in store.users]


def _keep_retained(keeps: _Keeps, inp: PlanInput) -> tuple[list[str], list[str]]:
    """Rule 2: current + N previous versions of each app and N previous generations.

    Returns (protected refs, runnable images of previous versions in this store).
    """
    protected: list[str] = []
    runnable: list[str] = []
    n = inp.retain_previous
    users = inp.store.users
    for app in inp.specs.current.apps:
        versions = inp.ledger.app_versions(app.name, n)
        for version in versions[1:]:  # [0] is the current version, kept by rule 1
            # A version's store is where it ran (unknown: every store keeps it).
            if version.store not in users and version.store != ANY_STORE:
                continue
            detail = f"app '{app.name}' previous version (generation {version.generation})"
            for ref in version.refs:
                keeps.add_ref(ref, Rule.RETENTION, detail)
            protected.extend(version.refs)
            if version.store in users:
                runnable.extend(version.images)
    for generation in inp.ledger.previous_generations(n):
        detail = f"previously applied spec (generation {generation.generation})"
        refs = generation.refs_in(users)
        for ref in refs:
            keeps.add_ref(ref, Rule.RETENTION, detail)
        protected.extend(refs)
    return protected, runnable


def _keep_in_use(keeps: _Keeps, inp: PlanInput) -> None:
    """Rule 3: any container, whatever its state, holds its image."""
    by_id = inp.inventory.by_id()
    for container in inp.inventory.containers:
        image = by_id.get(container.image_id)
        if image is not None:
            keeps.add(image, Rule.IN_USE, f"container {container.label}")


def _keep_os_images(keeps: _Keeps, inp: PlanInput) -> None:
    """Rule 4: booted, staged and rollback OS images reported by bootc."""
    for ref in inp.inventory.os_images:
        keeps.add_ref(ref, Rule.OS_IMAGE, "booted/staged/rollback OS image")


def _keep_pinned(keeps: _Keeps, images: Iterable[Image], pins: tuple[str, ...]) -> None:
    """Rule 5: configured and built-in pin patterns."""
    for image in images:
        for pattern in (*pins, *BUILTIN_PINS):
            if pattern_matches(pattern, image):
                source = "built-in pin" if pattern in BUILTIN_PINS else "pinned"
                keeps.add(image, Rule.PINNED, f"{source} pattern '{pattern}'")


def _keep_young(keeps: _Keeps, images: Iterable[Image], inp: PlanInput) -> None:
    """Rule 6: an image first seen less than min-age ago may be about to be used."""
    for image in images:
        first_seen = inp.ledger.first_seen.get(inp.store.seen_key(image.id), inp.now)
        age = inp.now - first_seen
        if age < inp.min_age_seconds:
            keeps.add(
                image,
                Rule.MIN_AGE,
                f"first seen {age:.0f}s ago (min-age {inp.min_age_seconds:.0f}s)",
            )


def _managed_ids(index: ImageIndex, referenced: Iterable[str]) -> set[str]:
    ids: set[str] = set()
    for ref in referenced:
        try:
            ids.update(image.id for image in index.lookup(ref))
        except ReferenceError:
            continue  # an unparseable historic entry cannot name anything
    return ids


def _unread_packages(specs: SpecSet) -> list[str]:
    return sorted(
        {
            pkg
            for spec in (specs.desired, specs.current, specs.rollback)
            for app in spec.apps
            for pkg in app.packages
        }
    )


def _keep_scope(keeps: _Keeps, images: Iterable[Image], inp: PlanInput, managed: set[str]) -> None:
    """Rule 8, and two guards for what edgeprune cannot know."""
    packages = _unread_packages(inp.specs)
    observed = len(inp.ledger.previous_generations(inp.retain_previous))
    history_short = inp.scope == SCOPE_ALL and observed < inp.retain_previous
    for image in images:
        known = image.id in managed
        named = bool(image.names or image.repo_digests)
        if packages and named:
            # Any name at all may be named inside a package we could not read.
            keeps.add(
                image,
                Rule.UNREAD_PACKAGE,
                f"may be named inside image package(s) {', '.join(packages)}",
            )
        if history_short and not known and named:
            # Generations applied before edgeprune watched are unknown: an image
            # it never saw in a spec may be the previous version a rollback needs.
            keeps.add(
                image,
                Rule.HISTORY_INCOMPLETE,
                f"edgeprune has observed {observed} of the {inp.retain_previous} previous "
                "generation(s) it must retain; this image may belong to one it never saw",
            )
        if inp.scope == SCOPE_MANAGED and not known and not image.dangling:
            keeps.add(image, Rule.OUT_OF_SCOPE, f"{_NEVER_SEEN} (scope: managed)")


def _keep_manifest_instances(keeps: _Keeps, images: tuple[Image, ...]) -> None:
    """Rule 7: what a kept manifest list references stays, transitively."""
    by_digest: dict[str, list[Image]] = defaultdict(list)
    for image in images:
        for digest in image.digests:
            by_digest[digest].append(image)
    pending = [i for i in images if i.is_manifest_list and keeps.reasons.get(i.id)]
    seen: set[str] = set()
    while pending:
        manifest = pending.pop()
        if manifest.id in seen:
            continue
        seen.add(manifest.id)
        label = manifest.names[0] if manifest.names else manifest.short_id
        for digest in manifest.manifest_instances:
            for image in by_digest.get(digest, ()):
                keeps.add(image, Rule.MANIFEST_LIST, f"instance of kept manifest list {label}")
                if image.is_manifest_list:
                    pending.append(image)


def _removal_reason(image: Image, managed: set[str]) -> Reason:
    if image.dangling:
        return Reason(Rule.DANGLING, "no name, no container, no reference")
    if image.id in managed:
        return Reason(
            Rule.UNREFERENCED,
            "referenced by the agent before; no spec or retained version needs it",
        )
    return Reason(Rule.UNMANAGED, f"{_NEVER_SEEN} (scope: all)")


def _removal_order(decision: Decision) -> tuple[int, str]:
    # Manifest lists first: removing a list can free its instances for the next run.
    image = decision.image
    rank = 0 if image.is_manifest_list else (2 if image.dangling else 1)
    return rank, image.names[0] if image.names else image.id


def required_refs(spec: DeviceSpec, store: StoreTarget = AGENT_STORE) -> tuple[str, ...]:
    """Images the current spec runs from in this store: they must be present."""
    return tuple(sorted({ref for app in _apps_in(spec, store) for ref in app.images}))


def required_volumes(spec: DeviceSpec, store: StoreTarget = AGENT_STORE) -> tuple[str, ...]:
    """Image-backed volumes of the current spec's apps in this store."""
    return tuple(sorted({ref for app in _apps_in(spec, store) for ref in app.volume_refs}))


def make_plan(inp: PlanInput) -> Plan:
    by_pseudo = {a.as_image().id: a for a in inp.artifacts}
    images = (*inp.inventory.images, *(a.as_image() for a in inp.artifacts))
    index = ImageIndex(images)
    keeps = _Keeps(index)
    protected: list[str] = []
    for spec in (inp.specs.current, inp.specs.desired, inp.specs.rollback):
        protected += _keep_spec_refs(keeps, spec, inp.store)
    retained, runnable = _keep_retained(keeps, inp)
    protected += retained
    _keep_in_use(keeps, inp)
    if inp.store.agent:  # the OS images live in the agent's (root) store only
        _keep_os_images(keeps, inp)
        protected += inp.inventory.os_images
    _keep_pinned(keeps, images, inp.pinned)
    _keep_young(keeps, images, inp)
    managed = _managed_ids(index, inp.ledger.referenced)
    _keep_scope(keeps, images, inp, managed)
    _keep_manifest_instances(keeps, images)

    decisions = []
    artifact_decisions = []
    for image in images:
        reasons = keeps.reasons.get(image.id)
        action, why = (
            (Action.KEEP, tuple(reasons))
            if reasons
            else (Action.REMOVE, (_removal_reason(image, managed),))
        )
        if image.id in by_pseudo:
            artifact_decisions.append(ArtifactDecision(by_pseudo[image.id], action, why))
        else:
            decisions.append(Decision(image, action, why))
    kept = [d for d in decisions if d.action is Action.KEEP]
    removals = sorted((d for d in decisions if d.action is Action.REMOVE), key=_removal_order)
    return Plan(
        decisions=tuple(removals + kept),
        spec_generation=inp.specs.current.generation,
        desired_generation=inp.specs.desired.generation,
        required_refs=required_refs(inp.specs.current, inp.store),
        retained_refs=tuple(sorted(set(runnable))),
        protected_refs=tuple(sorted(set(protected))),
        artifact_decisions=tuple(
            sorted(artifact_decisions, key=lambda d: d.action is Action.KEEP)  # removals first
        ),
        required_volumes=required_volumes(inp.specs.current, inp.store),
    )


def handle(ctx: RunContext) -> str:
    """The Plan state: run the pure planner over each store Inventory gathered."""
    present(ctx.inventory, "inventory")
    busy = False
    for run in ctx.active_stores:
        plan = _plan_store(ctx, run)
        run.plan = plan
        run.removal_decisions.update((d.image.id, d) for d in plan.removals)
        run.artifact_removal_decisions.update(
            ((d.artifact.name, d.artifact.digest), d) for d in plan.artifact_removals
        )
        # After a replan, what this run already removed still needs the post-check.
        busy = busy or plan.removes_anything or run.attempted
    return "planned" if busy else "nothing_to_prune"


def _plan_store(ctx: RunContext, run: StoreRun) -> Plan:
    return make_plan(
        PlanInput(
            inventory=present(run.inventory, "inventory"),
            specs=present(ctx.specs, "specs"),
            ledger=present(ctx.ledger, "ledger"),
            now=ctx.clock(),
            scope=ctx.config.scope,
            retain_previous=ctx.config.retain_previous,
            # The min-age grace guards a pull racing the prune; on a critical disk
            # the agent refuses pulls anyway, and the space is needed now.
            min_age_seconds=0.0 if ctx.emergency else ctx.config.min_age_seconds,
            pinned=ctx.config.pinned,
            store=run.target,
            artifacts=run.listing.artifacts if run.listing is not None else (),
        )
    )
