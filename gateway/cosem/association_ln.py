"""IC 15 Association LN, version 0 (Blue Book 4.4.3): what the current association sees and may do.

One instance (0.0.40.0.0.255, "current association") answers for whichever association
asks: every attribute is computed from the request context. The secret (attribute 7)
is never readable.
"""

from __future__ import annotations

from collections.abc import Mapping

from gateway.codec.axdr import Data, DataType
from gateway.codec.xdlms import AccessSelection, ActionResult, DataAccessResult
from gateway.cosem.objects import (
    Access,
    ActionAnswer,
    Answer,
    AssociationInfo,
    CosemObject,
    RequestContext,
)

CURRENT_ASSOCIATION = bytes([0, 0, 40, 0, 0, 255])  # Blue Book 4.4.3: 0.0.40.0.0.255
# Green Book 9.4.2.2: {joint-iso-itu-t(2) country(16) country-name(756) identified-organization(5)
# DLMS-UA(8) ...}: application-context (1) or authentication-mechanism-name (2), then the id.
_DLMS_UA_ARC = (2, 16, 756, 5, 8)
_APPLICATION_CONTEXT_ARC = 1
_MECHANISM_NAME_ARC = 2
SECRET_ATTRIBUTE = 7
# Blue Book IC 15 access_mode values.
_NO_ACCESS, _READ_ONLY, _WRITE_ONLY, _READ_AND_WRITE = 0, 1, 2, 3
QUALITY_OF_SERVICE_NONE = 0


def _name_structure(arc: int, identifier: int) -> Data:
    """context_name_type / mechanism_name as the v0 structure of OID components."""
    joint, country, country_name, organisation, dlms_ua = _DLMS_UA_ARC
    return Data.structure(
        Data.unsigned(joint),
        Data.unsigned(country),
        Data.long_unsigned(country_name),
        Data.unsigned(organisation),
        Data.unsigned(dlms_ua),
        Data.unsigned(arc),
        Data.unsigned(identifier),
    )


def _conformance_bits(conformance: int) -> Data:
    """The 24-bit conformance block as a bit-string (bit 0 = most significant bit of the first octet)."""
    return Data(DataType.BIT_STRING, conformance.to_bytes(3, "big"))


def object_list_entry(item: CosemObject, rights: Access) -> Data:
    """One object_list element: class, version, name, access rights (v0: method access is boolean)."""
    attributes = []
    for attribute_id in range(1, item.attribute_count + 1):
        mode = (_READ_ONLY if attribute_id in rights.read else _NO_ACCESS) | (
            _WRITE_ONLY if attribute_id in rights.write else _NO_ACCESS
        )
        selectors = item.selective_attributes.get(attribute_id)
        attributes.append(
            Data.structure(
                Data.integer(attribute_id),
                Data.enum(mode),
                Data.array(*map(Data.integer, selectors)) if selectors and mode else Data.null(),
            )
        )
    methods = [
        Data.structure(Data.integer(method_id), Data.boolean(method_id in rights.methods))
        for method_id in range(1, item.method_count + 1)
    ]
    return Data.structure(
        Data.long_unsigned(item.class_id),
        Data.unsigned(item.version),
        Data.octet_string(item.logical_name),
        Data.structure(Data.array(*attributes), Data.array(*methods)),
    )


class AssociationLN(CosemObject):
    """IC 15 for the current association; method 1 is reply_to_HLS_authentication."""

    class_id = 15
    version = 0
    attribute_count = 8
    method_count = 2

    def __init__(self, *, rights: Mapping[int, Access], logical_name: bytes = CURRENT_ASSOCIATION) -> None:
        super().__init__(logical_name=logical_name, rights=rights)

    def _get(self, attribute_id: int, selection: AccessSelection | None, ctx: RequestContext) -> Answer:
        info = ctx.association_info()
        match attribute_id:
            case 2:
                return Data.array(
                    *(
                        object_list_entry(item, item.rights[ctx.client_sap])
                        for item in ctx.visible_objects()
                    )
                )
            case 3:
                return Data.structure(Data.integer(info.client_sap), Data.long_unsigned(info.server_sap))
            case 4:
                return _name_structure(_APPLICATION_CONTEXT_ARC, info.application_context)
            case 5:
                return _context_info(info)
            case 6:
                return _name_structure(_MECHANISM_NAME_ARC, info.mechanism)
            case 8:
                return Data.enum(info.status)
        return DataAccessResult.READ_WRITE_DENIED  # the secret (7) among them

    def _action(self, method_id: int, parameters: Data | None, ctx: RequestContext) -> ActionAnswer:
        if method_id != 1:
            return ActionResult.OBJECT_UNAVAILABLE, None  # change_HLS_secret is not offered
        if parameters is None or parameters.type != DataType.OCTET_STRING or not isinstance(parameters.value, bytes):
            return ActionResult.TYPE_UNMATCHED, None
        f_ctos = ctx.reply_to_hls_authentication(parameters.value)
        if f_ctos is None:
            # The client failed HLS pass 3: it does not hold the keys. The association stays unusable.
            return ActionResult.READ_WRITE_DENIED, None
        return ActionResult.SUCCESS, Data.octet_string(f_ctos)


def _context_info(info: AssociationInfo) -> Data:
    """xDLMS_context_info: conformance, max receive/send PDU sizes, version, QoS, cyphering info."""
    return Data.structure(
        _conformance_bits(info.conformance),
        Data.long_unsigned(info.server_max_receive_pdu_size),
        Data.long_unsigned(info.client_max_receive_pdu_size),
        Data.unsigned(info.dlms_version),
        Data.integer(QUALITY_OF_SERVICE_NONE),
        Data.octet_string(b""),
    )
