"""edgeprune's persisted memory, ``<state dir>/ledger.json``.

The agent's files only describe the present (rollback.json never lists
applications, design.md section 2), so edgeprune remembers:

- ``referenced``: every reference the agent ever named (the "managed" scope, rule 8);
- ``apps``: each application's distinct versions, learned from successive
  applied ``current.json`` generations (rule 2);
- ``generations``: the applied generations themselves, so a device-level
  rollback to the previously applied spec keeps working offline (rule 2);
- ``first_seen``: when each image ID was first seen (minimum age, rule 6).

An application removed from the spec keeps its per-app history, but what keeps
its images is the generations window (the removed app is part of an earlier
applied generation), not ``app_versions``; ``trim`` drops the history of apps
that appear in no retained generation.

Writes are atomic with a ``.prev`` copy; unreadable or unknown content raises
``LedgerError`` rather than starting over silently, because an empty ledger
forgets what a rollback needs.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from controller import references

if TYPE_CHECKING:
    from controller.spec import DeviceSpec, SpecSet

LEDGER_FILE = "ledger.json"
PREVIOUS_SUFFIX = ".prev"
TEMP_SUFFIX = ".tmp"
SCHEMA_VERSION = 2
# Version 1 kept no store per version and generation: its refs protect every store.
READABLE_SCHEMAS = (1, 2)
ROOT_STORE = "root"  # the store key of apps without runAs (and of the OS image)
ANY_STORE = "*"  # refs whose store is unknown (schema 1): every store keeps them
HISTORY_CAP = 16  # minimum entries kept per app / of generations by trim()
PACKAGE_CAP = 64  # image packages remembered (most recently read first)

log = logging.getLogger(__name__)


class LedgerError(Exception):
    """The ledger cannot be used; the message names the file, the problem and the recovery."""


@dataclass(frozen=True)
class AppVersion:
    generation: str  # the applied generation in which this version first appeared
    refs: tuple[str, ...]  # sorted canonical refs
    # The subset the app runs containers from (not volumes, packages or charts):
    # the images a rollback of this version must find in the store.
    images: tuple[str, ...] = ()
    store: str = ROOT_STORE  # the runAs user whose store runs it; ANY_STORE: unknown (schema 1)


@dataclass(frozen=True)
class PackageRecord:
    """What an image package's files named, remembered per package digest."""

    refs: tuple[str, ...]  # references found inside the package
    names: tuple[str, ...]  # the package references it was known by
    read_at: float


@dataclass(frozen=True)
class AppliedGeneration:
    generation: str
    refs: tuple[str, ...]  # sorted canonical refs of the whole current spec (apps + OS)
    apps: tuple[str, ...]  # application names in that spec
    applied_at: float  # epoch seconds when edgeprune first saw it applied
    # store key (runAs user, "root" for no runAs and the OS) -> refs of that store;
    # empty (schema 1): unknown, so `refs` protect every store
    stores: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def refs_in(self, store_keys: Iterable[str]) -> tuple[str, ...]:
        """The refs this generation ran from any of these stores (all, when unknown)."""
        if not self.stores:
            return self.refs
        keys = {*store_keys, ANY_STORE}
        return tuple(sorted({ref for key in keys for ref in self.stores.get(key, ())}))


def _store_refs(spec: DeviceSpec) -> dict[str, tuple[str, ...]]:
    """A spec's refs by the store that pulls them; the OS image is the root store's."""
    by_store: dict[str, set[str]] = {}
    for app in spec.apps:
        by_store.setdefault(app.run_as or ROOT_STORE, set()).update(app.refs)
    if spec.os_image:
        by_store.setdefault(ROOT_STORE, set()).add(spec.os_image)
    return {key: _canonical_refs(refs) for key, refs in sorted(by_store.items())}


def _canonical(raw: str) -> str:
    """The docker-normalised form: "docker.io/redis:7" and "docker.io/library/redis:7" are one.

    Kept verbatim: an unparseable ref (the spec reader validates them; it still
    counts), and a short name without digest, which Podman may resolve through
    any search registry: qualifying it as docker.io would narrow what it
    matches and could let a retained version be removed.
    """
    try:
        ref = references.parse_reference(raw)
    except references.ReferenceError:
        return raw
    return raw if ref.is_short and not ref.digest else ref.canonical


