-- Run throughput with history: N one-shot jobs due at one instant, fired
-- by the scheduler core, each run recorded (start and end) and committed,
-- without a store, with sqlite in memory and with a sqlite file. Run by
-- `make bench` as `build/moonbeat lua bench/store_bench.lua N ROUNDS`;
-- rewrites its section of BENCHMARKS.md.
--
-- The clock is virtual so that the burst is exactly one instant; what is
-- timed is the work (CPU time of this single-threaded process).

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

local rows = {}
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
  rows[#rows + 1] = ("| %s | %.0f k | %.0f-%.0f k |"):format(case[1], mid / 1e3, lo / 1e3, hi / 1e3)
  io.stdout:write(rows[#rows], "\n")
end

local uname = io.popen("uname -r"):read("l")
local cpu = io.popen("sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1"):read("l")
local section = table.concat({
  "<!-- store-bench: begin; make bench rewrites this section -->",
  "## Run throughput with history",
  "",
  "- Date: " .. os.date("!%Y-%m-%d %H:%M UTC"),
  ("- Machine: %s, %s cores, Linux %s"):format(cpu or "unknown CPU",
    io.popen("nproc"):read("l"), uname),
  ("- Command: `make bench`, which runs `build/moonbeat lua bench/store_bench.lua %d %d`"):format(N, ROUNDS),
  "",
  ("%d one-shot jobs fall due at one instant; the scheduler fires them, runs each "):format(N)
    .. "(a trivial Lua body) in its coroutine, records its start and end, and commits. "
    .. "Runs per second of CPU time, the median of " .. ROUNDS .. " rounds, min-max beside it. "
    .. "Target with a sqlite file: at least 200 k recorded runs per second.",
  "",
  "| store | runs/s | min-max |",
  "|---|---:|---:|",
  table.concat(rows, "\n"),
  "<!-- store-bench: end -->",
}, "\n")

local f = io.open("BENCHMARKS.md")
local text = f and f:read("a") or "# Benchmarks\n"
if f then f:close() end
local b = text:find("<!-- store-bench: begin", 1, true)
if b then
  local e = select(2, text:find("<!-- store-bench: end -->", b, true))
  text = text:sub(1, b - 1) .. section .. text:sub(e + 1)
else
  text = text:gsub("\n*$", "\n\n") .. section .. "\n"
end
f = assert(io.open("BENCHMARKS.md", "w"))
f:write(text)
f:close()
