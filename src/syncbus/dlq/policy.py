"""When a replay cannot succeed: the guard between "replay everything" and a second wave of dead letters.

A delivery failure (target down, 503, timeout) may well succeed on a replay.
A record that failed its schema, its mapping or decoding will fail exactly
the same way again unless something changed: the record was edited after it
failed, or the route now runs a newer mapping version than the one that
failed it. Replaying it anyway only moves it from one pending letter to the
next, so it is refused unless the person asks for it (``--force``) -- and the
refusal says why and how to override, because that person is on call.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ..state import DeadLetter, Store

# Failure reasons that a plain replay repeats (the record or the mapping must change first).
NEEDS_FIX_REASONS: frozenset[str] = frozenset({"schema", "mapping", "decode"})

_WHAT_FAILED = {"schema": "failed its schema check", "mapping": "failed its mapping",
                "decode": "could not be decoded"}


@dataclass(frozen=True)
class Blocker:
    """Why one dead letter is not replayed without ``force``."""

    dead_letter_id: str
    route: str
    reason: str
    mapping_version: int
    current_version: int | None

    def explain(self, override: str) -> str:
        """One sentence for a person: what failed, why a replay repeats it, what to do (``override`` names the knob)."""
        if self.current_version is None:
            version = f"route {self.route} is not loaded here, so no newer mapping version is known"
        else:
            version = f"route {self.route} still runs mapping version {self.current_version}"
        return (f"{self.dead_letter_id} {_WHAT_FAILED.get(self.reason, 'failed')} ({self.reason}) and was not "
                f"edited since; {version} (it failed with version {self.mapping_version}), so a replay would "
                f"fail the same way. Edit the record or deploy a fixed mapping first, or replay anyway "
                f"with {override}.")


def edited_since_failure(store: Store, dl: DeadLetter) -> bool:
    """An 'edit' audit entry at or after the letter's last failure: the record is not the one that failed."""
    return any(entry.at >= dl.last_failed_at for entry in store.audit(dl.id, action="edit"))


def replay_blocker(store: Store, dl: DeadLetter, versions: Mapping[str, int]) -> Blocker | None:
    """None when a replay of ``dl`` may succeed; else what blocks it. ``versions``: route → current version."""
    if dl.reason not in NEEDS_FIX_REASONS:
        return None
    current = versions.get(dl.route)
    if current is not None and current > dl.mapping_version:
        return None
    if edited_since_failure(store, dl):
        return None
    return Blocker(dl.id, dl.route, dl.reason, dl.mapping_version, current)
