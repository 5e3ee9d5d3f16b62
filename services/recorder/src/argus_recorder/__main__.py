"""`python -m argus_recorder`: start the recorder service."""

from __future__ import annotations

import sys

from argus_core.runtime import main as run_service
from argus_recorder.config import Config
from argus_recorder.service import SERVICE, run


def main() -> None:
    sys.exit(run_service(SERVICE, Config, run))


if __name__ == "__main__":
    main()
