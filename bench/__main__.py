"""``make bench`` / ``python -m bench [NAME ...]``: run the benchmarks and print the figures."""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = {
    "ingest": "bench.ingest_cim",
    "sftp-csv": "bench.sftp_csv",
    "amqp": "bench.amqp_ingest",
    "soap-get": "bench.soap_get",
    "hes-read": "bench.hes_read",
    "web-readings": "bench.web_readings",
    "vee": "bench.vee",
}


def main(argv: list[str]) -> int:
    """``python -m bench [NAME ...]``, or ``python -m bench NAME --option ...``: one
    benchmark with its own options (``--help`` lists them)."""
    names = [a for a in argv if not a.startswith("-")] or list(BENCHMARKS)
    options: list[str] = []
    if any(a.startswith("-") for a in argv):
        names, options = argv[:1], argv[1:]
        if not names or names[0].startswith("-"):
            print("usage: python -m bench NAME [--option ...] (options for one benchmark)")
            return 2
    for name in names:
        if name not in BENCHMARKS:
            print(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}")
            return 2
        importlib.import_module(BENCHMARKS[name]).main(options)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
