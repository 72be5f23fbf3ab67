"""The IEC 61968-9 web services amihub publishes and calls, and their WSDL files.

Naming (docs/soap.md, STANDARDS.md): one service per 61968-9 web-service name,
ports ``<Noun>_Port``, operations ``<Verb><Noun>``, soapAction
``http://iec.ch/TC57/2011/<Service>/<Operation>``, SOAP 1.1 document/literal,
bodies = our own wrapper elements of ``cim_schemas/xsd/messages``.

The WSDL files under ``cim_schemas/wsdl`` are generated from this catalogue
(``python -m adapters.soap.catalogue`` rewrites them; a test keeps them in step)
and served as they are, only ``soap:address`` rewritten per request. They import
our XSDs by relative ``schemaLocation`` (``../xsd/messages/...``), which the
server also serves, so a client pointed at ``.../ws/<Service>?wsdl`` resolves
everything from amihub.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cim_schemas.namespaces import (
    GET_END_DEVICE_EVENTS_MESSAGE_NS,
    GET_METER_READINGS_MESSAGE_NS,
    message_ns,
)

IEC_WS: Final = "http://iec.ch/TC57/2011/"
WSDL_DIR: Final = Path(__file__).resolve().parents[2] / "cim_schemas" / "wsdl"

REQUEST_VERBS: Final = ("Create", "Change", "Cancel", "Close", "Delete")
EVENT_VERBS: Final = ("Created", "Changed", "Canceled", "Closed", "Deleted")


@dataclass(frozen=True)
class Operation:
    name: str  # CreateEndDeviceControls
    verb: str  # the Header Verb it carries: create
    input: str  # local name of the body element (in the service's message namespace)
    output: str  # local name of the answer element


@dataclass(frozen=True)
class ServiceSpec:
    name: str  # GetMeterReadings, ExecuteEndDeviceControls, ...
    noun: str  # the Header Noun
    namespace: str  # the wrapper namespace of its body elements
    xsd: str  # the wrapper schema, relative to cim_schemas/xsd
    operations: tuple[Operation, ...]
    #: inbound (amihub serves it) or outbound (amihub calls it: Reply*, Send*)
    inbound: bool = True
    #: other wrapper namespaces whose body elements are accepted too (answered in theirs)
    also_accepts: tuple[str, ...] = ()

    @property
    def port(self) -> str:
        # the Get service's messages have a namespace of their own (GetMeterReadingsMessage)
        return "GetMeterReadings_Port" if self.name == "GetMeterReadings" else f"{self.noun}_Port"

    @property
    def target_namespace(self) -> str:
        return IEC_WS + self.name

    @property
    def fault(self) -> str:
        return f"{self.noun}FaultMessage"

    def soap_action(self, operation: str) -> str:
        return f"{IEC_WS}{self.name}/{operation}"

    def accepts_soap_action(self, operation: str, action: str) -> bool:
        """Whether a soapAction sent with ``operation`` names it: ours
        (``.../<Service>/<Operation>``) or any other whose last segment is the operation,
        e.g. ``http://iec.ch/TC57/2011/MeterConfig/CreateMeterConfig`` as other 61968-9
        implementations generate it from the standard's WSDLs."""
        return action.rstrip("/").rpartition("/")[2] == operation

    def operation_for(self, element: str) -> Operation | None:
        """The operation whose input is the body element ``{namespace}local`` (in the
        service's namespace or one it also accepts)."""
        for namespace in (self.namespace, *self.also_accepts):
            for op in self.operations:
                if element == "{" + namespace + "}" + op.input:
                    return op
        return None

    @property
    def wsdl_file(self) -> Path:
        return WSDL_DIR / f"{self.name}.wsdl"


def _ops(noun: str, verbs: tuple[str, ...]) -> tuple[Operation, ...]:
    return tuple(Operation(v + noun, v.lower(), v + noun, f"{noun}ResponseMessage") for v in verbs)


def _execute(noun: str) -> ServiceSpec:
    return ServiceSpec(
        f"Execute{noun}",
        noun,
        message_ns(noun),
        f"messages/{noun}Message.xsd",
        _ops(noun, REQUEST_VERBS),
    )


