#!/usr/bin/env python3
"""Regenerate the example traces (deterministic).

flash-sale.csv and diurnal-day.csv are for examples/orders-plan.yaml: recordings of a checkout
pipeline held at 3 brokers / 12 workers (no autoscaler), so utilization values are what 12
workers saw; `simulate` scales them to the simulated capacity (see the README's feedback model).

kafka-lag-burst.csv, pulsar-backlog.csv and rabbitmq-queue.csv are for the plan of the same
system in examples/. Each is recorded at fixed replicas too (the `brokers` and `workers`
columns): utilization values are computed from the load per recorded replica, demand values
from the load alone.

    python3 examples/traces/generate.py
"""
import math
import random
from collections import deque
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


def follow(previous, target, dt, rise, drain):
    """First-order response: a queue builds in about `rise` seconds and drains in `drain`."""
    if previous is None:
        return target
    tau = rise if target > previous else drain
    return target + (previous - target) * math.exp(-dt / tau)


class Rate:
    """What `rate(counter[window])` returns: the mean of the instantaneous rate over the window."""

    def __init__(self, window):
        self.window, self.samples = window, deque()

    def __call__(self, t, value):
        self.samples.append((t, value))
        while self.samples[0][0] <= t - self.window:
            self.samples.popleft()
        return sum(v for _, v in self.samples) / len(self.samples)


