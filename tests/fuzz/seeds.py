"""The seed corpora, built from the byte vectors the attacks used: ``python -m tests.fuzz.seeds`` writes corpus/."""

from __future__ import annotations

from pathlib import Path

from gateway.codec import acse, xdlms
from gateway.codec.axdr import Data
from gateway.codec.hdlc import HdlcAddress, HdlcFrame, encode_frame
from gateway.codec.wrapper import WrapperPdu, encode
from tests.fuzz.targets import METER, join_apdus, push_from, ua_from_meter

CORPUS = Path(__file__).parent / "corpus"
LOGICAL_DEVICE_NAME = bytes([0, 0, 42, 0, 0, 255])
SAP_ASSIGNMENT = bytes([0, 0, 41, 0, 0, 255])

# From issue 9: a stranger's AARQ to SAP 1 (D1), an application context with an arc >= 0x80 (D6b),
# an HDLC REJ frame (control 0x09) that DLMS does not define (D5).
STRANGER_AARQ = bytes.fromhex("601DA109060760857405080101BE10040E01000000065F1F0400007E1FFFFF")
WIDE_ARC_AARQ = bytes.fromhex("600ba109060760857405080180")
REJ_FRAME = bytes.fromhex("7ea00821025109d35c7e")


def public_aarq() -> bytes:
    initiate = acse.encode_initiate_request(acse.InitiateRequest(proposed_conformance=0x1E1D,
                                                                 client_max_receive_pdu_size=1024))
    return acse.encode_aarq(acse.Aarq(application_context=acse.APPLICATION_CONTEXT_LN_NO_CIPHERING,
                                      user_information=initiate))


def hls_aarq() -> bytes:
    initiate = acse.encode_initiate_request(acse.InitiateRequest(proposed_conformance=0x1E1D,
                                                                 client_max_receive_pdu_size=1024))
    return acse.encode_aarq(acse.Aarq(application_context=acse.APPLICATION_CONTEXT_LN_CIPHERING,
                                      calling_ap_title=b"HES00001", mechanism=acse.Mechanism.HLS_GMAC,
                                      calling_authentication_value=bytes(16), user_information=initiate))


def get(logical_name: bytes, class_id: int = 1) -> bytes:
    return xdlms.encode_xdlms(xdlms.GetRequestNormal(0xC1, xdlms.AttributeDescriptor(class_id, logical_name, 2)))


RLRQ = acse.encode_rlrq(acse.Rlrq(reason=0))
DATA_NOTIFICATION = bytes.fromhex("0f00000001000906") + bytes(6)


def seeds() -> dict[str, list[bytes]]:
    i_frame = encode_frame(HdlcFrame(destination=HdlcAddress.client(16), source=METER, control=0x30,
                                     info=b"\xe6\xe7\x00" + xdlms.encode_xdlms(
                                         xdlms.GetResponseNormal(0xC1, Data.octet_string(b"SIM0000000000001")))))
    return {
        "aare_rejected": [b"\x00" + public_aarq(), b"\x01" + hls_aarq(), b"\x00" + STRANGER_AARQ,
                          b"\x01" + WIDE_ARC_AARQ, b"\x00\x60", b"\x01"],
        "meter_line": [
            b"\xff" + ua_from_meter() + i_frame,
            b"\x01" + ua_from_meter() + push_from(40, DATA_NOTIFICATION),
            b"\x07" + REJ_FRAME * 3 + push_from(17, DATA_NOTIFICATION),
            b"\x20" + b"\x7e\x7e\x00garbage" + push_from(16383, DATA_NOTIFICATION),
        ],
        "management": [
            join_apdus([(16, public_aarq()), (16, get(LOGICAL_DEVICE_NAME)), (16, get(SAP_ASSIGNMENT, 17)),
                        (16, RLRQ)]),
            join_apdus([(1, STRANGER_AARQ), (1, hls_aarq()), (16, WIDE_ARC_AARQ)]),
        ],
        "router": [
            b"".join(encode(pdu) for pdu in (
                WrapperPdu(source=16, destination=17, apdu=public_aarq()),
                WrapperPdu(source=16, destination=17, apdu=get(LOGICAL_DEVICE_NAME)),
                WrapperPdu(source=16, destination=99, apdu=public_aarq()),
                WrapperPdu(source=16, destination=99, apdu=get(LOGICAL_DEVICE_NAME)),
            )),
            b"".join(encode(pdu) for pdu in (
                WrapperPdu(source=1, destination=1, apdu=STRANGER_AARQ),
                WrapperPdu(source=0x80, destination=17, apdu=public_aarq()),
                WrapperPdu(source=16, destination=1, apdu=WIDE_ARC_AARQ),
                WrapperPdu(source=16, destination=5, apdu=WIDE_ARC_AARQ),
            )),
        ],
        "gateway_protocol": [
            b"".join(encode(pdu) for pdu in (
                WrapperPdu(source=16, destination=1, apdu=bytes.fromhex("e6010111") + public_aarq()),
                WrapperPdu(source=16, destination=1, apdu=bytes.fromhex("e6010111") + get(LOGICAL_DEVICE_NAME)),
                WrapperPdu(source=16, destination=1, apdu=bytes.fromhex("e6090111") + public_aarq()),
                WrapperPdu(source=16, destination=1, apdu=bytes.fromhex("e601050011")),
            )),
            b"".join(encode(pdu) for pdu in (
                WrapperPdu(source=1, destination=0x7F, apdu=bytes.fromhex("db08") + bytes(40)),
                WrapperPdu(source=1, destination=1, apdu=bytes.fromhex("e601023fffdb08") + bytes(8)),
                WrapperPdu(source=1, destination=0x7F, apdu=public_aarq()),
                WrapperPdu(source=16, destination=1, apdu=get(SAP_ASSIGNMENT, 17)),
            )),
        ],
    }


def main() -> None:
    for target, inputs in seeds().items():
        folder = CORPUS / target
        folder.mkdir(parents=True, exist_ok=True)
        for number, data in enumerate(inputs):
            (folder / f"seed-{number:02d}").write_bytes(data)


if __name__ == "__main__":
    main()
