-- A heartbeat every five seconds: the quickest sign that the scheduler
-- is alive, and a count of beats since it started.

local beats = 0

scheduler.add_job {
  id = "heartbeat",
  name = "Heartbeat",
  trigger = { "interval", seconds = 5 },
  run = function(ctx)
    beats = beats + 1
    ctx.log.info("still here", { beats = beats })
  end,
}