#: The services amihub serves at /ws/<name>.
SERVICES: Final[dict[str, ServiceSpec]] = {
    s.name: s
    for s in (
        ServiceSpec(
            "GetMeterReadings",
            "MeterReadings",
            GET_METER_READINGS_MESSAGE_NS,
            "messages/GetMeterReadingsMessage.xsd",
            (
                Operation(
                    "GetMeterReadings", "get", "GetMeterReadings", "MeterReadingsResponseMessage"
                ),
            ),
        ),
        ServiceSpec(
            "ReceiveMeterReadings",
            "MeterReadings",
            message_ns("MeterReadings"),
            "messages/MeterReadingsMessage.xsd",
            _ops("MeterReadings", EVENT_VERBS),
        ),
        _execute("UsagePointConfig"),
        _execute("MeterConfig"),
        _execute("MasterDataLinkageConfig"),
        _execute("EndDeviceGroups"),
        _execute("EndDeviceControls"),
        ServiceSpec(  # the IEC names: GetEndDeviceEventsMessage, as the standard's WSDL
            "GetEndDeviceEvents",
            "EndDeviceEvents",
            GET_END_DEVICE_EVENTS_MESSAGE_NS,
            "messages/GetEndDeviceEventsMessage.xsd",
            (
                Operation(
                    "GetEndDeviceEvents",
                    "get",
                    "GetEndDeviceEvents",
                    "EndDeviceEventsResponseMessage",
                ),
            ),
            also_accepts=(message_ns("EndDeviceEvents"),),
        ),
        _execute("MeterReadSchedule"),
        ServiceSpec(
            "ReceiveEndDeviceEvents",
            "EndDeviceEvents",
            message_ns("EndDeviceEvents"),
            "messages/EndDeviceEventsMessage.xsd",
            _ops("EndDeviceEvents", EVENT_VERBS),
        ),
    )
}

#: Nouns whose asynchronous replies amihub delivers to Reply<Noun> at a ReplyAddress.
REPLY_NOUNS: Final = (
    "MeterReadings",
    "UsagePointConfig",
    "MeterConfig",
    "MasterDataLinkageConfig",
    "EndDeviceGroups",
    "EndDeviceControls",
    "EndDeviceEvents",
    "MeterReadSchedule",
)
#: Nouns whose events amihub sends to configured subscribers through Send<Noun>.
SEND_NOUNS: Final = ("MeterReadings", "EndDeviceEvents")


def reply_service(noun: str) -> ServiceSpec:
    """Reply<Noun>: one operation Reply<Noun> taking the <Noun>ResponseMessage.

    A get MeterReadings answer is the GetMeterReadingsMessage element, so
    ReplyMeterReadings takes that one.
    """
    ns = GET_METER_READINGS_MESSAGE_NS if noun == "MeterReadings" else message_ns(noun)
    xsd = (
        "messages/GetMeterReadingsMessage.xsd"
        if noun == "MeterReadings"
        else f"messages/{noun}Message.xsd"
    )
    op = Operation(f"Reply{noun}", "reply", f"{noun}ResponseMessage", f"{noun}ResponseMessage")
    return ServiceSpec(f"Reply{noun}", noun, ns, xsd, (op,), inbound=False)


def send_service(noun: str) -> ServiceSpec:
    """Send<Noun>: Created<Noun>, Changed<Noun>, ... events to a subscriber."""
    return ServiceSpec(
        f"Send{noun}",
        noun,
        message_ns(noun),
        f"messages/{noun}Message.xsd",
        _ops(noun, EVENT_VERBS),
        inbound=False,
    )


OUTBOUND: Final[dict[str, ServiceSpec]] = {
    s.name: s
    for s in (*(reply_service(n) for n in REPLY_NOUNS), *(send_service(n) for n in SEND_NOUNS))
}

ALL_SERVICES: Final[dict[str, ServiceSpec]] = {**SERVICES, **OUTBOUND}

PLACEHOLDER_ADDRESS: Final = "http://localhost:8080/ws/"


