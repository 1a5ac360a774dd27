-- Machine metrics every minute: the load average, memory and the disk
-- usage of one filesystem, appended as one JSON object per line (JSON
-- Lines), ready for jq or a log shipper.
--
--   METRICS_FILE=metrics.jsonl moonbeat run examples/
--
-- Settings, from the environment:
--   METRICS_FILE  the file lines are appended to; its directory is made
--                 if missing (default /var/lib/moonbeat/metrics.jsonl)
--   METRICS_DISK  a path on the filesystem to report (default /)
--   METRICS_PROC  where proc is mounted (default /proc)
--
-- A line looks like:
--   {"time":"2026-01-01T00:01:00+00:00","load":[0.5,0.4,0.3],
--    "memory":{"total_kb":16314512,"available_kb":9215836},
--    "disk":{"path":"/","total_kb":244568380,"used_kb":80234000,
--            "available_kb":151829352}}
-- A reading that fails (no df, an odd /proc) is left out of that line
-- and logged; the rest is still recorded.

local exec = require "moonbeat.exec"
local fs = require "moonbeat.fs"
local json = require "moonbeat.json"
local log = require "moonbeat.log"
local time = require "moonbeat.time"

local FILE = os.getenv("METRICS_FILE") or "/var/lib/moonbeat/metrics.jsonl"
local DISK = os.getenv("METRICS_DISK") or "/"
local PROC = os.getenv("METRICS_PROC") or "/proc"

local function load_average()
  local text, err = fs.read(PROC .. "/loadavg")
  if not text then return nil, err end
  local one, five, fifteen = text:match("^(%S+) (%S+) (%S+)")
  if not fifteen then return nil, PROC .. "/loadavg: unexpected contents" end
  return { tonumber(one), tonumber(five), tonumber(fifteen) }
end

local function memory()
  local text, err = fs.read(PROC .. "/meminfo")
  if not text then return nil, err end
  local total = text:match("MemTotal:%s*(%d+) kB")
  local available = text:match("MemAvailable:%s*(%d+) kB")
  if not (total and available) then
    return nil, PROC .. "/meminfo: no MemTotal or MemAvailable"
  end
  return { total_kb = tonumber(total), available_kb = tonumber(available) }
end

-- df -P: one portable line per filesystem, sizes in 1 KiB blocks.
local function disk()
  local res, err = exec.run { "df", "-Pk", DISK, timeout = "10s" }
  if not res then return nil, err end
  if res.code ~= 0 then return nil, "df: " .. res.stderr:gsub("%s+$", "") end
  local total, used, available =
    res.stdout:match("\n%S+%s+(%d+)%s+(%d+)%s+(%d+)")
  if not total then return nil, "df: unexpected output" end
  return { path = DISK, total_kb = tonumber(total), used_kb = tonumber(used),
    available_kb = tonumber(available) }
end

local DIR = FILE:match("^(.*)/[^/]*$")

scheduler.add_job {
  id = "metrics",
  name = "Record load, memory and disk usage",
  trigger = "* * * * *",
  timeout = "30s",
  run = function(ctx)
    local line = { time = time.format(ctx.scheduled_time) }
    for name, read in pairs { load = load_average, memory = memory, disk = disk } do
      local value, err = read()
      if value then
        line[name] = value
      else
        log.warn("reading failed", { metric = name, error = err })
      end
    end
    if DIR and DIR ~= "" then assert(fs.mkdir(DIR)) end
    assert(fs.append(FILE, json.encode(line) .. "\n"))
  end,
}