def _canonical_refs(raws: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted({_canonical(raw) for raw in raws}))


@dataclass
class Ledger:
    referenced: dict[str, float] = field(default_factory=dict)  # canonical ref -> first seen
    apps: dict[str, list[AppVersion]] = field(default_factory=dict)  # oldest first
    generations: list[AppliedGeneration] = field(default_factory=list)  # oldest first
    first_seen: dict[str, float] = field(default_factory=dict)  # image id -> epoch s
    packages: dict[str, PackageRecord] = field(default_factory=dict)  # digest -> record
    # A generation seen only in desired.json (an update in progress). If current
    # later jumps past it, it may have been applied and replaced between two
    # runs: its refs then join the last applied record rather than being lost.
    pending: AppliedGeneration | None = None

    @property
    def current_generation(self) -> AppliedGeneration | None:
        return self.generations[-1] if self.generations else None

    def record_specs(self, specs: SpecSet, now: float) -> bool:
        """Learn from the agent's three spec files; True if anything changed.

        Every ref of desired/current/rollback joins ``referenced``. A newly
        applied current generation (present, non-empty and different from the
        last recorded one) is appended to ``generations``, and each of its apps
        gets a new version when its refs differ from that app's last version.
        A current.json without a generation is not recorded: versions are told
        apart by generation.
        """
        changed = False
        for ref in _canonical_refs(specs.refs):
            if ref not in self.referenced:
                self.referenced[ref] = now
                changed = True

        current = specs.current
        last = self.current_generation
        changed = self._note_pending(specs) or changed
        if not current.present or not current.generation:
            return changed
        if last is not None and last.generation == current.generation:
            # Same generation, other content (the agent never does this; a
            # package read this time but not before does): widen the record to
            # the union, so neither version's images lose protection and the
            # window of previous generations does not shift.
            return self._widen_current(current) or changed

        pending, self.pending = self.pending, None
        if pending is not None and pending.generation != current.generation and last is not None:
            self._widen_last(pending.refs, pending.stores, pending.apps)
        self.generations.append(
            AppliedGeneration(
                generation=current.generation,
                refs=_canonical_refs(current.refs),
                apps=tuple(app.name for app in current.apps),
                applied_at=now,
                stores=_store_refs(current),
            )
        )
        for app in current.apps:
            refs = _canonical_refs(app.refs)
            store = app.run_as or ROOT_STORE
            history = self.apps.setdefault(app.name, [])
            if not history or (history[-1].refs, history[-1].store) != (refs, store):
                history.append(
                    AppVersion(
                        generation=current.generation,
                        refs=refs,
                        images=_canonical_refs(app.images),
                        store=store,
                    )
                )
        return True

    def _note_pending(self, specs: SpecSet) -> bool:
        desired, current = specs.desired, specs.current
        if not (desired.present and desired.generation):
            return False
        if desired.generation == current.generation:
            last = self.current_generation
            rolled_back = (
                self.pending is not None
                and self.pending.generation != current.generation
                and last is not None
                and last.generation == current.generation
            )
            if rolled_back:  # the update failed and the agent went back: never applied
                self.pending = None
            return rolled_back
        seen = AppliedGeneration(
            generation=desired.generation,
            refs=_canonical_refs(desired.refs),
            apps=tuple(app.name for app in desired.apps),
            applied_at=0.0,
            stores=_store_refs(desired),
        )
        if self.pending == seen:
            return False
        self.pending = seen
        return True

    def _widen_last(
        self, refs: Iterable[str], by_store: dict[str, tuple[str, ...]], apps: Iterable[str]
    ) -> bool:
        last = self.generations[-1]
        stores = dict(last.stores)
        for key, more in by_store.items():
            stores[key] = _canonical_refs((*stores.get(key, ()), *more))
        widened = replace(
            last,
            refs=_canonical_refs((*last.refs, *refs)),
            apps=tuple(dict.fromkeys((*last.apps, *apps))),
            stores=stores if last.stores else last.stores,  # schema-1 records stay "any store"
        )
        self.generations[-1] = widened
        return widened != last

    def _widen_current(self, current: DeviceSpec) -> bool:
        changed = self._widen_last(
            current.refs, _store_refs(current), (app.name for app in current.apps)
        )
        for app in current.apps:
            history = self.apps.get(app.name)
            if not history or history[-1].generation != current.generation:
                continue
            version = history[-1]
            wider = replace(
                version,
                refs=_canonical_refs((*version.refs, *app.refs)),
                images=_canonical_refs((*version.images, *app.images)),
            )
            changed = changed or wider != version
            history[-1] = wider
        return changed

    def record_images(self, image_ids: Iterable[str], now: float) -> None:
        """Stamp IDs not seen before with ``now``; forget IDs no longer in the store.

        Forgetting matters: an image removed and pulled again must wait the
        minimum age again (the pull-to-use race, rule 6).
        """
        present = set(image_ids)
        for image_id in present:
            seen = self.first_seen.setdefault(image_id, now)
            if seen > now:  # the clock went back: restart the wait, do not keep it for years
                self.first_seen[image_id] = now
        for image_id in self.first_seen.keys() - present:
            del self.first_seen[image_id]

    def previous_generations(self, n: int) -> list[AppliedGeneration]:
        """The ``n`` applied generations before the current one, newest first."""
        if n <= 0:
            return []
        return self.generations[-2::-1][:n]

    def app_versions(self, app: str, n_previous: int) -> list[AppVersion]:
        """The app's current version plus ``n_previous`` earlier distinct ones, newest first.

        "Current" is the last recorded version; callers ask about the apps of
        the current spec (a removed app is covered by ``previous_generations``).
        """
        history = self.apps.get(app, [])
        return history[::-1][: max(n_previous, 0) + 1]

    # `variant` tells apart readings of one package under different app
    # variables (compose envVars): the same files can name other images.
    def package_refs(self, digest: str, variant: str = "") -> tuple[str, ...] | None:
        record = self.packages.get(digest + variant)
        return None if record is None else record.refs

    def package_refs_by_ref(self, ref: str, variant: str = "") -> tuple[str, ...] | None:
        """The refs of the newest package last known by this reference."""
        canonical = _canonical(ref) + variant
        known = [r for r in self.packages.values() if canonical in r.names]
        return max(known, key=lambda r: r.read_at).refs if known else None

    def remember_package(
        self, ref: str, digest: str, refs: tuple[str, ...], now: float, variant: str = ""
    ) -> None:
        canonical = _canonical(ref) + variant
        digest += variant
        old = self.packages.get(digest)
        names = tuple(sorted({canonical, *(old.names if old else ())}))
        self.packages[digest] = PackageRecord(tuple(refs), names, old.read_at if old else now)
        if len(self.packages) > PACKAGE_CAP:
            newest = sorted(self.packages.items(), key=lambda kv: kv[1].read_at, reverse=True)
            self.packages = dict(newest[:PACKAGE_CAP])

    def trim(self, keep: int) -> None:
        """Bound the histories to ``max(keep, HISTORY_CAP)`` entries each.

        Callers pass at least retain-previous + 1. Apps named in no retained
        generation lose their history: nothing retained can roll back to them.
        """
        cap = max(keep, HISTORY_CAP)
        del self.generations[:-cap]
        retained_apps = {name for generation in self.generations for name in generation.apps}
        for name in list(self.apps):
            if name not in retained_apps:
                del self.apps[name]
            else:
                del self.apps[name][:-cap]


