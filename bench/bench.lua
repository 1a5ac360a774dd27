-- The driver of `make bench`: moonbeat against APScheduler 3, workload
-- by workload, and the results table in BENCHMARKS.md.
--
--   build/bench/moonbeat lua bench/bench.lua [--quick] [--profiles]
--     [--budget SECONDS] [--command TEXT] [--out FILE]
--
-- --quick is `make bench QUICK=1`; --profiles (PROFILE=1) profiles the
-- misses of a QUICK run too.
--
-- Workload G is hot reload's own script, bench/reload_bench.lua, run as
-- `build/bench/moonbeat lua bench/reload_bench.lua` when it exists; it
-- prints one JSON line with reload_ms, the milliseconds from a job file's
-- rename to its new version being live (its own median if it tries
-- several times).
--
-- Each workload runs as a separate process per round: bench/mb_bench.lua
-- under the bench's moonbeat binary, bench/aps_bench.py under Debian's
-- /usr/bin/python3, alternating, each printing one JSON line of figures.
-- Every workload gets one round. Where moonbeat then misses a target,
-- the moonbeat side of that workload runs once more under `perf record`
-- and the table is followed by where its time went. Further rounds
-- follow while the time budget lasts (the whole `make bench` must stay
-- under 10 minutes on 2 cores, under 2 with QUICK=1); the table says how
-- many each got. Workload D idles for a minute per process, so its
-- processes run in the background from the start, measured from outside
-- by bench/idle.sh.

local core = require "moonbeat.core"
local json = require "moonbeat.json"

local cfg = { out = "BENCHMARKS.md", command = "make bench",
  dir = "build/bench", python = "/usr/bin/python3" }
do
  local i = 1
  while i <= #arg do
    local a = arg[i]
    if a == "--quick" then cfg.quick = true
    elseif a == "--profiles" then cfg.profiles = true
    elseif a == "--budget" then i = i + 1; cfg.budget = tonumber(arg[i])
    elseif a == "--command" then i = i + 1; cfg.command = arg[i]
    elseif a == "--out" then i = i + 1; cfg.out = arg[i]
    else error("bench.lua: unknown argument " .. a) end
    i = i + 1
  end
end

local QUICK = cfg.quick
local BIN = cfg.dir .. "/moonbeat"
local ERRLOG = cfg.dir .. "/bench.stderr"
-- Seconds this driver may take; `make bench` builds before it starts.
local BUDGET = cfg.budget or (QUICK and 95 or 520)
-- Profiles in a QUICK run (--profiles) get time of their own.
if QUICK and cfg.profiles and not cfg.budget then BUDGET = BUDGET + 120 end

-- Sizes. QUICK shrinks what it must and says so in the table.
local S = QUICK and {
  rounds = 1, burst = 20000, tick_jobs = 10000, tick_seconds = 3,
  many_mb = 100000, many_aps = 10000, max_add_s = 20, wait = 2,
  startup = { 20000 },
  idle_pairs = 1, cron_rounds = 1, cron_ms = 40,
} or {
  rounds = 3, burst = 100000, tick_jobs = 10000, tick_seconds = 20,
  many_mb = 1000000, many_aps = 50000, max_add_s = 60, wait = 4,
  startup = { 1000000 },
  idle_pairs = 3, cron_rounds = 5, cron_ms = 80,
}

local started = core.monotonic()
local function elapsed() return core.monotonic() - started end
local function left() return BUDGET - elapsed() end

local logfile
local function log(fmt, ...)
  local line = ("bench %5.0fs  "):format(elapsed()) .. fmt:format(...) .. "\n"
  io.stderr:write(line)
  logfile = logfile or io.open(cfg.dir .. "/bench.log", "w")
  if logfile then
    logfile:write(line)
    logfile:flush()
  end
end

local function sh_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

local function sh(cmd)
  local p = assert(io.popen(cmd))
  local out = p:read("a")
  p:close()
  return out
end

local function sleep(seconds)
  os.execute(("sleep %.3f"):format(seconds))
end

