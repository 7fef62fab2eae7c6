"""One table of query parameters, read by the HTTP parser, the OpenAPI document and the
command line (``add_filter_arguments`` / ``filter_from_arguments``)."""

from __future__ import annotations

import argparse

import pytest

from auditmw import EventFilter, QueryError
from auditmw._admin.openapi import openapi_document
from auditmw._admin.parameters import (
    BUCKETS,
    FILTERS,
    MAX_AGE,
    PAGING,
    add_filter_arguments,
    filter_from_arguments,
    flag,
    parse_filter,
    parse_max_age,
)
from auditmw._stores.filters import FILTER_PARAMS


def export_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="export", exit_on_error=False)
    parser.add_argument("--format")
    add_filter_arguments(parser)
    return parser


def test_the_table_names_every_filter_of_the_filter_model() -> None:
    assert [parameter.name for parameter in FILTERS] == list(FILTER_PARAMS)


def test_the_command_line_reads_the_filters_as_http_does() -> None:
    args = export_parser().parse_args(
        [
            "--format=csv",
            "--user-id=u1",
            "--user-email=ann@example.com",
            "--action=project.*",
            "--resource=project",
            "--resource-id=P-1",
            "--outcome=denied",
            "--from=2024-05-01",
            "--to=2024-05-02",
            "--search=EXAMPLE",
        ]
    )
    expected = parse_filter(
        {
            "user_id": "u1",
            "user_email": "ann@example.com",
            "action": "project.*",
            "resource": "project",
            "resource_id": "P-1",
            "outcome": "denied",
            "from": "2024-05-01",
            "to": "2024-05-02",
            "search": "EXAMPLE",
        }
    )
    assert filter_from_arguments(args) == expected
    assert expected.until == "2024-05-03T00:00:00.000000Z"  # a --to date includes that day
    assert args.format == "csv"  # the parser's own options are left alone


def test_no_filter_options_is_no_filter() -> None:
    assert filter_from_arguments(export_parser().parse_args([])) == EventFilter()


def test_a_bad_option_names_its_parameter_and_flag() -> None:
    args = export_parser().parse_args(["--from", "yesterday"])
    with pytest.raises(QueryError, match="not an ISO 8601") as raised:
        filter_from_arguments(args)
    assert (raised.value.param, flag(raised.value.param)) == ("from", "--from")


def test_the_help_is_the_table_s() -> None:
    help = export_parser().format_help()
    for parameter in FILTERS:
        assert parameter.flag in help
    assert "a prefix ending in * (project.*)" in help  # Markdown backticks dropped


def test_the_openapi_document_lists_the_table() -> None:
    paths = openapi_document()["paths"]
    events = paths["/events"]["get"]["parameters"]
    assert events == [parameter.openapi() for parameter in (*FILTERS, *PAGING)]
    assert paths["/histogram"]["get"]["parameters"][-1] == BUCKETS.openapi()
    assert paths["/verify"]["get"]["parameters"] == [MAX_AGE.openapi()]
    for route in ("/export.csv", "/export.jsonl"):
        assert paths[route]["get"]["parameters"] == [p.openapi() for p in FILTERS]


def test_integer_limits_come_from_the_schema() -> None:
    assert MAX_AGE.schema["minimum"] == 0 and parse_max_age("0") == 0
    maximum = MAX_AGE.schema["maximum"]
    with pytest.raises(QueryError) as raised:
        parse_max_age(str(maximum + 1))
    assert str(raised.value) == (
        f"max_age: must be a number of seconds from 0 to {maximum}, not '{maximum + 1}'"
    )
