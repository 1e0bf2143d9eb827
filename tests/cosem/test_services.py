"""GET (normal, with-list, blocks), SET and ACTION through a simulated meter, with our own client."""

from __future__ import annotations

import datetime as dt

from gateway.codec import axdr, security, xdlms
from gateway.codec.acse import Conformance, Mechanism
from gateway.codec.axdr import Data, date_time
from gateway.codec.xdlms import ActionResult, DataAccessResult
from gateway.cosem.association import ClientPolicy
from gateway.cosem.objects import DataObject, SapAssignment, access
from gateway.cosem.server import LogicalDevice
from gateway.sim.meter import (
    ACTIVE_ENERGY_IMPORT,
    CLOCK,
    DISCONNECT_CONTROL,
    LOAD_PROFILE,
    LOGICAL_DEVICE_NAME,
    MANAGEMENT_CONFORMANCE,
    profile_rows,
)
from tests.cosem.client import ALL_CONFORMANCE, INVOKE, TestClient
from tests.cosem.conftest import KEYS, NOW, SETTINGS
from tests.cosem.test_association import hls_associate

CURRENT_ASSOCIATION = bytes([0, 0, 40, 0, 0, 255])


def octets(moment: dt.datetime) -> Data:
    stamp = date_time(moment, deviation_minutes=0).value
    assert isinstance(stamp, bytes)
    return Data.octet_string(stamp)


def test_public_reads_name_clock_and_energy(public: TestClient) -> None:
    public.associate()
    assert public.get(1, LOGICAL_DEVICE_NAME, 2) == Data.octet_string(b"SIM0000000004242")
    assert public.get(8, CLOCK, 2) == octets(NOW)
    assert public.get(3, ACTIVE_ENERGY_IMPORT, 2) == Data.double_long_unsigned(SETTINGS.energy_at(NOW))
    assert public.get(3, ACTIVE_ENERGY_IMPORT, 3) == Data.structure(Data.integer(0), Data.enum(30))
    assert SETTINGS.energy_at(NOW) > SETTINGS.energy_wh


def test_public_sees_neither_profile_nor_disconnect(public: TestClient, meter: LogicalDevice) -> None:
    public.associate()
    assert public.get(7, LOAD_PROFILE, 2) is DataAccessResult.OBJECT_UNDEFINED
    assert public.get(70, DISCONNECT_CONTROL, 2) is DataAccessResult.OBJECT_UNDEFINED
    listed = public.get(15, CURRENT_ASSOCIATION, 2)
    assert isinstance(listed, Data)
    names = {entry.items[2].value for entry in listed.items}
    assert LOGICAL_DEVICE_NAME in names and LOAD_PROFILE not in names and DISCONNECT_CONTROL not in names
    # no ACTION in the public conformance block: refused before any object is touched
    answer = public.send(xdlms.encode_xdlms(xdlms.ActionRequestNormal(
        INVOKE, xdlms.MethodDescriptor(70, DISCONNECT_CONTROL, 1), Data.integer(0))))
    assert isinstance(xdlms.decode_xdlms(answer), xdlms.ExceptionResponse)


def test_object_errors_are_data_access_results(public: TestClient) -> None:
    public.associate()
    assert public.get(1, bytes([1, 2, 3, 4, 5, 6]), 2) is DataAccessResult.OBJECT_UNDEFINED
    assert public.get(3, LOGICAL_DEVICE_NAME, 2) is DataAccessResult.OBJECT_CLASS_INCONSISTENT
    assert public.get(1, LOGICAL_DEVICE_NAME, 9) is DataAccessResult.READ_WRITE_DENIED
    assert public.get(15, CURRENT_ASSOCIATION, 7) is DataAccessResult.READ_WRITE_DENIED  # the secret


def test_get_with_list_answers_each_item(public: TestClient) -> None:
    public.associate()
    items = (
        (xdlms.AttributeDescriptor(1, LOGICAL_DEVICE_NAME, 2), None),
        (xdlms.AttributeDescriptor(7, LOAD_PROFILE, 2), None),
        (xdlms.AttributeDescriptor(3, ACTIVE_ENERGY_IMPORT, 3), None),
    )
    answer = public.request(xdlms.GetRequestWithList(INVOKE, items))
    assert answer == xdlms.GetResponseWithList(INVOKE, (
        Data.octet_string(SETTINGS.logical_device_name),
        DataAccessResult.OBJECT_UNDEFINED,
        Data.structure(Data.integer(0), Data.enum(30)),
    ))


