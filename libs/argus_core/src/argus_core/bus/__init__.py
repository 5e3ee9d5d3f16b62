"""The bus contract: every NATS subject, message, stream, consumer and KV bucket of Argus, in one place."""

from argus_core.bus import messages
from argus_core.bus.client import Bus, decode_msg
from argus_core.bus.codec import DecodeError, decode, encode
from argus_core.bus.jetstream import Topology, TopologyOptions, ensure_topology, topology
from argus_core.bus.subjects import ALL_SUBJECTS, Subject, SubjectError

__all__ = [
    "ALL_SUBJECTS",
    "Bus",
    "DecodeError",
    "Subject",
    "SubjectError",
    "Topology",
    "TopologyOptions",
    "decode",
    "decode_msg",
    "encode",
    "ensure_topology",
    "messages",
    "topology",
]
