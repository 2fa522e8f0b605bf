"""Numbers and tables: percentiles, formatting, the Markdown tables docs/benchmarks.md holds."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from bench.common import ForeignLoad, machine_lines


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of already-sorted ``values`` (NaN when empty)."""
    if not values:
        return float("nan")
    rank = max(1, min(len(values), round(pct / 100 * len(values) + 0.5)))
    return values[rank - 1]


def fmt(value: float, digits: int = 1) -> str:
    if value != value:  # NaN
        return "n/a"
    return f"{value:,.{digits}f}"


def print_table(title: str, headers: list[str], rows: list[list[str]], notes: Iterable[str] = (), *,
                machine: list[str] | None = None, load: ForeignLoad | None = None) -> str:
    """A Markdown table with the machine facts above it (pasted as-is into docs/benchmarks.md)."""
    facts = list(machine or machine_lines())
    if load is not None:
        facts.append(load.summary())
    lines = [f"### {title}", "", *[f"- {line}" for line in facts], ""]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines.append("| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |")
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        lines.append("| " + " | ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) + " |")
    notes = list(notes)
    if notes:
        lines.append("")
        lines.extend(notes)
    text = "\n".join(lines)
    print(text, flush=True)
    return text


def profile_summary(raw_path: Path, top: int = 25) -> str:
    """Self and inclusive shares of a py-spy ``--format raw`` profile, by function (lines folded)."""
    inclusive: dict[str, int] = {}
    own: dict[str, int] = {}
    total = 0
    for line in raw_path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [frame.rsplit(":", 1)[0] + ")" if frame.endswith(")") else frame for frame in stack.split(";")]
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + n
        own[frames[-1]] = own.get(frames[-1], 0) + n
    if not total:
        return "no samples"

    def lines(counts: dict[str, int]) -> list[str]:
        ranked = sorted(counts.items(), key=lambda kv: -kv[1])[:top]
        return [f"  {100 * n / total:5.1f}%  {name}" for name, n in ranked]

    return "\n".join([f"{total} samples; self time:", *lines(own), "inclusive:", *lines(inclusive)])