def test_profile_read_in_blocks_that_fit_the_clients_pdu(management: TestClient, meter: LogicalDevice) -> None:
    hls_associate_small = management.associate(mechanism=Mechanism.HLS_GMAC, max_pdu=256)
    management.hls(hls_associate_small)
    before = len(management.wire)
    buffer = management.get(7, LOAD_PROFILE, 2)
    expected = profile_rows(SETTINGS, NOW)
    assert buffer == Data.array(*(Data.structure(*row) for row in expected))
    assert len(expected) == 96
    answers = management.wire[before:]
    assert len(answers) > 8
    assert all(len(answer) <= 256 for answer in answers)
    assert max(len(answer) for answer in answers) > 200  # blocks are filled, not tiny
    assert meter.counters.get_blocks_sent == len(answers)


def test_block_number_mismatch_aborts_the_long_get(public: TestClient) -> None:
    public.associate(max_pdu=64)
    first = public.request(xdlms.GetRequestNormal(INVOKE, xdlms.AttributeDescriptor(15, CURRENT_ASSOCIATION, 2)))
    assert isinstance(first, xdlms.GetResponseWithDataBlock) and not first.last_block
    assert first.block_number == 1
    wrong = public.request(xdlms.GetRequestNext(INVOKE, 5))
    assert wrong == xdlms.GetResponseWithDataBlock(INVOKE, True, 5, DataAccessResult.LONG_GET_ABORTED)
    again = public.request(xdlms.GetRequestNext(INVOKE, 1))
    assert again == xdlms.GetResponseWithDataBlock(INVOKE, True, 1, DataAccessResult.NO_LONG_GET_IN_PROGRESS)


def test_a_new_get_abandons_a_long_get(public: TestClient) -> None:
    public.associate(max_pdu=64)
    first = public.request(xdlms.GetRequestNormal(INVOKE, xdlms.AttributeDescriptor(15, CURRENT_ASSOCIATION, 2)))
    assert isinstance(first, xdlms.GetResponseWithDataBlock)
    assert public.get(1, LOGICAL_DEVICE_NAME, 2) == Data.octet_string(SETTINGS.logical_device_name)
    stale = public.request(xdlms.GetRequestNext(INVOKE, 1))
    assert stale == xdlms.GetResponseWithDataBlock(INVOKE, True, 1, DataAccessResult.NO_LONG_GET_IN_PROGRESS)
    # and a whole long read still works
    listed = public.get(15, CURRENT_ASSOCIATION, 2)
    assert isinstance(listed, Data) and len(listed.items) == 6


def test_invoke_id_and_priority_octet_is_echoed(public: TestClient) -> None:
    public.associate()
    for octet in (0x00, 0x41, 0x8F, 0xC5):
        answer = public.request(xdlms.GetRequestNormal(octet, xdlms.AttributeDescriptor(1, LOGICAL_DEVICE_NAME, 2)))
        assert isinstance(answer, xdlms.GetResponseNormal) and answer.invoke_id == octet


def test_disconnect_then_reconnect_flips_the_output(management: TestClient) -> None:
    hls_associate(management)
    assert management.get(70, DISCONNECT_CONTROL, 2) == Data.boolean(True)
    assert management.action(70, DISCONNECT_CONTROL, 1, Data.integer(0)).result is ActionResult.SUCCESS
    assert management.get(70, DISCONNECT_CONTROL, 2) == Data.boolean(False)
    assert management.get(70, DISCONNECT_CONTROL, 3) == Data.enum(0)
    assert management.action(70, DISCONNECT_CONTROL, 2, Data.integer(0)).result is ActionResult.SUCCESS
    assert management.get(70, DISCONNECT_CONTROL, 2) == Data.boolean(True)
    assert management.action(70, DISCONNECT_CONTROL, 3).result is ActionResult.READ_WRITE_DENIED


