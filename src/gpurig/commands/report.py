"""`gpurig report`: the fleet summary from the smoke reports in reports/, and the seconds of
each stage (the last deploy's per host, the smoke test's slowest)."""

from __future__ import annotations

import argparse
from pathlib import Path

from gpurig import report
from gpurig.deploys import ENV_REPORTS, reports_dir
from gpurig.errors import GpurigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--reports", type=Path, help=f"report folder (default: ${ENV_REPORTS} or reports)"
    )
    parser.add_argument(
        "--last-run", action="store_true", help="only the hosts of the last deploy run"
    )


def run(args: argparse.Namespace) -> int:
    directory = args.reports or reports_dir()
    if not directory.is_dir():
        raise GpurigError(f"no reports in {directory}: run `gpurig deploy` first")
    try:
        if args.last_run:
            reports = report.load_run(directory)
        else:  # every report in the folder, with the last run's stage seconds where it has them
            reports = report.with_deploy_stages(report.load_dir(directory), directory)
    except report.RunRecordError as error:
        raise GpurigError(str(error)) from None
    return 0 if report.print_summary(reports) else 1