local function options(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys)
  local parts = {}
  for _, k in ipairs(keys) do parts[#parts + 1] = sh_quote(k .. "=" .. t[k]) end
  return table.concat(parts, " ")
end

local function mb_cmd(workload, opt)
  return ("%s lua bench/mb_bench.lua %s %s"):format(BIN, workload, options(opt))
end

local function aps_cmd(workload, opt)
  return ("%s bench/aps_bench.py %s %s"):format(cfg.python, workload,
    options(opt))
end

-- The last JSON object line of text, decoded.
local function last_json(text)
  local found
  for line in text:gmatch("[^\n]+") do
    if line:match("^%s*{") then found = line end
  end
  return found and json.decode(found)
end

-- Run cmd with a time limit; its figures, or nil and why not.
local function run(cmd, limit, env)
  local full = ("%s timeout -k 5 %d %s 2>>%s"):format(env or "", limit, cmd,
    ERRLOG)
  local p = assert(io.popen(full))
  local out = p:read("a")
  local _, _, code = p:close()
  local res = last_json(out)
  if code == 124 or code == 137 then
    return nil, ("did not finish within %d s"):format(limit), res
  end
  if code ~= 0 or not res then
    return nil, ("failed (exit %s; see %s)"):format(tostring(code), ERRLOG)
  end
  return res
end

-- /proc/PID, read from outside: voluntary context switches of all its
-- threads, CPU ticks, resident kB.
local function sample(pid)
  local sw, ticks, rss = sh("bench/sample.sh " .. pid):match("(%d+) (%d+) (%d+)")
  return { switches = tonumber(sw), ticks = tonumber(ticks),
    rss_kb = tonumber(rss), at = core.monotonic() }
end

local CLK_TCK = tonumber(sh("getconf CLK_TCK")) or 100

-- C: run until the process says it is ready (all jobs added and
-- committed), then sample it twice across its quiet wait.
local function run_sampled(cmd, limit, wait)
  local p = assert(io.popen(("timeout -k 5 %d %s 2>>%s"):format(limit, cmd,
    ERRLOG)))
  local ready
  for line in p:lines() do
    ready = line:match("^{") and json.decode(line)
    if ready and ready.ready then break end
  end
  if not (ready and ready.ready) then
    local _, _, code = p:close()
    if code == 124 or code == 137 then
      return nil, ("did not finish within %d s"):format(limit)
    end
    return nil, ("failed (exit %s; see %s)"):format(tostring(code), ERRLOG)
  end
  sleep(0.5)
  local s1 = sample(ready.pid)
  sleep(wait)
  local s2 = sample(ready.pid)
  local out = p:read("a")
  local _, _, code = p:close()
  local res = last_json(out)
  if code ~= 0 or not res then
    return nil, ("failed (exit %s; see %s)"):format(tostring(code), ERRLOG)
  end
  if not (s1.switches and s2.switches) then
    return nil, "the process ended before it was sampled"
  end
  res.wakeups = s2.switches - s1.switches
  res.cpu_pct = 100 * (s2.ticks - s1.ticks) / CLK_TCK / (s2.at - s1.at)
  res.window_s = s2.at - s1.at
  return res
end

---------------------------------------------------------------------------
-- The workloads. Each has runs (one process each per round), in the
-- order of odd rounds; even rounds take them in reverse, so neither side
-- always goes first. results[key][variant] is a list of figure tables.

local results = {}
local function record(key, variant, res, why)
  results[key] = results[key] or {}
  local list = results[key][variant] or {}
  results[key][variant] = list
  if res and res.setup_late then
    why = "adding the jobs overran the due instant; round not counted"
    res = nil
  end
  if res then
    list[#list + 1] = res
  else
    list.failures = list.failures or {}
    list.failures[#list.failures + 1] = why
    log("%s/%s: %s", key, variant, why)
  end
end

local function burst_runs()
  local n = S.burst
  return {
    { "mem", function() return run(mb_cmd("burst", { n = n, db = ":memory:" }), 180) end },
    { "aps", function() return run(aps_cmd("burst", { n = n }), 240) end },
    { "file", function()
      return run(mb_cmd("burst", { n = n, db = cfg.dir .. "/burst.db" }), 180)
    end },
    { "none", function() return run(mb_cmd("burst", { n = n, db = "none" }), 180) end },
  }
end

local function tick_runs(spread)
  local opt = { n = S.tick_jobs, seconds = S.tick_seconds, spread = spread,
    db = ":memory:" }
  local aopt = { n = S.tick_jobs, seconds = S.tick_seconds, spread = spread }
  local limit = S.tick_seconds + 90
  local runs = {
    { "mb", function() return run(mb_cmd("interval", opt), limit) end },
    { "aps", function() return run(aps_cmd("interval", aopt), limit) end },
  }
  -- B1's deadlines with nothing but the wake-ups: the machine's floor,
  -- over 5 s at most (50,000 wake-ups are plenty).
  if spread == 1 then
    runs[#runs + 1] = { "floor", function()
      return run(("%s/wake_floor %d %d"):format(cfg.dir, S.tick_jobs,
        math.min(S.tick_seconds, 5)), limit)
    end }
  end
  return runs
end

local function many_runs()
  return {
    { "mb", function()
      return run_sampled(mb_cmd("many", { n = S.many_mb, wait = S.wait + 1,
        db = cfg.dir .. "/many.db", max_add_s = S.max_add_s }), 300, S.wait)
    end },
    { "aps", function()
      return run_sampled(aps_cmd("many", { n = S.many_aps, wait = S.wait + 1,
        max_add_s = S.max_add_s }), 300, S.wait)
    end },
  }
end

-- E's stores are written once per version of the code that writes them
-- and kept in build/bench.
local function store_key()
  return sh("cat host/store.c lua/scheduler.lua lua/state.lua "
    .. "lua/validate.lua bench/mb_bench.lua bench/grow_store.py "
    .. "| sha1sum"):sub(1, 12)
end

local function startup_store(n)
  local path = ("%s/startup-%d-%s.db"):format(cfg.dir, n, store_key())
  local f = io.open(path)
  if f then
    f:close()
    return path
  end
  log("E: writing a store of %d jobs", n)
  os.execute(("rm -f %s/startup-%d-*.db*"):format(cfg.dir, n))
  local tmp = path .. ".tmp"
  local res, why = run(mb_cmd("store", { n = 1000, db = tmp }), 120)
  if not res then return nil, "writing the store " .. why end
  if not os.execute(("%s bench/grow_store.py %s %d 2>>%s"):format(cfg.python,
    tmp, n, ERRLOG)) then
    return nil, "growing the store failed (see " .. ERRLOG .. ")"
  end
  os.execute(("rm -f %s.lock && mv %s %s"):format(tmp, tmp, path))
  return path
end

-- One start of `moonbeat run` on a copy of the store of n jobs; prefix
-- goes before the command (perf for a profile).
local function startup_run(n, prefix)
  local store, why = startup_store(n)
  if not store then return nil, why end
  local db = cfg.dir .. "/startup-run.db"
  -- The copy is written back before the start is timed: its writeback
  -- would otherwise run beside the start it is timing.
  os.execute(("rm -f %s %s-wal %s-shm %s.lock && cp %s %s && sync %s"):format(
    db, db, db, db, store, db, db))
  local env = ("BENCH_EXEC_T=%.6f"):format(core.now())
  local res, err = run(("%s%s run bench/startup_dir --db %s --log-level warn")
    :format(prefix or "", BIN, db), 60, env)
  os.execute(("rm -f %s %s-wal %s-shm %s.lock"):format(db, db, db, db))
  if not res and err:match("^did not finish") then
    err = "no fire within 60 s, when the bench stops it"
  end
  if res and res.jobs < n then
    return nil, ("the store held %d jobs, not %d"):format(res.jobs, n)
  end
  return res, err
end

local function startup_runs()
  local list = {}
  for _, n in ipairs(S.startup) do
    list[#list + 1] = { tostring(n), function() return startup_run(n) end }
  end
  return list
end

local RELOAD_BENCH = "bench/reload_bench.lua"
local function reload_runs()
  local f = io.open(RELOAD_BENCH)
  if not f then return {} end
  f:close()
  return { { "mb", function()
    return run(("%s lua %s"):format(BIN, RELOAD_BENCH), 120)
  end } }
end

local workloads = {
  { key = "A", runs = burst_runs() },
  { key = "B1", runs = tick_runs(1) },
  { key = "B2", runs = tick_runs(0) },
  { key = "C", runs = many_runs() },
  { key = "E", runs = startup_runs() },
  { key = "G", runs = reload_runs() },
}

---------------------------------------------------------------------------
-- D in the background, F, then the rounds.

os.execute(("mkdir -p %s && : >%s"):format(cfg.dir, ERRLOG))
os.execute(("rm -f %s/idle-*"):format(cfg.dir))
log("D: %d idle process(es) of each kind in the background, a minute each",
  S.idle_pairs)
local idle_files = {}
for r = 1, S.idle_pairs do
  local mb_out = ("%s/idle-mb-%d.json"):format(cfg.dir, r)
  local aps_out = ("%s/idle-aps-%d.json"):format(cfg.dir, r)
  -- Each process its own control socket, in a directory only we may
  -- enter: on the default one, the first to start would be the only one
  -- to run.
  local sockets = cfg.dir .. "/idle-sockets"
  os.execute(("mkdir -p %s && chmod 700 %s"):format(sockets, sockets))
  os.execute(("bench/idle.sh %s %s run bench/idle_jobs --db %s/idle-%d.db "
    .. "--socket %s/%d.sock --log-level warn >/dev/null 2>>%s &")
    :format(mb_out, BIN, cfg.dir, r, sockets, r, ERRLOG))
  os.execute(("bench/idle.sh %s %s bench/aps_bench.py idle >/dev/null 2>>%s &")
    :format(aps_out, cfg.python, ERRLOG))
  idle_files[#idle_files + 1] = { "mb", mb_out }
  idle_files[#idle_files + 1] = { "aps", aps_out }
end

local cron_cmd = ("%s/cron_bench -r %d -t %d"):format(cfg.dir, S.cron_rounds,
  S.cron_ms)
log("F: %s", cron_cmd)
os.execute(("%s -j %s/cron.json >%s/cron.md"):format(cron_cmd, cfg.dir,
  cfg.dir))
do
  local f = io.open(cfg.dir .. "/cron.json")
  results.F = f and json.decode(f:read("a")) or nil
  if f then f:close() end
  os.execute(("bench/write_benchmarks.sh %s/cron.md %s %s %s"):format(cfg.dir,
    sh_quote(cfg.command), sh_quote(cron_cmd), sh_quote(cfg.out)))
end

local rounds_run = {}
local round_cost = {}

local function run_round(w, round)
  local t0 = core.monotonic()
  local order = w.runs
  if round % 2 == 0 then
    order = {}
    for i = #w.runs, 1, -1 do order[#order + 1] = w.runs[i] end
  end
  for _, r in ipairs(order) do
    log("%s/%s round %d", w.key, r[1], round)
    local t_run = core.monotonic()
    local res, why = r[2]()
    log("%s/%s round %d took %.1f s", w.key, r[1], round,
      core.monotonic() - t_run)
    record(w.key, r[1], res, why)
  end
  rounds_run[w.key] = round
  round_cost[w.key] = core.monotonic() - t0
end

---------------------------------------------------------------------------
-- Figures: median, min and max over a workload's rounds.

local function stats(key, variant, field)
  local list = results[key] and results[key][variant]
  if not list then return nil end
  local v = {}
  for _, res in ipairs(list) do
    if type(res[field]) == "number" then v[#v + 1] = res[field] end
  end
  if #v == 0 then
    local why = list.failures and list.failures[1]
    return nil, why
  end
  table.sort(v)
  local h = #v // 2
  local median = #v % 2 == 1 and v[h + 1] or (v[h] + v[h + 1]) / 2
  return { median = median, min = v[1], max = v[#v], n = #v }
end

local function thousands(x)
  local s = ("%.0f"):format(x)
  local sign, digits = s:match("^(-?)(%d+)$")
  digits = digits:reverse():gsub("(%d%d%d)", "%1,"):reverse():gsub("^,", "")
  return sign .. digits
end

local function sig(x)
  local a = math.abs(x)
  if a == 0 then return "0" end
  if a >= 1000 then return thousands(x) end
  if a >= 100 then return ("%.0f"):format(x) end
  if a >= 10 then return ("%.1f"):format(x) end
  if a >= 1 then return ("%.2f"):format(x) end
  if a >= 0.01 then return ("%.3f"):format(x) end
  return ("%.4f"):format(x)
end

local FORMATS = {
  rate = thousands, count = thousands, bytes = thousands,
  ms = sig, s = sig, pct = sig,
  mb = function(x) return sig(x / 1024) end,
}

local function cell(st, kind, why)
  if not st then return why and ("not measured: " .. why) or "—" end
  local f = FORMATS[kind]
  if st.n == 1 or st.min == st.max then return f(st.median) end
  return ("%s (%s–%s)"):format(f(st.median), f(st.min), f(st.max))
end

local function at_least(x) return function(st) return st.median >= x end end
local function at_most(x) return function(st) return st.median <= x end end
local function none_ever(st) return st.max == 0 end

-- The worst of several variants, for lost runs.
local function worst_of(key, variants, field)
  local all
  for _, v in ipairs(variants) do
    local st = stats(key, v, field)
    if st then
      all = all or { median = 0, min = math.huge, max = 0, n = 0 }
      all.median = math.max(all.median, st.median)
      all.min = math.min(all.min, st.min)
      all.max = math.max(all.max, st.max)
      all.n = math.max(all.n, st.n)
    end
  end
  return all
end

local HAVE_RELOAD = #workloads[6].runs > 0

-- The table's rows and the targets missed, from the results so far.
local function build_rows()
  local rows, misses = {}, {}

  -- spec: workload and figure labels, unit kind (FORMATS), the moonbeat
  -- and APScheduler sources ({key, variant, field}, a stats table, or
  -- false for none), target text and test(stats) -> met.
  local function row(spec)
    local mb, mb_why = spec.mb, nil
    if mb and mb[1] then mb, mb_why = stats(mb[1], mb[2], mb[3]) end
    local aps, aps_why = spec.aps, nil
    if aps and aps[1] then aps, aps_why = stats(aps[1], aps[2], aps[3]) end
    local ratio = "—"
    if mb and aps and aps.median ~= 0 then
      ratio = sig(mb.median / aps.median) .. "×"
    end
    local met = "—"
    if spec.test then
      met = mb and (spec.test(mb) and "yes" or "no") or "no"
      if met == "no" then
        misses[#misses + 1] = { key = spec.key, workload = spec.workload,
          figure = spec.figure, target = spec.target,
          value = mb and cell(mb, spec.unit) or ("not measured: "
            .. (mb_why or "no result")) }
      end
    end
    local unit = spec.unit_label and (" (" .. spec.unit_label .. ")") or ""
    rows[#rows + 1] = ("| %s | %s%s | %s | %s | %s | %s | %s |"):format(
      spec.workload, spec.figure, unit, cell(mb, spec.unit, mb_why),
      spec.aps == false and "—" or cell(aps, spec.unit, aps_why), ratio,
      spec.target or "—", met)
  end

  local A = ("A. %s one-shot jobs due at one instant"):format(thousands(S.burst))
  row { workload = A, key = "A", figure = "runs/s, `--db :memory:`",
    unit = "rate", mb = { "A", "mem", "runs_per_s" },
    aps = { "A", "aps", "runs_per_s" }, target = "≥ 1,000,000",
    test = at_least(1e6) }
  row { workload = A, key = "A", figure = "last run after the due instant, "
    .. "`:memory:`", unit = "ms", unit_label = "ms",
    mb = { "A", "mem", "late_max_ms" }, aps = { "A", "aps", "late_max_ms" },
    target = "≤ 100", test = at_most(100) }
  row { workload = A, key = "A", figure = "runs/s, history on a sqlite file",
    unit = "rate", mb = { "A", "file", "runs_per_s" },
    aps = { "A", "aps", "runs_per_s" }, target = "≥ 200,000",
    test = at_least(2e5) }
  row { workload = A, key = "A", figure = "every run committed, after the "
    .. "due instant, sqlite file", unit = "s", unit_label = "s",
    mb = { "A", "file", "committed_s" }, aps = false }
  row { workload = A, key = "A", figure = "runs/s, no store", unit = "rate",
    mb = { "A", "none", "runs_per_s" }, aps = { "A", "aps", "runs_per_s" } }
  row { workload = A, key = "A", figure = "runs lost", unit = "count",
    mb = worst_of("A", { "mem", "file", "none" }, "lost") or { "A", "mem", "lost" },
    aps = { "A", "aps", "lost" }, target = "0", test = none_ever }

  for _, b in ipairs {
    { "B1", "offsets spread over the second", { p50 = 0.1, p99 = 0.5, cpu = 10 } },
    { "B2", "all due at the same instant", { p99 = 15 } },
  } do
    local key, t = b[1], b[3]
    local W = ("%s. %s interval jobs every 1 s, %s, %d s"):format(key,
      thousands(S.tick_jobs), b[2], S.tick_seconds)
    for _, f in ipairs {
      { "lateness p50", "late_p50_ms", "ms", t.p50 },
      { "lateness p99", "late_p99_ms", "ms", t.p99 },
      { "lateness max", "late_max_ms", "ms" },
      { "CPU, % of one core", "cpu_pct", nil, t.cpu },
    } do
      row { workload = W, key = key, figure = f[1], unit = f[3] or "pct",
        unit_label = f[3], mb = { key, "mb", f[2] }, aps = { key, "aps", f[2] },
        target = f[4] and ("≤ " .. f[4]), test = f[4] and at_most(f[4]) }
    end
    row { workload = W, key = key, figure = "fires lost", unit = "count",
      mb = { key, "mb", "lost" }, aps = { key, "aps", "lost" },
      target = "0", test = none_ever }
    if key == "B1" then
      row { workload = W, key = key, figure = "the machine's floor: CPU, % "
        .. "of one core, of the wake-ups alone", unit = "pct",
        mb = { key, "floor", "cpu_pct" }, aps = false }
      row { workload = W, key = key, figure = "the machine's floor: lateness "
        .. "p99 of the wake-ups alone", unit = "ms", unit_label = "ms",
        mb = { key, "floor", "late_p99_ms" }, aps = false }
    end
  end

  local C = ("C. cron jobs hours ahead: moonbeat %s, APScheduler %s")
    :format(thousands(S.many_mb), thousands(S.many_aps))
  row { workload = C, key = "C", figure = "resident memory per job",
    unit = "bytes", unit_label = "bytes", mb = { "C", "mb", "bytes_per_job" },
    aps = { "C", "aps", "bytes_per_job" }, target = "≤ 1,024",
    test = at_most(1024) }
  row { workload = C, key = "C", figure = "adds/s into a running scheduler",
    unit = "rate", mb = { "C", "mb", "adds_per_s" },
    aps = { "C", "aps", "adds_per_s" }, target = "≥ 500,000",
    test = at_least(5e5) }
  row { workload = C, key = "C", figure = "all added and committed to the "
    .. "store", unit = "s", unit_label = "s", mb = { "C", "mb", "committed_s" },
    aps = false }
  row { workload = C, key = "C", figure = ("wake-ups while waiting (%d s)")
    :format(S.wait), unit = "count", mb = { "C", "mb", "wakeups" },
    aps = { "C", "aps", "wakeups" }, target = "0", test = none_ever }
  row { workload = C, key = "C", figure = "CPU while waiting, % of one core",
    unit = "pct", mb = { "C", "mb", "cpu_pct" }, aps = { "C", "aps", "cpu_pct" } }

  local D = "D. idle, one job per minute"
  row { workload = D, key = "D", figure = "resident memory", unit = "mb",
    unit_label = "MB", mb = { "D", "mb", "rss_kb" }, aps = { "D", "aps", "rss_kb" },
    target = "≤ 8", test = function(st) return st.median <= 8 * 1024 end }
  row { workload = D, key = "D", figure = "wake-ups between fires (50 s)",
    unit = "count", mb = { "D", "mb", "wakeups" }, aps = { "D", "aps", "wakeups" },
    target = "0", test = none_ever }

  for _, n in ipairs(S.startup) do
    local E = ("E. start with %s jobs in the sqlite store"):format(thousands(n))
    local full = n >= 1000000
    row { workload = E, key = "E", figure = "time to first fire", unit = "s",
      unit_label = "s", mb = { "E", tostring(n), "first_fire_s" }, aps = false,
      target = full and "≤ 3" or nil, test = full and at_most(3) or nil }
  end

  local F = "F. cron next-fire evaluations, all six expressions"
  for _, zone in ipairs { "UTC", "Europe/Berlin" } do
    for _, mode in ipairs { "chained", "scattered" } do
      local st = results.F and results.F[zone] and results.F[zone][mode]
      if st then
        st = { median = st.median, min = st.min, max = st.max, n = st.rounds }
      end
      local target = zone == "UTC" and 2e6 or 5e5
      row { workload = F, key = "F", figure = ("evaluations/s, %s, %s")
        :format(zone, mode), unit = "rate", mb = st or { "F", "-", "-" },
        aps = false, target = "≥ " .. thousands(target),
        test = at_least(target) }
    end
  end

  local G = "G. hot reload"
  if HAVE_RELOAD then
    row { workload = G, key = "G", figure = "file renamed → new version live",
      unit = "ms", unit_label = "ms", mb = { "G", "mb", "reload_ms" },
      aps = false, target = "≤ 50", test = at_most(50) }
  else
    rows[#rows + 1] = ("| %s | file renamed → new version live (ms) | not "
      .. "measured (hot reload not built) | — | — | ≤ 50 | no |"):format(G)
    misses[#misses + 1] = { key = "G", workload = G,
      figure = "file renamed → new version live",
      value = "not measured (hot reload not built)" }
  end
  return rows, misses
end

---------------------------------------------------------------------------
-- Profiles: the moonbeat side of a workload that misses a target, once
-- more under `perf record`, reported over the part of the run that the
-- figures are about (mb_bench.lua prints that window on the monotonic
-- clock, which perf is told to stamp samples with).

-- key = { run(prefix) -> figures, what the profile covers, seconds it
-- takes at most on today's code }. A run's profile_from and profile_to
-- bound the samples reported, when given.
local function profiled_mb(workload, opt)
  return function(prefix) return run(prefix .. mb_cmd(workload, opt), 120) end
end
local PROFILED = {
  A = { profiled_mb("burst", { n = math.min(S.burst, 50000), db = ":memory:" }),
    "the burst of 50,000 runs, from the due instant to the end (`:memory:`)", 25 },
  B1 = { profiled_mb("interval", { n = S.tick_jobs, seconds = 5, spread = 1,
    db = ":memory:" }), "a 5-second window", 35 },
  B2 = { profiled_mb("interval", { n = S.tick_jobs, seconds = 5, spread = 0,
    db = ":memory:" }), "a 5-second window", 35 },
  C = { profiled_mb("many", { n = math.min(S.many_mb, 100000), wait = 1,
    db = cfg.dir .. "/many.db", luaprof = 1 }), "adding 100,000 jobs", 25 },
  E = { function(prefix) return startup_run(math.min(S.startup[1], 50000), prefix) end,
    ("a start on %s stored jobs, the whole process")
      :format(thousands(math.min(S.startup[1], 50000))), 25 },
}
local profiles = {}

-- "lua/validate.lua:158" -> that line of the file, trimmed.
local function source_line(where)
  local path, n = where:match("^(.-):(%d+)$")
  local f = path and io.open(path)
  if not f then return "" end
  local k, text = 0, ""
  for line in f:lines() do
    k = k + 1
    if k == tonumber(n) then
      text = line:match("^%s*(.-)%s*$"):gsub("|", "\\|")
      break
    end
  end
  f:close()
  return text
end

-- Profile the workloads among keys (a set) that have a miss.
local function take_profiles(keys)
  local have_perf = os.execute("perf --version >/dev/null 2>&1")
  local seen = {}
  for _, m in ipairs(select(2, build_rows())) do
    local p = keys[m.key] and PROFILED[m.key]
    -- B2 runs the code B1 does, all at once: B1's profile stands for both.
    if m.key == "B2" and p and seen.B1 and not seen.B2 then
      seen.B2 = true
      profiles[#profiles + 1] = { key = "B2", text = "see B1's, the same "
        .. "code with the fires all at once" }
    end
    if p and not seen[m.key] then
      seen[m.key] = true
      local key = m.key
      if not have_perf then
        profiles[#profiles + 1] = { key = key, text = "not taken: perf is not installed" }
      elseif left() < p[3] then
        profiles[#profiles + 1] = { key = key,
          text = "not taken: no time left in the bench's budget" }
      else
        log("profile of %s", key)
        local data = ("%s/perf-%s.data"):format(cfg.dir, key)
        local res, why = p[1](("perf record -q -F 499 --call-graph "
          .. "dwarf,8192 -k CLOCK_MONOTONIC -o %s -- "):format(data))
        if not res then
          profiles[#profiles + 1] = { key = key, text = "not taken: " .. why }
        else
          -- The process's entry frames are under everything; left out.
          local ENTRY = { _start = true, main = true, start = true }
          local function report(how, limit, count, only_dso)
            local window = res.profile_from and ("--time %.6f,%.6f")
              :format(res.profile_from, res.profile_to) or ""
            local text = sh(("perf report -i %s --stdio -g none -q %s %s "
              .. "--percent-limit %g 2>/dev/null"):format(data, window, how,
              limit))
            local lines, last = {}, nil
            for line in text:gmatch("[^\n]+") do
              local pct, dso, sym =
                line:match("^%s*([%d.]+)%%%s+(%S+)%s+%[.%]%s+(.-)%s*$")
              -- Inclusive shares repeat down a call chain: the first
              -- frame of each share stands for its chain.
              if pct and #lines < count and (not only_dso
                or (dso == only_dso and not ENTRY[sym] and pct ~= last)) then
                lines[#lines + 1] = ("| %s %% | `%s` | `%s` |"):format(pct,
                  dso, sym)
                last = pct
              end
            end
            return #lines > 0 and table.concat(lines, "\n")
              or "| — | no samples | |"
          end
          local lua_lines
          if res.lua_profile then
            lua_lines = {}
            for _, e in ipairs(res.lua_profile) do
              lua_lines[#lua_lines + 1] = ("| %.1f %% | `%s` | `%s` |")
                :format(e.share, e.where, source_line(e.where))
            end
            lua_lines = table.concat(lua_lines, "\n")
          end
          profiles[#profiles + 1] = { key = key, what = p[2],
            self = report("--no-children -F overhead,dso,sym", 1.5, 12),
            inclusive = report("--children -F overhead_children,dso,sym", 2,
              12, "moonbeat"),
            lua = lua_lines }
        end
        os.remove(data)
        os.remove(data .. ".old")
      end
    end
  end
end

---------------------------------------------------------------------------
-- Round one of everything, the profiles of what misses, then further
-- rounds while the budget lasts.

for _, w in ipairs(workloads) do
  if #w.runs > 0 and w.key ~= "E" and w.key ~= "G" then run_round(w, 1) end
end
if QUICK and not cfg.profiles then
  profiles[1] = { text = "QUICK=1 takes none; the full run, `make bench`, "
    .. "profiles each workload that misses a target" }
else
  take_profiles { A = true, B1 = true, B2 = true, C = true }
end
for _, w in ipairs(workloads) do
  if #w.runs > 0 and (w.key == "E" or w.key == "G") then run_round(w, 1) end
end
if not QUICK or cfg.profiles then take_profiles { E = true } end
for round = 2, S.rounds do
  for _, w in ipairs(workloads) do
    local cost = round_cost[w.key]
    if #w.runs > 0 and cost and cost < left() - 10 then run_round(w, round) end
  end
end

-- D, from the background.
do
  local deadline = core.monotonic() + 75
  for _, entry in ipairs(idle_files) do
    local res
    repeat
      local f = io.open(entry[2])
      if f then
        res = json.decode(f:read("a"))
        f:close()
      else
        sleep(1)
      end
    until res or core.monotonic() > deadline
    record("D", entry[1], res, "bench/idle.sh gave no result")
  end
  os.execute(("rm -f %s/idle-*"):format(cfg.dir))
  rounds_run.D = S.idle_pairs
end
rounds_run.F = S.cron_rounds

local rows, misses = build_rows()

-- What the table's labels do not say: C runs that stopped adding early.
local notes = {}
for _, side in ipairs { { "mb", "moonbeat", S.many_mb }, { "aps", "APScheduler", S.many_aps } } do
  for _, res in ipairs(results.C and results.C[side[1]] or {}) do
    if res.added and res.added < side[3] then
      notes[#notes + 1] = ("C: %s stopped adding after %.0f s, at %s of %s "
        .. "jobs (the bench's time limit); its figures are per job added.")
        :format(side[2], res.add_s, thousands(res.added), thousands(side[3]))
      break
    end
  end
end
for key, variants in pairs(results) do
  for variant, list in pairs(variants) do
    if type(list) == "table" and list.failures then
      for _, why in ipairs(list.failures) do
        notes[#notes + 1] = ("%s (%s): a round gave no figures: %s."):format(key,
          variant, why)
      end
    end
  end
end
table.sort(notes)

---------------------------------------------------------------------------
-- The section.

local function first_line(cmd)
  return (sh(cmd):match("[^\n]*"))
end

local cpu = first_line("sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1")
local mem = first_line("awk '/^MemTotal:/ { printf \"%.1f GiB\", $2 / 1048576 }' /proc/meminfo")
local commit = first_line("git rev-parse --short HEAD 2>/dev/null")
-- BENCHMARKS.md is the bench's own output, not code it measured.
if first_line("git status --porcelain --untracked-files=no -- . "
  .. "':!BENCHMARKS.md' 2>/dev/null") ~= "" then
  commit = commit .. " with uncommitted changes"
end
local apsv, pyv = first_line(cfg.python .. " -c 'import apscheduler, sys; "
  .. "print(apscheduler.__version__, sys.version.split()[0])'"):match("(%S+) (%S+)")

local function rounds_note()
  local parts = {}
  for _, k in ipairs { "A", "B1", "B2", "C", "D", "E", "F", "G" } do
    if rounds_run[k] then parts[#parts + 1] = ("%s %d"):format(k, rounds_run[k]) end
  end
  return table.concat(parts, ", ")
end

local out = {}
local function add(line) out[#out + 1] = line end
add("<!-- bench: begin; make bench rewrites this section -->")
add("## moonbeat against APScheduler")
add("")
add("- Date: " .. os.date("!%Y-%m-%d %H:%M UTC"))
add(("- Machine: %s, %s cores, %s memory, Linux %s"):format(cpu,
  first_line("nproc"), mem, first_line("uname -r")))
add(("- Command: `%s`, which runs `%s lua bench/bench.lua%s` (%.0f s)")
  :format(cfg.command, BIN, QUICK and " --quick" or "", elapsed()))
add(("- Code: moonbeat %s, built -O2; APScheduler %s (Debian's "
  .. "`python3-apscheduler`) under Debian's `/usr/bin/python3` %s, "
  .. "`BackgroundScheduler` with its default thread pool, "
  .. "`misfire_grace_time=None`"):format(commit, apsv or "?", pyv or "?"))
add("- Rounds, one process per side each, alternating: " .. rounds_note()
  .. (QUICK and " (QUICK=1: one round, smaller workloads, as labelled)"
    or " (a workload gets more than one only while the time budget lasts)"))
add("")
add("Each cell is the median over the rounds, min–max in brackets. The "
  .. "ratio is moonbeat's median over APScheduler's (for lateness, memory, "
  .. "CPU and losses, below 1 is moonbeat ahead). Targets are moonbeat's.")
add("")
add("| workload | figure | moonbeat | APScheduler 3 | moonbeat/APScheduler | target | met |")
add("|---|---|---:|---:|---:|---|---|")
for _, r in ipairs(rows) do add(r) end
add("")
for _, n in ipairs(notes) do add("- " .. n) end
if #notes > 0 then add("") end
add("Jobs are declared with `scheduler.add_job` (APScheduler: `add_job`) "
  .. "with trivial bodies and fired by the real loop on the real clock; "
  .. "each run records its lateness (its start minus its scheduled time) "
  .. "inside the job, over every execution.")
add("")
add("- A: date jobs all due at one instant set after adding them; runs/s "
  .. "is their number over the time from that instant to the last run's "
  .. "start; moonbeat with `--db :memory:`, with history on a sqlite file, "
  .. "and with no store.")
add("- B1, B2: interval jobs every second, moonbeat with `--db :memory:`; "
  .. "a fire due in the window and not run 2 s after it is lost; CPU of the "
  .. "whole process over the window. B1's floor is `bench/wake_floor.c`: "
  .. "the same deadlines waited for the way moonbeat's loop waits (a timerfd "
  .. "armed for the next one, an epoll wait), and nothing else done; it is "
  .. "what one wake-up per fire costs this machine.")
add("- C: cron jobs 2 to 21 hours ahead added one by one to a running "
  .. "scheduler (moonbeat from inside a run, into a sqlite file; APScheduler "
  .. "fewer, to keep the run short); memory is resident growth per job; "
  .. "then, all committed, wake-ups (voluntary context switches, all "
  .. "threads) and CPU sampled from outside.")
add("- D: `moonbeat run` on one job file (a job a minute, sqlite store) "
  .. "against a `BackgroundScheduler` with one such job, sampled from "
  .. "outside between 5 s after a fire and 5 s before the next, in the "
  .. "background of the other workloads.")
add("- E: `moonbeat run` on a store of jobs with `\"module.function\"` "
  .. "runs (1,000 written by moonbeat, copied with new ids by "
  .. "`bench/grow_store.py`) and a job due at once; from the bench starting "
  .. "the process to that job's run.")
add("- Logging: moonbeat logs at `warn` in every workload (`--log-level "
  .. "warn`); APScheduler's loggers have no handler unless the application "
  .. "adds one, so they write only warnings too. At moonbeat's default "
  .. "level, `info`, every run also writes `run started` and `run finished`.")
add(("- F: `%s`, `mb_cron_next` calls per second of CPU time, chained "
  .. "from the previous fire or from scattered instants (next section)."):format(cron_cmd))
add("- G: " .. (HAVE_RELOAD
  and "`bench/reload_bench.lua`, from a job file's rename to its new version being live."
  or "hot reload is not built on this branch; `bench/reload_bench.lua` is "
    .. "run when it exists and prints `{\"reload_ms\": ...}`."))
add("")
if #misses > 0 then
  add("### Where moonbeat misses its targets")
  add("")
  for _, m in ipairs(misses) do
    add(("- %s: %s: %s%s."):format(m.workload, m.figure, m.value,
      m.target and (", against " .. m.target) or ""))
  end
  add("")
  for _, p in ipairs(profiles) do
    if p.what then
      add(("Profile of %s, moonbeat side, over %s (`perf record` at 499 Hz "
        .. "with DWARF call graphs). Where the CPU time is spent, by shared "
        .. "object and symbol (Lua's own functions show as addresses in "
        .. "`liblua5.4.so`):"):format(p.key, p.what))
      add("")
      add("| self | object | symbol |")
      add("|---:|---|---|")
      add(p.self)
      add("")
      add("and the moonbeat functions it is spent under (inclusive):")
      add("")
      add("| inclusive | object | symbol |")
      add("|---:|---|---|")
      add(p.inclusive)
      if p.lua then
        add("")
        add("and the Lua functions, by where they are defined, that execute "
          .. "the Lua instructions (one sample every 10,007 instructions):")
        add("")
        add("| share | defined at | its first line |")
        add("|---:|---|---|")
        add(p.lua)
      end
    elseif p.key then
      add(("Profile of %s: %s."):format(p.key, p.text))
    else
      add(("Profiles: %s."):format(p.text))
    end
    add("")
  end
end
add("<!-- bench: end -->")
local section = table.concat(out, "\n")

local f = io.open(cfg.out)
local text = f and f:read("a") or "# Benchmarks\n"
if f then f:close() end
local b = text:find("<!-- bench: begin", 1, true)
if b then
  local e = select(2, text:find("<!-- bench: end -->", b, true))
  text = text:sub(1, b - 1) .. section .. text:sub(e + 1)
else
  -- First in the file, after its title and opening paragraph.
  local at = text:find("\n<!--", 1, true)
  if at then
    text = text:sub(1, at) .. section .. "\n\n" .. text:sub(at + 1)
  else
    text = text:gsub("\n*$", "\n\n") .. section .. "\n"
  end
end
f = assert(io.open(cfg.out, "w"))
f:write(text)
f:close()
io.stdout:write(section, "\n")
log("done; wrote %s", cfg.out)
return 0
