-- The moonbeat side of `make bench`: one workload per process, run as
--   build/bench/moonbeat lua bench/mb_bench.lua WORKLOAD [key=value ...]
-- It prints one JSON line of figures on stdout; bench/aps_bench.py is
-- its APScheduler twin and prints the same fields. bench/bench.lua runs
-- both and writes the table.
--
-- Jobs take the path a user's jobs take: scheduler.add_job with a
-- trivial Lua body, fired by the real loop on the real clock. Each run
-- records its lateness (its start, core.now(), minus ctx.scheduled_time)
-- into a table allocated before the clock starts.
--
-- Workloads (key=value options in brackets, defaults as in a full run):
--   burst    N one-shot jobs due at one instant
--            [n=100000 db=:memory: (or a file, or none)]
--   interval N interval jobs every second for S seconds, start offsets
--            spread over the second or all at one instant
--            [n=10000 seconds=20 spread=1 db=none]
--   many     N cron jobs hours ahead added into a running scheduler;
--            memory per job, adds per second, then a quiet wait
--            [n=1000000 wait=4 db=PATH max_add_s=none luaprof=0]
--   store    write a store of N stored jobs for `moonbeat run` to start
--            with (bench/startup_jobs) [n=1000000 db=PATH]

local core = require "moonbeat.core"
local scheduler = require "mb.scheduler"
local json = require "moonbeat.json"
local probe = require "bench.probe"

local workload = arg[1]
local opt = {}
for i = 2, #arg do
  local k, v = arg[i]:match("^([%w_]+)=(.*)$")
  if not k then error("bad option " .. arg[i] .. " (expected key=value)") end
  opt[k] = tonumber(v) or v
end

core.configure_log { level = "warn" }
-- A million jobs' specs outgrow the default limit on job code's memory,
-- and the bench adds them from inside a run.
core.set_memory_limit(0)

local function noop() end

-- Percentiles of the first n latenesses (seconds), in milliseconds.
local function late_figures(late, n, out)
  if n == 0 then return out end
  local sorted = table.move(late, 1, n, 1, {})
  table.sort(sorted)
  local function at(p) return sorted[math.max(1, math.ceil(p * n))] * 1e3 end
  out.late_p50_ms = at(0.50)
  out.late_p99_ms = at(0.99)
  out.late_max_ms = sorted[n] * 1e3
  return out
end

-- How long adding n jobs will take, from a sample of throwaway jobs,
-- so that jobs due "at one instant" are all in before that instant.
local function add_margin(api, n)
  local k = math.min(n, 5000)
  local far = core.now() + 86400
  local t0 = core.monotonic()
  for i = 1, k do
    api.add_job { id = "calibrate" .. i, trigger = { "date", run_date = far },
      run = noop }
  end
  local took = core.monotonic() - t0
  for i = 1, k do api.remove_job("calibrate" .. i) end
  return 0.5 + 2 * took * n / k
end

-- db: a path, ":memory:", or nil or "none" for no store. zone: the
-- triggers' default zone, UTC unless given.
local function new_scheduler(db, zone)
  if db == "none" then db = nil end
  local sched = assert(core.new { clock = "real", db = db,
    timezone = zone or "UTC" })
  return sched, scheduler.new(sched)
end

local function remove_db(db)
  if db and db ~= ":memory:" then
    for _, s in ipairs { "", "-wal", "-shm", ".lock" } do os.remove(db .. s) end
  end
end

