-- The one clock: a single armed timer, no idle wake-ups, and fires
-- recomputed when the wall clock jumps.
local harness = require "tests.harness"

local HOUR, DAY = 3600, 86400

describe("the clock", function()
  local h
  before_each(function() h = harness.new() end)
  after_each(function() h:close() end)

  it("arms exactly one timer however many jobs are scheduled", function()
    for i = 1, 1000 do
      h:record("job-" .. i, { "interval", seconds = 10 + i })
    end
    assert.equal(1000, h:stats().jobs)
    assert.equal(1, h:stats().timers)
  end)

  it("arms no timer when nothing is scheduled", function()
    h:record("paused", { "interval", seconds = 10 }, { paused = true })
    assert.equal(0, h:stats().timers)
  end)

  it("wakes once per fire and never between fires", function()
    h:record("a", { "cron", hour = 3 })
    h:record("b", { "cron", hour = 9 })
    h:record("c", { "cron", hour = 21 })
    local before = h:stats().wakeups
    h:advance("1d")
    assert.equal(3, h:stats().wakeups - before)
  end)

  it("wakes once for jobs due at the same instant", function()
    for i = 1, 50 do h:record("same-" .. i, { "cron", minute = 30 }) end
    local before = h:stats().wakeups
    h:advance("1h")
    assert.equal(1, h:stats().wakeups - before)
  end)

  describe("a wall-clock jump", function()
    it("backwards: recomputes the next fires from the new wall time", function()
      local fires = h:record("tick", { "interval", seconds = 10 })
      h:advance("1m")
      assert.equal(6, #fires)
      h:jump(-DAY)
      h:advance("10s")
      -- Without the recomputation the next fire would be a day away.
      assert.equal(7, #fires)
      assert.equal(-DAY + 70, fires[7])
    end)

    it("backwards: a cron job fires at its next match after the new now", function()
      local fires = h:record("hourly", { "cron", minute = 0 })
      h:advance("3h")
      assert.same({ 0, HOUR, 2 * HOUR, 3 * HOUR }, fires)
      h:jump(-2 * HOUR - 30 * 60)
      h:advance("31m")
      assert.same({ 0, HOUR, 2 * HOUR, 3 * HOUR, HOUR }, fires)
    end)

    it("forwards: the fires it skipped run once, late, then the schedule goes on", function()
      local fires = h:record("hourly", { "cron", minute = 0, second = 0 })
      h:advance("30m")
      assert.same({ 0 }, fires)
      h:jump(5 * HOUR)
      h:advance(0)
      -- 01:00 .. 05:00 were skipped: they coalesce into one run of the latest.
      assert.same({ 0, 5 * HOUR }, fires)
      h:advance("30m")
      assert.same({ 0, 5 * HOUR, 6 * HOUR }, fires)
    end)

    it("is noticed without any timer falling due", function()
      local fires = h:record("daily", { "cron", hour = 12 })
      h:jump(-DAY)
      h:advance("12h")
      assert.same({ -DAY + 12 * HOUR }, fires)
    end)
  end)

  it("runs the fires a stalled loop missed once, coalesced", function()
    local fires = h:record("often", { "interval", seconds = 1 })
    -- One advance is one long stall: 3600 fires fall due together.
    h:jump(HOUR)
    h:advance(0)
    assert.same({ HOUR }, fires)
  end)

  it("lets real I/O happen under poll while virtual time stands still", function()
    local fires = h:record("often", { "interval", seconds = 1 })
    local before = h.core:now()
    h.core:poll(0.01)
    assert.equal(before, h.core:now())
    assert.same({}, fires)
    assert.is_true(h:settle(function() return true end))
    assert.is_false(h:settle(function() return false end, 0))
  end)
end)

-- The real clock's loop, in process: what it does at the end of each
-- turn, before it waits. The jobs used are due at once.
describe("the real clock's turns", function()
  local core = require "moonbeat.core"
  local time = require "moonbeat.time"

  it("does not wake again once its last timer fired, while the loop waits on other work", function()
    -- The run waits for a child process: the loop is kept alive by the
    -- child, not by the clock, whose heap is then empty.
    local exec = require "moonbeat.exec"
    local sched = assert(core.new { clock = "real" })
    local api = require("mb.scheduler").new(sched)
    local woke
    api.add_job { id = "waits", trigger = { "date", run_date = core.now() - 1 },
      misfire_grace_time = false, run = function()
        local before = sched:stats().wakeups
        assert(exec.run { "sleep", "0.3" })
        woke = sched:stats().wakeups - before
        api.shutdown()
      end }
    sched:run()
    sched:close()
    assert.equal(0, woke)
  end)
end)
