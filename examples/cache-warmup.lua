-- Cache warm-up: every 10 minutes, fetch the list of hot keys from an
-- HTTP endpoint and warm each one, so that the first real reader after
-- a cache restart does not pay for the miss.
--
--   HOT_KEYS_URL=http://127.0.0.1:8080/hot-keys moonbeat run examples/
--
-- Environment:
--   HOT_KEYS_URL  answers a JSON list of keys
--                 (default "http://127.0.0.1:8080/hot-keys")
--   WARM_URL      each key is warmed with POST WARM_URL..key
--                 (default "http://127.0.0.1:8080/warm/")
--
-- A key that fails to warm is logged and counted; the others go on. A
-- list that cannot be fetched fails the run, and the retry policy tries
-- again a little later.

local http = require "moonbeat.http"

local HOT_KEYS_URL = os.getenv("HOT_KEYS_URL") or "http://127.0.0.1:8080/hot-keys"
local WARM_URL = os.getenv("WARM_URL") or "http://127.0.0.1:8080/warm/"

-- Keys go into a URL path: escape what is not unreserved.
local function escape(key)
  return (tostring(key):gsub("[^%w%-%._~]", function(c)
    return ("%%%02X"):format(c:byte())
  end))
end

scheduler.add_job {
  id = "cache-warmup",
  name = "Warm the cache with the hot keys",
  trigger = { "interval", minutes = 10 },
  timeout = "5m",
  retry = { attempts = 3, backoff = "fixed", delay = "30s" },
  run = function(ctx)
    local res, err = http.get(HOT_KEYS_URL, { timeout = "10s" })
    if not res then error("hot keys: " .. err, 0) end
    if res.status ~= 200 or type(res.json) ~= "table" then
      error(("hot keys: %s answered %d"):format(HOT_KEYS_URL, res.status), 0)
    end
    local warmed, failed = 0, 0
    for _, key in ipairs(res.json) do
      -- Each request waits on the loop: other jobs run meanwhile.
      local r, why = http.post(WARM_URL .. escape(key), { timeout = "5s" })
      if r and r.ok then
        warmed = warmed + 1
      else
        failed = failed + 1
        ctx.log.warn("key not warmed", {
          key = key, error = why or ("status " .. r.status),
        })
      end
    end
    ctx.log.info("cache warmed", { warmed = warmed, failed = failed })
  end,
}
