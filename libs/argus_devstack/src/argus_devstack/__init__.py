"""Local servers (NATS, Postgres, S3) for development, tests and the local stack."""

from argus_devstack.errors import (
    DevstackError,
    MissingBinaryError,
    PortInUseError,
    ServerStartError,
    ServerStateError,
)
from argus_devstack.nats import NATS_LIMITS, NatsServer
from argus_devstack.ports import PortReservation, free_port, reserve_port, retry_on_port_conflict
from argus_devstack.postgres import PostgresServer
from argus_devstack.s3 import S3Server, S3Target

__all__ = [
    "NATS_LIMITS",
    "DevstackError",
    "MissingBinaryError",
    "NatsServer",
    "PortInUseError",
    "PortReservation",
    "PostgresServer",
    "S3Server",
    "S3Target",
    "ServerStartError",
    "ServerStateError",
    "free_port",
    "reserve_port",
    "retry_on_port_conflict",
]
