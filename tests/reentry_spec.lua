-- Callbacks that change the scheduler under its feet: listeners,
-- retry_on and job code that cancel, remove, shut down or close. None
-- may crash the host, start what was stopped, or lose a job.
local harness = require "tests.harness"
local core = require "moonbeat.core"
local time = require "moonbeat.time"

describe("re-entrant callbacks", function()
  local h, s
  before_each(function()
    h = harness.new()
    s = h.scheduler
  end)
  after_each(function() h:close() end)

  it("a started listener that shuts down cancels that run before its code runs", function()
    local ran = false
    s.add_listener(function() s.shutdown { wait = false } end, { "started" })
    s.add_job { id = "once", trigger = { "date", delay = 1 }, run = function() ran = true end }
    h:advance("2s")
    assert.is_false(ran)
    assert.equal("stopped", h.core:state())
    assert.equal(1, #h:logged("run cancelled"))
  end)

  it("a cancelled listener that removes a cancel_other job stops the new run", function()
    local starts = 0
    s.add_listener(function(ev) s.remove_job(ev.job_id) end, { "cancelled" })
    s.add_job { id = "newest", trigger = { "interval", seconds = 10 }, overlap = "cancel_other",
      run = function() starts = starts + 1 time.sleep(25) end }
    h:advance("25s")
    assert.equal(1, starts)
    assert.is_nil(s.get_job("newest"))
    assert.equal(0, h:stats().runs)
  end)

  it("an added listener that removes the job leaves add_job a removed job", function()
    s.add_listener(function(ev) s.remove_job(ev.job_id) end, { "added" })
    local job = s.add_job { id = "short-lived", trigger = "* * * * *", run = function() end }
    assert.is_true(job.removed)
    assert.equal("short-lived", job.id)
  end)

  it("overdue fires without coalescing stop when a run shuts down", function()
    local runs = 0
    s.add_job { id = "each", trigger = { "interval", seconds = 1 }, coalesce = false, run = function()
      runs = runs + 1
      s.shutdown { wait = false }
    end }
    h:stall("10s")
    h:advance(0)
    assert.equal(1, runs)
  end)

  it("drains a long buffer of quick runs without nesting a call per run", function()
    local runs = 0
    s.add_job { id = "queue", trigger = { "interval", seconds = 1 }, overlap = "buffer_all",
      max_buffered = 30000, run = function(ctx)
        runs = runs + 1
        if runs == 1 then time.sleep(25005) end
      end }
    h:advance("25006s")
    -- The first run, then 25,004 buffered fires in one go, then the 25,006th.
    assert.equal(25006, runs)
    assert.equal(0, s.get_job("queue").running)
  end)

  it("a listener that removes itself does not hide the event from the next", function()
    local heard = {}
    local first
    first = s.add_listener(function() heard[#heard + 1] = "first" s.remove_listener(first) end,
      { "executed" })
    s.add_listener(function() heard[#heard + 1] = "second" end, { "executed" })
    h:record("x", { "date", delay = 1 })
    h:advance("1s")
    assert.same({ "first", "second" }, heard)
  end)

  it("refuses to close the scheduler from a listener", function()
    local err
    s.add_listener(function() err = select(2, pcall(h.core.close, h.core)) end, { "executed" })
    h:record("x", { "date", delay = 1 })
    h:advance("1s")
    assert.equal("close: not from inside a listener or callback", err)
  end)

  it("clamps a backoff that would overflow", function()
    s.add_job { id = "far", trigger = { "date", delay = 1 },
      retry = { attempts = 3, backoff = "fixed", delay = 1000 * 365 * 86400 },
      run = function() error("no") end }
    h:advance("1s")
    local job = s.get_job("far")
    assert.is_true(job.next_retry_time > h.start + 900 * 365 * 86400)
    h:advance("1d")
    assert.equal(1, #h:logged("run failed"))
  end)
end)

describe("the count hook", function()
  local h, s
  before_each(function()
    h = harness.new()
    s = h.scheduler
  end)
  after_each(function() h:close() end)

  it("leaves a run without a timeout alone when it resumes a coroutine made under one", function()
    local saved
    s.add_job { id = "maker", trigger = { "date", delay = 1 }, timeout = "1h", run = function()
      saved = coroutine.create(function() for i = 1, 3e6 do end return "done" end)
    end }
    local result
    s.add_job { id = "user", trigger = { "date", delay = 2 }, run = function()
      result = select(2, coroutine.resume(saved))
    end }
    h:advance("2s")
    assert.equal("done", result)
    assert.equal(0, #h:logged("run timed out"))
  end)

  it("keeps the timeout a run started with when the job is modified", function()
    s.add_job { id = "long", trigger = { "date", delay = 1 }, timeout = "1h", run = function()
      time.sleep(1)
      for i = 1, 3e6 do end
    end }
    h:advance("1s")
    s.modify_job("long", { timeout = false })
    h:advance("1s")
    assert.equal(0, #h:logged("run timed out"))
    assert.equal(1, #h:logged("run finished"))
  end)

  it("stops a spin inside a sort comparator, where no yield is allowed", function()
    s.add_job { id = "sorter", trigger = { "date", delay = 1 }, timeout = 0.05, run = function()
      table.sort({ 3, 2, 1 }, function() while true do end end)
    end }
    h:advance("1s")
    assert.equal(1, #h:logged("run timed out"))
  end)

  it("interrupts a to-be-closed handler that spins after a timeout", function()
    s.add_job { id = "stuck-close", trigger = { "date", delay = 1 }, timeout = 0.05, run = function()
      local guard <close> = setmetatable({}, { __close = function() while true do end end })
      time.sleep(60)
    end }
    h:advance("2s")
    assert.equal(1, #h:logged("run timed out"))
    assert.equal(0, h:stats().runs)
  end)
end)

describe("the memory limit and host code", function()
  local h
  before_each(function() h = harness.new { memory_headroom = 16 * 1024 * 1024 } end)
  after_each(function() h:close() end)

  it("does not fail the host's events when a job has filled memory", function()
    local s = h.scheduler
    local heard = 0
    s.add_listener(function() heard = heard + 1 end, { "paused", "resumed" })
    h:record("other", { "interval", seconds = 5 })
    s.add_job { id = "hog", trigger = { "date", delay = 1 }, run = function()
      local hoard = {}
      pcall(function() for i = 1, math.huge do hoard[i] = ("y"):rep(500) .. i end end)
      for _ = 1, 50 do
        s.pause_job("other")
        s.resume_job("other")
      end
      hoard = nil
    end }
    h:advance("10s")
    assert.equal(100, heard)
    assert.equal(0, #h:logged("run failed"))
  end)
end)
