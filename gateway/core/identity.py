"""Reading a meter's identity through the public client: no security, no key (Green Book 4.4.4)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from gateway.codec import acse, axdr, xdlms
from gateway.codec.errors import RemoteProtocolError
from gateway.codec.obis import obis
from gateway.core.channel import Association, MeterAddress, MeterMedium
from gateway.core.channel_client import ChannelClient, ChannelClientError

PUBLIC_CLIENT_SAP = 16
LOGICAL_DEVICE_NAME = xdlms.AttributeDescriptor(class_id=1, logical_name=obis("0.0.42.0.0.255"), attribute_id=2)
INVOKE_ID = 0xC1  # invoke-id 1, confirmed, high priority


class IdentityError(Exception):
    """The meter answered, but not with a usable identity."""


@dataclass(frozen=True, slots=True)
class Identity:
    logical_device_name: bytes
    round_trip_ms: float  # of the GET alone


def public_aarq(*, max_pdu: int = 1024) -> bytes:
    """An AARQ for the public client: LN referencing, no ciphering, no authentication."""
    initiate = acse.InitiateRequest(
        proposed_conformance=int(acse.Conformance.GET | acse.Conformance.BLOCK_TRANSFER_WITH_GET_OR_READ),
        client_max_receive_pdu_size=max_pdu,
    )
    return acse.encode_aarq(acse.Aarq(application_context=acse.APPLICATION_CONTEXT_LN_NO_CIPHERING,
                                      user_information=acse.encode_initiate_request(initiate)))


def get_logical_device_name() -> bytes:
    return xdlms.encode_xdlms(xdlms.GetRequestNormal(invoke_id=INVOKE_ID, attribute=LOGICAL_DEVICE_NAME))


async def read_identity(medium: MeterMedium, *, meter: MeterAddress, logical_device: int = 1, probe: bool = False,
                        background: bool = False, timeout_s: float = 30.0) -> Identity:
    """Associate as the public client, read 0.0.42.0.0.255, release. Raises ChannelClientError/IdentityError.

    In the background, every relay exchange on the medium goes before each of ours.
    """
    association = Association(client_sap=PUBLIC_CLIENT_SAP, logical_device=logical_device, meter=meter)
    async with ChannelClient(medium, association, probe=probe, background=background, timeout_s=timeout_s) as client:
        try:
            aare = acse.decode_aare(await client.request(public_aarq()))
        except RemoteProtocolError as exc:
            raise IdentityError(f"not an AARE: {exc}") from None
        if aare.result is not acse.AssociationResult.ACCEPTED:
            raise IdentityError(f"public association refused ({aare.result.name.lower()})")
        started = time.perf_counter()
        answer = await client.request(get_logical_device_name())
        rtt_ms = (time.perf_counter() - started) * 1e3
        name = _name_from(answer)
        await client.request(acse.encode_rlrq(acse.Rlrq(reason=0)))
        return Identity(logical_device_name=name, round_trip_ms=rtt_ms)


def _name_from(answer: bytes) -> bytes:
    try:
        pdu = xdlms.decode_xdlms(answer)
    except RemoteProtocolError as exc:
        raise IdentityError(f"unreadable GET answer: {exc}") from None
    if not isinstance(pdu, xdlms.GetResponseNormal):
        raise IdentityError(f"unexpected answer {type(pdu).__name__}")
    if not isinstance(pdu.result, axdr.Data):
        raise IdentityError(f"logical device name not readable: {pdu.result.name.lower()}")
    value = pdu.result.value
    if isinstance(value, str):
        return value.encode()
    if not isinstance(value, bytes) or not value:
        raise IdentityError("logical device name is not an octet-string")
    return value


__all__ = ["ChannelClientError", "Identity", "IdentityError", "public_aarq", "read_identity"]
