-- A sync that fails now and then, as real ones do: every 20 seconds it
-- "talks to upstream" for a moment and fails about one time in three.
-- A failed attempt is retried twice, 2 s and then 4 s later; each
-- attempt may take 5 s at most. Errors are logged with their traceback;
-- nothing else is disturbed.

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
  timeout = "5s",
  retry = { attempts = 3, backoff = "exponential", delay = "2s" },
  run = function(ctx)
    local changed = talk_to_upstream()
    ctx.log.info("synced", { changed = changed, attempt = ctx.attempt })
  end,
}
