"""Device service (tds, ver10): identity, clock, and where the other services are."""

from __future__ import annotations

from argus_simcam.onvif import media, ptz_service
from argus_simcam.onvif.context import Call, Service, ServiceKind
from argus_simcam.onvif.soap import Node, SoapFault, children, parse_bool, require_text

__all__ = ["DEVICE_SERVICE", "PREAUTH_DISCOVERY_OPERATIONS", "service_version"]

# Operations ONVIF puts in the PRE_AUTH access class besides GetSystemDateAndTime (always open here).
PREAUTH_DISCOVERY_OPERATIONS = frozenset(
    {"GetServices", "GetServiceCapabilities", "GetCapabilities", "GetHostname", "GetWsdlUrl"}
)
_VERSIONS = {
    ServiceKind.DEVICE: (21, 12),
    ServiceKind.MEDIA: (21, 12),
    ServiceKind.MEDIA2: (21, 12),
    ServiceKind.PTZ: (21, 12),
}
_CATEGORIES = frozenset({"All", "Analytics", "Device", "Events", "Imaging", "Media", "PTZ"})


def service_version(kind: ServiceKind) -> tuple[int, int]:
    return _VERSIONS[kind]


def _kinds(call: Call) -> list[ServiceKind]:
    kinds = [ServiceKind.DEVICE, ServiceKind.MEDIA, ServiceKind.MEDIA2]
    if call.camera.ptz is not None:
        kinds.append(ServiceKind.PTZ)
    return kinds


def get_device_information(call: Call) -> Node:
    cam = call.camera
    response = Node("tds:GetDeviceInformationResponse")
    response.add("tds:Manufacturer", cam.manufacturer)
    response.add("tds:Model", cam.model)
    response.add("tds:FirmwareVersion", cam.firmware_version)
    response.add("tds:SerialNumber", cam.serial_number)
    response.add("tds:HardwareId", cam.hardware_id)
    return response


def _date_time(parent: Node, tag: str, call: Call) -> None:
    now = call.camera_datetime()
    node = parent.add(tag)
    time = node.add("tt:Time")
    time.add("tt:Hour", now.hour)
    time.add("tt:Minute", now.minute)
    time.add("tt:Second", now.second)
    date = node.add("tt:Date")
    date.add("tt:Year", now.year)
    date.add("tt:Month", now.month)
    date.add("tt:Day", now.day)


def get_system_date_and_time(call: Call) -> Node:
    response = Node("tds:GetSystemDateAndTimeResponse")
    sdt = response.add("tds:SystemDateAndTime")
    sdt.add("tt:DateTimeType", "NTP")
    sdt.add("tt:DaylightSavings", False)
    sdt.add("tt:TimeZone").add("tt:TZ", "UTC0")
    _date_time(sdt, "tt:UTCDateTime", call)
    _date_time(sdt, "tt:LocalDateTime", call)
    return response


def _device_service_capabilities(tag: str) -> Node:
    caps = Node(tag)
    caps.add(
        "tds:Network",
        attrs={"IPFilter": False, "ZeroConfiguration": False, "IPVersion6": False, "DynDNS": False, "NTP": 1},
    )
    caps.add(
        "tds:Security",
        attrs={"TLS1.2": False, "UsernameToken": True, "HttpDigest": False, "MaxUsers": 1},
    )
    caps.add(
        "tds:System",
        attrs={
            "DiscoveryResolve": False,
            "DiscoveryBye": False,
            "RemoteDiscovery": False,
            "SystemBackup": False,
            "SystemLogging": False,
            "FirmwareUpgrade": False,
        },
    )
    return caps


def get_service_capabilities(call: Call) -> Node:
    response = Node("tds:GetServiceCapabilitiesResponse")
    response.append(_device_service_capabilities("tds:Capabilities"))
    return response


def _service_capabilities(call: Call, kind: ServiceKind) -> Node:
    match kind:
        case ServiceKind.DEVICE:
            return _device_service_capabilities("tds:Capabilities")
        case ServiceKind.MEDIA:
            return media.media1_capabilities(call)
        case ServiceKind.MEDIA2:
            return media.media2_capabilities(call)
        case ServiceKind.PTZ:
            return ptz_service.ptz_capabilities()


def get_services(call: Call) -> Node:
    include = parse_bool(require_text(call.args, "IncludeCapability"), "IncludeCapability")
    response = Node("tds:GetServicesResponse")
    for kind in _kinds(call):
        service = response.add("tds:Service")
        service.add("tds:Namespace", kind.namespace)
        service.add("tds:XAddr", call.urls.xaddr(kind))
        if include:
            service.add("tds:Capabilities").append(_service_capabilities(call, kind))
        major, minor = service_version(kind)
        version = service.add("tds:Version")
        version.add("tt:Major", major)
        version.add("tt:Minor", minor)
    return response


