-- add_job's fast path (host/job_spec.c): a plain spec added at run time
-- is read in C, and must come out exactly as lua/validate.lua makes it;
-- anything else goes to the validator, whose messages stay the same.
local core = require "moonbeat.core"
local harness = require "tests.harness"
local scheduler = require "mb.scheduler"
local validate = require "mb.validate"

describe("add_job's fast path", function()
  local h, full_core, full
  before_each(function()
    h = harness.new()
    -- A twin on the same clock whose adds all go through the validator:
    -- job_defaults (even empty ones) turn the fast path off.
    full_core = assert(core.new { clock = "virtual", start = h.start,
      timezone = "UTC", seed = 1, db = ":memory:" })
    full = scheduler.new(full_core)
    full.configure { job_defaults = {} }
  end)
  after_each(function()
    full_core:close()
    h:close()
  end)

  local T = harness.time(harness.DEFAULT_START)
  local function noop() end

  -- Everything a job shows of itself, its whole spec included.
  local function snapshot(sched_core, job)
    local spec = {}
    for k, v in pairs(sched_core:job_spec(job)) do spec[k] = v end
    return {
      id = job.id, name = job.name, file = job.file, trigger = job.trigger,
      next_run_time = job.next_run_time, paused = job.paused,
      persistent = job.persistent, spec = spec,
    }
  end

  local PLAIN = {
    { id = "a", trigger = { "cron", hour = 2, minute = 30 }, run = noop },
    { id = "b", name = "Bee", trigger = "0 2 * * mon-fri", run = noop },
    { id = "c", trigger = { "cron", "*/5 * * * *" }, run = noop,
      paused = false, replace_existing = false },
    { id = "d", trigger = { "interval", minutes = 5, seconds = 3 }, run = noop },
    { id = "e", trigger = { "interval", hours = 1, start_date = T + 100,
      end_date = T + 86400 }, run = noop },
    { id = "f", trigger = { "date", run_date = T + 60.5 }, run = noop },
    { id = "g", trigger = { "cron", day_of_week = "mon-fri", hour = "9-17/2",
      second = 15, start_date = T + 3600.25 }, run = noop },
    { id = "h", name = "h", trigger = { "cron", minute = 0,
      end_date = T + 7 * 86400 }, run = noop },
    { id = "i", trigger = { "date", run_date = T - 10 }, run = noop },
    { id = "j", trigger = { "cron", year = 2030, month = 1, day = 1 },
      run = noop },
    { id = "k", trigger = { "interval", weeks = 2, days = 1 }, run = noop },
  }

  -- Valid, but for the validator to read.
  local NOT_PLAIN = {
    { id = "t1", trigger = "* * * * *", run = noop, timeout = "5m" },
    { id = "t2", trigger = "* * * * *", run = noop, args = { 1, 2 } },
    { id = "t3", trigger = "* * * * *", run = noop, kwargs = { a = 1 } },
    { id = "t4", trigger = { "cron", hour = 3, timezone = "Europe/Berlin" },
      run = noop },
    { id = "t5", trigger = { "cron", hour = 3, jitter = "1s" }, run = noop },
    { id = "t6", trigger = { "interval", seconds = 1.5 }, run = noop },
    { id = "t7", trigger = "* * * * *", run = noop, paused = true },
    { id = "t8", trigger = "* * * * *", run = noop, replace_existing = true },
    { id = "t9", trigger = { "cron", hour = 1,
      start_date = "2026-02-01 00:00" }, run = noop },
    { id = "t10", trigger = "* * * * *", run = noop, retry = { attempts = 2 } },
    { id = "t11", trigger = { "date", delay = 10 }, run = noop },
    { id = "t12", trigger = "* * * * *", run = "mb.duration.parse" },
    -- The validator reads fields through __index; C reads raw ones.
    setmetatable({ trigger = "* * * * *", run = noop },
      { __index = { id = "t13" } }),
  }

  -- Wrong: the validator's message, whichever path is asked first.
  local BAD = {
    { id = "r", trigger = { "cron", hour = 25 }, run = noop },
    { id = "a b", trigger = "* * * * *", run = noop },
    { id = "", trigger = "* * * * *", run = noop },
    { id = "r", name = "", trigger = "* * * * *", run = noop },
    { id = "r", trigger = "* * * * *", run = 5 },
    { id = "r", trigger = "* * * * *" },
    { id = "r", run = noop },
    { id = "r", trigger = { "cron" }, run = noop },
    { id = "r", trigger = { "cron", "0 2 * * *", hour = 3 }, run = noop },
    { id = "r", trigger = { "cron", hour = 1.5 }, run = noop },
    { id = "r", trigger = { "cron", hour = true }, run = noop },
    { id = "r", trigger = { "cron", year = 2020 }, run = noop },
    { id = "r", trigger = { "cron", minute = 0, start_date = T + 10,
      end_date = T + 5 }, run = noop },
    -- Apart by less than the microsecond C counts in: still wrong.
    { id = "r", trigger = { "cron", minute = 0, start_date = T + 2e-7,
      end_date = T + 1e-7 }, run = noop },
    { id = "r", trigger = { "interval", seconds = -1 }, run = noop },
    { id = "r", trigger = { "interval", seconds = 0 }, run = noop },
    { id = "r", trigger = { "interval", weeks = 1 << 62 }, run = noop },
    { id = "r", trigger = { "date" }, run = noop },
    { id = "r", trigger = { "date", run_date = 0 / 0 }, run = noop },
    { id = "r", trigger = { "weekly" }, run = noop },
    { id = "r", trigger = "0 2 * *", run = noop },
    { id = "r", colour = "blue", trigger = "* * * * *", run = noop },
    { id = "r", paused = "no", trigger = "* * * * *", run = noop },
  }

  it("reads plain specs in C and leaves every other to the validator", function()
    for _, spec in ipairs(PLAIN) do
      local job = h.core:add_plain(spec)
      assert.equal("userdata", type(job), spec.id)
      assert.equal(spec.id, job.id)
    end
    for _, list in ipairs { NOT_PLAIN, BAD } do
      for _, spec in ipairs(list) do
        assert.is_false(h.core:add_plain(spec), tostring(rawget(spec, "id")))
      end
    end
    assert.equal(#PLAIN, #h.scheduler.get_jobs())
  end)

  it("takes the fast path for plain specs, the validator for the rest", function()
    local checked = spy.on(validate, "job")
    finally(function() checked:revert() end)
    for _, spec in ipairs(PLAIN) do h.scheduler.add_job(spec) end
    assert.spy(checked).was_not_called()
    for _, spec in ipairs(NOT_PLAIN) do h.scheduler.add_job(spec) end
    assert.spy(checked).was_called(#NOT_PLAIN)
  end)

  it("gives every job, event and log line the validator would", function()
    local heard, heard_full = h:events(), {}
    full.add_listener(function(ev) heard_full[#heard_full + 1] = ev end)
    for _, list in ipairs { PLAIN, NOT_PLAIN } do
      for _, spec in ipairs(list) do
        local fast_job = h.scheduler.add_job(spec)
        local full_job = full.add_job(spec)
        assert.same(snapshot(full_core, full_job), snapshot(h.core, fast_job))
      end
    end
    assert.equal(#PLAIN + #NOT_PLAIN, #heard)
    assert.same(heard_full, heard)
    for _, spec in ipairs(PLAIN) do
      local lines = {}
      for _, entry in ipairs(h:logged("job kept in memory only")) do
        if entry.fields.job == spec.id then lines[#lines + 1] = entry end
      end
      assert.equal(2, #lines)
      assert.same(lines[2], lines[1])
    end
  end)

  it("shows a listener of the added event the whole spec the validator would", function()
    local seen, seen_full = {}, {}
    h.scheduler.add_listener(function(ev)
      seen[ev.job_id] = snapshot(h.core, h.scheduler.get_job(ev.job_id)).spec
    end, { "added" })
    full.add_listener(function(ev)
      seen_full[ev.job_id] = snapshot(full_core, full.get_job(ev.job_id)).spec
    end, { "added" })
    for _, spec in ipairs(PLAIN) do
      h.scheduler.add_job(spec)
      full.add_job(spec)
    end
    for _, spec in ipairs(PLAIN) do
      assert.equal(spec.id, seen[spec.id].id)
      assert.same(seen_full[spec.id], seen[spec.id])
    end
  end)

  it("words every error as the validator does", function()
    for i, spec in ipairs(BAD) do
      local ok, err = pcall(h.scheduler.add_job, spec)
      local ok_full, err_full = pcall(full.add_job, spec)
      assert.is_false(ok, i)
      assert.is_false(ok_full, i)
      assert.equal(err_full, err)
    end
    assert.equal(0, #h.scheduler.get_jobs())
    local _, err = pcall(h.scheduler.add_job, BAD[1])
    assert.equal("trigger.hour: 25 is out of range 0-23", err)
  end)

  it("refuses an id that exists, as the validator's path does", function()
    h.scheduler.add_job(PLAIN[1])
    full.add_job(PLAIN[1])
    local _, err = pcall(h.scheduler.add_job, PLAIN[1])
    local _, err_full = pcall(full.add_job, PLAIN[1])
    assert.equal("job id 'a' already exists; pass replace_existing = true "
      .. "to replace it", err)
    assert.equal(err_full, err)
  end)

  it("runs a lean job with its ctx.state, and modifies it as any other", function()
    local counts = {}
    local spec = { id = "n", trigger = { "interval", seconds = 10 },
      run = function(ctx)
        ctx.state.n = (ctx.state.n or 0) + 1
        counts[#counts + 1] = ctx.state.n
      end }
    h.scheduler.add_job(spec)
    h:advance(25)
    assert.same({ 1, 2 }, counts)
    assert.same({ n = 2 }, h.core:job_spec(h.scheduler.get_job("n")).state)
    h.scheduler.modify_job("n", { name = "Counter", max_instances = 2 })
    h:advance(10)
    assert.same({ 1, 2, 3 }, counts)
    local s = h.core:job_spec(h.scheduler.get_job("n"))
    assert.equal("Counter", s.name)
    assert.same({ jitter = 0, max_instances = 2 }, s.policy)
    assert.equal("Counter", h.scheduler.get_job("n").name)
  end)

  it("holds a lean job by its run function alone, no table of its own", function()
    local function run() end
    local function held()
      local funcs, tables = 0, 0
      for _, v in pairs(debug.getregistry()) do
        if v == run then funcs = funcs + 1 end
        if type(v) == "table" and rawget(v, "run") == run then
          tables = tables + 1
        end
      end
      return funcs, tables
    end
    h.scheduler.add_job { id = "lean", trigger = { "interval", seconds = 60 },
      run = run }
    -- A { run = fn } table per job would be one more object for every
    -- collection to traverse and promote.
    assert.same({ 1, 0 }, { held() })
    -- Asked for its spec, it gets a whole one, which runs as before.
    assert.equal(run, h.core:job_spec(h.scheduler.get_job("lean")).run)
    assert.same({ 0, 1 }, { held() })
    h:advance(60)
    assert.equal(1, h.scheduler.get_job("lean").counts.ok)
  end)

  it("retries a lean job given a retry policy, with no retry_on to ask", function()
    local attempts = {}
    h.scheduler.add_job { id = "flaky", trigger = { "interval", minutes = 10 },
      run = function(ctx)
        attempts[#attempts + 1] = ctx.attempt
        error("down")
      end }
    -- The core's own verb: the scheduler's modify_job makes the spec
    -- whole first, so only this reaches a lean job's retry decision.
    h.core:set_policy(h.scheduler.get_job("flaky"),
      { retry_attempts = 3, retry_delay = 5 })
    h:advance("10m")
    h:advance(30)
    assert.same({ 1, 2, 3 }, attempts)
  end)

  it("carries a lean job's ctx.state over to the job replacing it", function()
    h.scheduler.add_job { id = "s", trigger = { "interval", seconds = 10 },
      run = function(ctx) ctx.state.seen = true end }
    h:advance(10)
    h.scheduler.add_job { id = "s", replace_existing = true,
      trigger = { "interval", seconds = 20 }, run = noop }
    assert.same({ seen = true }, h.core:job_spec(h.scheduler.get_job("s")).state)
  end)
end)

describe("a lean job's ctx.state at the memory limit", function()
  local core = require "moonbeat.core"
  local h
  before_each(function() h = harness.new { memory_headroom = 4 * 1024 * 1024 } end)
  after_each(function() h:close() end)

  it("lets go of the job once it is removed", function()
    collectgarbage()
    collectgarbage()
    local before = core.job_memory().live
    local got = { "unset", "unset" }
    local hoard = {}
    local function big(i) hoard[#hoard + 1] = ("x"):rep(900) .. i end
    local function small() hoard[#hoard + 1] = {} end
    -- A plain spec with a function: the fast path's lean job.
    h.scheduler.add_job { id = "lean", trigger = { "interval", seconds = 10 },
      run = function(ctx)
        local read = function() return ctx.state end
        -- The same call depth as read's, through ctx's __index, so that
        -- only the spec's own allocations are left to fail.
        pcall(function() return ctx.nothing end)
        local i = 0
        while pcall(big, i) do i = i + 1 end
        while pcall(small) do end
        got[1], got[2] = pcall(read)
        hoard = nil
      end }
    h:advance(10)
    assert.not_equal("unset", got[1])
    h.scheduler.remove_job("lean")
    h:advance(1)
    collectgarbage()
    collectgarbage()
    assert.equal(before, core.job_memory().live)
  end)
end)
