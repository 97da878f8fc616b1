"""Price sources as footnotes: a marker per row (``[1]``), each source's text once below the table that uses it.

One ``Footnotes`` numbers the sources of a whole report (the fleet's ``price_sources`` first, in their order, then
any other source on first use), so ``[1]`` is the same source in every table, in markdown, HTML and Slack alike.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Footnotes:
    numbers: dict[str, int] = field(default_factory=dict)
    fallbacks: set[str] = field(default_factory=set)

    @classmethod
    def of(cls, report: dict[str, Any]) -> Footnotes:
        notes = cls()
        for source in report["fleet"].get("price_sources") or []:
            if source.get("price_source"):
                notes.number(str(source["price_source"]))
                if source.get("price_fallback"):
                    notes.fallbacks.add(str(source["price_source"]))
        return notes

    def number(self, source: str) -> int:
        return self.numbers.setdefault(source, len(self.numbers) + 1)

    def split(self, text: str | None) -> list[str]:
        """The sources in ``text``: one, or several joined by "; " (as the idle leaderboard joins a row's) when
        every part is a source the report knows."""
        if not text:
            return []
        parts = text.split("; ")
        return parts if len(parts) > 1 and all(p in self.numbers for p in parts) else [text]

    def text(self, number: int) -> str:
        source = next(s for s, n in self.numbers.items() if n == number)
        return source + (" (fallback)" if source in self.fallbacks else "")


@dataclass
class Marks:
    """The markers of one table: ``mark`` returns a row's markers, ``notes`` the texts of those used, in order."""

    footnotes: Footnotes
    used: set[int] = field(default_factory=set)

    def mark(self, sources: Iterable[str | None]) -> str:
        numbers = []
        for text in sources:
            for source in self.footnotes.split(text):
                numbers.append(self.footnotes.number(source))
        self.used.update(numbers)
        return " ".join(f"[{n}]" for n in sorted(set(numbers)))

    def notes(self) -> list[str]:
        return [f"[{n}] {self.footnotes.text(n)}" for n in sorted(self.used)]
