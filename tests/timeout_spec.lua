-- Timeouts that really stop a run, and a memory limit a greedy job
-- meets alone.
local harness = require "tests.harness"
local time = require "moonbeat.time"
local core = require "moonbeat.core"

describe("timeouts", function()
  local h, s
  before_each(function()
    h = harness.new()
    s = h.scheduler
  end)
  after_each(function() h:close() end)

  it("stop a waiting run at its deadline and release its wait", function()
    local events = h:events { "timeout" }
    local reached = false
    s.add_job { id = "slow", trigger = { "date", delay = 1 }, timeout = "30s", run = function()
      time.sleep("1h")
      reached = true
    end }
    h:advance("30s")
    assert.equal(1, h:stats().runs)
    h:advance("1s")
    assert.equal(0, h:stats().runs)
    assert.equal(0, h:stats().timers)
    assert.is_false(reached)
    assert.equal(1, #events)
    assert.equal("slow", events[1].job_id)
    assert.equal(30, events[1].duration)
    assert.equal("timed out after 30s", events[1].error)
    local logged = h:logged("run timed out")[1]
    assert.equal("timeout", logged.fields.status)
  end)

  it("cannot be swallowed by the job's own pcall", function()
    local after_pcall = false
    s.add_job { id = "catcher", trigger = { "date", delay = 1 }, timeout = 5, run = function()
      pcall(time.sleep, 60)
      after_pcall = true
      time.sleep(60)
    end }
    h:advance("1m")
    assert.is_false(after_pcall)
    assert.equal(1, #h:logged("run timed out"))
  end)

  it("still runs the job's to-be-closed variables", function()
    local closed = false
    s.add_job { id = "tidy", trigger = { "date", delay = 1 }, timeout = 5, run = function()
      local guard <close> = setmetatable({}, { __close = function() closed = true end })
      time.sleep(60)
    end }
    h:advance("10s")
    assert.is_true(closed)
  end)

  it("gives ctx the deadline", function()
    local deadline
    s.add_job { id = "d", trigger = { "date", delay = 1 }, timeout = "1m",
      run = function(ctx) deadline = ctx.deadline end }
    h:advance("1s")
    assert.equal(h.start + 61, deadline)
  end)

  it("interrupts a run that spins without yielding, and other jobs keep firing", function()
    local fires = h:record("steady", { "interval", seconds = 10 })
    s.add_job { id = "spinner", trigger = { "date", delay = 5 }, timeout = 0.05, run = function()
      while true do end
    end }
    h:advance("30s")
    assert.same({ 10, 20, 30 }, fires)
    local timed_out = h:logged("run timed out")
    assert.equal(1, #timed_out)
    assert.equal("spinner", timed_out[1].fields.job)
    assert.equal(0, h:stats().runs)
  end)

  it("interrupts a spin inside pcall and inside the job's own coroutine", function()
    s.add_job { id = "sneaky", trigger = { "date", delay = 1 }, timeout = 0.05, run = function()
      while true do
        pcall(function()
          local co = coroutine.wrap(function() while true do end end)
          co()
        end)
      end
    end }
    h:advance("2s")
    assert.equal(1, #h:logged("run timed out"))
    assert.equal(0, h:stats().runs)
  end)

  it("is off with timeout = false, overriding a default", function()
    s.configure { job_defaults = { timeout = "10s" } }
    s.add_job { id = "patient", trigger = { "date", delay = 1 }, timeout = false,
      run = function() time.sleep("1h") end }
    s.add_job { id = "impatient", trigger = { "date", delay = 1 },
      run = function() time.sleep("1h") end }
    h:advance("1m")
    local timed_out = h:logged("run timed out")
    assert.equal(1, #timed_out)
    assert.equal("impatient", timed_out[1].fields.job)
    assert.equal(1, h:stats().runs)
  end)
end)

describe("the memory limit", function()
  local h
  before_each(function() h = harness.new { memory_headroom = 32 * 1024 * 1024 } end)
  after_each(function() h:close() end)

  it("fails a job that allocates without bound, alone", function()
    local fires = h:record("steady", { "interval", seconds = 10 })
    h.scheduler.add_job { id = "greedy", trigger = { "date", delay = 5 }, run = function()
      local hoard = {}
      for i = 1, math.huge do hoard[i] = ("x"):rep(1000) .. i end
    end }
    h:advance("30s")
    assert.same({ 10, 20, 30 }, fires)
    local failed = h:logged("run failed")
    assert.equal(1, #failed)
    assert.equal("greedy", failed[1].fields.job)
    assert.matches("^memory limit exceeded: job code may use [%d.]+ MiB of Lua memory in all %(%-%-memory%-limit%)$",
      failed[1].fields.error)
    collectgarbage()
    assert.is_true(core.memory() < select(2, core.memory()))
  end)
end)
