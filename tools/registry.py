"""The workspace's record of live deployments, shared by every server process on it.

`.autoopt/deployments.json` maps deployment id -> the deployment and its owner. Every
change is a read-modify-write under a lock, so one server never overwrites another's
entries. A deployment started by a job (run_ab, a profiler) belongs to its server and is
torn down when that server stops; one started with the deploy tool outlives its server,
until teardown or until it has been idle for `KEEP_S` seconds. Torn-down deployments
leave a tombstone so a later call can say it is gone, and why.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pydantic import BaseModel

from autoopt.tools.backends.base import Deployment
from autoopt.tools.jobs import Owner
from autoopt.tools.state import load_state, locked, write_atomic

KEEP_S = float(os.environ.get("AUTOOPT_KEEP_S", "3600"))


class Entry(BaseModel):
    """One live deployment and who answers for it."""

    deployment: Deployment
    owner: Owner | None = None
    kept: bool = False
    used: float

    def expired(self, now: float) -> bool:
        return self.kept and now - self.used > KEEP_S

    def orphaned(self) -> bool:
        return not self.kept and (self.owner is None or not self.owner.alive())


class Gone(BaseModel):
    id: str
    when: float
    reason: str


def _parse_entries(raw: dict) -> dict[str, Entry]:
    out = {}
    for key, value in raw.items():
        if "deployment" not in value:  # written by an older server: no owner, a leftover
            value = {"deployment": value, "owner": None, "used": 0.0}
        out[key] = Entry.model_validate(value)
    return out


class Registry:
    """deployments.json and the tombstones beside it."""

    def __init__(self, state_dir: Path) -> None:
        self.file = state_dir / "deployments.json"
        self.lock = state_dir / "deployments.lock"
        self.tombs = state_dir / "deployments-gone"

    @contextmanager
    def _edit(self) -> Iterator[dict[str, Entry]]:
        with locked(self.lock):
            entries = self.entries()
            yield entries
            data = {k: e.model_dump(mode="json", exclude={"deployment": {"journal"}})
                    for k, e in entries.items()}
            write_atomic(self.file, json.dumps(data, indent=1))

    def entries(self) -> dict[str, Entry]:
        return load_state(self.file, _parse_entries, {})

    def add(self, deployment: Deployment, *, kept: bool) -> None:
        with self._edit() as entries:
            entries[deployment.id] = Entry(
                deployment=deployment, owner=Owner.me(), kept=kept, used=time.time()
            )

    def touch(self, dep_id: str) -> None:
        with self._edit() as entries:
            if dep_id in entries:
                entries[dep_id].used = time.time()

    def remove(self, dep_id: str, reason: str) -> None:
        """Drop an entry; a kept one (its id was handed to a user) leaves a tombstone. A
        job's deployments leave none: no one holds their ids, and every run would add one
        per sample."""
        with self._edit() as entries:
            entry = entries.pop(dep_id, None)
        if entry is not None and entry.kept:
            tomb = Gone(id=dep_id, when=time.time(), reason=reason)
            write_atomic(self.tombs / f"{dep_id}.json", tomb.model_dump_json())

    def gone(self, dep_id: str) -> Gone | None:
        return load_state(self.tombs / f"{dep_id}.json", Gone.model_validate, None)

    def mine(self) -> list[Entry]:
        """Entries this server owns and must stop with it (not the kept ones)."""
        me = Owner.me()
        return [e for e in self.entries().values() if e.owner == me and not e.kept]

    def leftovers(self) -> list[Entry]:
        """Entries whose owner is gone, and kept ones idle for longer than KEEP_S."""
        now = time.time()
        return [e for e in self.entries().values() if e.orphaned() or e.expired(now)]