-- With luaprof=1, where a run's Lua code spends its instructions: the
-- function executing every LUAPROF_EVERY instructions, counted by where
-- it is defined. perf sees Lua's own functions only as addresses.
local LUAPROF_EVERY = 10007
local function lua_profiler()
  local counts, total = {}, 0
  local function hook()
    local info = debug.getinfo(2, "S")
    if info then
      local key = info.short_src .. ":" .. info.linedefined
      counts[key] = (counts[key] or 0) + 1
      total = total + 1
    end
  end
  local function top(k)
    local list = {}
    for where, c in pairs(counts) do
      list[#list + 1] = { where = where, share = 100 * c / total }
    end
    table.sort(list, function(a, b) return a.share > b.share end)
    for i = k + 1, #list do list[i] = nil end
    return list
  end
  return hook, top
end

local workloads = {}

-- A: n one-shot jobs due at one instant T. Throughput is n over the time
-- from T to the start of the last run.
function workloads.burst()
  local n, db = opt.n or 100000, opt.db or ":memory:"
  if db == "none" then db = nil end
  remove_db(db)
  local sched, api = new_scheduler(db)
  local late = {}
  for i = 1, n do late[i] = 0 end
  local count = 0
  local T = math.ceil((core.now() + add_margin(api, n)) * 1e3) / 1e3
  -- The burst on the monotonic clock, for `perf report --time`.
  local T_mono = core.monotonic() + (T - core.now())
  local function run(ctx)
    local i = count + 1
    count = i
    late[i] = core.now() - ctx.scheduled_time
    if i == n then api.shutdown() end
  end
  for i = 1, n do
    api.add_job { id = "burst" .. i, trigger = { "date", run_date = T },
      run = run }
  end
  local setup_late = core.now() > T
  -- Whatever has not run by then is lost.
  api.add_job { id = "give-up", trigger = { "date", run_date = T + 60 },
    run = function() api.shutdown { wait = false } end }
  sched:run()
  local stopped = core.now()
  local out = late_figures(late, count, {
    n = n, runs = count, lost = n - count, setup_late = setup_late,
    committed_s = stopped - T,
    profile_from = T_mono, profile_to = core.monotonic(),
  })
  sched:close()
  remove_db(db)
  if count > 0 then
    out.drain_s = out.late_max_ms / 1e3
    out.runs_per_s = count / math.max(out.drain_s, 1e-6)
  end
  return out
end

-- B1/B2: n interval jobs every second over a window of `seconds`,
-- started at offsets spread over the second (spread=1) or all at the
-- window's start (spread=0). Every fire due inside the window counts;
-- one not run by the end of the wait after it is lost.
function workloads.interval()
  local n, seconds = opt.n or 10000, opt.seconds or 20
  local spread = (opt.spread or 1) ~= 0
  local sched, api = new_scheduler(opt.db)
  local expected = n * seconds
  local late = {}
  for i = 1, expected do late[i] = 0 end
  local count = 0
  local T0 = math.ceil(core.now() + add_margin(api, n) + 0.5)
  local T0_mono = core.monotonic() + (T0 - core.now())
  local T_end = T0 + seconds
  local function run(ctx)
    local s = ctx.scheduled_time
    if s < T_end then
      local i = count + 1
      count = i
      late[i] = core.now() - s
    end
  end
  for i = 1, n do
    local start = spread and T0 + (i - 1) / n or T0
    api.add_job { id = "tick" .. i,
      trigger = { "interval", seconds = 1, start_date = start }, run = run }
  end
  local setup_late = core.now() > T0
  local before, after
  -- The CPU window is the measured window, read just before each end.
  api.add_job { id = "cpu-start", trigger = { "date", run_date = T0 - 0.001 },
    run = function() before = probe.sample() end }
  api.add_job { id = "cpu-end", trigger = { "date", run_date = T_end - 0.001 },
    run = function() after = probe.sample() end }
  api.add_job { id = "stop", trigger = { "date", run_date = T_end + 2 },
    run = function() api.shutdown() end }
  sched:run()
  sched:close()
  local out = late_figures(late, count, {
    n = n, seconds = seconds, expected = expected, runs = count,
    lost = expected - count, setup_late = setup_late,
    profile_from = T0_mono, profile_to = T0_mono + seconds,
  })
  if before and after then
    out.cpu_pct = 100 * (after.cpu - before.cpu) / (after.wall - before.wall)
  end
  return out
end

-- Cron fields that put job i a few hours ahead of now: at minute i % 60
-- of an hour between 2 and 21 hours from now (UTC), so no job fires
-- while the bench waits.
local function hours_ahead(i, hour_now)
  return (hour_now + 2 + (i // 60) % 20) % 24, i % 60
end

-- C: n cron jobs hours ahead, added from inside a run (so into a
-- running scheduler), into a sqlite file as `moonbeat run` keeps them.
-- Memory per job is the growth of resident memory over n. Once the
-- store has committed them, the process prints {"ready": true} and
-- waits `wait` s more with nothing due: bench/bench.lua samples its
-- wake-ups and CPU time from outside meanwhile.
function workloads.many()
  local n, wait = opt.n or 1000000, opt.wait or 4
  local db = opt.db or "build/bench/many.db"
  remove_db(db)
  local sched, api = new_scheduler(db)
  local hour_now = tonumber(os.date("!%H"))
  local out = { n = n, wait_s = wait }
  local added_at, ready_wakeups
  api.add_job { id = "adder", trigger = { "date", delay = 0 }, run = function()
    collectgarbage()
    local rss0 = probe.rss_kb()
    local t0 = core.monotonic()
    -- Slow adding stops at max_add_s; the figures are then per job added.
    local stop_at, added = t0 + (opt.max_add_s or math.huge), n
    local hook, top = lua_profiler()
    if opt.luaprof then debug.sethook(hook, "", LUAPROF_EVERY) end
    for i = 1, n do
      local hour, minute = hours_ahead(i, hour_now)
      api.add_job { id = "cron" .. i,
        trigger = { "cron", hour = hour, minute = minute }, run = noop }
      if i % 1000 == 0 and core.monotonic() > stop_at then
        added = i
        break
      end
    end
    added_at = core.monotonic()
    if opt.luaprof then
      debug.sethook()
      out.lua_profile = top(12)
    end
    out.added = added
    out.add_s = added_at - t0
    out.profile_from, out.profile_to = t0, added_at
    out.adds_per_s = added / out.add_s
    collectgarbage()
    out.bytes_per_job = (probe.rss_kb() - rss0) * 1024 / added
    -- A file store commits on its writer thread; reading history waits
    -- for it, so "ready" comes once every job is on disk.
    api.add_job { id = "ready", trigger = { "date", delay = 0 }, run = function()
      api.get_runs { limit = 1 }
      out.committed_s = core.monotonic() - added_at
      ready_wakeups = sched:stats().wakeups
      local pid = io.open("/proc/self/stat"):read("n")
      io.stdout:write(('{"ready":true,"pid":%d}\n'):format(pid))
      io.stdout:flush()
      api.add_job { id = "stop", trigger = { "date", delay = wait + 1.5 },
        run = function()
          -- Its own wake-up is not one of the wait's.
          out.timer_wakeups = sched:stats().wakeups - ready_wakeups - 1
          api.shutdown()
        end }
    end }
  end }
  sched:run()
  sched:close()
  remove_db(db)
  return out
end

-- E's store: n jobs added with a "module.function" run reference (the
-- store keeps their specs), cron hours ahead, written to db and closed.
function workloads.store()
  local n, db = opt.n or 1000000, assert(opt.db, "store needs db=PATH")
  remove_db(db)
  -- In the zone `moonbeat run` will read them in (the machine's), so that
  -- the start finds each trigger unchanged, as after a restart.
  local sched, api = new_scheduler(db, "local")
  local hour_now = tonumber(os.date("%H"))
  api.add_job { id = "writer", trigger = { "date", delay = 0 }, run = function()
    for i = 1, n do
      local hour, minute = hours_ahead(i, hour_now)
      api.add_job { id = "stored" .. i, run = "bench.startup_jobs.noop",
        trigger = { "cron", hour = hour, minute = minute } }
    end
    api.add_job { id = "written", trigger = { "date", delay = 0 },
      run = function() api.shutdown() end }
  end }
  local t0 = core.monotonic()
  sched:run()
  sched:close()
  return { n = n, write_s = core.monotonic() - t0 }
end

local fn = workloads[workload]
if not fn then
  io.stderr:write("mb_bench: unknown workload ", tostring(workload), "\n")
  return 2
end
local out = fn()
out.workload = workload
out.impl = "moonbeat"
io.stdout:write(json.encode(out), "\n")
return 0
