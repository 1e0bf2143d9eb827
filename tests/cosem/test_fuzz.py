"""Any bytes into LogicalDevice.handle(): always a DLMS answer, never an exception."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.codec import security, xdlms
from gateway.codec.acse import Mechanism
from gateway.codec.axdr import Data
from gateway.cosem.server import LogicalDevice
from gateway.sim.meter import LOAD_PROFILE, LOGICAL_DEVICE_NAME, build_meter
from tests.cosem.client import INVOKE, TestClient
from tests.cosem.conftest import KEYS, SETTINGS, fixed_clock
from tests.cosem.test_profile import WILDCARD, by_entry, by_range

# Tags a logical device may answer with (Green Book 9.5).
ANSWER_TAGS = {0x61, 0x63, 0xC4, 0xC5, 0xC7, 0xCC, 0xCD, 0xCF, 0xD8, 0xDB}
PROFILE = xdlms.AttributeDescriptor(7, LOAD_PROFILE, 2)
ASSOCIATION = bytes([0, 0, 40, 0, 0, 255])
SEEDS = [
    xdlms.encode_xdlms(pdu)
    for pdu in (
        xdlms.GetRequestNormal(INVOKE, xdlms.AttributeDescriptor(1, LOGICAL_DEVICE_NAME, 2)),
        xdlms.GetRequestNormal(INVOKE, PROFILE, by_range(WILDCARD, WILDCARD)),
        xdlms.GetRequestNormal(INVOKE, PROFILE, by_entry(1, 5, 1, 2)),
        xdlms.GetRequestWithList(INVOKE, ((PROFILE, None), (xdlms.AttributeDescriptor(15, ASSOCIATION, 2), None))),
        xdlms.GetRequestNext(INVOKE, 1),
        xdlms.SetRequestNormal(INVOKE, xdlms.AttributeDescriptor(8, bytes([0, 0, 1, 0, 0, 255]), 2), None,
                               Data.octet_string(bytes(12))),
        xdlms.ActionRequestNormal(INVOKE, xdlms.MethodDescriptor(70, bytes([0, 0, 96, 3, 10, 255]), 1),
                                  Data.integer(0)),
        xdlms.ActionRequestNormal(INVOKE, xdlms.MethodDescriptor(15, bytes([0, 0, 40, 0, 0, 255]), 1),
                                  Data.octet_string(bytes(17))),
    )
]


def mutated(seeds: list[bytes]) -> st.SearchStrategy[bytes]:
    """A seed with a few bytes flipped, cut or inserted."""

    @st.composite
    def build(draw: st.DrawFn) -> bytes:
        data = bytearray(draw(st.sampled_from(seeds)))
        for _ in range(draw(st.integers(1, 4))):
            where = draw(st.integers(0, len(data)))
            match draw(st.sampled_from(["flip", "cut", "insert"])):
                case "flip" if where < len(data):
                    data[where] = draw(st.integers(0, 255))
                case "cut":
                    del data[where:]
                case _:
                    data[where:where] = draw(st.binary(min_size=1, max_size=4))
        return bytes(data)

    return build()


def fresh_meter() -> tuple[LogicalDevice, TestClient, TestClient]:
    """A meter with a public association and an authenticated, ciphered management association."""
    device = build_meter(SETTINGS, clock=fixed_clock)
    public = TestClient(device, client_sap=16)
    public.associate()
    management = TestClient(device, client_sap=1, keys=KEYS, general=False)
    management.hls(management.associate(mechanism=Mechanism.HLS_GMAC, max_pdu=128))
    return device, public, management


def check(answer: bytes | None) -> None:
    assert answer is not None and answer[0] in ANSWER_TAGS


AARQ_SEEDS = [
    TestClient(build_meter(SETTINGS, clock=fixed_clock), client_sap=1, keys=KEYS).aarq(mechanism=Mechanism.HLS_GMAC),
    TestClient(build_meter(SETTINGS, clock=fixed_clock), client_sap=16).aarq(),
    bytes.fromhex("6203800100"),
]
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(
    client_sap=st.sampled_from([1, 16, 77]),
    apdu=st.one_of(st.binary(max_size=300), mutated(SEEDS + AARQ_SEEDS)),
)
def test_any_bytes_from_any_client_get_an_answer(client_sap: int, apdu: bytes) -> None:
    device, _, _ = fresh_meter()
    check(device.handle(client_sap=client_sap, apdu=apdu))


@FUZZ
@given(plain=st.one_of(mutated(SEEDS), st.binary(max_size=200)), general=st.booleans())
def test_any_plaintext_inside_valid_ciphering_gets_an_answer(plain: bytes, general: bool) -> None:
    device, _, management = fresh_meter()
    management.general = general
    if general:
        apdu = security.encode_general_glo(system_title=KEYS.system_title, protected=management.protect(plain))
    else:
        tag = {0xC0: 0xC8, 0xC1: 0xC9, 0xC3: 0xCB}.get(plain[0] if plain else 0xC0, 0xC8)
        apdu = security.encode_ciphered_apdu(tag=tag, protected=management.protect(plain))
    check(device.handle(client_sap=1, apdu=apdu))
    # the association still serves a good request afterwards
    answer = management.get(8, bytes([0, 0, 1, 0, 0, 255]), 2)
    assert isinstance(answer, Data) or answer in set(xdlms.DataAccessResult)


@FUZZ
@given(apdus=st.lists(mutated(SEEDS + AARQ_SEEDS[1:2]), min_size=1, max_size=8))
def test_broken_requests_leave_the_association_working(apdus: list[bytes]) -> None:
    device, public, _ = fresh_meter()
    for apdu in apdus:
        check(device.handle(client_sap=16, apdu=apdu))
    # anything but a release or a new AARQ keeps the association (an accepted AARQ, even a mutated
    # one, replaces it: with a conformance lacking GET, a GET is then rightly refused)
    if not any(apdu[:1] in (b"\x60", b"\x62") for apdu in apdus):
        assert public.get(1, LOGICAL_DEVICE_NAME, 2) == Data.octet_string(SETTINGS.logical_device_name)
