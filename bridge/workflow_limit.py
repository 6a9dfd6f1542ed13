"""The `workflows` JWT claim: a token limited to some workflow ids.

    "workflows": ["wf-1", "team-a-*"]

Each entry is a workflow id, matched exactly, or — with one `*` at its end — a prefix. An empty
list reaches no workflow (only what belongs to none: the processor list). Without the claim a
token reaches every workflow. Jobs and events without a workflow id are no limited token's.

The claim is checked strictly (RFC 8725: a claim that does not parse is not ignored): a
malformed one makes the whole token invalid.
"""

from __future__ import annotations

from dataclasses import dataclass

CLAIM = "workflows"
PREFIX_MARK = "*"
MAX_ENTRIES = 100
MAX_LENGTH = 256  # as long as a request's workflow_id may be


@dataclass(frozen=True, slots=True)
class WorkflowLimit:
    exact: frozenset[str]
    prefixes: tuple[str, ...]

    @classmethod
    def parse(cls, claim: object) -> WorkflowLimit:
        """The limit a claim's value describes; ValueError saying what is wrong with it."""
        if not isinstance(claim, list):
            raise ValueError("it must be a list of workflow ids")
        if len(claim) > MAX_ENTRIES:
            raise ValueError(f"it may name at most {MAX_ENTRIES} workflows")
        exact: set[str] = set()
        prefixes: set[str] = set()
        for entry in claim:
            if not isinstance(entry, str):
                raise ValueError(f"each entry must be a string, not {type(entry).__name__}")
            _check(entry)
            if entry.endswith(PREFIX_MARK):
                prefixes.add(entry[:-1])
            else:
                exact.add(entry)
        return cls(frozenset(exact), tuple(sorted(prefixes)))

    def allows(self, workflow_id: str | None) -> bool:
        if workflow_id is None:
            return False
        return workflow_id in self.exact or workflow_id.startswith(self.prefixes)

    def covers(self, other: WorkflowLimit) -> bool:
        """Whether every workflow `other` reaches, this one reaches too."""
        return all(self.allows(entry) for entry in other.exact) and all(
            prefix.startswith(self.prefixes) for prefix in other.prefixes
        )

    def entries(self) -> list[str]:
        """The claim's value, sorted: what a subscription records of its maker's limit."""
        return sorted([*self.exact, *(prefix + PREFIX_MARK for prefix in self.prefixes)])


def _check(entry: str) -> None:
    if not entry:
        raise ValueError("an entry is empty")
    if len(entry) > MAX_LENGTH:
        raise ValueError(f"an entry is longer than {MAX_LENGTH} characters")
    if not entry.isprintable():  # C0/C1 controls, and every line and paragraph separator
        raise ValueError(f"the entry {entry[:40]!r} holds a control character")
    if PREFIX_MARK in entry[:-1]:
        raise ValueError(f"in {entry[:40]!r}, '*' may stand only at the end (a prefix)")
    if entry == PREFIX_MARK:
        raise ValueError("'*' alone would be every workflow: leave the claim out instead")