def render_wsdl(spec: ServiceSpec) -> str:
    """The WSDL 1.1 text of one service (SOAP 1.1, document/literal)."""
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        "<!--",
        f"  amihub: the IEC 61968-9 web service {spec.name} (SOAP 1.1, document/literal).",
        "  Generated by adapters/soap/catalogue.py; written for amihub, not copied from an",
        "  IEC file. Bodies are the wrapper elements of our own XSDs, imported by",
        "  relative schemaLocation; amihub serves both and rewrites soap:address.",
        "-->",
        f'<wsdl:definitions name="{spec.name}"',
        f'    targetNamespace="{spec.target_namespace}"',
        '    xmlns:wsdl="http://schemas.xmlsoap.org/wsdl/"',
        '    xmlns:soap="http://schemas.xmlsoap.org/wsdl/soap/"',
        '    xmlns:xs="http://www.w3.org/2001/XMLSchema"',
        f'    xmlns:tns="{spec.target_namespace}"',
        f'    xmlns:msg="{spec.namespace}">',
        "  <wsdl:types>",
        f'    <xs:schema targetNamespace="{spec.target_namespace}/types"'
        ' elementFormDefault="qualified">',
        f'      <xs:import namespace="{spec.namespace}" schemaLocation="../xsd/{spec.xsd}"/>',
        "    </xs:schema>",
        "  </wsdl:types>",
    ]
    outputs = sorted({op.output for op in spec.operations})
    for op in spec.operations:
        lines += [
            f'  <wsdl:message name="{op.name}RequestMessage">',
            f'    <wsdl:part name="{op.name}RequestMessage" element="msg:{op.input}"/>',
            "  </wsdl:message>",
        ]
    for out in outputs:
        lines += [
            f'  <wsdl:message name="{out}">',
            f'    <wsdl:part name="{out}" element="msg:{out}"/>',
            "  </wsdl:message>",
        ]
    lines += [
        f'  <wsdl:message name="{spec.fault}">',
        f'    <wsdl:part name="{spec.fault}" element="msg:{spec.fault}"/>',
        "  </wsdl:message>",
        f'  <wsdl:portType name="{spec.port}">',
    ]
    for op in spec.operations:
        lines += [
            f'    <wsdl:operation name="{op.name}">',
            f'      <wsdl:input name="{op.name}Request" message="tns:{op.name}RequestMessage"/>',
            f'      <wsdl:output name="{op.name}Response" message="tns:{op.output}"/>',
            f'      <wsdl:fault name="{spec.fault}" message="tns:{spec.fault}"/>',
            "    </wsdl:operation>",
        ]
    lines += [
        "  </wsdl:portType>",
        f'  <wsdl:binding name="{spec.port.replace("_Port", "_Binding")}" type="tns:{spec.port}">',
        '    <soap:binding style="document" transport="http://schemas.xmlsoap.org/soap/http"/>',
    ]
    for op in spec.operations:
        lines += [
            f'    <wsdl:operation name="{op.name}">',
            f'      <soap:operation soapAction="{spec.soap_action(op.name)}" style="document"/>',
            f'      <wsdl:input name="{op.name}Request"><soap:body use="literal"/></wsdl:input>',
            f'      <wsdl:output name="{op.name}Response"><soap:body use="literal"/></wsdl:output>',
            f'      <wsdl:fault name="{spec.fault}">'
            f'<soap:fault name="{spec.fault}" use="literal"/></wsdl:fault>',
            "    </wsdl:operation>",
        ]
    lines += [
        "  </wsdl:binding>",
        f'  <wsdl:service name="{spec.name}">',
        f'    <wsdl:port name="{spec.port}"'
        f' binding="tns:{spec.port.replace("_Port", "_Binding")}">',
        f'      <soap:address location="{PLACEHOLDER_ADDRESS}{spec.name}"/>',
        "    </wsdl:port>",
        "  </wsdl:service>",
        "</wsdl:definitions>",
        "",
    ]
    return "\n".join(lines)


def write_all(directory: Path = WSDL_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for spec in ALL_SERVICES.values():
        path = directory / f"{spec.name}.wsdl"
        path.write_text(render_wsdl(spec), encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":  # pragma: no cover - developer tool
    for p in write_all():
        sys.stdout.write(f"{p}\n")
