"""The long chaos run: the whole pipeline under every kind of fault, checked against a full
recomputation; prints one table.

    python benchmarks/chaos.py                          # 100,000 events, 20 kills
    python benchmarks/chaos.py --events 20000 --seed 3  # a shorter run

Its own embedded broker (frozen 10-20 s at random moments, never killed), a valkey-server with
an append-only file (fsync every second; killed -9 and started again from the file, and
frozen), a fake Mailchimp (answering 429/5xx or stalling for a while), `segstream api`, three
`segstream process` and two `segstream sync` as subprocesses; seeded storefront traffic with
email changes and duplicate event_ids; `--kills` kill -9 of processors and sync workers, and
processors joining and leaving. The scenario is `tests.chaos.plans.long_scenario`, the run
`tests.chaos.runner.run_chaos` (the CI sizes are `tests/chaos/test_chaos.py`). The logs of
every role and service stay in `--workdir`. Exits 1 when a check failed.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # the repository, uninstalled

from tests.chaos.plans import long_scenario
from tests.chaos.runner import run_chaos


async def main(args: argparse.Namespace) -> int:
    scenario = long_scenario(args.events, args.seed, args.kills)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="segstream-chaos-"))
    print(f"chaos: {scenario.events:,} events at {scenario.rate:g}/s, seed {scenario.seed}, "
          f"faults {dict(scenario.plan.counts)}; logs in {workdir}", flush=True)
    started = time.monotonic()
    report = await run_chaos(scenario, workdir)
    print(report.table())
    if args.faults:
        print("\n".join(report.fault_log))
    print(f"wall time {time.monotonic() - started:.0f} s")
    return 0 if report.ok else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--kills", type=int, default=20,
                        help="kill -9 of processors and sync workers, split evenly")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where the logs go (default: a new temporary folder, kept)")
    parser.add_argument("--faults", action="store_true", help="list each fault injected")
    parser.add_argument("-v", "--verbose", action="store_true", help="log each fault as it lands")
    arguments = parser.parse_args()
    logging.basicConfig(level=logging.INFO if arguments.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(message)s")
    # the fake provider's server logs each request its client gave up on (stalls): expected
    logging.getLogger("uvicorn.error").setLevel(logging.CRITICAL)
    if arguments.verbose:
        logging.getLogger("aiokafka").setLevel(logging.WARNING)
        logging.getLogger("httpx").setLevel(logging.WARNING)
    sys.exit(asyncio.run(main(arguments)))
