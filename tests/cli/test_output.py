"""What the CLI shows people: ISO times, rounded durations, progress with elapsed time and estimate."""

from __future__ import annotations

import io

from gateway.cli.client import ProgressBar, duration, readable


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_times_become_iso_and_durations_are_rounded() -> None:
    answer = {"last_seen": 1796053606.4958074, "first_seen": None, "last_rtt_ms": 0.32866799995190377,
              "rows": [{"captured_at": 0, "value": 1.23456}], "uptime_s": 12.345, "sap": 17}
    assert readable(answer) == {"last_seen": "2026-11-30T15:46:46Z", "first_seen": None, "last_rtt_ms": 0.3,
                                "rows": [{"captured_at": "1970-01-01T00:00:00Z", "value": 1.23456}],
                                "uptime_s": 12.3, "sap": 17}


def test_durations_read_as_clock_times() -> None:
    assert [duration(s) for s in (7, 125, 3725.4)] == ["0:07", "2:05", "1:02:05"]


def test_progress_in_a_log_shows_elapsed_time_and_what_is_left() -> None:
    out, clock = io.StringIO(), _Clock()
    progress = ProgressBar(out=out, clock=clock)
    progress({"done": 0, "total": 40, "link": "bus0", "seconds_per_silent_address": 2.0})
    for done in range(1, 41):
        clock.now += 2.0
        progress({"done": done, "total": 40, "note": f"address {15 + done}"})
    lines = out.getvalue().splitlines()
    assert lines[0] == "scanning 40 addresses on bus0: up to about 1:20 (2.0 s per silent address)"
    assert lines[1] == "[" + "." * 30 + "] 1/40 address 16, 0:02 elapsed, about 1:18 left"
    assert lines[-1] == "[" + "#" * 30 + "] 40/40 address 55, 1:20 elapsed"
    assert len(lines) == 1 + 1 + 10  # the first step, then every tenth (the last among them)


def test_progress_on_a_terminal_rewrites_one_line() -> None:
    out, clock = _Terminal(), _Clock()
    progress = ProgressBar(out=out, clock=clock)
    for done in (1, 2):
        clock.now += 1.0
        progress({"done": done, "total": 2})
    shown = out.getvalue()
    assert shown.count("\r") == 2 and shown.count("\n") == 1 and shown.endswith("\n")  # one line, ended once
    assert shown.split("\r")[1].startswith("[" + "#" * 15 + "." * 15 + "] 1/2 0:01 elapsed, about 0:01 left")
    assert shown.split("\r")[2].rstrip() == "[" + "#" * 30 + "] 2/2 0:02 elapsed"
