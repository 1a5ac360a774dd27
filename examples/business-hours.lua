-- Business-hours checks: one job definition reused for several targets
-- through args and kwargs, on a cron schedule that only fires on
-- weekdays between 09:00 and 17:45, in the machine's zone.
--
--   moonbeat run examples/
--
-- Each run logs what it checked; a failure is logged with its traceback
-- and the next fire comes as usual.

local time = require "moonbeat.time"

local function check(ctx, target, kw)
  local started = time.monotonic()
  -- Stand-in for real work (an HTTP probe, a query): it waits on the
  -- loop, so other jobs keep firing meanwhile.
  time.sleep(kw.settle or "100ms")
  ctx.log.info("checked", {
    target = target,
    scheduled = time.format(ctx.scheduled_time),
    took = time.monotonic() - started,
  })
end

for _, target in ipairs { "billing", "search", "checkout" } do
  scheduler.add_job {
    id = "check-" .. target,
    name = "Business-hours check of " .. target,
    trigger = {
      "cron",
      day_of_week = "mon-fri",   -- APScheduler numbering: 0 = Monday
      hour = "9-17",
      minute = "*/15",
      timezone = "local",
    },
    args = { target },
    kwargs = { settle = "250ms" },
    run = check,
  }
end
