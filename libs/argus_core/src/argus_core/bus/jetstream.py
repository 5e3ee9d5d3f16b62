"""JetStream streams, durable consumers and KV buckets, declared in code and created idempotently at start.

Every service calls `ensure_topology()` when it starts. Creating a stream that exists with the same configuration
succeeds on the server, so pods starting together do not race; an existing stream whose configuration differs (an
upgrade changed it) is updated in place. Limits that differ per deployment (replicas, how long media is kept on
the bus) come from `TopologyOptions`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from nats.js import JetStreamContext, api
from nats.js.errors import BadRequestError, BucketNotFoundError, NotFoundError

from argus_core.bus import subjects as s

log = logging.getLogger(__name__)

STREAM_NAME_IN_USE = 10058  # "stream name already in use with a different configuration"
# "subjects overlap with an existing stream": also what a create meets when another starter created the same stream
# a moment before (the server checks the subjects before the name).
STREAM_SUBJECTS_OVERLAP = 10065
CONSUMER_NAME_EXISTS = 10148
MAX_MESSAGE_BYTES = 8 * 1024 * 1024  # equals max_payload in deploy/nats/limits.conf


@dataclass(frozen=True)
class TopologyOptions:
    replicas: int = 1
    media_max_age_s: float = 600.0  # how long media waits on the bus for a recorder that is down
    media_max_bytes: int = -1
    audit_max_age_s: float = 30 * 86400.0  # the durable queue before the audit service stores it
    events_max_age_s: float = 7 * 86400.0
    lease_ttl_s: float = 6.0


@dataclass(frozen=True)
class StreamSpec:
    name: str
    subjects: tuple[str, ...]
    max_age_s: float
    description: str
    duplicate_window_s: float = 120.0
    max_bytes: int = -1
    storage: api.StorageType = api.StorageType.FILE

    def config(self, replicas: int) -> api.StreamConfig:
        return api.StreamConfig(
            name=self.name,
            description=self.description,
            subjects=list(self.subjects),
            retention=api.RetentionPolicy.LIMITS,
            discard=api.DiscardPolicy.OLD,
            max_age=self.max_age_s,
            max_bytes=self.max_bytes,
            max_msg_size=MAX_MESSAGE_BYTES,
            storage=self.storage,
            num_replicas=replicas,
            duplicate_window=self.duplicate_window_s,
        )


@dataclass(frozen=True)
class ConsumerSpec:
    stream: str
    durable: str
    filter_subject: str | None
    description: str
    ack_wait_s: float = 30.0
    max_ack_pending: int = 10_000
    max_deliver: int = -1
    ack_policy: api.AckPolicy = api.AckPolicy.EXPLICIT
    inactive_threshold_s: float | None = None  # the server deletes the consumer after this long without a pull

    def config(self) -> api.ConsumerConfig:
        return api.ConsumerConfig(
            durable_name=self.durable,
            name=self.durable,
            description=self.description,
            deliver_policy=api.DeliverPolicy.ALL,
            ack_policy=self.ack_policy,
            ack_wait=self.ack_wait_s,
            max_ack_pending=self.max_ack_pending,
            max_deliver=self.max_deliver,
            filter_subject=self.filter_subject,
            inactive_threshold=self.inactive_threshold_s,
        )


@dataclass(frozen=True)
class BucketSpec:
    bucket: str
    description: str
    ttl_s: float | None = None
    history: int = 1


@dataclass(frozen=True)
class Topology:
    streams: tuple[StreamSpec, ...]
    consumers: tuple[ConsumerSpec, ...]
    buckets: tuple[BucketSpec, ...]
    replicas: int = 1
    names: dict[str, str] = field(default_factory=dict)


MEDIA_STREAM = "MEDIA"
AUDIT_STREAM = "AUDIT"
EVENTS_STREAM = "EVENTS"
AUDIT_CONSUMER = "audit-store"
CAMERA_STATUS_BUCKET = "camera-status"
INGEST_LEASES_BUCKET = "leases-ingest"
RECORDER_LEASES_BUCKET = "leases-recorder"
PTZ_LEASES_BUCKET = "leases-ptz"


def topology(options: TopologyOptions | None = None) -> Topology:
    o = options or TopologyOptions()
    streams = (
        StreamSpec(
            MEDIA_STREAM,
            (s.RECORD.wildcard(),),
            o.media_max_age_s,
            "camera media, held until recorders have stored it",
            duplicate_window_s=30.0,
            max_bytes=o.media_max_bytes,
        ),
        StreamSpec(
            AUDIT_STREAM,
            (s.AUDIT.wildcard(),),
            o.audit_max_age_s,
            "audit events on their way to the hash chain",
            duplicate_window_s=3600.0,
        ),
        StreamSpec(
            EVENTS_STREAM,
            (
                s.CAMERA_STATUS.wildcard(),
                s.CAMERA_CHANGED.wildcard(),
                s.SEGMENT_RECORDED.wildcard(),
                s.RECORDING_GAP.wildcard(),
                s.SERVICE_EVENT.wildcard(),
            ),
            o.events_max_age_s,
            "camera health, registry changes, recording index events, service events",
        ),
    )
    consumers = (ConsumerSpec(AUDIT_STREAM, AUDIT_CONSUMER, None, "the audit service appends these to the chain"),)
    buckets = (
        BucketSpec(CAMERA_STATUS_BUCKET, "latest health of every camera"),
        BucketSpec(INGEST_LEASES_BUCKET, "which ingest pod pulls which camera", ttl_s=o.lease_ttl_s),
        BucketSpec(RECORDER_LEASES_BUCKET, "which recorder pod records which camera", ttl_s=o.lease_ttl_s),
        BucketSpec(PTZ_LEASES_BUCKET, "who controls which PTZ camera, and tours", ttl_s=o.lease_ttl_s),
    )
    return Topology(streams, consumers, buckets, o.replicas)


async def ensure_stream(js: JetStreamContext, spec: StreamSpec, replicas: int) -> api.StreamInfo:
    config = spec.config(replicas)
    try:
        return await js.add_stream(config)
    except BadRequestError as exc:
        if exc.err_code == STREAM_SUBJECTS_OVERLAP and not await _stream_exists(js, spec.name):
            raise  # another stream of another name holds these subjects: a real conflict
        if exc.err_code not in (STREAM_NAME_IN_USE, STREAM_SUBJECTS_OVERLAP):
            raise
    log.info("updating stream %s to the declared configuration", spec.name)
    return await js.update_stream(config)


async def ensure_consumer(js: JetStreamContext, spec: ConsumerSpec) -> api.ConsumerInfo:
    try:
        return await js.add_consumer(spec.stream, spec.config())
    except BadRequestError as exc:
        if exc.err_code != CONSUMER_NAME_EXISTS:
            raise
    # The durable exists with another configuration: keep its position, update what may change.
    log.info("consumer %s on %s exists with another configuration; updating", spec.durable, spec.stream)
    return await js.add_consumer(spec.stream, spec.config())


async def ensure_bucket(js: JetStreamContext, spec: BucketSpec, replicas: int) -> None:
    try:
        await js.key_value(spec.bucket)
    except (BucketNotFoundError, NotFoundError):
        pass
    else:
        return
    try:
        await js.create_key_value(
            api.KeyValueConfig(
                bucket=spec.bucket,
                description=spec.description,
                history=spec.history,
                ttl=spec.ttl_s,
                storage=api.StorageType.FILE,
                replicas=replicas,
                max_value_size=1024 * 1024,
            )
        )
    except BadRequestError as exc:
        if exc.err_code not in (STREAM_NAME_IN_USE, STREAM_SUBJECTS_OVERLAP):
            raise
        # Another pod created it a moment ago; binding is enough (and fails if it was not that).
        await js.key_value(spec.bucket)


async def _stream_exists(js: JetStreamContext, name: str) -> bool:
    try:
        await js.stream_info(name)
    except NotFoundError:
        return False
    return True


async def ensure_topology(js: JetStreamContext, topo: Topology) -> None:
    """Create or update every declared stream, consumer and bucket; safe to run from many pods at once."""
    for stream in topo.streams:
        await ensure_stream(js, stream, topo.replicas)
    for consumer in topo.consumers:
        await ensure_consumer(js, consumer)
    for bucket in topo.buckets:
        await ensure_bucket(js, bucket, topo.replicas)


# --- recorder --------------------------------------------------------------------------------------------------

RECORDER_CONSUMER_PREFIX = "recorder"


def recorder_consumer(
    camera: str,
    stream: str = "main",
    *,
    ack_wait_s: float = 90.0,
    max_ack_pending: int = 20_000,
    idle_s: float | None = 3600.0,
) -> ConsumerSpec:
    """The recorder's durable pull consumer of one camera stream: `recorder-{camera}` (`-{stream}` if not main).

    Created by the recorder pod that holds the camera's lease, not at start-up (cameras come and go). AckAll: once
    a segment is stored the recorder acks the newest batch all of whose packets are stored, which acknowledges
    every batch before it in one message; what is not acked when a recorder dies is delivered again to the next
    owner (which skips the packets the index already holds).

    The server deletes a consumer nobody has pulled from for `idle_s` (a camera removed from the register, or no
    longer recorded), so consumers do not pile up as cameras come and go. That loses nothing: a consumer made again
    starts at the camera's oldest media still in the stream, and the recorder skips what the index holds.
    """
    durable = (
        f"{RECORDER_CONSUMER_PREFIX}-{camera}" if stream == "main" else f"{RECORDER_CONSUMER_PREFIX}-{camera}-{stream}"
    )
    return ConsumerSpec(
        MEDIA_STREAM,
        durable,
        s.RECORD.format(camera=camera, stream=stream),
        f"recorder position in {stream} media of {camera}",
        ack_wait_s=ack_wait_s,
        max_ack_pending=max_ack_pending,
        ack_policy=api.AckPolicy.ALL,
        inactive_threshold_s=idle_s,
    )
