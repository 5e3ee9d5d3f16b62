"""`python -m argus_audit`: start the audit service; `python -m argus_audit verify|checkpoint|purge|keygen`: tools."""

from __future__ import annotations

import sys

from argus_audit.cli import COMMANDS, command
from argus_audit.config import Config
from argus_audit.service import SERVICE, run
from argus_core.runtime import main as run_service


def main() -> None:
    if len(sys.argv) > 1 and (sys.argv[1] in COMMANDS or sys.argv[1] in ("-h", "--help")):
        sys.exit(command(sys.argv[1:]))
    sys.exit(run_service(SERVICE, Config, run))


if __name__ == "__main__":
    main()