def rfc3339(start, seconds):
    return (start + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def cell(value, digits, missing=False):
    return "" if missing else f"{value:.{digits}f}"


# Kafka (examples/kafka-strimzi-plan.yaml): topic `orders`, 24 partitions, recorded with one
# consumer per partition around the clock (24, the usual static sizing) on 3 brokers.
KAFKA_PARTITIONS = 24
KAFKA_BROKERS, KAFKA_CONSUMERS = 3, 24
KAFKA_CONSUMER_RATE = 3300.0  # messages per second one consumer processes
KAFKA_MESSAGE_BYTES = 2000.0
KAFKA_HANDLER_BYTES = 25e6  # produce bytes/s per broker that add 55 % to handler busy time


def kafka_lag_burst():
    """Four hours at 15 s (RFC 3339) of the orders topic: a quiet morning at 24,000 messages/s,
    a 45 s producer retry storm at 0:25 that must not trigger anything, a bulk import that
    takes the topic to 60,000 messages/s from 0:50 to 2:10, a slow consumer from 2:30 to 2:55
    (the order database slows, each message takes 2.5 times as long: lag climbs while bytes in
    stays flat), and the lag exporter restarting at 3:10 (no lag for 4 minutes)."""
    rng = random.Random(23)
    start = datetime(2026, 11, 23, 6, 0, tzinfo=timezone.utc)
    bytes_rate, idle_rate = Rate(120), Rate(120)
    rows, lag = [], None
    for step in range(4 * 3600 // 15 + 1):
        t = step * 15
        m = t / 60
        msgs = 24000 * (1 + 0.05 * math.sin(2 * math.pi * m / 95))
        if 50 <= m < 65:
            msgs += (60000 - msgs) * (m - 50) / 15
        elif 65 <= m < 115:
            msgs = 60000 * (1 + 0.04 * math.sin(2 * math.pi * m / 23))
        elif 115 <= m < 130:
            msgs = 60000 + (msgs - 60000) * (m - 115) / 15
        if 25 * 60 <= t < 25 * 60 + 45:
            msgs *= 3  # retried produce requests after a client-side timeout
        msgs *= 1 + rng.gauss(0, 0.02)
        slow = 2.5 if 150 <= m < 175 else 1.0
        # Lag per partition at 24 consumers: messages in flight, about 0.3 s of processing per
        # partition, more as the consumers get busier; it builds within a minute and drains in
        # a few minutes.
        busy = msgs / (KAFKA_CONSUMERS * KAFKA_CONSUMER_RATE / slow)
        in_flight = msgs / KAFKA_PARTITIONS * 0.3 * slow * (1 + 0.5 * min(busy, 1.5))
        lag = follow(lag, in_flight, 15, 60, 240)
        bytes_in = bytes_rate(t, msgs * KAFKA_MESSAGE_BYTES * (1 + rng.gauss(0, 0.03)))
        # Request handlers at 3 brokers: busy in proportion to the produce bytes each takes.
        handlers = 0.08 + 0.55 * (bytes_in / KAFKA_BROKERS) / KAFKA_HANDLER_BYTES
        idle = idle_rate(t, max(0.02, 1 - handlers * (1 + rng.gauss(0, 0.03))))
        gap = 190 <= m < 194  # kafka-exporter restarting
        # Scale-down gates: a broker's rolling restart leaves partitions under-replicated from
        # 2:12 to 2:30; Cruise Control reassigns partitions from 1:00 to 1:10.
        under_replicated = 4 if 132 <= m < 150 else 0
        reassigning = 6 if 60 <= m < 70 else 0
        rows.append(
            [
                rfc3339(start, t),
                cell(lag * (1 + rng.gauss(0, 0.04)), 0, gap),
                cell(bytes_in, 0),
                cell(1 - idle, 4),
                under_replicated,
                reassigning,
                KAFKA_BROKERS,
                KAFKA_CONSUMERS,
            ]
        )
    write_csv(
        "kafka-lag-burst.csv",
        ["lag", "bytes-in", "request-handlers", "gate:under-replicated-partitions", "gate:reassignment"],
        rows,
    )


# Pulsar (examples/pulsar-plan.yaml): namespace public/orders, the enrich-order function, recorded
# at 3 brokers and 16 function instances.
PULSAR_BROKERS, PULSAR_INSTANCES = 3, 16
PULSAR_INSTANCE_RATE = 2500.0  # messages per second one function instance processes


def pulsar_backlog():
    """Three hours at 20 s (seconds from the start): 12,000 messages/s, then at 0:35 an upstream
    producer that was cut off for an hour reconnects and flushes what it buffered (36,000/s for
    12 minutes, decaying over 10), the evening climb to 24,000/s from 1:20 to 2:20 with the
    function's pods rolled by a deploy at 1:35 (no latency series for 3 minutes), and the
    evening decline."""
    rng = random.Random(31)
    cpu_rate = Rate(120)
    rows, backlog, latency = [], None, None
    for step in range(3 * 3600 // 20 + 1):
        t = step * 20
        m = t / 60
        rate_in = 12000.0
        if 35 <= m < 47:
            rate_in = 36000
        elif 47 <= m < 57:
            rate_in = 36000 + (12000 - 36000) * (m - 47) / 10
        elif 80 <= m < 110:
            rate_in = 12000 + 12000 * math.sin(math.pi / 2 * (m - 80) / 30) ** 2
        elif 110 <= m < 140:
            rate_in = 24000
        elif 140 <= m < 165:
            rate_in = 24000 + (10000 - 24000) * (m - 140) / 25
        elif m >= 165:
            rate_in = 10000
        rate_in *= 1 + rng.gauss(0, 0.03)
        busy = rate_in / (PULSAR_INSTANCES * PULSAR_INSTANCE_RATE)
        # Backlog of the function's subscriptions: about a second of messages, more as the
        # instances get busy; it builds in a minute and a half and drains in about five.
        backlog = follow(backlog, rate_in * (1 + 0.5 * min(busy, 1.5)), 20, 90, 300)
        # p99 of process(): 60 ms when idle, climbing as the instances' CPU saturates.
        latency = follow(latency, 60 + 160 * min(busy, 1.3) ** 2, 20, 60, 120)
        # Broker CPU (share of the requested cores) at 3 brokers: a base, plus dispatch and
        # persistence work in proportion to the messages each broker takes.
        cpu = cpu_rate(t, (0.1 + 0.0001 * rate_in / PULSAR_BROKERS) * (1 + rng.gauss(0, 0.03)))
        gap = 95 <= m < 98  # function pods rolled: no latency series
        rows.append(
            [
                f"{t}",
                cell(backlog * (1 + rng.gauss(0, 0.04)), 0),
                cell(rate_in, 0),
                cell(min(cpu, 0.99), 4),
                cell(latency * (1 + rng.gauss(0, 0.05)), 1, gap),
                PULSAR_BROKERS,
                PULSAR_INSTANCES,
            ]
        )
    write_csv("pulsar-backlog.csv", ["backlog", "rate-in", "broker-cpu", "latency"], rows)


# RabbitMQ (examples/rabbitmq-plan.yaml): the `orders` queue on a 3-node cluster, recorded with
# 16 consumers.
RABBITMQ_NODES, RABBITMQ_CONSUMERS = 3, 16
RABBITMQ_CONSUMER_RATE = 60.0  # messages per second one consumer acknowledges


def rabbitmq_queue():
    """Six hours at one minute (RFC 3339) of the orders queue: the morning climb from 150 to 450
    messages/s, the payment provider slowing down from 08:30 to 09:10 (each message takes twice
    as long: ready messages pile up while publishes stay flat), a promotion at 10:00 (twice the
    publishes for 20 minutes), a rolling restart of the RabbitMQ nodes at 11:15 (no queue
    metrics for 6 minutes), and the late-morning decline."""
    rng = random.Random(47)
    start = datetime(2026, 11, 24, 6, 0, tzinfo=timezone.utc)
    rows, ready = [], None
    for minute in range(6 * 60 + 1):
        h = 6 + minute / 60
        published = 150 + 300 * min(1.0, max(0.0, (h - 6.5) / 1.5))
        if h >= 11:
            published = 450 - 250 * min(1.0, (h - 11) / 1)
        if 10 <= h < 10 + 20 / 60:
            published *= 2
        published *= 1 + rng.gauss(0, 0.03)
        slow = 2.0 if 8.5 <= h < 9 + 10 / 60 else 1.0
        busy = min(1.2, published / (RABBITMQ_CONSUMERS * RABBITMQ_CONSUMER_RATE / slow))
        # Ready messages: what the consumers' prefetch windows cannot take, growing steeply as
        # they get busy; it builds within a couple of minutes and drains in about four.
        ready = follow(ready, 30 + 1000 * busy**2, 60, 120, 240)
        # 1 - consumer_utilisation: the share of time no consumer can take a message at once.
        saturated = 0.7 * busy**1.5 * (1 + rng.gauss(0, 0.05))
        gap = 11.25 <= h < 11.35  # rolling restart: no queue metrics
        rows.append(
            [
                rfc3339(start, minute * 60),
                cell(ready * (1 + rng.gauss(0, 0.05)), 0, gap),
                cell(published, 1, gap),
                cell(min(saturated, 1.0), 4, gap),
                RABBITMQ_NODES,
                RABBITMQ_CONSUMERS,
            ]
        )
    write_csv("rabbitmq-queue.csv", ["ready", "publish-rate", "consumers-busy"], rows)


def write(name, rows):
    with open(HERE / name, "w") as f:
        f.write("time,business,infrastructure,experience,brokers,workers\n")
        for r in rows:
            f.write(",".join(str(c) for c in r) + "\n")


def write_csv(name, dimensions, rows):
    with open(HERE / name, "w") as f:
        f.write(",".join(["time", *dimensions, "brokers", "workers"]) + "\n")
        for r in rows:
            f.write(",".join(str(c) for c in r) + "\n")


def failover(name, clusters, failing, seed):
    """Two hours at 15 s of a multi-region checkout: orders follow a gentle hump; `failing`'s
    etcd p99 breaches 200 ms from 0:30 to 0:55 (with a 20 s blip at 0:10 that must not move
    traffic); the failback gate (error ratio) spikes once at 0:59 while traffic returns."""
    rng = random.Random(seed)
    rows = []
    for i in range(0, 2 * 3600 // 15 + 1):
        t = i * 15
        m = t / 60
        orders = 6000 + 6000 * math.exp(-((m - 70) ** 2) / 400)
        orders = max(0.0, orders * (1 + rng.gauss(0, 0.02)))
        health = []
        for c in clusters:
            p99 = 0.04 + abs(rng.gauss(0, 0.01))
            if c == failing and (30 <= m < 55 or 10 <= m < 10 + 20 / 60):
                p99 = 0.45 + abs(rng.gauss(0, 0.05))
            health.append(f"{p99:.4f}")
        errors = 0.02 if 59 <= m < 60 else 0.001 + abs(rng.gauss(0, 0.0005))
        rows.append([t, f"{orders:.0f}", *health, f"{errors:.4f}", 3, 12])
    with open(HERE / name, "w") as f:
        f.write(",".join(["time", "business", *[f"health:{c}" for c in clusters], "gate:errors", "brokers", "workers"]) + "\n")
        for r in rows:
            f.write(",".join(str(c) for c in r) + "\n")


if __name__ == "__main__":
    flash_sale()
    diurnal_day()
    kafka_lag_burst()
    pulsar_backlog()
    rabbitmq_queue()
    failover("failover-two-region.csv", ["eu", "us"], "eu", 21)
    failover("failover-three-region.csv", ["eu", "us", "ap"], "us", 23)
