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
    names = argv or list(BENCHMARKS)
    for name in names:
        if name not in BENCHMARKS:
            print(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}")
            return 2
        importlib.import_module(BENCHMARKS[name]).main([])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