def test_control_mode_one_only_arms_reconnection(management: TestClient) -> None:
    hls_associate(management)
    assert management.set(70, DISCONNECT_CONTROL, 4, Data.enum(1)) is DataAccessResult.SUCCESS
    management.action(70, DISCONNECT_CONTROL, 1, Data.integer(0))
    management.action(70, DISCONNECT_CONTROL, 2, Data.integer(0))
    assert management.get(70, DISCONNECT_CONTROL, 3) == Data.enum(2)  # ready_for_reconnection
    assert management.get(70, DISCONNECT_CONTROL, 2) == Data.boolean(False)
    assert management.set(70, DISCONNECT_CONTROL, 4, Data.enum(9)) is DataAccessResult.TYPE_UNMATCHED
    assert management.set(70, DISCONNECT_CONTROL, 2, Data.boolean(True)) is DataAccessResult.READ_WRITE_DENIED


def test_setting_the_clock_shifts_time_and_energy(management: TestClient, public: TestClient) -> None:
    hls_associate(management)
    later = NOW + dt.timedelta(hours=2)
    assert management.set(8, CLOCK, 2, octets(later)) is DataAccessResult.SUCCESS
    assert management.get(8, CLOCK, 2) == octets(later)
    assert management.get(3, ACTIVE_ENERGY_IMPORT, 2) == Data.double_long_unsigned(SETTINGS.energy_at(later))
    assert management.set(8, CLOCK, 2, Data.octet_string(b"\xff" * 12)) is not DataAccessResult.SUCCESS
    assert management.set(8, CLOCK, 3, Data.long(60)) is DataAccessResult.READ_WRITE_DENIED
    public.associate(conformance=ALL_CONFORMANCE)  # SET is not offered to the public client
    answer = public.send(xdlms.encode_xdlms(xdlms.SetRequestNormal(
        INVOKE, xdlms.AttributeDescriptor(8, CLOCK, 2), None, octets(NOW))))
    assert isinstance(xdlms.decode_xdlms(answer), xdlms.ExceptionResponse)
    assert management.get(8, CLOCK, 2) == octets(later)


def test_association_object_reports_this_association(management: TestClient) -> None:
    hls_associate(management)
    assert management.get(15, CURRENT_ASSOCIATION, 3) == Data.structure(Data.integer(1), Data.long_unsigned(1))
    mechanism = management.get(15, CURRENT_ASSOCIATION, 6)
    assert isinstance(mechanism, Data) and [item.value for item in mechanism.items] == [2, 16, 756, 5, 8, 2, 5]
    context = management.get(15, CURRENT_ASSOCIATION, 4)
    assert isinstance(context, Data) and context.items[-1] == Data.unsigned(3)
    info = management.get(15, CURRENT_ASSOCIATION, 5)
    assert isinstance(info, Data)
    negotiated = int(MANAGEMENT_CONFORMANCE & ALL_CONFORMANCE).to_bytes(3, "big")
    assert info.items[0] == Data(axdr.DataType.BIT_STRING, negotiated)
    assert info.items[1:4] == (Data.long_unsigned(1024), Data.long_unsigned(1024), Data.unsigned(6))
    listed = management.get(15, CURRENT_ASSOCIATION, 2)
    assert isinstance(listed, Data)
    rights = {entry.items[2].value: entry.items[3] for entry in listed.items}
    disconnect_methods = rights[DISCONNECT_CONTROL].items[1].items
    assert [m.items[1] for m in disconnect_methods] == [Data.boolean(True), Data.boolean(True)]
    profile_attributes = rights[LOAD_PROFILE].items[0].items
    assert profile_attributes[1].items[2] == Data.array(Data.integer(1), Data.integer(2))  # buffer selectors


