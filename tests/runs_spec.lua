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
      -- The harness keeps log lines: grown alike in both measurements.
      h.logs = {}
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
    -- A ctx is a small userdata, about 100 bytes a run here; a table
    -- with the same fields took about 145.
    local per_run = (with_ctx - without_ctx) / 200
    assert.is_true(per_run > 50 and per_run < 125,
      ("with ctx %d bytes, without %d"):format(with_ctx, without_ctx))
  end)

  describe("ctx", function()
    local function kept_ctx(spec)
      local kept
      spec.id = spec.id or "kept"
      spec.trigger = spec.trigger or { "date", delay = 1 }
      local body = spec.run
      spec.run = function(ctx, ...)
        kept = ctx
        if body then return body(ctx, ...) end
      end
      s.add_job(spec)
      h:advance("1s")
      return kept
    end

    it("still reads its run's facts after the run and the job are gone", function()
      local ctx = kept_ctx {}
      assert.is_nil(s.get_job("kept"))
      collectgarbage()
      assert.equal("kept", ctx.job_id)
      assert.equal(h.start + 1, ctx.scheduled_time)
      assert.equal(1, ctx.attempt)
      assert.is_number(ctx.run_id)
      assert.is_nil(ctx.deadline)
      assert.is_nil(ctx.nothing)
      assert.is_nil(ctx[1])
      assert.equal("ctx: kept run " .. ctx.run_id, tostring(ctx))
    end)

    it("keeps fields a job sets on it, and lists them after the facts in pairs", function()
      local ctx = kept_ctx { run = function(ctx)
        ctx.note = "mine"
        ctx[1] = "first"
        ctx.note2 = ctx.note .. "!"
      end }
      assert.equal("mine", ctx.note)
      assert.equal("mine!", ctx.note2)
      assert.equal("first", ctx[1])
      local keys, seen = {}, {}
      for k, v in pairs(ctx) do
        keys[#keys + 1] = k
        seen[k] = v
      end
      assert.same({ "job_id", "run_id", "scheduled_time", "attempt" },
        { keys[1], keys[2], keys[3], keys[4] })
      assert.equal(7, #keys)
      assert.equal("kept", seen.job_id)
      assert.equal("mine", seen.note)
      assert.equal("first", seen[1])
      ctx.note = nil
      assert.is_nil(ctx.note)
    end)

    it("lists the deadline in pairs only with a timeout", function()
      local ctx = kept_ctx { timeout = "1m" }
      local seen = {}
      for k, v in pairs(ctx) do seen[k] = v end
      assert.equal(h.start + 61, seen.deadline)
    end)

    it("refuses to have the run's facts, log or state replaced", function()
      local errors = {}
      kept_ctx { run = function(ctx)
        for _, field in ipairs { "job_id", "run_id", "scheduled_time",
                                 "attempt", "deadline", "log" } do
          local ok, err = pcall(function() ctx[field] = "other" end)
          errors[field] = not ok and err:match("ctx%.%S+ cannot be assigned.*")
        end
        local ok, err = pcall(function() ctx.state = {} end)
        errors.state = not ok and err:match("ctx%.%S+ cannot be assigned.*")
        -- The same value again is no change.
        ctx.state = ctx.state or {}
        ctx.attempt = ctx.attempt
        ctx.state.kept = true
      end }
      assert.equal("ctx.job_id cannot be assigned", errors.job_id)
      assert.equal("ctx.deadline cannot be assigned", errors.deadline)
      assert.equal("ctx.log cannot be assigned", errors.log)
      assert.equal("ctx.state cannot be assigned: set fields of ctx.state instead",
        errors.state)
      for _, field in ipairs { "run_id", "scheduled_time", "attempt" } do
        assert.equal("ctx." .. field .. " cannot be assigned", errors[field])
      end
      assert.is_true(s.get_job("kept") == nil)
      assert.same({}, h:logged("run failed"))
    end)

    it("keeps log and state once made, as fields of its own", function()
      local ctx = kept_ctx { trigger = { "interval", seconds = 1 },
        run = function(ctx) ctx.state.n = (ctx.state.n or 0) + 1 end }
      assert.is_true(rawequal(ctx.log, ctx.log))
      assert.is_true(rawequal(ctx.state, ctx.state))
      assert.equal(1, ctx.state.n)
      h:advance("1s")
      -- The job's state, shared with its later runs.
      assert.equal(2, ctx.state.n)
    end)

    it("finds its state by its run, not by where it was allocated", function()
      -- A run that drops its ctx early (a tail call) while it goes on:
      -- the next ctx may take the same memory.
      local function work() time.sleep(60) end
      s.add_job { id = "aa", trigger = { "date", delay = 1 },
        run = function(ctx) ctx.state.owner = "aa"; return work() end }
      h:advance("1s")
      collectgarbage()
      collectgarbage()
      local ctx = kept_ctx { id = "bb" }
      assert.equal("bb", ctx.job_id)
      assert.is_nil(ctx.state.owner)
    end)

    it("reads its facts after its scheduler is closed, its state its own", function()
      local ctx = kept_ctx { trigger = { "interval", seconds = 1 },
        run = function(ctx) ctx.log.info("ran") end }
      h:close()
      collectgarbage()
      assert.equal("kept", ctx.job_id)
      assert.same({}, ctx.state)
      ctx.state.x = 1
      assert.equal(1, ctx.state.x)
      assert.is_function(ctx.log.info)
      h = harness.new()
    end)

    it("hands out no metatable for a job to change under every other", function()
      local ctx = kept_ctx { run = function(ctx) ctx.mine = 1 end }
      assert.equal("ctx", getmetatable(ctx))
      assert.has_error(function() setmetatable(ctx, {}) end)
      assert.equal(1, ctx.mine)
    end)

    it("survives its user value or a log function's upvalue replaced", function()
      local ctx = kept_ctx { run = function(ctx) ctx.mine = 1 end }
      debug.setuservalue(ctx, 42, 1)
      assert.is_nil(ctx.mine)
      assert.equal("kept", ctx.job_id)
      local n = 0
      for _ in pairs(ctx) do n = n + 1 end
      assert.equal(4, n)
      ctx.again = 2
      assert.equal(2, ctx.again)
      local info = ctx.log.info
      debug.setupvalue(info, 1, io.stdout)
      local ok, err = pcall(info, "x")
      assert.is_false(ok)
      assert.matches("ctx expected", err)
    end)

    it("checks that its metamethods are given a ctx", function()
      local ctx = kept_ctx {}
      local meta = debug.getmetatable(ctx)
      assert.equal("ctx", meta.__name)
      for _, call in ipairs {
        function() return meta.__index(io.stdout, "job_id") end,
        function() return meta.__index({}, "job_id") end,
        function() meta.__newindex(io.stdout, "x", 1) end,
        function() return meta.__tostring(io.stderr) end,
        function() return meta.__pairs(io.stdout) end,
      } do
        local ok, err = pcall(call)
        assert.is_false(ok)
        assert.matches("ctx expected", err)
      end
    end)
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
