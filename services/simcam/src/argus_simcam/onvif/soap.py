"""SOAP 1.2 for ONVIF: parse a request envelope safely, build and serialise responses, raise faults.

Responses are built as small `Node` trees with prefixed tag names and serialised with every ONVIF prefix
declared on the envelope, as camera firmware does; that keeps the prefixes fixed (clients such as zeep resolve
fault subcodes like `ter:NotAuthorized` through them) without touching ElementTree's global prefix registry.
Requests are parsed with the standard library after refusing anything that could carry a DTD.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "NS",
    "SOAP_CONTENT_TYPE",
    "Node",
    "SoapFault",
    "SoapRequest",
    "child",
    "child_text",
    "children",
    "format_duration",
    "invalid_arg",
    "local_name",
    "parse_bool",
    "parse_duration",
    "parse_envelope",
    "parse_float",
    "require_child",
    "require_text",
    "serialize",
    "unsafe_xml",
]

ENV = "http://www.w3.org/2003/05/soap-envelope"
SOAP11_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
NS: Mapping[str, str] = {
    "env": ENV,
    "ter": "http://www.onvif.org/ver10/error",
    "xs": "http://www.w3.org/2001/XMLSchema",
    "tt": "http://www.onvif.org/ver10/schema",
    "tds": "http://www.onvif.org/ver10/device/wsdl",
    "trt": "http://www.onvif.org/ver10/media/wsdl",
    "tr2": "http://www.onvif.org/ver20/media/wsdl",
    "tptz": "http://www.onvif.org/ver20/ptz/wsdl",
}
SOAP_CONTENT_TYPE = "application/soap+xml; charset=utf-8"
_DECLARATIONS = " ".join(f'xmlns:{prefix}="{uri}"' for prefix, uri in NS.items())

Text = str | int | float | bool | None


def _format(value: Text) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "NaN" if math.isnan(value) else ("INF" if value > 0 else "-INF")
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
    return str(value)


class Node:
    """An element to send: a prefixed tag (`tt:Name`), attributes, text and children."""

    __slots__ = ("attrs", "children", "tag", "text")

    def __init__(self, tag: str, text: Text = None, attrs: Mapping[str, Text] | None = None) -> None:
        self.tag = tag
        self.text = _format(text)
        self.attrs = {k: s for k, v in (attrs or {}).items() if (s := _format(v)) is not None}
        self.children: list[Node] = []

    def add(self, tag: str, text: Text = None, attrs: Mapping[str, Text] | None = None) -> Node:
        """Append a new child and return it."""
        node = Node(tag, text, attrs)
        self.children.append(node)
        return node

    def append(self, node: Node) -> Node:
        self.children.append(node)
        return node

    def extend(self, nodes: Sequence[Node]) -> None:
        self.children.extend(nodes)


def _escape(text: str, quote: bool = False) -> str:
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    if quote:
        text = text.replace('"', "&quot;").replace("\n", "&#10;").replace("\r", "&#13;").replace("\t", "&#9;")
    return text


def _write(node: Node, out: list[str]) -> None:
    out.append(f"<{node.tag}")
    for name, value in node.attrs.items():
        out.append(f' {name}="{_escape(value, quote=True)}"')
    if node.text is None and not node.children:
        out.append("/>")
        return
    out.append(">")
    if node.text is not None:
        out.append(_escape(node.text))
    for c in node.children:
        _write(c, out)
    out.append(f"</{node.tag}>")


def serialize(body: Node | None, header: Sequence[Node] = (), namespaces: Mapping[str, str] | None = None) -> bytes:
    """A complete SOAP 1.2 envelope around `body` (the response element or a fault).

    `namespaces` (prefix -> URI, `env` included) replaces the ONVIF prefixes declared on the envelope.
    """
    declarations = (
        _DECLARATIONS
        if namespaces is None
        else " ".join(f'xmlns:{prefix}="{_escape(uri, quote=True)}"' for prefix, uri in namespaces.items())
    )
    out = ['<?xml version="1.0" encoding="UTF-8"?>', f"<env:Envelope {declarations}>"]
    if header:
        out.append("<env:Header>")
        for h in header:
            _write(h, out)
        out.append("</env:Header>")
    out.append("<env:Body>")
    if body is not None:
        _write(body, out)
    out.append("</env:Body></env:Envelope>")
    return "".join(out).encode("utf-8")


# -- faults --------------------------------------------------------------------------------------------------

FaultCode = Literal["Sender", "Receiver", "VersionMismatch", "MustUnderstand", "DataEncodingUnknown"]


class SoapFault(Exception):
    """A SOAP fault to answer with: `code` (env:...), ONVIF subcodes (outermost first) and a reason.

    HTTP status follows the SOAP 1.2 HTTP binding: 400 for env:Sender, 500 otherwise.
    """

    def __init__(self, code: FaultCode, subcodes: Sequence[str], reason: str) -> None:
        super().__init__(reason)
        self.code: FaultCode = code
        self.subcodes = tuple(subcodes)
        self.reason = reason

    @property
    def http_status(self) -> int:
        return 400 if self.code == "Sender" else 500

    def to_node(self) -> Node:
        fault = Node("env:Fault")
        code = fault.add("env:Code")
        code.add("env:Value", f"env:{self.code}")
        parent = code
        for subcode in self.subcodes:
            parent = parent.add("env:Subcode")
            parent.add("env:Value", subcode)
        fault.add("env:Reason").add("env:Text", self.reason, {"xml:lang": "en"})
        return fault


def invalid_arg(subcode: str, reason: str) -> SoapFault:
    """env:Sender / ter:InvalidArgVal / ter:<subcode>: the usual answer to a bad argument value."""
    return SoapFault("Sender", ("ter:InvalidArgVal", f"ter:{subcode}"), reason)


def _invalid_args(reason: str) -> SoapFault:
    return SoapFault("Sender", ("ter:InvalidArgs",), reason)


# -- requests -------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SoapRequest:
    header: ET.Element | None
    body: ET.Element

    @property
    def namespace(self) -> str:
        return self.body.tag[1:].partition("}")[0] if self.body.tag.startswith("{") else ""

    @property
    def operation(self) -> str:
        return local_name(self.body.tag)


def unsafe_xml(raw: bytes) -> str | None:
    """Why `raw` must not be given to the XML parser, or None if it is safe.

    Documents with a DTD are refused outright (no entity expansion, local or remote). Only UTF-8 (and so
    ASCII) documents are accepted: every other encoding expat reads (UTF-16) would contain NUL bytes, and a
    DTD hidden in one would escape the text check.
    """
    if b"\x00" in raw:
        return "only UTF-8 documents are accepted"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return "the document is not valid UTF-8"
    if "<!DOCTYPE" in text or "<!ENTITY" in text:
        return "DTDs are not accepted"
    return None


def parse_envelope(raw: bytes) -> SoapRequest:
    """The operation element (and Header) of a SOAP 1.2 request; SoapFault if it is not one (or unsafe)."""
    refusal = unsafe_xml(raw)
    if refusal is not None:
        raise SoapFault("Sender", ("ter:WellFormed",), refusal)
    try:
        root = ET.fromstring(raw)
    except ET.ParseError as exc:
        raise SoapFault("Sender", ("ter:WellFormed",), f"XML is not well-formed: {exc}") from exc
    if root.tag == f"{{{SOAP11_ENV}}}Envelope":
        raise SoapFault("VersionMismatch", (), "only SOAP 1.2 envelopes are accepted")
    if root.tag != f"{{{ENV}}}Envelope":
        raise SoapFault("Sender", ("ter:WellFormed",), "the document is not a SOAP 1.2 envelope")
    header = root.find(f"{{{ENV}}}Header")
    body = root.find(f"{{{ENV}}}Body")
    if body is None:
        raise _invalid_args("the envelope has no Body")
    operations = list(body)
    if len(operations) != 1:
        raise _invalid_args("the Body must hold exactly one operation element")
    return SoapRequest(header=header, body=operations[0])


def local_name(tag: str) -> str:
    return tag.rpartition("}")[2]


def children(parent: ET.Element, name: str) -> Iterator[ET.Element]:
    """Children of `parent` with local name `name`, whatever their namespace."""
    return (c for c in parent if local_name(c.tag) == name)


def child(parent: ET.Element | None, name: str) -> ET.Element | None:
    if parent is None:
        return None
    return next(children(parent, name), None)


def require_child(parent: ET.Element, name: str) -> ET.Element:
    found = child(parent, name)
    if found is None:
        raise _invalid_args(f"{local_name(parent.tag)} needs a {name} element")
    return found


def child_text(parent: ET.Element | None, name: str) -> str | None:
    found = child(parent, name)
    return None if found is None else (found.text or "").strip()


def require_text(parent: ET.Element, name: str) -> str:
    return (require_child(parent, name).text or "").strip()


def parse_bool(text: str, what: str) -> bool:
    match text.strip():
        case "true" | "1":
            return True
        case "false" | "0":
            return False
    raise _invalid_args(f"{what} must be a boolean, got {text!r}")


def parse_float(text: str | None, what: str, subcode: str = "InvalidArgVal") -> float:
    if text is None:
        raise SoapFault("Sender", ("ter:MissingAttr",), f"{what} is required")
    try:
        value = float(text.strip())
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise invalid_arg(subcode, f"{what} must be a finite number, got {text!r}")
    return value


_DURATION = re.compile(
    r"P(?!$)(?:(?P<y>\d+)Y)?(?:(?P<mo>\d+)M)?(?:(?P<d>\d+)D)?"
    r"(?:T(?!$)(?:(?P<h>\d+)H)?(?:(?P<mi>\d+)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?"
)


def parse_duration(text: str, what: str) -> float:
    """An xs:duration as seconds (years and months count 365 and 30 days). Negative durations are refused."""
    m = _DURATION.fullmatch(text.strip())
    if m is None:
        raise invalid_arg("InvalidArgVal", f"{what} must be a non-negative xs:duration, got {text!r}")
    days = int(m["y"] or 0) * 365 + int(m["mo"] or 0) * 30 + int(m["d"] or 0)
    return days * 86400 + int(m["h"] or 0) * 3600 + int(m["mi"] or 0) * 60 + float(m["s"] or 0)


def format_duration(seconds: float) -> str:
    """Seconds as an xs:duration (`PT10S`, `PT0.5S`)."""
    return f"PT{_format(float(seconds))}S"
