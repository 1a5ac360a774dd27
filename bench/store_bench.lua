-- Run throughput with history on the virtual clock: N one-shot jobs due
-- at one instant, fired by the scheduler core, each run recorded (start
-- and end) and committed, without a store, with sqlite in memory and
-- with a sqlite file. `make bench` measures the same on the real clock
-- (workload A, bench/mb_bench.lua); this is the by-hand version that
-- times the work alone (CPU time of this single-threaded process), as
--   build/moonbeat lua bench/store_bench.lua N ROUNDS
-- and prints a Markdown table.

local core = require "moonbeat.core"
local scheduler = require "mb.scheduler"

local N = tonumber(arg[1]) or 100000
local ROUNDS = tonumber(arg[2]) or 3

core.configure_log { stream = "none" }

local function one(db)
  local sched = assert(core.new { clock = "virtual", db = db, timezone = "UTC" })
  local api = scheduler.new(sched)
  local run = function() end
  for i = 1, N do
    api.add_job { id = "j" .. i, trigger = { "date", delay = 1 }, run = run }
  end
  collectgarbage()
  local t0 = os.clock()
  sched:advance(1)
  local took = os.clock() - t0
  local stats = db and sched:store_stats()
  sched:close()
  if db and db ~= ":memory:" then
    for _, suffix in ipairs { "", "-wal", "-shm", ".lock" } do os.remove(db .. suffix) end
  end
  return N / took, stats
end

local function median(t)
  table.sort(t)
  return t[(#t + 1) // 2], t[1], t[#t]
end

io.stdout:write(("%d one-shot jobs at one instant, runs per second of CPU "
  .. "time, the median of %d rounds\n\n| store | runs/s | min-max |\n"
  .. "|---|---:|---:|\n"):format(N, ROUNDS))
local file = os.tmpname()
os.remove(file)
for _, case in ipairs {
  { "no store", nil },
  { "sqlite :memory:", ":memory:" },
  { "sqlite file (WAL, synchronous=NORMAL)", file .. ".db" },
} do
  local rates = {}
  for r = 1, ROUNDS do rates[r] = one(case[2]) end
  local mid, lo, hi = median(rates)
  io.stdout:write(("| %s | %.0f k | %.0f-%.0f k |\n"):format(case[1],
    mid / 1e3, lo / 1e3, hi / 1e3))
end
