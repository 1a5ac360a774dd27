-- max_instances and the overlap policies: what a fire does when the
-- job's runs are still going.
local harness = require "tests.harness"
local time = require "moonbeat.time"

describe("overlap", function()
  local h, s
  before_each(function()
    h = harness.new()
    s = h.scheduler
  end)
  after_each(function() h:close() end)

  -- Every 10 s, a run that takes 25 s; returns the (scheduled, started)
  -- pairs, seconds after start.
  local function slow_job(extra)
    local runs = {}
    local spec = { id = "slow", trigger = { "interval", seconds = 10 }, run = function(ctx)
      runs[#runs + 1] = { ctx.scheduled_time - h.start, time.now() - h.start }
      time.sleep(25)
    end }
    for k, v in pairs(extra or {}) do spec[k] = v end
    s.add_job(spec)
    return runs
  end

  local function kinds(events)
    local out = {}
    for i, ev in ipairs(events) do out[i] = ev.kind .. "@" .. math.floor(ev.scheduled_time - h.start) end
    return out
  end

  it("skips a fire while max_instances runs are going, by default", function()
    local events = h:events { "skipped", "buffered" }
    local runs = slow_job()
    h:advance("40s")
    assert.same({ { 10, 10 }, { 40, 40 } }, runs)
    assert.same({ "skipped@20", "skipped@30" }, kinds(events))
    assert.equal("max_instances (1) reached", events[1].reason)
    assert.equal(2, #h:logged("fire skipped"))
  end)

  it("runs up to max_instances at once", function()
    local runs = slow_job { max_instances = 2 }
    h:advance("30s")
    assert.same({ { 10, 10 }, { 20, 20 } }, runs)
    assert.equal(2, s.get_job("slow").running)
  end)

  it("buffer_one runs one held fire when a slot frees and skips the rest", function()
    local events = h:events { "skipped", "buffered" }
    local runs = slow_job { overlap = "buffer_one" }
    h:advance("40s")
    -- 20 waits for the run of 10 to end at 35; 30 finds the buffer full.
    assert.same({ { 10, 10 }, { 20, 35 } }, runs)
    assert.same({ "buffered@20", "skipped@30", "buffered@40" }, kinds(events))
  end)

  it("buffer_all queues every fire up to max_buffered and records the overflow", function()
    local events = h:events { "skipped", "buffered" }
    local runs = {}
    s.add_job { id = "slower", trigger = { "interval", seconds = 10 },
      overlap = "buffer_all", max_buffered = 2, run = function(ctx)
        runs[#runs + 1] = { ctx.scheduled_time - h.start, time.now() - h.start }
        time.sleep(45)
      end }
    h:advance("55s")
    assert.same({ "buffered@20", "buffered@30", "skipped@40", "skipped@50" }, kinds(events))
    assert.equal("max_instances reached and the buffer is full (2)", events[3].reason)
    h:advance("50s")
    -- The queue drains in order as each run ends.
    assert.same({ { 10, 10 }, { 20, 55 }, { 30, 100 } }, runs)
  end)

  it("cancel_other cancels the oldest run, even while it sleeps, then starts", function()
    local events = h:events { "cancelled" }
    local closed = 0
    s.add_job { id = "newest-wins", trigger = { "interval", seconds = 10 }, overlap = "cancel_other",
      run = function()
        local guard <close> = setmetatable({}, { __close = function() closed = closed + 1 end })
        time.sleep(25)
      end }
    h:advance("30s")
    assert.equal(2, #events)
    assert.equal(10, events[1].scheduled_time - h.start)
    assert.equal("replaced by a newer fire (overlap = cancel_other)", events[1].reason)
    assert.equal(2, closed)
    assert.equal(1, s.get_job("newest-wins").running)
    assert.equal(1, h:stats().runs)
  end)

  it("cancel_other reads the policy a listener of the cancel left the job with", function()
    local starts = 0
    s.add_job { id = "remade", trigger = { "interval", seconds = 10 }, overlap = "cancel_other",
      timeout = "777s", run = function() starts = starts + 1; time.sleep(25) end }
    s.add_listener(function()
      -- The job's old policy, held by it alone, goes with this change.
      s.modify_job("remade", { max_instances = 3 })
    end, { "cancelled" })
    h:advance("20s")
    assert.equal(2, starts)
    assert.equal(1, s.get_job("remade").running)
  end)

  it("allow_all has no limit", function()
    local runs = slow_job { overlap = "allow_all" }
    h:advance("30s")
    assert.equal(3, #runs)
    assert.equal(3, s.get_job("slow").running)
  end)

  it("drops buffered fires when the job is removed", function()
    local runs = slow_job { overlap = "buffer_all" }
    h:advance("30s")
    s.remove_job("slow")
    h:advance("1m")
    assert.equal(1, #runs)
  end)
end)
