"""`python -m argus_simcam`: start the simulated cameras."""

from __future__ import annotations

import sys

from argus_core.runtime import main as run_service
from argus_simcam.config import Config
from argus_simcam.service import SERVICE, run


def main() -> None:
    sys.exit(run_service(SERVICE, Config, run))


if __name__ == "__main__":
    main()
