-- Health check: every 30 seconds, probe several endpoints. A probe that
-- fails is tried again (3 tries, 2 s apart) before the endpoint counts
-- as down; an endpoint down twice in a row gets an alert line in a
-- file, and a second line when it recovers.
--
--   HEALTH_URLS=http://127.0.0.1:8080/health,http://127.0.0.1:9090/ping \
--     moonbeat run examples/
--
-- Environment:
--   HEALTH_URLS    comma-separated URLs to probe
--                  (default "http://127.0.0.1:8080/health")
--   HEALTH_ALERTS  file the alert lines are appended to
--                  (default "health-alerts.log")
--
-- ctx.state keeps each endpoint's streak of failed checks between runs
-- (and across restarts, in the scheduler's store).

local http = require "moonbeat.http"
local time = require "moonbeat.time"

local URLS = {}
for url in (os.getenv("HEALTH_URLS") or "http://127.0.0.1:8080/health"):gmatch("[^,%s]+") do
  URLS[#URLS + 1] = url
end
local ALERTS = os.getenv("HEALTH_ALERTS") or "health-alerts.log"

local TRIES = 3            -- probes per check before an endpoint is down
local PAUSE = "2s"         -- between probes
local DOWN_AFTER = 2       -- checks in a row before an alert

-- One probe: up is a 2xx answer within the timeout.
local function probe(url)
  local res, err = http.get(url, { timeout = "5s" })
  if not res then return false, err end
  if not res.ok then return false, "status " .. res.status end
  return true
end

-- Up to TRIES probes; returns up, and why not.
local function check(url)
  local up, why
  for try = 1, TRIES do
    up, why = probe(url)
    if up then return true end
    if try < TRIES then time.sleep(PAUSE) end
  end
  return false, why
end

local function alert(line)
  local f = assert(io.open(ALERTS, "a"))
  f:write(time.format(time.now()), " ", line, "\n")
  f:close()
end

scheduler.add_job {
  id = "health-check",
  name = "Probe the endpoints",
  trigger = { "interval", seconds = 30 },
  timeout = "25s",           -- ends before the next check is due
  max_instances = 1,
  run = function(ctx)
    local streaks = ctx.state.streaks or {}
    ctx.state.streaks = streaks
    for _, url in ipairs(URLS) do
      local up, why = check(url)
      local streak = streaks[url] or 0
      if up then
        if streak >= DOWN_AFTER then alert("UP " .. url) end
        streaks[url] = nil
      else
        streak = streak + 1
        streaks[url] = streak
        ctx.log.warn("endpoint failed its check", { url = url, error = why, streak = streak })
        if streak == DOWN_AFTER then alert(("DOWN %s (%s)"):format(url, why)) end
      end
    end
  end,
}
