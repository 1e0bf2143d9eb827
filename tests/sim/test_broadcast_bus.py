"""The simulated bus delivers all-station UI frames to every meter it reaches, with seeded per-meter loss."""

from __future__ import annotations

from gateway.codec.axdr import Data, flags_of
from gateway.codec.hdlc import encode_broadcast
from gateway.cosem.image_transfer import BLOCK_TRANSFER, INITIATE
from gateway.cosem.server import LogicalDevice
from gateway.sim.bus import SimMeter, SimulatedBus
from gateway.sim.meter import build_meter, image_transfer_of
from tests.firmware_hes import BLOCKS_STATUS, BroadcastSender, MeterClient, block_parameters
from tests.sim.firmware_fleet import BROADCAST_KEYS, client_for, firmware_meters, firmware_settings, fixed_clock, on_bus

BLOCK = bytes(range(64))


def _initiate(bus: SimulatedBus, meters: list[SimMeter], *, blocks: int) -> list[MeterClient]:
    """Unicast image_transfer_initiate on each meter, over the bus; the clients keep their counters."""
    clients = []
    for meter in meters:
        client = client_for(bus, meter)
        client.open()
        client.call(INITIATE, Data.structure(Data.octet_string(b"fw"), Data.double_long_unsigned(blocks * len(BLOCK))))
        client.close()
        clients.append(client)
    return clients


def _broadcast_blocks(bus: SimulatedBus, numbers: range, *, sender: BroadcastSender | None = None,
                      **address: int) -> None:
    sender = sender or BroadcastSender(BROADCAST_KEYS)
    for number in numbers:
        apdu = sender.action(BLOCK_TRANSFER, block_parameters(number, BLOCK))
        assert bus.feed(encode_broadcast(client_sap=1, apdu=apdu, **address)) == b""


def _missing(meter: SimMeter) -> list[int]:
    assert isinstance(meter.device, LogicalDevice)
    return image_transfer_of(meter.device).missing_blocks


def test_an_all_station_frame_reaches_every_meter_of_its_logical_device() -> None:
    meters = firmware_meters(3, loss=0.0)
    other = SimMeter(physical_address=17, logical_device=2,
                     device=build_meter(firmware_settings(99), clock=fixed_clock))
    bus = on_bus([*meters, other])
    _initiate(bus, [*meters, other], blocks=2)
    sender = BroadcastSender(BROADCAST_KEYS)
    _broadcast_blocks(bus, range(1), sender=sender, logical_device=1)  # logical device 1 of every physical device
    assert [_missing(meter) for meter in (*meters, other)] == [[1], [1], [1], [0, 1]]
    _broadcast_blocks(bus, range(1, 2), sender=sender)  # every logical device of every physical device
    assert [_missing(meter) for meter in (*meters, other)] == [[], [], [], [0]]
    assert bus.broadcasts_in == 2


def test_a_meter_with_loss_reports_exactly_the_blocks_it_missed() -> None:
    meters = firmware_meters(5, loss=0.1)
    meters[0].broadcast_loss = 0.0
    bus = on_bus(meters, seed=7)
    clients = _initiate(bus, meters, blocks=64)
    _broadcast_blocks(bus, range(64))
    lost = [bus.broadcasts_lost(physical_address=meter.physical_address) for meter in meters]
    assert lost[0] == [] and all(lost[1:]), lost  # seed 7: every lossy meter missed some
    for client, missed in zip(clients, lost, strict=True):
        client.open()
        flags = flags_of(client.read(BLOCKS_STATUS))
        client.close()
        assert [number for number, received in enumerate(flags) if not received] == missed


def test_losses_replay_with_the_seed() -> None:
    def losses(seed: int) -> list[list[int]]:
        meters = firmware_meters(3, loss=0.2)
        bus = on_bus(meters, seed=seed)
        for _ in range(50):
            bus.feed(encode_broadcast(client_sap=1, apdu=b"\xdb"))
        return [bus.broadcasts_lost(physical_address=meter.physical_address) for meter in meters]

    assert losses(1) == losses(1)
    assert losses(1) != losses(2)
    assert losses(1)[0] != losses(1)[1]  # each meter draws its own
