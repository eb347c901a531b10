"""The `edgeprune` command. Heavy modules are imported inside the commands.

Exit codes: 0 a completed run (also nothing to prune, disabled, dry run),
1 a run that ended in Failed, 2 bad usage or configuration.
"""

from __future__ import annotations

import argparse
import json
import logging
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
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgeprune",
        description="Remove unused container images without breaking offline rollback.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="one pruning run")
    _common(run)
    run.add_argument("--dry-run", action="store_true", help="plan and verify, remove nothing")
    run.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    plan = sub.add_parser("plan", help="dry run shown as a table: every image, decision, reasons")
    _common(plan)
    plan.add_argument("--json", action="store_true", help="print the dry-run report as JSON")
    demo = sub.add_parser("demo", help="three generations on a private sandbox store")
    demo.add_argument("--keep", action="store_true", help="keep the sandbox dir for inspection")
    demo.add_argument(
        "--log-level", default="warning", choices=["debug", "info", "warning", "error"]
    )
    return parser


def _setup_logging(level: str) -> None:
    # Logs go to stderr so that --json output on stdout stays a clean document.
    logging.basicConfig(
        stream=sys.stderr,
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def _load(args: argparse.Namespace) -> Config:
    from controller.config import load_config

    overrides: dict[str, object] = {}
    for key, value in (
        ("spec-dir", args.spec_dir),
        ("state-dir", args.state_dir),
        ("podman-url", args.podman_url),
    ):
        if value is not None:
            overrides[key] = str(value)
    return load_config(args.config, overrides=overrides)


def _print_report(report: Report) -> None:
    json.dump(report.to_dict(), sys.stdout, indent=2)
    sys.stdout.write("\n")


def _exit_code(report: Report) -> int:
    return EXIT_FAILED if report.outcome == "failed" else EXIT_OK


def cmd_run(args: argparse.Namespace, *, dry_run: bool) -> int:
    from controller.config import ConfigError

    try:
        config = _load(args)
    except ConfigError as error:
        print(f"edgeprune: configuration error: {error}", file=sys.stderr)
        return EXIT_USAGE
    from controller.pruner import Pruner

    report = Pruner(config).run_once(dry_run=dry_run, trigger="cli")
    if args.json:
        _print_report(report)
    elif args.command == "plan":
        from controller.table import plan_table

        print(plan_table(report))
    return _exit_code(report)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.log_level)
    if args.command == "run":
        return cmd_run(args, dry_run=args.dry_run)
    if args.command == "plan":
        return cmd_run(args, dry_run=True)
    if args.command == "demo":
        from controller.demo import run_demo

        return run_demo(keep=args.keep)
    parser.error(f"unknown command {args.command}")
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
