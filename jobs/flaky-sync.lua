-- A sync that fails now and then, as real ones do: every 20 seconds it
-- "talks to upstream" for a moment and fails about one time in three.
-- Its errors are logged with their traceback; nothing else is disturbed.

local time = require "moonbeat.time"

local function talk_to_upstream()
  time.sleep("250ms")
  if math.random() < 0.33 then
    error("upstream did not answer (simulated)")
  end
  return math.random(1, 50)
end

scheduler.add_job {
  id = "flaky-sync",
  name = "Sync with upstream (fails sometimes)",
  trigger = { "cron", second = "*/20" },
  run = function(ctx)
    local changed = talk_to_upstream()
    ctx.log.info("synced", { changed = changed })
  end,
}
