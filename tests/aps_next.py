#!/usr/bin/python3
"""The oracle for tests/cron_diff_spec.lua: APScheduler 3's CronTrigger.

Reads cases on stdin, one a line, fields separated by tabs:

    id  zone  start  n  field=expr|field=expr|...

where start is seconds since the epoch (may have a fraction) and the
expressions use APScheduler's syntax ('3rd fri' has a space; no tab or
'|'). Writes one line per case on stdout, in input order:

    id  ok     epoch/wall epoch/wall ...   (up to n fires, maybe none)
    id  error  message                     (refused, or failed)

epoch is the fire instant in seconds since the epoch; wall is the local
date and time APScheduler computed, counted in seconds as if it were UTC
(for a time in a DST gap, it is the time that does not exist). The fires
are what a scheduler sees: get_next_fire_time(None, start), then
get_next_fire_time(prev, prev) after each fire.

The first line is a comment naming the versions used. Debian's package
python3-apscheduler (scripts/deps.sh installs it) brings pytz, which
reads the system's zoneinfo, the files moonbeat reads.
"""

import signal
import sys
from datetime import datetime, timezone

try:
    import apscheduler
    import pytz
    from apscheduler.triggers.cron import CronTrigger
except ImportError as e:
    sys.stderr.write("aps_next.py: cannot import APScheduler (%s); install "
                     "Debian's python3-apscheduler (make deps)\n" % e)
    sys.exit(3)

EPOCH = datetime(1970, 1, 1)
CASE_SECONDS = 20  # a case that takes longer is reported as an error


def timed_out(signum, frame):
    raise TimeoutError("no answer in %d s" % CASE_SECONDS)


def seconds(naive):
    """A naive datetime counted in seconds as if it were UTC."""
    d = naive - EPOCH
    return d.days * 86400 + d.seconds


def fires(zone, start, n, fields):
    trigger = CronTrigger(timezone=zone, **fields)
    now = datetime.fromtimestamp(start, timezone.utc)
    prev = None
    out = []
    while len(out) < n:
        t = trigger.get_next_fire_time(prev, now)
        if t is None:
            break
        out.append("%d/%d" % (round(t.timestamp()),
                              seconds(t.replace(tzinfo=None))))
        prev = now = t
    return out


def main():
    sys.stdout.write("# apscheduler %s pytz %s tzdata %s\n" % (
        apscheduler.__version__, pytz.__version__, pytz.OLSON_VERSION))
    signal.signal(signal.SIGALRM, timed_out)
    for line in sys.stdin:
        line = line.rstrip("\n")
        if not line:
            continue
        cid, zone, start, n, exprs = line.split("\t")
        fields = dict(item.split("=", 1) for item in exprs.split("|"))
        signal.alarm(CASE_SECONDS)
        try:
            result = "ok\t" + " ".join(fires(zone, float(start), int(n),
                                             fields))
        except Exception as e:  # refused, or a bug: the spec reports it
            text = "%s: %s" % (type(e).__name__, e)
            result = "error\t" + text.replace("\t", " ").replace("\n", " ")
        signal.alarm(0)
        sys.stdout.write("%s\t%s\n" % (cid, result))


if __name__ == "__main__":
    main()
