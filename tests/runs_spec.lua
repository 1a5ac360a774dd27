-- Runs: one coroutine per fire, ctx and arguments, sleeping on the loop,
-- and failures that stay inside their run.
local harness = require "tests.harness"
local time = require "moonbeat.time"

describe("runs", function()
  local h, s
  before_each(function()
    h = harness.new()
    s = h.scheduler
  end)
  after_each(function() h:close() end)

  it("passes ctx with job_id, run_id, scheduled_time, attempt and log", function()
    local seen
    s.add_job { id = "ctx", trigger = { "date", delay = 5 }, run = function(ctx) seen = ctx end }
    h:advance("5s")
    assert.equal("ctx", seen.job_id)
    assert.is_number(seen.run_id)
    assert.equal(h.start + 5, seen.scheduled_time)
    assert.equal(1, seen.attempt)
    assert.is_function(seen.log.info)
  end)

  it("makes no ctx for a run function that takes no arguments", function()
    -- Lua bytes allocated by 200 runs, the collector stopped meanwhile.
    local function allocated(run)
      s.add_job { id = "alloc", trigger = { "interval", seconds = 1 }, run = run,
        replace_existing = true }
      collectgarbage()
      collectgarbage("stop")
      local before = collectgarbage("count")
      h:advance("200s")
      local after = collectgarbage("count")
      collectgarbage("restart")
      return (after - before) * 1024
    end
    local bare, full = 0, 0
    local without_ctx = allocated(function() bare = bare + 1 end)
    local with_ctx = allocated(function(ctx) full = full + ctx.attempt end)
    assert.equal(200, bare)
    assert.equal(200, full)
    -- A ctx is a table with its fields: over a hundred bytes a run.
    assert.is_true(with_ctx - without_ctx > 200 * 100,
      ("with ctx %d bytes, without %d"):format(with_ctx, without_ctx))
  end)

  it("passes ctx and args to a function that takes them only as ...", function()
    local got
    s.add_job { id = "va", trigger = { "date", delay = 1 }, args = { "a1" },
      run = function(...) got = { (...).job_id, select(2, ...) } end }
    h:advance("1s")
    assert.same({ "va", "a1" }, got)
  end)

  it("gives every run its own run_id", function()
    local ids = {}
    s.add_job { id = "ids", trigger = { "interval", seconds = 1 },
      run = function(ctx) ids[#ids + 1] = ctx.run_id end }
    h:advance("3s")
    assert.equal(3, #ids)
    assert.are_not.equal(ids[1], ids[2])
    assert.are_not.equal(ids[2], ids[3])
  end)

  it("passes args after ctx, then kwargs, keeping nils in args", function()
    local got
    s.add_job { id = "args", trigger = { "date", delay = 1 },
      args = { 1, nil, "three", n = 3 }, kwargs = { mode = "fast" },
      run = function(ctx, a, b, c, kw) got = { a, b, c, kw.mode } end }
    h:advance("1s")
    assert.same({ 1, nil, "three", "fast" }, got)
  end)

  it("sleeps on the loop: time passes only as the clock advances", function()
    local marks = {}
    s.add_job { id = "sleeper", trigger = { "date", delay = 10 }, run = function()
      marks[#marks + 1] = time.now() - h.start
      time.sleep("1m30s")
      marks[#marks + 1] = time.now() - h.start
    end }
    h:advance("1m")
    assert.same({ 10 }, marks)
    assert.equal(1, h:stats().runs)
    h:advance("1m")
    assert.same({ 10, 100 }, marks)
    assert.equal(0, h:stats().runs)
  end)

  it("keeps 10,000 runs sleeping at once on one thread", function()
    local done = 0
    for i = 1, 10000 do
      s.add_job { id = "sleep-" .. i, trigger = { "date", delay = 1 }, run = function()
        time.sleep(60 + i % 7)
        done = done + 1
      end }
    end
    h:advance("1s")
    assert.equal(10000, h:stats().runs)
    assert.equal(10000, h:stats().timers)
    assert.equal(0, done)
    -- At 61 s the runs sleeping 60 s have woken: those with i % 7 == 0.
    h:advance("1m")
    assert.equal(10000 // 7, done)
    assert.equal(10000 - done, h:stats().runs)
    h:advance("10s")
    assert.equal(10000, done)
    assert.equal(0, h:stats().runs)
    assert.equal(0, h:stats().timers)
  end)

  it("catches a job's error, logs it with its traceback, and goes on", function()
    local fires = h:record("steady", { "interval", seconds = 10 })
    s.add_job { id = "broken", trigger = { "interval", seconds = 10 }, run = function()
      local t = nil
      return t.missing
    end }
    h:advance("30s")
    assert.same({ 10, 20, 30 }, fires)
    local failed = h:logged("run failed")
    assert.equal(3, #failed)
    assert.equal("broken", failed[1].fields.job)
    assert.equal("error", failed[1].fields.status)
    assert.matches("attempt to index a nil value %(local 't'%)", failed[1].fields.error)
    assert.matches("stack traceback:", failed[1].fields.traceback)
    assert.matches("tests/runs_spec.lua:%d+", failed[1].fields.traceback)
  end)

  it("keeps the scheduler running when a sleeping run fails later", function()
    local fires = h:record("steady", { "interval", seconds = 5 })
    s.add_job { id = "late-fail", trigger = { "date", delay = 1 }, run = function()
      time.sleep(3)
      error("gave up")
    end }
    h:advance("12s")
    assert.same({ 5, 10 }, fires)
    local failed = h:logged("run failed")
    assert.equal(1, #failed)
    assert.matches("gave up", failed[1].fields.error)
  end)

  it("logs run started and run finished with status and duration", function()
    s.add_job { id = "logged", trigger = { "date", delay = 1 }, run = function()
      time.sleep(2)
    end }
    h:advance("5s")
    local started, finished = h:logged("run started"), h:logged("run finished")
    assert.equal(1, #started)
    assert.equal("logged", started[1].fields.job)
    assert.equal("success", finished[1].fields.status)
    assert.equal(2, finished[1].fields.duration)
  end)

  it("keeps ctx.log lines with the job and run", function()
    s.add_job { id = "talker", trigger = { "date", delay = 1 }, run = function(ctx)
      ctx.log.warn("disk nearly full", { used = 0.93, mount = "/var" })
    end }
    h:advance("1s")
    local line = h:logged("disk nearly full")[1]
    assert.equal("warn", line.level)
    assert.equal("talker", line.fields.job)
    assert.equal(0.93, line.fields.used)
    assert.equal("/var", line.fields.mount)
  end)

  it("ends a run that yields to the scheduler directly with a clear error", function()
    s.add_job { id = "yielder", trigger = { "date", delay = 1 }, run = function()
      coroutine.yield()
    end }
    h:advance("1s")
    local failed = h:logged("run failed")
    assert.equal(1, #failed)
    assert.equal("the job yielded to the scheduler directly; wait with the moonbeat "
      .. "stdlib (moonbeat.time.sleep, ...) instead", failed[1].fields.error)
    assert.equal(0, h:stats().runs)
  end)

  it("refuses sleep outside a job's run", function()
    local ok, err = pcall(time.sleep, 1)
    assert.is_false(ok)
    assert.matches("sleep: only a job's run can sleep", err)
  end)

  it("refuses a bad duration for sleep", function()
    local ok, err = pcall(time.sleep, "soon")
    assert.is_false(ok)
    assert.matches("sleep: 'soon' is not a duration", err)
  end)

  it("cancels runs in flight when the scheduler closes, leaving no refs", function()
    s.add_job { id = "forever", trigger = { "date", delay = 1 }, run = function()
      time.sleep(1e9)
    end }
    h:advance("1s")
    assert.equal(1, h:stats().runs)
    -- after_each's close checks that nothing is left behind.
  end)

  it("lets a job's own coroutines run inside its run", function()
    local got
    s.add_job { id = "coro", trigger = { "date", delay = 1 }, run = function()
      local gen = coroutine.wrap(function() for i = 1, 3 do coroutine.yield(i) end end)
      got = { gen(), gen(), gen() }
    end }
    h:advance("1s")
    assert.same({ 1, 2, 3 }, got)
  end)
end)