def test_sap_assignment_lists_live_and_changes_through_the_callback() -> None:
    table: dict[int, bytes] = {1: b"GATEWAY", 17: b"SIM0000000000001"}

    def connect(sap: int, name: bytes) -> ActionResult:
        if name:
            table[sap] = name
        else:
            table.pop(sap, None)
        return ActionResult.SUCCESS

    sap_list = bytes([0, 0, 41, 0, 0, 255])
    device = LogicalDevice(
        name=b"GATEWAY",
        objects=[
            SapAssignment(
                logical_name=sap_list,
                rights={16: access(read=(1, 2)), 1: access(read=(1, 2), methods=(1,))},
                assignments=lambda: sorted(table.items()),
                connect_logical_device=connect,
            ),
            DataObject(logical_name=LOGICAL_DEVICE_NAME, rights={16: access(read=(2,))},
                       value=Data.octet_string(b"GATEWAY")),
        ],
        clients=[
            ClientPolicy(client_sap=16, mechanism=Mechanism.NONE, security=None, require_ciphering=False,
                         conformance=Conformance.GET | Conformance.ACTION),
            ClientPolicy(client_sap=1, mechanism=Mechanism.LLS, security=None, require_ciphering=False,
                         conformance=Conformance.GET | Conformance.ACTION, lls_password=b"12345678"),
        ],
    )
    public, manager = TestClient(device, client_sap=16), TestClient(device, client_sap=1)
    public.associate()
    assert manager.associate(mechanism=Mechanism.LLS, password=b"wrong").diagnostic == 13  # authentication failure
    assert manager.associate(mechanism=Mechanism.LLS, password=b"12345678").result == 0
    entry = Data.structure(Data.long_unsigned(18), Data.octet_string(b"SIM0000000000002"))
    assert manager.action(17, sap_list, 1, entry).result is ActionResult.SUCCESS
    listed = public.get(17, sap_list, 2)
    assert isinstance(listed, Data) and [item.items[0].value for item in listed.items] == [1, 17, 18]
    remove = Data.structure(Data.long_unsigned(17), Data.octet_string(b""))
    assert manager.action(17, sap_list, 1, remove).result is ActionResult.SUCCESS
    assert table == {1: b"GATEWAY", 18: b"SIM0000000000002"}
    assert manager.action(17, sap_list, 1, Data.long_unsigned(3)).result is ActionResult.TYPE_UNMATCHED
    # the public client has ACTION in its conformance but no right to this method
    assert public.action(17, sap_list, 1, entry).result is ActionResult.READ_WRITE_DENIED


def test_our_counter_never_repeats_across_associations(meter: LogicalDevice) -> None:
    seen: list[int] = []
    counter = 0
    for _ in range(3):
        client = TestClient(meter, client_sap=1, keys=KEYS, invocation_counter=counter)
        aare = hls_associate(client)
        client.initiate_response(aare)
        client.get(1, LOGICAL_DEVICE_NAME, 2)
        rlre = client.release()
        assert rlre.user_information is not None
        client.unprotect(security.decode_ciphered_apdu(rlre.user_information)[1])
        seen += client.server_counters
        counter = client.invocation_counter
    # per association: initiate response, HLS action response, GET response, release (f(CtoS) uses one too)
    assert len(seen) == 3 * 4
    assert len(seen) == len(set(seen))
    assert meter.invocation_counter == 3 * 5


def test_get_with_list_too_long_for_one_pdu_goes_in_blocks(public: TestClient) -> None:
    public.associate(max_pdu=64)
    items = tuple((xdlms.AttributeDescriptor(15, CURRENT_ASSOCIATION, a), None) for a in (2, 3, 7))
    answer = public.request(xdlms.GetRequestWithList(INVOKE, items))
    raw = b""
    while True:
        assert isinstance(answer, xdlms.GetResponseWithDataBlock) and isinstance(answer.raw_data, bytes)
        raw += answer.raw_data
        if answer.last_block:
            break
        answer = public.request(xdlms.GetRequestNext(INVOKE, answer.block_number))
    assert all(len(sent) <= 64 for sent in public.wire)
    # the blocks carry the SEQUENCE OF Get-Data-Result: decode it as the body of a with-list response
    whole = xdlms.decode_xdlms(bytes([0xC4, 0x03, INVOKE]) + raw)
    assert isinstance(whole, xdlms.GetResponseWithList)
    listed, partners, secret = whole.results
    assert isinstance(listed, Data) and len(listed.items) == 6
    assert partners == Data.structure(Data.integer(16), Data.long_unsigned(1))
    assert secret is DataAccessResult.READ_WRITE_DENIED


def test_request_longer_than_our_pdu_is_refused(public: TestClient) -> None:
    public.associate()
    items = tuple((xdlms.AttributeDescriptor(1, LOGICAL_DEVICE_NAME, 2), None) for _ in range(120))
    answer = public.request(xdlms.GetRequestWithList(INVOKE, items))
    assert answer == xdlms.ExceptionResponse(1, 4)  # service-not-allowed, pdu-too-long
