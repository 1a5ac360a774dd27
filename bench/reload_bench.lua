-- Reload latency: from a job file's rename over the old one (an editor's
-- save) to the new version being live in the scheduler, through the
-- directory watch, its debounce and the staged load.
--
--   build/moonbeat lua bench/reload_bench.lua [RENAMES] [JOBS]
--
-- RENAMES saves (default 50) of a file declaring JOBS jobs (default 10),
-- each changing every job's name; prints the median and the 99th
-- percentile in milliseconds. The target is 50 ms or less.

local core = require "moonbeat.core"
local reload = require "mb.reload"

local renames = math.tointeger(tonumber(arg[1] or 50))
local njobs = math.tointeger(tonumber(arg[2] or 10))
assert(renames and renames > 0 and njobs and njobs > 0,
  "usage: reload_bench.lua [RENAMES] [JOBS]")

local function source(version)
  local out = {}
  for i = 1, njobs do
    out[i] = ("scheduler.add_job { id = 'job-%d', name = 'v%d', "
      .. "trigger = { 'interval', minutes = %d }, "
      .. "run = function(ctx) ctx.state.n = (ctx.state.n or 0) + 1 end }\n")
      :format(i, version, i)
  end
  return table.concat(out)
end

local function write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end

core.configure_log { stream = "none" }
local p = io.popen("mktemp -d")
local dir = p:read("l")
p:close()
write(dir .. "/bench.lua", source(0))

local sched = assert(core.new { clock = "real" })
local reloader = reload.new(sched, dir)
assert(reloader:watch())
assert(reloader:reload(nil, "start"))

local last = "job-" .. njobs
local times = {}
for version = 1, renames do
  write(dir .. "/.bench.lua.tmp", source(version))
  local want = "v" .. version
  local started = core.monotonic()
  assert(os.rename(dir .. "/.bench.lua.tmp", dir .. "/bench.lua"))
  local deadline = started + 5
  while sched:get_job(last).name ~= want do
    if core.monotonic() > deadline then error("version " .. want .. " not live after 5 s") end
    sched:poll(0.01)
  end
  times[#times + 1] = (core.monotonic() - started) * 1000
end

reloader:close()
sched:close()
os.execute("rm -rf '" .. dir .. "'")

table.sort(times)
local function percentile(q)
  return times[math.max(1, math.ceil(q * #times))]
end
io.write(("reload latency over %d renames of a %d-job file: median %.1f ms, "
  .. "p99 %.1f ms (min %.1f, max %.1f; debounce %d ms)\n"):format(#times, njobs,
  percentile(0.5), percentile(0.99), times[1], times[#times], 15))
-- The line `make bench` reads (workload G).
io.write(('{"reload_ms": %.3f, "reload_p99_ms": %.3f}\n'):format(
  percentile(0.5), percentile(0.99)))
