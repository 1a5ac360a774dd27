-- Listeners: every kind of event, with the fields that apply, and a
-- listener that fails disturbing nothing.
local harness = require "tests.harness"
local time = require "moonbeat.time"

describe("listeners", function()
  local h, s
  before_each(function()
    h = harness.new()
    s = h.scheduler
  end)
  after_each(function() h:close() end)

  it("hear an added job's trigger, described, as the log line shows it", function()
    local heard = h:events { "added" }
    s.add_job { id = "c", trigger = { "cron", hour = 2, minute = 30 }, run = function() end }
    s.add_job { id = "i", trigger = { "interval", minutes = 90 }, run = function() end }
    assert.equal("cron[hour='2', minute='30']", heard[1].trigger)
    assert.equal("interval[1h30m]", heard[2].trigger)
    local lines = h:logged("job added")
    assert.equal("cron[hour='2', minute='30']", lines[1].fields.trigger)
    assert.equal("interval[1h30m]", lines[2].fields.trigger)
  end)

  it("see every kind of event", function()
    local seen = {}
    s.add_listener(function(ev) seen[ev.kind] = (seen[ev.kind] or 0) + 1 end)
    -- added, modified, paused, resumed, started, executed, removed
    h:record("plain", { "interval", seconds = 10 })
    s.modify_job("plain", { name = "Plain" })
    s.pause_job("plain")
    s.resume_job("plain")
    h:advance("10s")
    s.remove_job("plain")
    -- error, retry, retries_exhausted
    s.add_job { id = "failing", trigger = { "date", delay = 1 }, retry = { attempts = 2, delay = 1 },
      run = function() error("no") end }
    -- timeout
    s.add_job { id = "slow", trigger = { "date", delay = 1 }, timeout = 1,
      run = function() time.sleep(10) end }
    -- skipped, buffered, cancelled
    for _, overlap in ipairs { "skip", "buffer_one", "cancel_other" } do
      s.add_job { id = "busy-" .. overlap, trigger = { "interval", seconds = 5 }, overlap = overlap,
        run = function() time.sleep(7) end }
    end
    h:advance("12s")
    -- missed
    s.add_job { id = "strict", trigger = { "date", delay = 1 }, misfire_grace_time = 1,
      run = function() end }
    h:stall("5s")
    h:advance(0)
    local kinds = {}
    for kind in pairs(seen) do kinds[#kinds + 1] = kind end
    table.sort(kinds)
    assert.same({ "added", "buffered", "cancelled", "error", "executed", "missed", "modified",
      "paused", "removed", "resumed", "retries_exhausted", "retry", "skipped", "started",
      "timeout" }, kinds)
  end)

  it("get the fields that apply to each event", function()
    local events = h:events { "executed", "error" }
    s.add_job { id = "ok", trigger = { "date", delay = 5 }, run = function() time.sleep(2) end }
    s.add_job { id = "bad", trigger = { "date", delay = 5 }, run = function() error("boom") end }
    h:advance("10s")
    local ok, bad = events[2], events[1]
    assert.equal("executed", ok.kind)
    assert.equal("ok", ok.job_id)
    assert.is_number(ok.run_id)
    assert.equal(h.start + 5, ok.scheduled_time)
    assert.equal(h.start + 5, ok.start_time)
    assert.equal(2, ok.duration)
    assert.equal(1, ok.attempt)
    assert.is_nil(ok.error)
    assert.equal("error", bad.kind)
    assert.matches("boom", bad.error)
    assert.matches("stack traceback", bad.traceback)
  end)

  it("only hear the kinds they asked for", function()
    local events = h:events { "paused" }
    h:record("x", { "interval", seconds = 1 })
    h:advance("3s")
    s.pause_job("x")
    assert.equal(1, #events)
    assert.equal("paused", events[1].kind)
  end)

  it("that raise are logged, and the scheduler and other listeners go on", function()
    local after = {}
    s.add_listener(function() error("listener bug") end, { "executed" })
    s.add_listener(function(ev) after[#after + 1] = ev.job_id end, { "executed" })
    local fires = h:record("steady", { "interval", seconds = 10 })
    h:advance("30s")
    assert.same({ 10, 20, 30 }, fires)
    assert.same({ "steady", "steady", "steady" }, after)
    local failed = h:logged("listener failed")
    assert.equal(3, #failed)
    assert.matches("listener bug", failed[1].fields.error)
  end)

  it("can be removed", function()
    local count = 0
    local id = s.add_listener(function() count = count + 1 end, { "executed" })
    h:record("r", { "interval", seconds = 10 })
    h:advance("10s")
    assert.is_true(s.remove_listener(id))
    h:advance("10s")
    assert.equal(1, count)
    assert.is_false(s.remove_listener(id))
  end)

  it("refuse an unknown event kind", function()
    local ok, err = pcall(s.add_listener, function() end, { "exectued" })
    assert.is_false(ok)
    assert.matches("add_listener: 'exectued' is not an event kind %(expected added, ", err)
  end)
end)
