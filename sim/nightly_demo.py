"""The nightly jobs over the demo's simulated days, against the local stand-in.

:func:`run_nightly_demo` starts :class:`~costline.sim.standin.StandInServer` (its student
degrades on the ``sarcasm`` slice the traffic shift introduces), then runs :func:`nightly` at the
end of each simulated day, as cron would at midnight, and prints what each night found and the
cost report of the whole run. The demo's lake must hold captured content
(``[capture] message_content = true``); the demo's placeholder answers are regenerated from the
stand-in (``regenerate_student`` / ``regenerate_cheap``), so scores mean something.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from costline.config import Config

__all__ = ["run_nightly_demo", "demo_jobs_config"]


def demo_jobs_config(config: Config) -> Config:
    """The demo's settings: small samples, answers regenerated from the stand-in, exact match on the
    stand-in's reference tag for every subtype (its adequacy marker), no embedding model to load."""
    j = config.jobs
    return config.replace(jobs=dataclasses.replace(
        j,
        drift=dataclasses.replace(j.drift, regenerate_student=True, min_per_subtype=10, min_n=10, mmd_permutations=0,
                                  metrics={}, default_metric="exact"),
        shadow=dataclasses.replace(j.shadow, regenerate_cheap=True, per_tier=60),
    ))


def run_nightly_demo(
    config: Config,
    *,
    start: datetime,
    days: int,
    echo: Callable[[str], None] = print,
    embedder: Any = None,
) -> list[Any]:
    """Run the nightly jobs after each of ``days`` simulated days from ``start``; return the outcomes."""
    import anthropic
    import openai

    from costline.jobs.cost_report import run_cost_report
    from costline.jobs.scheduler import default_runners, nightly
    from costline.jobs.store import open_jobs_lake
    from costline.serving.settings import StandInConfig
    from costline.sim.standin import StandInServer

    cfg = demo_jobs_config(config)
    start = start.replace(tzinfo=None)
    outcomes: list[Any] = []
    with StandInServer(StandInConfig(port=0, latency_scale=0.0, degrade_keywords=("sarcasm",)),
                       pricing=cfg.pricing) as srv:
        client = anthropic.Anthropic(base_url=srv.url, api_key="costline-standin", max_retries=2)
        student = openai.OpenAI(base_url=srv.openai_url, api_key="costline-standin", max_retries=2)
        night = {"at": start}  # the simulated clock: each night's jobs run at the end of its day
        runners = default_runners(client=client, student=student, embedder=embedder, now=lambda: night["at"])
        for d in range(1, days + 1):
            until = start + timedelta(days=d)
            night["at"] = until
            outs = nightly(cfg, until=until, runners=runners, jobs=("drift", "shadow"), now=lambda: night["at"])
            outcomes += outs
            con = open_jobs_lake(cfg)
            try:
                flagged = con.execute(
                    "SELECT subtype, round(gap, 3), reason FROM eval_runs WHERE until = $u AND flagged "
                    "ORDER BY subtype", {"u": until}).fetchall()
                tiers = con.execute("SELECT tier, round(tier_match_rate, 3) FROM shadow_runs WHERE until = $u "
                                    "ORDER BY tier", {"u": until}).fetchall()
            finally:
                con.close()
            failed = [f"{o.job}: {o.error}" for o in outs if o.status != "succeeded"]
            line = f"night after day {d - 1} ({until:%Y-%m-%d}): "
            line += ("student drift FLAGGED on " + ", ".join(f"{s} (gap {g})" for s, g, _ in flagged)
                     if flagged else "student within its thresholds")
            line += "; tier-match " + ", ".join(f"{t} {r:.0%}" for t, r in tiers) if tiers else ""
            echo(line + (f"; {'; '.join(failed)}" if failed else ""))
        echo(f"(the stand-in was paid for {len(srv.log.paid())} answers, none twice: "
             f"{not srv.log.duplicate_paid_keys()})")
    report = run_cost_report(cfg, since=start, until=start + timedelta(days=days))
    echo("\n== what each lever saved (costline jobs cost-report) ==")
    echo(report.to_text())
    return outcomes
