"""The ``trainscope`` command: ``trainscope dashboard [LOGDIR]`` and ``trainscope diagnose LOGDIR``.

``diagnose`` is the analyzers' command line (`trainscope.analyzers.cli`), whose options
it takes unchanged. ``dashboard`` is the app's launcher (`trainscope.app.serve`): on
this machine only (localhost, usage statistics off) unless ``--address`` says
otherwise; without LOGDIR it opens on the sample runs that ship with the package.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

USAGE = """usage: trainscope {dashboard,diagnose} ...

  trainscope dashboard [LOGDIR] [--port PORT] [--address ADDRESS] [--headless]
      open the dashboard on LOGDIR (default: the bundled sample runs)
  trainscope diagnose LOGDIR [--json] [--fail-on {warning,critical}] [--map PATTERN=TAG]
      print the findings of every run of LOGDIR
"""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        (sys.stdout if args else sys.stderr).write(USAGE)
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command == "diagnose":
        from trainscope.analyzers.cli import main as diagnose

        return diagnose(rest, prog="trainscope diagnose")
    if command == "dashboard":
        return _dashboard(rest)
    sys.stderr.write(f"trainscope: error: unknown command {command!r} (dashboard or diagnose)\n")
    return 2


def _dashboard(argv: list[str]) -> int:
    try:  # the app's extra, before anything of the app is imported
        import plotly  # noqa: F401
        import streamlit  # noqa: F401
    except ModuleNotFoundError as exc:
        sys.stderr.write(
            f"trainscope dashboard: {exc.name} is not installed: pip install 'trainscope[app]'\n"
        )
        return 2
    from trainscope.app.serve import DEFAULT_ADDRESS, DEFAULT_PORT
    from trainscope.app.serve import main as serve

    parser = argparse.ArgumentParser(prog="trainscope dashboard", description="Open the dashboard.")
    parser.add_argument(
        "logdir", nargs="?", metavar="LOGDIR", help="log dir (default: the bundled sample runs)"
    )
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    parser.add_argument(
        "--address",
        default=DEFAULT_ADDRESS,
        help=f"interface to listen on (default {DEFAULT_ADDRESS}; 0.0.0.0 serves other machines)",
    )
    parser.add_argument("--headless", action="store_true", help="do not open a browser")
    args = parser.parse_args(argv)
    forwarded = ["--address", args.address, "--port", str(args.port)]
    forwarded += ["--headless"] if args.headless else []
    forwarded += ["--logdir", args.logdir] if args.logdir is not None else []
    return serve(forwarded)


if __name__ == "__main__":
    sys.exit(main())
