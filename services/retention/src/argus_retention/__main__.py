"""`python -m argus_retention`: start the retention service; `python -m argus_retention sweep|dry-run|reconcile|
legal-holds`: run one of its jobs now."""

from __future__ import annotations

import sys

from argus_core.runtime import main as run_service
from argus_retention.cli import COMMANDS, command
from argus_retention.config import Config
from argus_retention.service import SERVICE, run


def main() -> None:
    if len(sys.argv) > 1 and (sys.argv[1] in COMMANDS or sys.argv[1] in ("-h", "--help")):
        sys.exit(command(sys.argv[1:]))
    sys.exit(run_service(SERVICE, Config, run))


if __name__ == "__main__":
    main()
