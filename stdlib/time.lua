-- moonbeat.time: the clock a job sees. `sleep` yields the run to the
-- loop instead of blocking it; every function reads the scheduler's
-- clock, so under the virtual clock of the tests time is virtual too.

local core = require "moonbeat.core"
local duration = require "mb.duration"

local M = {}

-- Wait d (seconds, or a duration string such as "5s", "1m30s").
function M.sleep(d)
  return core.sleep(duration.check(d, "sleep"))
end

-- Wall-clock time, seconds since the epoch (with a fraction).
M.now = core.now

-- Monotonic seconds: for measuring how long something took.
M.monotonic = core.monotonic

-- Format a time (seconds since the epoch) as ISO 8601 with its offset,
-- in zone (default UTC).
function M.format(t, zone)
  return core.format_time(t, zone)
end

-- Parse an ISO 8601 time ("2026-12-01 09:00", "2026-12-01T09:00:00Z");
-- times without an offset are read in zone (default UTC). Returns
-- seconds, or nil and a message.
function M.parse(text, zone)
  return core.parse_time(text, zone)
end

return M
