"""Three beats on one database under chaos: are runs ever sent twice, lost or late?

Usage::

    python benchmarks/ha_chaos.py [--seconds 180] [--backends postgresql,mariadb]
        [--claim-timeout 3] [--tasks 50] [--beats 3] [--broker redis://127.0.0.1:6379/14]
        [--actions "kill -9,SIGSTOP,restart"] [--modes dedup,run-once] [--publish-latency 0]
        [--seed N] [--logs DIR]

For each backend a fresh database is created and migrated; three real
``celery beat -S beatsqlalchemy`` processes publish 50 tasks due every second to a
Redis queue that this script reads itself (there is no worker), while every 1-4 s a
random beat is killed (-9) and restarted, paused with SIGSTOP past the claim timeout,
or restarted with SIGTERM. The table compares every message read from the broker
with the run log. See ``benchmarks/chaos.py`` for the scenario.

``--modes`` picks the runs per backend:

* ``dedup``: the default set-up. The beats push each run once (``beatsqlalchemy.broker``):
  Redis refuses a second copy of a task id, so no duplicate is allowed at all.
* ``run-once``: the broker dedup off, as on a broker other than Redis, and the reader does
  for every message what a worker under ``beatsqlalchemy.worker.RunOnceTask`` does before
  running it (records the run's start in the run log). A copy is allowed only in flight,
  and only if that start check dropped it.
* ``beat-only``: the broker dedup off and no start check: what the run log alone guarantees.

"in flight" counts the extra copies of runs whose message reached the broker within
0.5 s of a kill -9 or SIGSTOP of the beat that sent them, before it could record them
as sent (another beat publishes those again after the claim timeout, same task id), or
right after the SIGCONT of a beat paused inside its publish call. ``--publish-latency``
makes each publish take that long (half before the write, half after the broker's
accept), as on a slow broker: more kills and pauses then land while a run is in flight,
which is where copies come from. Exit status 1 when a
run broke its mode's bar, was lost, or a gap above the claim timeout plus 2 s was seen.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
import uuid
from pathlib import Path

#: the repository root: the harness shared with the tests lives there (it is not installed)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from beatsqlalchemy import db, migrate
from harness import chaos, servers

BACKEND_ALIASES = {"postgresql": "postgresql", "postgres": "postgresql", "pg": "postgresql",
                   "mysql": "mysql", "mariadb": "mysql"}
BROKER_URL = servers.redis_url("bench")
#: mode -> (broker dedup, RunOnceTask start check)
MODES = {"dedup": (True, False), "run-once": (False, True), "beat-only": (False, False)}


def create_database(backend: str) -> tuple[str, str]:
    """A new migrated database on the server: (its URL, its name)."""
    name = f"bsa_chaos_{uuid.uuid4().hex[:8]}"
    url = servers.create_database(backend, name, "bench")
    migrate.upgrade(db.get_engine(url))
    return url, name


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=180.0, help="chaos duration per backend")
    parser.add_argument("--backends", default="postgresql,mariadb",
                        help="comma-separated: postgresql, mysql/mariadb")
    parser.add_argument("--claim-timeout", type=float, default=3.0,
                        help="beat_sqlalchemy_claim_timeout of every beat (seconds)")
    parser.add_argument("--tasks", type=int, default=50, help="tasks due every second")
    parser.add_argument("--beats", type=int, default=3, help="beat processes")
    parser.add_argument("--broker", default=BROKER_URL, help="Redis broker URL (a unique queue is used)")
    parser.add_argument("--actions", default=",".join(chaos.ACTIONS),
                        help="comma-separated subset of: " + ", ".join(chaos.ACTIONS))
    parser.add_argument("--publish-latency", type=float, default=0.0,
                        help="seconds each publish takes (a slow broker: more runs caught in flight)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the chaos choices")
    parser.add_argument("--logs", type=Path, default=None, help="keep the beat logs in this directory")
    parser.add_argument("--modes", default="dedup,run-once",
                        help="comma-separated, one run each: " + ", ".join(MODES) + " (see above)")
    args = parser.parse_args(argv)
    kinds = tuple(a.strip() for a in args.actions.split(",") if a.strip())
    if not kinds or set(kinds) - set(chaos.ACTIONS):
        parser.error(f"--actions: choose from {', '.join(chaos.ACTIONS)}")
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or set(modes) - set(MODES):
        parser.error(f"--modes: choose from {', '.join(MODES)}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)

    results: list[chaos.Result] = []
    cases = [(b.strip(), MODES[mode]) for b in args.backends.split(",") if b.strip() for mode in modes]
    for requested, (dedup, run_once) in cases:
        backend = BACKEND_ALIASES.get(requested)
        if backend is None:
            parser.error(f"unknown backend {requested!r}")
        label = "mariadb" if requested == "mariadb" else backend
        url, name = create_database(backend)
        workdir = Path(tempfile.mkdtemp(prefix=f"ha-chaos-{label}-"))
        try:
            result = chaos.run(
                url, args.broker, workdir, args.seconds, backend=label,
                kinds=kinds, claim_timeout=args.claim_timeout, tasks=args.tasks, beats=args.beats,
                seed=args.seed, run_once=run_once, dedup=dedup, publish_latency=args.publish_latency,
                progress=lambda summary: print(summary, file=sys.stderr),
            )
            results.append(result)
        finally:
            servers.drop_database(backend, name, "bench")
            if args.logs is not None:
                shutil.copytree(workdir, args.logs / label, dirs_exist_ok=True)
            shutil.rmtree(workdir, ignore_errors=True)

    print(chaos.Result.HEADER)
    for result in results:
        print(result.row())
    print()
    for result in results:
        print(f"- {result.backend}: longest delay after the slot {result.longest_delay:.2f}s, "
              f"longest gap on {result.longest_gap_task}, claim timeout {result.claim_timeout:g}s; "
              f"claims skipped by stalled beats {result.stalled_skips}, abandoned {result.abandoned}, "
              f"messages not in the run log {len(result.unlogged)}")
    for result in results:
        if result.failures:
            print(f"- {result.backend}: FAILED: {', '.join(result.failures)}")
    return 1 if any(r.failures for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
