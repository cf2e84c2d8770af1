"""The one record type for preference data, and the batch types that cross actor boundaries."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class PreferencePair:
    """One labelled comparison: `chosen` was preferred to `rejected` as a reply to `prompt`.

    `prompt` ends where the response starts (for HH-RLHF: with "\\n\\nAssistant:"); `chosen` and
    `rejected` are the responses alone. `source` names the generation/labelling pool it came from.
    """

    id: str
    prompt: str
    chosen: str
    rejected: str
    source: str = "unknown"


@dataclass
class LoadReport:
    """What a loader kept and what it skipped, by reason."""

    path: str
    records: int = 0
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


class BadRecordError(ValueError):
    """A data record is malformed and `on_bad_record` is 'error'. Names the file and line."""
