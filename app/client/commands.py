"""The client's subcommands on convertd's parser; the work (and its imports: gql, rich) is
loaded only when one of them runs, so operator commands start as fast as before."""

from __future__ import annotations

import argparse
import os
from typing import Any

DEFAULT_SERVER = "http://127.0.0.1:8080"


def add_commands(sub: Any) -> None:
    """`convert` and `formats` on convertd's parser."""
    c = sub.add_parser(
        "convert",
        help="convert files on a running Convertd (its public API; no database needed)",
        description="Upload each FILE, follow its job live and download the result. Exit status: "
        "0 all converted, 1 any conversion failed, 2 usage or connection error.",
    )
    c.add_argument("files", nargs="+", metavar="FILE")
    c.add_argument("--to", required=True, metavar="FORMAT", help="target format, e.g. webp")
    c.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a conversion option (repeat); VALUE is read as JSON when it is (80, true), else as text",
    )
    c.add_argument("--options", metavar="JSON", help="all options as one JSON object")
    c.add_argument("--filetype", metavar="T", help="the converter family (default: found from the file)")
    _server_args(c)
    c.add_argument("-o", "--output-dir", metavar="DIR", help="where results go (default: beside each input)")
    c.add_argument("--force", action="store_true", help="replace existing result files")
    c.add_argument("--json", action="store_true", help="one JSON object per file, no progress")
    c.set_defaults(func=_convert)

    f = sub.add_parser("formats", help="list what a running Convertd converts, with each pair's options")
    f.add_argument("--filetype", metavar="T", help="only this converter family")
    _server_args(f)
    f.add_argument("--json", action="store_true", help="the server's formats as JSON")
    f.set_defaults(func=_formats)


def _server_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--server",
        default=os.environ.get("CONVERTD_SERVER") or DEFAULT_SERVER,
        help=f"the Convertd URL (default: $CONVERTD_SERVER, else {DEFAULT_SERVER})",
    )
    p.add_argument(
        "--key",
        default=os.environ.get("CONVERTD_API_KEY"),
        help="API key or JWT (default: $CONVERTD_API_KEY)",
    )


def _convert(args: argparse.Namespace) -> None:
    from app.client.run import convert_command

    convert_command(args)


def _formats(args: argparse.Namespace) -> None:
    from app.client.run import formats_command

    formats_command(args)
