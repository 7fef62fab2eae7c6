"""Printing a verification report, the same way for every kind of report."""

from __future__ import annotations

import sys

import orjson

from auditmw._cli.exit_codes import ExitCode
from auditmw._stores.report import Report


def print_json(document: object) -> None:
    sys.stdout.write(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n")


def print_report(report: Report, *, as_json: bool) -> ExitCode:
    """The report as JSON, or its summary and details for people (warnings on standard
    error); returns the exit code it calls for."""
    if as_json:
        print_json(report.to_json())
    else:
        print(report.summary())
        for line in report.details():
            print(line)
        for warning in report.warnings:
            print(f"warning: {warning}", file=sys.stderr)
    return ExitCode.OK if report.ok else ExitCode.DAMAGED