# --- serialisation ---------------------------------------------------------------


def _generation_json(g: AppliedGeneration) -> dict[str, object]:
    return {
        "generation": g.generation,
        "refs": list(g.refs),
        "apps": list(g.apps),
        "applied_at": g.applied_at,
        "stores": {key: list(refs) for key, refs in g.stores.items()},
    }


def _generation_from_json(raw: object, where: str) -> AppliedGeneration:
    entry = _expect_mapping(raw, where)
    return AppliedGeneration(
        generation=_expect_str(entry.get("generation"), f"{where}.generation"),
        refs=_expect_strings(entry.get("refs"), f"{where}.refs"),
        apps=_expect_strings(entry.get("apps"), f"{where}.apps"),
        applied_at=_expect_time(entry.get("applied_at"), f"{where}.applied_at"),
        stores={
            key: _expect_strings(refs, f"{where}.stores[{key!r}]")
            for key, refs in _expect_mapping(entry.get("stores", {}), f"{where}.stores").items()
        },
    )


def _to_json(ledger: Ledger) -> dict[str, object]:
    return {
        "schema": SCHEMA_VERSION,
        "referenced": ledger.referenced,
        "apps": {
            name: [
                {
                    "generation": v.generation,
                    "refs": list(v.refs),
                    "images": list(v.images),
                    "store": v.store,
                }
                for v in history
            ]
            for name, history in ledger.apps.items()
        },
        "generations": [_generation_json(g) for g in ledger.generations],
        "first_seen": ledger.first_seen,
        "pending": None if ledger.pending is None else _generation_json(ledger.pending),
        "packages": {
            digest: {"refs": list(r.refs), "names": list(r.names), "read_at": r.read_at}
            for digest, r in ledger.packages.items()
        },
    }


