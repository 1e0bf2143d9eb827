"""The gateway's own identity read goes through the meter-channel interface, like the relay."""

from __future__ import annotations

import asyncio

import pytest

from gateway.codec import acse, axdr, xdlms
from gateway.core.channel import ApduReceived, Association, ChannelListener, DownReason
from gateway.core.channel_client import ChannelClient, ChannelClientError
from gateway.core.identity import PUBLIC_CLIENT_SAP, public_aarq, read_identity
from tests.core.fakes import AARE_ACCEPTED, RLRE, FakeChannel, FakeMedium

NAME = b"SIM0000000000017"
NAME_ANSWER = xdlms.encode_xdlms(xdlms.GetResponseNormal(invoke_id=0xC1, result=axdr.Data.octet_string(NAME)))


class ScriptedChannel(FakeChannel):
    """A meter that answers each request on the next loop turn (never from inside send_apdu)."""

    def __init__(self, medium: FakeMedium, association: Association, listener: ChannelListener,
                 script: list[bytes | DownReason]) -> None:
        super().__init__(medium, association, listener)
        self._script = script
        self._deliver = listener

    def send_apdu(self, apdu: bytes) -> None:
        super().send_apdu(apdu)
        step = self._script.pop(0)
        if isinstance(step, DownReason):
            asyncio.get_running_loop().call_soon(self.down, step)
        else:
            asyncio.get_running_loop().call_soon(self._deliver, ApduReceived(step))

    def close(self) -> bool:
        if super().close():
            return True
        asyncio.get_running_loop().call_soon(self.down, DownReason.RELEASED)
        return False


class ScriptedMedium(FakeMedium):
    def __init__(self, script: list[bytes | DownReason]) -> None:
        super().__init__()
        self.script = script

    def open(self, association: Association, listener: ChannelListener, *, probe: bool = False,
             background: bool = False, group: str = "") -> FakeChannel:
        channel = ScriptedChannel(self, association, listener, self.script)
        self.links[association] = channel
        self.opened.append(channel)
        return channel


async def test_an_identity_read_associates_as_the_public_client_reads_the_name_and_releases() -> None:
    medium = ScriptedMedium([AARE_ACCEPTED, NAME_ANSWER, RLRE])
    identity = await read_identity(medium, meter=17)
    assert identity.logical_device_name == NAME
    (channel,) = medium.opened
    assert channel.association == Association(client_sap=PUBLIC_CLIENT_SAP, logical_device=1, meter=17)
    assert acse.decode_aarq(channel.sent[0]).application_context == acse.APPLICATION_CONTEXT_LN_NO_CIPHERING
    assert channel.state == "closed" and not channel.aborted and medium.links == {}  # said goodbye


async def test_a_busy_data_link_is_reported_as_in_use_without_opening_a_channel() -> None:
    medium = ScriptedMedium([])
    medium.hold(Association(client_sap=PUBLIC_CLIENT_SAP, logical_device=1, meter=17))
    with pytest.raises(ChannelClientError) as caught:
        await read_identity(medium, meter=17)
    assert caught.value.reason is DownReason.IN_USE and medium.opened == []


async def test_a_silent_meter_is_a_typed_timeout() -> None:
    medium = ScriptedMedium([DownReason.TIMEOUT])
    with pytest.raises(ChannelClientError) as caught:
        await read_identity(medium, meter=40, probe=True)
    assert caught.value.reason is DownReason.TIMEOUT and medium.links == {}


async def test_a_channel_that_went_down_between_requests_reports_why() -> None:
    medium = ScriptedMedium([AARE_ACCEPTED])
    association = Association(client_sap=PUBLIC_CLIENT_SAP, logical_device=1, meter=17)
    async with ChannelClient(medium, association) as client:
        await client.request(public_aarq())
        medium.opened[0].down(DownReason.DROPPED)  # the meter sent DM while we were not asking
        with pytest.raises(ChannelClientError) as caught:
            await client.request(public_aarq())
    assert caught.value.reason is DownReason.DROPPED and medium.links == {}
