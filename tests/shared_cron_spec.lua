-- Jobs on the same schedule share one compiled cron expression; each
-- still behaves as if it had its own.
local harness = require "tests.harness"
local time = require "moonbeat.time"

describe("jobs on one cron schedule", function()
  local h
  before_each(function()
    h = harness.new { start = "2026-03-28T00:00:00Z", timezone = "UTC" }
  end)
  after_each(function() h:close() end)

  local function local_fires(fires, zone)
    local out = {}
    for i, s in ipairs(fires) do out[i] = time.format(h.start + s, zone) end
    return out
  end

  it("keep firing when another job on the schedule goes", function()
    local a = h:record("a", { "cron", hour = 6 })
    local b = h:record("b", { "cron", hour = 6 })
    h.scheduler.add_job { id = "c", trigger = "0 6 * * *", run = function() end }
    h:advance("1d")
    h.scheduler.remove_job("a")
    h.scheduler.remove_job("c")
    h:advance("2d")
    assert.equal(1, #a)
    assert.equal(3, #b)
    -- A new job on the same fields after every other holder went.
    h.scheduler.remove_job("b")
    local d = h:record("d", { "cron", hour = 6 })
    h:advance("1d")
    assert.equal(1, #d)
  end)

  it("keep their own DST choices for the same fields", function()
    local zone = "Europe/Berlin"
    local run = h:record("run", { "cron", hour = 2, minute = 30, timezone = zone })
    local skip = h:record("skip", { "cron", hour = 2, minute = 30, timezone = zone,
      dst_gap = "skip" })
    local text_run = h:record("text-run", { "cron", "30 2 * * *", timezone = zone })
    local text_skip = h:record("text-skip", { "cron", "30 2 * * *", timezone = zone,
      dst_gap = "skip" })
    h:advance("3d")
    local with_gap = {
      "2026-03-28T02:30:00+01:00", "2026-03-29T03:00:00+02:00",
      "2026-03-30T02:30:00+02:00",
    }
    local without = { "2026-03-28T02:30:00+01:00", "2026-03-30T02:30:00+02:00" }
    assert.same(with_gap, local_fires(run, zone))
    assert.same(without, local_fires(skip, zone))
    assert.same(with_gap, local_fires(text_run, zone))
    assert.same(without, local_fires(text_skip, zone))
  end)

  it("fire on an expression too long to share, each with a copy of its own", function()
    -- Over a thousand characters: too long for the sharing key.
    local list = {}
    for i = 1, 480 do list[i] = tostring(i % 4 * 15) end
    local minutes = table.concat(list, ",")
    assert.is_true(#minutes > 1100)
    local fields = h:record("fields", { "cron", minute = minutes })
    local again = h:record("again", { "cron", minute = minutes })
    h:advance("1h")
    assert.same({ 0, 900, 1800, 2700, 3600 }, fields)
    assert.same(fields, again)
    h.scheduler.remove_job("fields")
    h:advance("15m")
    assert.equal(6, #again)
  end)

  it("do not mix a field table with a crontab string of other meaning", function()
    -- hour = 6 alone means second 0, minute 0 (APScheduler's defaults);
    -- the string "6 * * * *" means minute 6 of every hour.
    local fields = h:record("fields", { "cron", hour = 6 })
    local text = h:record("text", "6 * * * *")
    h:advance("12h")
    assert.equal(1, #fields)
    assert.equal(12, #text)
  end)
end)
