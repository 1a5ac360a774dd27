-- Shutting down: stop firing, let runs in flight finish within the
-- shutdown timeout, then cancel the rest.
local harness = require "tests.harness"
local support = require "tests.support"
local time = require "moonbeat.time"

describe("shutdown", function()
  local h, s
  before_each(function()
    h = harness.new()
    s = h.scheduler
  end)
  after_each(function() h:close() end)

  it("stops firing and lets a run in flight finish", function()
    local done = false
    local fires = h:record("tick", { "interval", seconds = 1 })
    s.add_job { id = "long", trigger = { "date", delay = 1 }, run = function()
      time.sleep(20)
      done = true
    end }
    h:advance("2s")
    s.shutdown()
    assert.equal("stopping", h.core:state())
    h:advance("10s")
    assert.same({ 1, 2 }, fires)
    assert.equal("stopping", h.core:state())
    h:advance("10s")
    assert.is_true(done)
    assert.equal("stopped", h.core:state())
    assert.equal(0, #h:logged("run cancelled"))
  end)

  it("cancels what is still running when the timeout passes", function()
    s.add_job { id = "endless", trigger = { "date", delay = 1 }, run = function() time.sleep(1e6) end }
    h:advance("1s")
    s.shutdown { timeout = 5 }
    h:advance("5s")
    assert.equal("stopped", h.core:state())
    local cancelled = h:logged("run cancelled")
    assert.equal(1, #cancelled)
    assert.equal("the shutdown timeout passed", cancelled[1].fields.reason)
    assert.equal(0, h:stats().runs)
  end)

  it("cancels runs at once with wait = false", function()
    s.add_job { id = "endless", trigger = { "date", delay = 1 }, run = function() time.sleep(1e6) end }
    h:advance("1s")
    s.shutdown { wait = false }
    assert.equal("stopped", h.core:state())
    assert.equal(1, #h:logged("run cancelled"))
  end)

  it("fires no pending retry after it", function()
    local tries = 0
    s.add_job { id = "failing", trigger = { "date", delay = 1 }, retry = { attempts = 5, delay = 10 },
      run = function() tries = tries + 1 error("no") end }
    h:advance("1s")
    s.shutdown()
    h:advance("1m")
    assert.equal(1, tries)
  end)

  it("can be asked for by a job, which is then cancelled with the rest", function()
    local after = false
    s.add_job { id = "other", trigger = { "date", delay = 1 }, run = function() time.sleep(1e6) end }
    s.add_job { id = "stopper", trigger = { "date", delay = 2 }, run = function()
      scheduler_shutdown { wait = false }
      after = true
    end }
    _G.scheduler_shutdown = s.shutdown
    h:advance("2s")
    _G.scheduler_shutdown = nil
    assert.is_true(after)
    assert.equal("stopped", h.core:state())
    assert.equal(2, #h:logged("run cancelled"))
    assert.equal(0, h:stats().runs)
  end)
end)

describe("moonbeat run on a signal", function()
  local dir
  after_each(function()
    if dir then support.remove_tree(dir) end
    dir = nil
  end)

  local function job(sleep)
    return ([[
local time = require "moonbeat.time"
scheduler.add_job { id = "busy", trigger = { "date", delay = 0 },
  run = function() time.sleep(%s) end }
]]):format(sleep)
  end

  it("lets a run in flight finish, then exits 0", function()
    dir = support.tempdir { ["busy.lua"] = job(0.5) }
    local out, code = support.run_until("run --db " .. dir .. "/m.db " .. dir, "run started", "TERM")
    assert.equal(0, code)
    assert.matches("scheduler stopping runs=1 wait=30s signal=SIGTERM", out, 1, true)
    assert.matches("run finished job=busy run=%d+ status=success", out)
    assert.matches("scheduler stopped", out, 1, true)
  end)

  it("cancels runs still going after --shutdown-timeout and exits 0", function()
    dir = support.tempdir { ["busy.lua"] = job(3600) }
    local out, code = support.run_until("run --db :memory: --shutdown-timeout 0.2 " .. dir, "run started", "INT")
    assert.equal(0, code)
    assert.matches('run cancelled job=busy run=%d+ status=cancelled duration=%S+ reason="the shutdown timeout passed"', out)
    assert.matches("scheduler stopped", out, 1, true)
    -- Jobs leave with the scheduler; nobody removed them.
    assert.is_nil(out:find("job removed", 1, true))
  end)

  it("treats the first signal after a shutdown from Lua as the first", function()
    dir = support.tempdir {
      ["busy.lua"] = job(3600),
      ["stopper.lua"] = [[
scheduler.add_job { id = "stopper", trigger = { "date", delay = 0.1 },
  run = function() scheduler.shutdown() end }
]],
    }
    local out, code = support.run_until("run --db :memory: --shutdown-timeout 0.5 " .. dir, "scheduler stopping", "TERM")
    assert.equal(0, code)
    assert.is_nil(out:find("second signal", 1, true))
    assert.matches("scheduler stopped", out, 1, true)
  end)

  it("exits at once, non-zero, on a second signal", function()
    dir = support.tempdir { ["busy.lua"] = job(3600) }
    local out, code = support.run_until("run --db " .. dir .. "/m.db " .. dir, "run started", { "TERM", "INT" })
    assert.equal(1, code)
    assert.matches("second signal: exiting at once signal=SIGINT runs=1", out, 1, true)
    assert.is_nil(out:find("scheduler stopped", 1, true))
  end)
end)