def get_capabilities(call: Call) -> Node:
    categories = {(c.text or "").strip() for c in children(call.args, "Category")} or {"All"}
    unknown = categories - _CATEGORIES
    if unknown:
        raise SoapFault("Sender", ("ter:InvalidArgVal",), f"unknown capability category {sorted(unknown)}")
    everything = "All" in categories
    offered = {"Device", "Media"} | ({"PTZ"} if call.camera.ptz is not None else set())
    missing = categories - offered - {"All"}
    if missing:
        raise SoapFault(
            "Receiver",
            ("ter:ActionNotSupported", "ter:NoSuchService"),
            f"the device has no {', '.join(sorted(missing))} service",
        )
    response = Node("tds:GetCapabilitiesResponse")
    caps = response.add("tds:Capabilities")
    if everything or "Device" in categories:
        device = caps.add("tt:Device")
        device.add("tt:XAddr", call.urls.xaddr(ServiceKind.DEVICE))
        network = device.add("tt:Network")
        for flag in ("IPFilter", "ZeroConfiguration", "IPVersion6", "DynDNS"):
            network.add(f"tt:{flag}", False)
        system = device.add("tt:System")
        for flag in (
            "DiscoveryResolve",
            "DiscoveryBye",
            "RemoteDiscovery",
            "SystemBackup",
            "SystemLogging",
            "FirmwareUpgrade",
        ):
            system.add(f"tt:{flag}", False)
        for major, minor in ((2, 60), (21, 12)):
            version = system.add("tt:SupportedVersions")
            version.add("tt:Major", major)
            version.add("tt:Minor", minor)
    if everything or "Media" in categories:
        media_caps = caps.add("tt:Media")
        media_caps.add("tt:XAddr", call.urls.xaddr(ServiceKind.MEDIA))
        streaming = media_caps.add("tt:StreamingCapabilities")
        streaming.add("tt:RTPMulticast", False)
        streaming.add("tt:RTP_TCP", True)
        streaming.add("tt:RTP_RTSP_TCP", True)
    if call.camera.ptz is not None and (everything or "PTZ" in categories):
        caps.add("tt:PTZ").add("tt:XAddr", call.urls.xaddr(ServiceKind.PTZ))
    return response


def get_scopes(call: Call) -> Node:
    response = Node("tds:GetScopesResponse")
    for item in call.camera.scopes():
        scope = response.add("tds:Scopes")
        scope.add("tt:ScopeDef", "Fixed")
        scope.add("tt:ScopeItem", item)
    return response


def get_hostname(call: Call) -> Node:
    response = Node("tds:GetHostnameResponse")
    info = response.add("tds:HostnameInformation")
    info.add("tt:FromDHCP", False)
    info.add("tt:Name", call.camera.hostname)
    return response


def get_network_interfaces(call: Call) -> Node:
    response = Node("tds:GetNetworkInterfacesResponse")
    nic = response.add("tds:NetworkInterfaces", attrs={"token": "eth0"})
    nic.add("tt:Enabled", True)
    info = nic.add("tt:Info")
    info.add("tt:Name", "eth0")
    info.add("tt:HwAddress", call.camera.mac_address)
    info.add("tt:MTU", 1500)
    if ":" not in call.local_address:
        ipv4 = nic.add("tt:IPv4")
        ipv4.add("tt:Enabled", True)
        config = ipv4.add("tt:Config")
        manual = config.add("tt:Manual")
        manual.add("tt:Address", call.local_address)
        manual.add("tt:PrefixLength", 24)
        config.add("tt:DHCP", False)
    return response


def get_wsdl_url(call: Call) -> Node:
    response = Node("tds:GetWsdlUrlResponse")
    response.add("tds:WsdlUrl", "http://www.onvif.org/Documents/Specifications.aspx")
    return response


DEVICE_SERVICE = Service(
    ServiceKind.DEVICE,
    {
        "GetDeviceInformation": get_device_information,
        "GetSystemDateAndTime": get_system_date_and_time,
        "GetServiceCapabilities": get_service_capabilities,
        "GetServices": get_services,
        "GetCapabilities": get_capabilities,
        "GetScopes": get_scopes,
        "GetHostname": get_hostname,
        "GetNetworkInterfaces": get_network_interfaces,
        "GetWsdlUrl": get_wsdl_url,
    },
)