class _Malformed(ValueError):
    """A structural problem inside the document; ``load`` adds the file and the recovery."""


def _expect_mapping(value: object, where: str) -> dict[str, object]:
    if not isinstance(value, dict):
        raise _Malformed(f"{where} is not an object")
    return value


def _expect_list(value: object, where: str) -> list[object]:
    if not isinstance(value, list):
        raise _Malformed(f"{where} is not a list")
    return value


def _expect_str(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise _Malformed(f"{where} is not a string")
    return value


def _expect_time(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _Malformed(f"{where} is not a time in epoch seconds")
    return float(value)


def _expect_strings(value: object, where: str) -> tuple[str, ...]:
    items = _expect_list(value, where)
    return tuple(_expect_str(item, f"{where}[{i}]") for i, item in enumerate(items))


def _expect_times(value: object, where: str) -> dict[str, float]:
    return {
        key: _expect_time(time, f"{where}[{key!r}]")
        for key, time in _expect_mapping(value, where).items()
    }


def _from_json(document: object) -> Ledger:
    top = _expect_mapping(document, "the top level")
    schema = top.get("schema")
    if type(schema) is not int or schema not in READABLE_SCHEMAS:  # rejects true, 1.0, "1"
        readable = " and ".join(map(str, READABLE_SCHEMAS))
        raise _Malformed(
            f"unknown schema version {schema!r} (this edgeprune reads versions {readable})"
        )
    missing = [key for key in ("referenced", "apps", "generations", "first_seen") if key not in top]
    if missing:
        raise _Malformed(f"missing {', '.join(missing)}")

    apps: dict[str, list[AppVersion]] = {}
    for name, raw_history in _expect_mapping(top["apps"], "apps").items():
        history = apps[name] = []
        for i, raw in enumerate(_expect_list(raw_history, f"apps[{name!r}]")):
            where = f"apps[{name!r}][{i}]"
            entry = _expect_mapping(raw, where)
            history.append(
                AppVersion(
                    generation=_expect_str(entry.get("generation"), f"{where}.generation"),
                    refs=_expect_strings(entry.get("refs"), f"{where}.refs"),
                    images=_expect_strings(entry.get("images", []), f"{where}.images"),
                    # absent (schema 1): the store is unknown, so every store keeps it
                    store=_expect_str(entry.get("store", ANY_STORE), f"{where}.store"),
                )
            )

    generations = [
        _generation_from_json(raw, f"generations[{i}]")
        for i, raw in enumerate(_expect_list(top["generations"], "generations"))
    ]
    raw_pending = top.get("pending")  # optional: older ledgers have none
    pending = None if raw_pending is None else _generation_from_json(raw_pending, "pending")

    packages: dict[str, PackageRecord] = {}
    # optional: ledgers written before package reading have no "packages"
    for digest, raw in _expect_mapping(top.get("packages", {}), "packages").items():
        where = f"packages[{digest!r}]"
        entry = _expect_mapping(raw, where)
        packages[digest] = PackageRecord(
            refs=_expect_strings(entry.get("refs"), f"{where}.refs"),
            names=_expect_strings(entry.get("names"), f"{where}.names"),
            read_at=_expect_time(entry.get("read_at"), f"{where}.read_at"),
        )

    return Ledger(
        pending=pending,
        packages=packages,
        referenced=_expect_times(top["referenced"], "referenced"),
        apps=apps,
        generations=generations,
        first_seen=_expect_times(top["first_seen"], "first_seen"),
    )


def _recovery(path: Path) -> str:
    main = path.with_name(LEDGER_FILE)
    previous = main.with_name(LEDGER_FILE + PREVIOUS_SUFFIX)
    restore = "" if path == previous else f"copy {previous} over it if that one loads, or "
    return (
        f"to recover, {restore}delete {path} to start fresh (edgeprune then forgets "
        "earlier application versions and applied generations, so it no longer keeps "
        "them for rollback, and treats images referenced only in the past as out of "
        "scope)"
    )


MAX_LEDGER_BYTES = 64 * 1024 * 1024  # far above any real ledger; guards a device file


def _load_file(path: Path) -> Ledger:
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_LEDGER_BYTES:
            raise LedgerError(
                f"{path}: not a regular file of at most {MAX_LEDGER_BYTES} bytes; {_recovery(path)}"
            )
        document = json.loads(path.read_bytes())
    except OSError as exc:
        raise LedgerError(f"{path}: cannot read the ledger: {exc}; {_recovery(path)}") from exc
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError
        raise LedgerError(f"{path}: corrupt ledger, not JSON: {exc}; {_recovery(path)}") from exc
    try:
        return _from_json(document)
    except _Malformed as exc:
        raise LedgerError(f"{path}: unusable ledger: {exc}; {_recovery(path)}") from exc


def load_ledger(state_dir: Path) -> Ledger:
    """Read the ledger; an absent one (first run) is empty.

    When only the ``.prev`` copy exists it is used, with a warning. A corrupt
    or unknown ledger raises ``LedgerError``: the caller must remove nothing.
    """
    path = state_dir / LEDGER_FILE
    previous = state_dir / (LEDGER_FILE + PREVIOUS_SUFFIX)
    if path.exists():
        return _load_file(path)
    if previous.exists():
        log.warning("%s is missing; loading the previous copy %s", path, previous)
        return _load_file(previous)
    return Ledger()


def _fsync_directory(directory: Path) -> None:
    # Makes the renames themselves durable, not only the file contents.
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_durably(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as stream:
        stream.write(data)
        stream.flush()
        os.fsync(stream.fileno())


def _snapshot_previous(path: Path, previous: Path) -> None:
    """Make ``previous`` a copy of ``path`` without ever leaving it half-written."""
    if previous.exists() and os.path.samefile(path, previous):
        # A save killed after its snapshot left both names on one inode: .prev already
        # holds this content (and rename() between hard links of one file is a no-op).
        return
    staging = previous.with_name(previous.name + TEMP_SUFFIX)
    staging.unlink(missing_ok=True)  # a leftover from a killed run
    try:
        os.link(path, staging)  # cheap: ledger.json is never modified in place
    except OSError:  # filesystems without hard links
        shutil.copyfile(path, staging)
        with open(staging, "rb") as stream:
            os.fsync(stream.fileno())
    os.replace(staging, previous)


def save_ledger(state_dir: Path, ledger: Ledger) -> None:
    """Write the ledger atomically, keeping the last good one as ``ledger.json.prev``.

    Order: temp file + fsync, snapshot the old ledger as .prev, rename the temp
    file over ledger.json, fsync the directory. Once ledger.json exists it
    exists at every instant; a kill at any step leaves a loadable ledger.
    """
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = state_dir / LEDGER_FILE
    previous = state_dir / (LEDGER_FILE + PREVIOUS_SUFFIX)
    temporary = state_dir / (LEDGER_FILE + TEMP_SUFFIX)

    data = json.dumps(_to_json(ledger), sort_keys=True, separators=(",", ":")) + "\n"
    _write_durably(temporary, data.encode("utf-8"))
    if path.exists():
        _snapshot_previous(path, previous)
    os.replace(temporary, path)
    _fsync_directory(state_dir)
