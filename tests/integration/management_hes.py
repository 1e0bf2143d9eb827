"""The management client (SAP 1, HLS-GMAC with the gateway's own keys) over a blocking wrapper socket.

Our own codec-built client (tests/cosem/client.py) on a real TCP connection: unlike gurux it keeps
whatever arrives besides its answers (meter pushes), so a test can read them. Run it in a thread.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.codec.acse import AssociationResult, Mechanism
from gateway.codec.wrapper import WrapperDecoder, WrapperPdu, encode
from gateway.keys import GatewayKeys
from tests.cosem.client import Keys, TestClient
from tests.hes import TcpChannel

MANAGEMENT_CLIENT_SAP = 1
GATEWAY_SAP = 1


@dataclass
class ManagementHes(TestClient):
    """Answers from SAP 1 go to the client; every other PDU (a push) is kept in ``pushes``."""

    channel: TcpChannel | None = None
    decoder: WrapperDecoder = field(default_factory=WrapperDecoder)
    pushes: list[WrapperPdu] = field(default_factory=list)
    _answers: list[bytes] = field(default_factory=list)

    @classmethod
    def connect(cls, host: str, port: int, keys: GatewayKeys) -> ManagementHes:
        hes = cls(device=None, client_sap=MANAGEMENT_CLIENT_SAP,  # type: ignore[arg-type]  # no in-process device
                  keys=Keys(block_cipher_key=keys.block_cipher_key, authentication_key=keys.authentication_key,
                            system_title=b"UTILHES1"))
        hes.channel = TcpChannel(host, port)
        return hes

    def send(self, apdu: bytes) -> bytes:
        assert self.channel is not None
        self.channel.send(encode(WrapperPdu(source=self.client_sap, destination=GATEWAY_SAP, apdu=apdu)))
        while not self._answers:
            self._read()
        return self._answers.pop(0)

    def associate_with_hls(self) -> None:
        """AARQ with HLS-GMAC, then pass 3/4: the association the gateway gives pushes to."""
        aare = self.associate(mechanism=Mechanism.HLS_GMAC)
        assert aare.result is AssociationResult.ACCEPTED
        self.hls(aare)

    def receive_pushes(self, count: int) -> list[WrapperPdu]:
        while len(self.pushes) < count:
            self._read()
        taken, self.pushes = self.pushes[:count], self.pushes[count:]
        return taken

    def close(self) -> None:
        if self.channel is not None:
            self.channel.close()

    def _read(self) -> None:
        assert self.channel is not None
        for pdu in self.decoder.feed(self.channel.receive()):
            if pdu.source == GATEWAY_SAP and pdu.destination == self.client_sap:
                self._answers.append(pdu.apdu)
            else:
                self.pushes.append(pdu)
