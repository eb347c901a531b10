"""Which Podman stores a run prunes, and how each one is reached.

Apps with `runAs` run from that user's own Podman store; every store is
inventoried and planned with its own keep-set. The agent's store
(`podman-url`) serves `root`, apps without `runAs` and the agent's own user
(`agent-user`). Any other user's store is reached through `stores: {user:
url}`, else the rootless default socket `unix:///run/user/<uid>/podman/podman.sock`
(uid from the passwd database). A user with neither is skipped and reported.

The users come from the spec files, the ledger's history (a removed app's
store still needs pruning) and the configured stores.
"""

from __future__ import annotations

import pwd
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from controller.config import Config
from controller.ledger import ANY_STORE, ROOT_STORE, Ledger
from controller.spec import SpecSet

UidLookup = Callable[[str], int]  # raises KeyError for an unknown user


def rootless_url(uid: int) -> str:
    return f"unix:///run/user/{uid}/podman/podman.sock"


def passwd_uid(user: str) -> int:
    return pwd.getpwnam(user).pw_uid


@dataclass(frozen=True)
class StoreTarget:
    """One store of the run: its owner, its API URL, and whose apps it runs."""

    user: str  # the store's owner, as reported (the agent store: agent-user)
    url: str
    agent: bool = False  # the agent's own store: also the OS and bootc images
    # runAs values (ledger store keys) of the apps this store runs
    users: frozenset[str] = frozenset({ROOT_STORE})

    def seen_key(self, key: str) -> str:
        """The ledger's first-seen key of an image ID or artifact in this store."""
        return key if self.agent else f"{self.user}/{key}"


@dataclass(frozen=True)
class SkippedStore:
    user: str
    url: str  # "" when none could be found
    reason: str


def agent_target(config: Config) -> StoreTarget:
    return StoreTarget(
        user=config.agent_user,
        url=config.podman_url,
        agent=True,
        users=frozenset({ROOT_STORE, config.agent_user}),
    )


def run_as_users(specs: SpecSet, ledger: Ledger) -> set[str]:
    """Every user whose store holds, or held within the ledger's history, an app."""
    users = {
        app.run_as
        for spec in (specs.desired, specs.current, specs.rollback)
        for app in spec.apps
        if app.run_as
    }
    users.update(v.store for history in ledger.apps.values() for v in history)
    users.update(owner for g in ledger.generations for owner in g.stores)
    return users - {ANY_STORE, ROOT_STORE}


def resolve_stores(
    config: Config, users: Iterable[str], uid_of: UidLookup = passwd_uid
) -> tuple[list[StoreTarget], list[SkippedStore]]:
    """The agent's store first, then one store per other user (sorted)."""
    agent = agent_target(config)
    configured = dict(config.stores)
    targets = [agent]
    skipped: list[SkippedStore] = []
    for user in sorted((set(users) | set(configured)) - agent.users):
        url = configured.get(user)
        if url is None:
            try:
                url = rootless_url(uid_of(user))
            except KeyError:
                skipped.append(
                    SkippedStore(
                        user,
                        "",
                        f"unknown user {user!r}: not in the passwd database and no URL in"
                        " 'stores'; its images were not pruned",
                    )
                )
                continue
        targets.append(StoreTarget(user=user, url=url, users=frozenset({user})))
    return targets, skipped
