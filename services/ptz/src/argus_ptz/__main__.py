"""`python -m argus_ptz`: start the ptz service."""

from __future__ import annotations

import sys

from argus_core.runtime import main as run_service
from argus_ptz.config import Config
from argus_ptz.service import SERVICE, run


def main() -> None:
    sys.exit(run_service(SERVICE, Config, run))


if __name__ == "__main__":
    main()
