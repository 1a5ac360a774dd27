"""The APScheduler side of `make bench`: bench/mb_bench.lua's workloads
with APScheduler 3's BackgroundScheduler (its default thread pool,
misfire_grace_time=None so that no run is dropped for being late), one
workload per process, run as

    /usr/bin/python3 bench/aps_bench.py WORKLOAD [key=value ...]

It prints one JSON line with the same fields as mb_bench.lua. The
`idle` workload (D) runs until killed; bench/idle.sh measures it from
outside.

APScheduler does not hand a job its scheduled time. The executor calls
run_job(job, alias, run_times, logger) from a pool thread and that calls
the job once per run time, in order; the bench wraps run_job to keep
run_times where the job can read them (a thread-local), so lateness is
measured inside the job as on the moonbeat side.
"""

import gc
import itertools
import json
import math
import os
import signal
import sys
import threading
import time
from datetime import datetime, timezone

import apscheduler.executors.pool as aps_pool
from apscheduler.schedulers.background import BackgroundScheduler

UTC = timezone.utc
_local = threading.local()
_run_job = aps_pool.run_job


def _run_job_keeping_times(job, alias, run_times, logger_name):
    _local.run_times = run_times
    _local.next = 0
    return _run_job(job, alias, run_times, logger_name)


aps_pool.run_job = _run_job_keeping_times


def scheduled_time():
    """The scheduled time of the run the calling job is in."""
    i = _local.next
    _local.next = i + 1
    return _local.run_times[i].timestamp()


def at(t):
    return datetime.fromtimestamp(t, UTC)


def new_scheduler():
    return BackgroundScheduler(timezone=UTC,
                               job_defaults={"misfire_grace_time": None})


def noop():
    pass


def rss_kb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def sample():
    return {"cpu": time.process_time(), "wall": time.time()}


def sleep_until(t):
    while True:
        left = t - time.time()
        if left <= 0:
            return
        time.sleep(left)


def late_figures(late, n, out):
    if n:
        s = sorted(late[:n])

        def pct(p):
            return s[max(0, math.ceil(p * n) - 1)] * 1e3
        out["late_p50_ms"] = pct(0.50)
        out["late_p99_ms"] = pct(0.99)
        out["late_max_ms"] = s[-1] * 1e3
    return out


def add_margin(n, make_trigger):
    """Seconds that adding n jobs and starting will take, from a sample."""
    k = min(n, 5000)
    s = new_scheduler()
    t0 = time.monotonic()
    for i in range(k):
        s.add_job(noop, id=f"calibrate{i}", **make_trigger(i))
    s.start(paused=True)
    took = time.monotonic() - t0
    s.shutdown(wait=False)
    return 0.5 + 2 * took * n / k


def burst(opt):
    """A: n one-shot jobs due at one instant."""
    n = int(opt.get("n", 100000))
    far = time.time() + 86400
    T = round(time.time() + add_margin(
        n, lambda i: {"trigger": "date", "run_date": at(far)}), 3)
    late = [0.0] * n
    counter = itertools.count()
    done = threading.Event()

    def run():
        i = next(counter)
        late[i] = time.time() - scheduled_time()
        if i == n - 1:
            done.set()

    s = new_scheduler()
    for i in range(n):
        s.add_job(run, "date", run_date=at(T), id=f"burst{i}")
    s.start()
    setup_late = time.time() > T
    done.wait(max(0.0, T + 60 - time.time()))
    s.shutdown(wait=True)
    stopped = time.time()
    count = next(counter)
    out = late_figures(late, count, {
        "n": n, "runs": count, "lost": n - count, "setup_late": setup_late,
        "committed_s": stopped - T})
    if count:
        out["drain_s"] = out["late_max_ms"] / 1e3
        out["runs_per_s"] = count / max(out["drain_s"], 1e-6)
    return out


def interval(opt):
    """B1/B2: n interval jobs every second over a window of `seconds`."""
    n = int(opt.get("n", 10000))
    seconds = int(opt.get("seconds", 20))
    spread = int(opt.get("spread", 1)) != 0
    expected = n * seconds
    far = time.time() + 86400
    margin = add_margin(n, lambda i: {"trigger": "interval", "seconds": 1,
                                      "start_date": at(far)})
    T0 = int(time.time() + margin + 1.5)
    T_end = T0 + seconds
    late = [0.0] * expected
    counter = itertools.count()

    def run():
        st = scheduled_time()
        if st < T_end:
            late[next(counter)] = time.time() - st

    s = new_scheduler()
    for i in range(n):
        start = T0 + i / n if spread else T0
        s.add_job(run, "interval", seconds=1, start_date=at(start),
                  id=f"tick{i}")
    s.start()
    setup_late = time.time() > T0
    sleep_until(T0 - 0.001)
    before = sample()
    sleep_until(T_end - 0.001)
    after = sample()
    sleep_until(T_end + 2)
    s.shutdown(wait=True)
    count = next(counter)
    out = late_figures(late, count, {
        "n": n, "seconds": seconds, "expected": expected, "runs": count,
        "lost": expected - count, "setup_late": setup_late})
    out["cpu_pct"] = (100 * (after["cpu"] - before["cpu"])
                      / (after["wall"] - before["wall"]))
    return out


def many(opt):
    """C: n cron jobs hours ahead added into a running scheduler; then it
    prints {"ready": true} and waits `wait` s more with nothing due, while
    bench/bench.lua samples it from outside."""
    n = int(opt.get("n", 100000))
    wait = float(opt.get("wait", 4))
    hour_now = datetime.now(UTC).hour
    s = new_scheduler()
    s.start()
    gc.collect()
    rss0 = rss_kb()
    t0 = time.monotonic()
    # Slow adding stops at max_add_s; the figures are then per job added.
    stop_at = t0 + float(opt.get("max_add_s", "inf"))
    added = n
    for i in range(n):
        s.add_job(noop, "cron", hour=(hour_now + 2 + (i // 60) % 20) % 24,
                  minute=i % 60, id=f"cron{i}")
        if (i + 1) % 1000 == 0 and time.monotonic() > stop_at:
            added = i + 1
            break
    took = time.monotonic() - t0
    gc.collect()
    out = {"n": n, "added": added, "wait_s": wait, "add_s": took,
           "adds_per_s": added / took,
           "bytes_per_job": (rss_kb() - rss0) * 1024 / added}
    sys.stdout.write(json.dumps({"ready": True, "pid": os.getpid()}) + "\n")
    sys.stdout.flush()
    time.sleep(wait + 1.5)
    s.shutdown(wait=False)
    return out


def idle(opt):
    """D: one job a minute, from BENCH_T0 on; runs until killed."""
    t0 = float(os.environ["BENCH_T0"])
    s = new_scheduler()
    s.add_job(noop, "interval", minutes=1, start_date=at(t0), id="minute")
    s.start()
    while True:
        signal.pause()


WORKLOADS = {"burst": burst, "interval": interval, "many": many,
             "idle": idle}


def main():
    if len(sys.argv) < 2 or sys.argv[1] not in WORKLOADS:
        sys.stderr.write("aps_bench: unknown workload\n")
        return 2
    opt = dict(a.split("=", 1) for a in sys.argv[2:])
    out = WORKLOADS[sys.argv[1]](opt)
    out["workload"] = sys.argv[1]
    out["impl"] = "apscheduler"
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
