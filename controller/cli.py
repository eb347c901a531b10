"""The `edgeprune` command. Heavy modules are imported inside the commands.

Exit codes: 0 a completed run (also nothing to prune, disabled, dry run, and
a run skipped because another one holds the state dir's lock), 1 a run that
ended in Failed, 2 bad usage or configuration. `watch` exits 0 when stopped.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from controller.config import Config
    from controller.report import Report

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="config file (default /etc/edgeprune/config.yaml + conf.d/)",
    )
    parser.add_argument("--spec-dir", type=Path, help="the agent's data dir with *.json specs")
    parser.add_argument("--state-dir", type=Path, help="edgeprune's own state (ledger)")
    parser.add_argument("--podman-url", help="Podman API, e.g. unix:///run/podman/podman.sock")
    parser.add_argument(
        "--agent-config",
        type=Path,
        metavar="FILE",
        help="the agent's config (e.g. /etc/flightctl/config.yaml): its image-pruning.enabled",
    )
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    parser.add_argument(
        "--log-format",
        choices=["text", "json"],
        help="log lines on stderr as text or JSON lines (default: log-format, else text)",
    )


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("edgeprune")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgeprune",
        description="Remove unused container images without breaking offline rollback.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="one pruning run")
    _common(run)
    run.add_argument("--dry-run", action="store_true", help="plan and verify, remove nothing")
    run.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    plan = sub.add_parser("plan", help="dry run shown as a table: every image, decision, reasons")
    _common(plan)
    plan.add_argument("--json", action="store_true", help="print the dry-run report as JSON")
    watch = sub.add_parser(
        "watch", help="daemon: prune after each reconciliation and on a critical disk alert"
    )
    _common(watch)
    watch.add_argument("--dry-run", action="store_true", help="plan and verify, remove nothing")
    watch.add_argument(
        "--json", action="store_true", help="print each run's report as one JSON line on stdout"
    )
    trace = sub.add_parser("trace", help="show runs from the trace file as timelines")
    _common(trace)
    trace.add_argument(
        "file", nargs="?", type=Path, help="trace file (default: trace-file of the config)"
    )
    trace.add_argument("--run", metavar="TRACE_ID", help="only this run (a trace ID prefix)")
    trace.add_argument("--last", action="store_true", help="only the latest (matching) run")
    trace.add_argument("--image", metavar="NAME", help="only runs naming this image name or ID")
    diagram = sub.add_parser("diagram", help="write the state machine as Mermaid, DOT and SVG")
    diagram.add_argument(
        "--output-dir", type=Path, default=Path("diagrams"), help="default: ./diagrams"
    )
    diagram.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if the files are stale"
    )
    demo = sub.add_parser("demo", help="three generations on a private sandbox store")
    demo.add_argument(
        "--keep",
        action="store_true",
        help="keep the spec files and the ledger for inspection (the Podman store is removed)",
    )
    demo.add_argument(
        "--log-level", default="warning", choices=["debug", "info", "warning", "error"]
    )
    return parser


def _setup_logging(level: str, log_format: str | None) -> None:
    # Logs go to stderr so that --json output on stdout stays a clean document.
    from controller.logs import setup_logging

    setup_logging(level, log_format or "text", sys.stderr)


def _load(args: argparse.Namespace) -> Config:
    from controller.config import load_config

    overrides: dict[str, object] = {}
    for key, value in (
        ("spec-dir", args.spec_dir),
        ("state-dir", args.state_dir),
        ("podman-url", args.podman_url),
        ("agent-config", args.agent_config),
    ):
        if value is not None:
            overrides[key] = str(value)
    return load_config(args.config, overrides=overrides)


def _print_report(report: Report) -> None:
    json.dump(report.to_dict(), sys.stdout, indent=2)
    sys.stdout.write("\n")


def _exit_code(report: Report) -> int:
    return EXIT_FAILED if report.outcome == "failed" else EXIT_OK


def _configured(args: argparse.Namespace) -> Config | None:
    """The configuration, with logging switched to its format; None after a usage error."""
    from controller.config import ConfigError

    try:
        config = _load(args)
    except ConfigError as error:
        print(f"edgeprune: configuration error: {error}", file=sys.stderr)
        return None
    if args.log_format is None and config.log_format != "text":
        _setup_logging(args.log_level, config.log_format)
    return config


def cmd_run(args: argparse.Namespace, *, dry_run: bool) -> int:
    config = _configured(args)
    if config is None:
        return EXIT_USAGE
    from controller.pruner import Pruner
    from controller.telemetry import setup_telemetry

    telemetry = setup_telemetry(config)
    try:
        report = Pruner(config, **telemetry.pruner_options()).run_once(
            dry_run=dry_run, trigger="cli"
        )
    finally:
        telemetry.shutdown()  # spans and metrics leave before the process does
    if report.outcome == "locked":
        print(f"edgeprune: {'; '.join(report.notes)}", file=sys.stderr)
    if args.json:
        _print_report(report)
    elif report.outcome not in ("disabled", "locked"):
        from controller.table import plan_table

        print(plan_table(report))  # `run` too: what went, what stayed and why
    return _exit_code(report)


def cmd_watch(args: argparse.Namespace) -> int:
    config = _configured(args)
    if config is None:
        return EXIT_USAGE
    from controller.watch import run_watch

    # SIGHUP reloads through the same path: the files and the flags again.
    return run_watch(config, lambda: _load(args), dry_run=args.dry_run, json_out=args.json)


def cmd_trace(args: argparse.Namespace) -> int:
    path = args.file
    if path is None:
        from controller.config import ConfigError
        from controller.telemetry import trace_file_path

        try:
            path = trace_file_path(_load(args))
        except ConfigError as error:
            print(f"edgeprune: configuration error: {error}", file=sys.stderr)
            return EXIT_USAGE
        if path is None:
            print("edgeprune: trace-file is off in the configuration", file=sys.stderr)
            return EXIT_USAGE
    from controller.tracefile import read_trace_file
    from controller.traceview import SelectionError, group_runs, render_runs, select_runs

    contents = read_trace_file(path)
    if not contents.files:
        print(f"edgeprune: no trace file at {path}", file=sys.stderr)
        return EXIT_FAILED
    if contents.skipped_lines:
        print(
            f"edgeprune: skipped {contents.skipped_lines} unreadable line(s) in {path}*",
            file=sys.stderr,
        )
    try:
        runs = select_runs(
            group_runs(contents.spans), run_id=args.run, last=args.last, image=args.image
        )
    except SelectionError as error:
        print(f"edgeprune: {path}: {error}", file=sys.stderr)
        return EXIT_FAILED
    print(render_runs(runs))
    return EXIT_OK


def cmd_diagram(args: argparse.Namespace) -> int:
    from controller.diagram import stale_diagrams, write_diagrams

    if args.check:
        stale = stale_diagrams(args.output_dir)
        for name in stale:
            print(f"edgeprune: {args.output_dir / name} is stale; run edgeprune diagram")
        return EXIT_FAILED if stale else EXIT_OK
    for path in write_diagrams(args.output_dir):
        print(path)
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(getattr(args, "log_level", "info"), getattr(args, "log_format", None))
    if args.command == "run":
        return cmd_run(args, dry_run=args.dry_run)
    if args.command == "plan":
        return cmd_run(args, dry_run=True)
    if args.command == "watch":
        return cmd_watch(args)
    if args.command == "trace":
        return cmd_trace(args)
    if args.command == "diagram":
        return cmd_diagram(args)
    if args.command == "demo":
        from controller.demo import run_demo

        return run_demo(keep=args.keep)
    parser.error(f"unknown command {args.command}")
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
