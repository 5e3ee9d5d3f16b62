"""`python -m argus_audit`: start the audit service."""

from __future__ import annotations

import sys

from argus_audit.config import Config
from argus_audit.service import SERVICE, run
from argus_core.runtime import main as run_service


def main() -> None:
    sys.exit(run_service(SERVICE, Config, run))


if __name__ == "__main__":
    main()
