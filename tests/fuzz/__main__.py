"""Run one fuzz target under atheris: ``python -m tests.fuzz TARGET [--seconds N] [--jobs 1]``.

Coverage-guided (libFuzzer inside atheris); seeds come from ``corpus/TARGET/`` and what it finds
new is added there only with ``--grow`` (otherwise the seeds are only read). A finding stops the
run with the input written to ``crash-*`` in the current directory and exit status 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

CORPUS = Path(__file__).parent / "corpus"


# test_targets.py checks this list
TARGET_NAMES = ("aare_rejected", "gateway_protocol", "management", "meter_line", "router")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__)
    parser.add_argument("target", choices=TARGET_NAMES)
    parser.add_argument("--seconds", type=int, default=60, help="stop after this long (default 60)")
    parser.add_argument("--grow", action="store_true", help="keep new interesting inputs in the corpus")
    parser.add_argument("--artifacts", type=Path, default=Path.cwd(), help="where a finding is written (default .)")
    parser.add_argument("--runs", type=int, default=-1, help="stop after this many inputs (default: no limit)")
    options = parser.parse_args()

    import atheris  # noqa: PLC0415 - a fuzzing dependency only, not needed to import the targets

    # Coverage is what guides the search: instrument the gateway's code (not the whole interpreter's
    # libraries, which took most of a short run to instrument).
    with atheris.instrument_imports(include=["gateway"]):
        from tests.fuzz.targets import TARGETS  # noqa: PLC0415

    target = TARGETS[options.target]
    seeds = CORPUS / target.name
    # libFuzzer writes new inputs into a corpus folder it is given; without --grow it only reads the seeds
    corpus = [str(seeds)] if options.grow else [f"-seed_inputs={','.join(str(p) for p in sorted(seeds.iterdir()))}"]
    argv = [sys.argv[0], *corpus, f"-max_total_time={options.seconds}", f"-runs={options.runs}",
            "-max_len=4096", "-print_final_stats=1", f"-artifact_prefix={options.artifacts}/"]
    atheris.Setup(argv, target.one_input)
    atheris.Fuzz()  # leaves the process: 0 when the time is up, 1 on a finding
    return 0


if __name__ == "__main__":
    sys.exit(main())
