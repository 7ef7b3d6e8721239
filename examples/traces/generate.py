#!/usr/bin/env python3
"""Regenerate the example traces for examples/orders-plan.yaml (deterministic).

The traces are recordings of a checkout pipeline held at 3 brokers / 12 workers (no
autoscaler), so utilization values are what 12 workers saw; `simulate` scales them to the
simulated capacity (see the README's feedback model).

    python3 examples/traces/generate.py
"""
import math
import random
from datetime import datetime, timedelta, timezone
from pathlib import Path

HERE = Path(__file__).parent
PER_WORKER = 700.0  # orders per minute one worker handles (the plan's business target)
WORKERS, BROKERS = 12, 3


def infrastructure(orders):
    """Busiest GPU's memory fraction at 12 workers: rises with load per worker, saturates."""
    per_worker = orders / WORKERS / PER_WORKER
    return min(0.98, 0.35 + 0.5 * per_worker)


def experience(orders):
    """Share of interactions slower than 1 s: flat until workers saturate, then climbs."""
    per_worker = orders / WORKERS / PER_WORKER
    return min(0.95, 0.04 + 0.1 * max(0.0, per_worker - 0.6) ** 2)


def row(t, orders, rng, gap=()):
    orders = max(0.0, orders * (1 + rng.gauss(0, 0.025)))
    infra = infrastructure(orders) * (1 + rng.gauss(0, 0.01))
    exp = experience(orders) * (1 + rng.gauss(0, 0.03))
    cells = {
        "business": f"{orders:.0f}",
        "infrastructure": f"{min(infra, 0.99):.4f}",
        "experience": f"{exp:.4f}",
    }
    for name in gap:
        cells[name] = ""
    return [t, cells["business"], cells["infrastructure"], cells["experience"], BROKERS, WORKERS]


def flash_sale():
    """Three hours: quiet, a 60 s spike that must not trigger, a ramp into a one-hour plateau,
    a decay with a scrape gap in the middle of it, and quiet again. Irregular sample times."""
    rng = random.Random(7)
    rows, t = [], 0.0
    while t <= 3 * 3600:
        m = t / 60
        if 20 <= m < 21:
            orders = 15000  # short spike: 60 s, shorter than every sustain window
        elif m < 30:
            orders = 6000
        elif m < 45:
            orders = 6000 + (24000 - 6000) * (m - 30) / 15
        elif m < 105:
            orders = 24000
        elif m < 135:
            orders = 24000 + (5000 - 24000) * (m - 105) / 30
        else:
            orders = 5000
        gap = ()
        if 115 <= m < 118:
            gap = ("experience",)
        if 116 <= m < 117:
            gap = ("experience", "infrastructure")
        rows.append(row(f"{t:.1f}", orders, rng, gap))
        t += 10 + rng.uniform(-2, 2)
    write("flash-sale.csv", rows)


def diurnal_day():
    """A day at one-minute resolution (RFC 3339 times): night trough, morning climb, lunch
    bump, an evening flash sale, a short spike at 10:30 and a metrics gap at 14:00."""
    rng = random.Random(11)
    start = datetime(2026, 11, 20, 0, 0, tzinfo=timezone.utc)
    rows = []
    for minute in range(24 * 60):
        h = minute / 60
        base = 2000 + 13000 * max(0.0, math.sin(math.pi * (h - 6) / 16)) ** 1.5
        base += 4000 * math.exp(-((h - 12.5) ** 2) / 0.5)  # lunch
        if 19 <= h < 21:  # evening flash sale
            base += 16000 * math.sin(math.pi * (h - 19) / 2)
        if 10.5 <= h < 10.5 + 1 / 60:  # one-minute spike
            base = 16000
        gap = ("experience", "infrastructure", "business") if 14 <= h < 14.25 else ()
        t = (start + timedelta(minutes=minute)).strftime("%Y-%m-%dT%H:%M:%SZ")
        rows.append(row(t, base, rng, gap))
    write("diurnal-day.csv", rows)


def write(name, rows):
    with open(HERE / name, "w") as f:
        f.write("time,business,infrastructure,experience,brokers,workers\n")
        for r in rows:
            f.write(",".join(str(c) for c in r) + "\n")


if __name__ == "__main__":
    flash_sale()
    diurnal_day()
