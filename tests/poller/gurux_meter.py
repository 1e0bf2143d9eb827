"""A gurux-dlms server (GPL, tests only) as one meter on a simulated line: an outside implementation.

Our HDLC server link (SimulatedBus) carries the frames; gurux sees each APDU in a wrapper unit
(its HDLC mode latches the first addresses and cannot share a line). Its server is broken for
HLS and ciphering (see shared/notes/gurux-dlms.md), so this meter takes LLS and reads without
ciphering. Three small patches make plain GETs work at all: ``GXServerReply`` lacks
``setReply``/``getConnectionInfo``/``setCount``, and GET-normal calls ``notifyRead`` (missing) and
``onPostRead()`` without arguments; without them every GET-normal answers hardware-fault.
"""

from __future__ import annotations

import datetime as dt
import struct
from collections.abc import Callable
from typing import Any

from gurux_dlms import GXDateTime, GXDLMSServer, GXServerReply
from gurux_dlms.enums import AccessMode, Authentication, InterfaceType, MethodAccessMode, SourceDiagnostic, Unit
from gurux_dlms.objects import GXDLMSAssociationLogicalName, GXDLMSClock, GXDLMSData, GXDLMSRegister

from gateway.sim.meter import PUBLIC_CLIENT, SimMeterSettings
from tests.poller.meters import export_energy_at

GURUX_PASSWORD = b"GxLLS-8c"  # the LLS secret of the gurux meter
_WRAPPER = struct.Struct(">HHHH")  # IEC 62056-4-7: version, source wPort, destination wPort, length


class _Reply(GXServerReply):  # type: ignore[misc]
    def setReply(self, reply: Any) -> None:
        self.reply = reply

    def getConnectionInfo(self) -> Any:
        return self.connectionInfo

    def setCount(self, count: int) -> None:
        self.count = count


class _Server(GXDLMSServer):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__(True, InterfaceType.WRAPPER)
        self.client_sap = 0  # of the request being handled


    def isTarget(self, server_address: int, client_address: int) -> bool:
        return True

    def onValidateAuthentication(self, authentication: int, password: Any) -> int:
        if self.client_sap == PUBLIC_CLIENT and authentication == Authentication.NONE:
            return SourceDiagnostic.NONE  # Green Book 4.4.4: every meter has the public client
        if authentication != Authentication.LOW or bytes(password or b"") != GURUX_PASSWORD:
            return SourceDiagnostic.AUTHENTICATION_FAILURE
        return SourceDiagnostic.NONE

    def onGetAttributeAccess(self, arg: Any) -> int:
        return AccessMode.READ

    def onGetMethodAccess(self, arg: Any) -> int:
        return MethodAccessMode.NO_ACCESS

    def notifyRead(self, *args: Any) -> None:
        pass

    def onPreRead(self, args: Any) -> None:
        pass

    def onPostRead(self, args: Any = None) -> None:
        pass

    def onPreGet(self, args: Any) -> None:
        pass

    def onPostGet(self, args: Any) -> None:
        pass

    def onPreWrite(self, args: Any) -> None:
        pass

    def onPostWrite(self, args: Any) -> None:
        pass

    def onPreAction(self, args: Any) -> None:
        pass

    def onPostAction(self, args: Any) -> None:
        pass

    def onConnected(self, connection_info: Any) -> None:
        pass

    def onDisconnected(self, connection_info: Any) -> None:
        pass

    def onInvalidConnection(self, connection_info: Any) -> None:
        pass

    def onFindObject(self, object_type: Any, sn: int, ln: str) -> None:
        return None


class GuruxMeter:
    """An ApduServer for SimulatedBus: a gurux-dlms server with a clock and two energy registers."""

    def __init__(self, settings: SimMeterSettings, *, clock: Callable[[], dt.datetime]) -> None:
        self.settings = settings
        self._clock = clock
        server = _Server()
        self._clock_object = GXDLMSClock("0.0.1.0.0.255")
        self._import = GXDLMSRegister("1.0.1.8.0.255")
        self._export = GXDLMSRegister("1.0.2.8.0.255")
        for register in (self._import, self._export):
            register.scaler = 1  # gurux keeps 10^scaler: 1 goes on the wire as scaler 0
            register.unit = Unit.ACTIVE_ENERGY
        name = GXDLMSData("0.0.42.0.0.255")
        name.value = settings.logical_device_name
        association = GXDLMSAssociationLogicalName()
        association.authenticationMechanismName.mechanismId = Authentication.LOW
        association.secret = GURUX_PASSWORD
        for item in (name, self._clock_object, self._import, self._export):
            server.items.append(item)
            association.objectList.append(item)
        server.items.append(association)
        association.objectList.append(association)
        server.initialize()
        self._server = server
        self.requests = 0

    def handle(self, *, client_sap: int, apdu: bytes) -> bytes | None:
        now = self._clock()
        self._clock_object.time = GXDateTime(now)
        self._import.value = self.settings.energy_at(now)
        self._export.value = export_energy_at(self.settings, now)
        self._server.client_sap = client_sap
        reply = _Reply(_WRAPPER.pack(1, client_sap, 1, len(apdu)) + apdu)
        self._server.handleRequest(reply)
        self.requests += 1
        answer = bytes(reply.reply) if reply.reply else b""
        return answer[_WRAPPER.size:] or None

    def release(self, *, client_sap: int) -> None:
        self._server.reset()
