"""Human-readable tables of a report, for `edgeprune plan` and the demo."""

from __future__ import annotations

from controller.report import Item, Report


def human_bytes(count: int | None) -> str:
    if count is None:
        return "unknown"
    value = float(count)
    for unit in ("B", "KB", "MB", "GB"):
        if abs(value) < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"


def _name(item: Item) -> str:
    return ", ".join(item.names) if item.names else "<none>"


def summarize_reasons(reasons: tuple[str, ...]) -> str:
    """One entry per rule (the first detail, and how many more): tables stay readable.

    The JSON report keeps every reason in full.
    """
    first: dict[str, str] = {}
    more: dict[str, int] = {}
    for reason in reasons:
        rule = reason.split(":", 1)[0]
        if rule in first:
            more[rule] = more.get(rule, 0) + 1
        else:
            first[rule] = reason
    return "; ".join(
        f"{text} (+{more[rule]} more)" if rule in more else text for rule, text in first.items()
    )


def item_rows(decision: str, items: list[Item]) -> list[tuple[str, str, str, str, str]]:
    rows = []
    for item in items:
        reasons = summarize_reasons(item.reasons) or item.detail
        rows.append((decision, _name(item), item.id[:12], human_bytes(item.size_bytes), reasons))
    return rows


def format_rows(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> str:
    widths = [len(h) for h in header]
    for row in rows:
        widths[:-1] = [max(w, len(c)) for w, c in zip(widths[:-1], row[:-1], strict=True)]
    lines = []
    for row in (header, *rows):
        cells = [c.ljust(w) for c, w in zip(row[:-1], widths[:-1], strict=True)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return "\n".join(lines)


def plan_table(report: Report) -> str:
    if report.outcome == "failed":  # the error already names the state
        if report.dry_run:
            return f"plan failed: {report.error}\nnothing would be removed"
        done = (
            f"{len(report.removed)} removed before the failure"
            if report.removed
            else ("nothing was removed")
        )
        return f"run failed: {report.error}\n{done}"
    header = ("DECISION", "IMAGE", "ID", "SIZE", "REASONS")
    planned = report.would_remove if report.dry_run else report.removed
    verb = "remove" if report.dry_run else "removed"
    rows = item_rows(verb, planned) + item_rows("keep", report.kept)
    total = sum(i.size_bytes for i in planned)
    freed = "would be freed" if report.dry_run else "freed"
    summary = (
        f"\n{len(planned)} {'to remove' if report.dry_run else 'removed'}, "
        f"{len(report.kept)} kept; about {human_bytes(total)} {freed} (unique sizes)"
    )
    if report.rollback_missing:
        summary += f"\nrollback degraded, missing: {', '.join(report.rollback_missing)}"
    return format_rows(rows, header) + summary
