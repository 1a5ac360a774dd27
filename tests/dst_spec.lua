-- Cron and interval triggers across DST and other UTC offset changes.
--
-- Every expected fire is written as a local time with its offset, so it
-- can be checked against `zdump -v ZONE`: the transitions quoted above
-- each block are copied from zdump (tzdata 2025b). A fixed-hour
-- schedule (hour not '*' or a step) follows the wall clock and obeys
-- dst_gap and dst_repeat; a wildcard-hour one follows real time.
local harness = require "tests.harness"
local time = require "moonbeat.time"

local h

-- A fresh scheduler at `start` (UTC) for each test of the block.
local function starting(start)
  before_each(function()
    h = harness.new { start = start, timezone = "UTC" }
  end)
  after_each(function() h:close() end)
end

-- Add the trigger as a job, advance the clock by span and return the
-- fires as local times in the trigger's zone.
local function run(trigger, span)
  local fires = h:record("job", trigger)
  h:advance(span)
  local out = {}
  for i, s in ipairs(fires) do
    out[i] = time.format(h.start + s, trigger.timezone)
  end
  return out
end

-- The next n fires after local time `from`, as local times, and the
-- real seconds between consecutive fires.
local function preview(trigger, n, from)
  local zone = trigger.timezone
  local fires = h.scheduler.preview(trigger, n, harness.time(from, zone))
  local out, steps = {}, {}
  for i, t in ipairs(fires) do
    out[i] = time.format(t, zone)
    if i > 1 then steps[i - 1] = t - fires[i - 1] end
  end
  return out, steps
end

-- n copies of v: the expected real steps of an evenly spaced schedule.
local function rep(v, n)
  local out = {}
  for i = 1, n do out[i] = v end
  return out
end

describe("DST", function()
  describe("Europe/Berlin", function()
    local ZONE = "Europe/Berlin"

    -- 2026-03-29 02:00 CET (+01) jumps to 03:00 CEST (+02).
    describe("spring forward on 2026-03-29", function()
      starting "2026-03-28T00:00:00Z"

      it("runs a 02:30 job at 03:00, the end of the gap", function()
        assert.same({
          "2026-03-28T02:30:00+01:00",
          "2026-03-29T03:00:00+02:00",
          "2026-03-30T02:30:00+02:00",
        }, run({ "cron", hour = 2, minute = 30, timezone = ZONE }, "3d"))
      end)

      it("skips a 02:30 job that day with dst_gap = skip", function()
        assert.same({
          "2026-03-28T02:30:00+01:00",
          "2026-03-30T02:30:00+02:00",
        }, run({ "cron", hour = 2, minute = 30, timezone = ZONE,
          dst_gap = "skip" }, "3d"))
      end)

      it("fires once at 03:00 when 02:00 and 03:00 both match", function()
        assert.same({
          "2026-03-28T02:00:00+01:00",
          "2026-03-28T03:00:00+01:00",
          "2026-03-29T03:00:00+02:00",
          "2026-03-30T02:00:00+02:00",
          "2026-03-30T03:00:00+02:00",
        }, run({ "cron", hour = "2,3", timezone = ZONE }, "2d12h"))
      end)

      it("keeps the 03:00 run when searching from 01:59:59", function()
        local trigger = { "cron", hour = 2, minute = 30, timezone = ZONE }
        assert.same({ "2026-03-29T03:00:00+02:00" },
          preview(trigger, 1, "2026-03-29 01:59:59"))
      end)

      it("fires */15 every real 15 minutes straight through the gap", function()
        local fires, steps = preview(
          { "cron", "*/15 * * * *", timezone = ZONE }, 8, "2026-03-29 00:50")
        assert.same({
          "2026-03-29T01:00:00+01:00", "2026-03-29T01:15:00+01:00",
          "2026-03-29T01:30:00+01:00", "2026-03-29T01:45:00+01:00",
          "2026-03-29T03:00:00+02:00", "2026-03-29T03:15:00+02:00",
          "2026-03-29T03:30:00+02:00", "2026-03-29T03:45:00+02:00",
        }, fires)
        assert.same(rep(900, 7), steps)
      end)

      it("lets wildcard hours ignore dst_gap and dst_repeat", function()
        local plain = preview({ "cron", minute = "*/15", timezone = ZONE },
          8, "2026-03-29 00:50")
        local opted = preview({ "cron", minute = "*/15", timezone = ZONE,
          dst_gap = "skip", dst_repeat = "both" }, 8, "2026-03-29 00:50")
        assert.same(plain, opted)
        assert.equal("2026-03-29T03:00:00+02:00", opted[5])
      end)

      it("counts a stepped hour as wildcard and follows real time", function()
        assert.same({
          "2026-03-29T00:00:00+01:00",
          "2026-03-29T01:00:00+01:00",
          "2026-03-29T03:00:00+02:00",
          "2026-03-29T04:00:00+02:00",
        }, preview({ "cron", hour = "*/1", timezone = ZONE, dst_gap = "run" },
          4, "2026-03-28 23:30"))
      end)

      it("runs a daily interval 24 real hours apart: 13:00 after it", function()
        assert.same({
          "2026-03-28T12:00:00+01:00",
          "2026-03-29T13:00:00+02:00",
          "2026-03-30T13:00:00+02:00",
        }, run({ "interval", days = 1, start_date = "2026-03-28 12:00",
          timezone = ZONE }, "3d"))
      end)

      it("runs an hourly interval from 01:00 straight to 03:00", function()
        assert.same({
          "2026-03-29T00:00:00+01:00",
          "2026-03-29T01:00:00+01:00",
          "2026-03-29T03:00:00+02:00",
          "2026-03-29T04:00:00+02:00",
        }, preview({ "interval", hours = 1, start_date = "2026-03-29 00:00",
          timezone = ZONE }, 4, "2026-03-28 23:30"))
      end)
    end)

    -- 2026-10-25 03:00 CEST (+02) falls back to 02:00 CET (+01).
    describe("fall back on 2026-10-25", function()
      starting "2026-10-24T00:00:00Z"

      it("runs a 02:30 job at the first 02:30 only", function()
        assert.same({
          "2026-10-24T02:30:00+02:00",
          "2026-10-25T02:30:00+02:00",
          "2026-10-26T02:30:00+01:00",
        }, run({ "cron", hour = 2, minute = 30, timezone = ZONE }, "3d"))
      end)

      it("runs it at the second 02:30 only with dst_repeat = last", function()
        assert.same({
          "2026-10-24T02:30:00+02:00",
          "2026-10-25T02:30:00+01:00",
          "2026-10-26T02:30:00+01:00",
        }, run({ "cron", hour = 2, minute = 30, timezone = ZONE,
          dst_repeat = "last" }, "3d"))
      end)

      it("runs it at both 02:30s with dst_repeat = both", function()
        assert.same({
          "2026-10-24T02:30:00+02:00",
          "2026-10-25T02:30:00+02:00",
          "2026-10-25T02:30:00+01:00",
          "2026-10-26T02:30:00+01:00",
        }, run({ "cron", hour = 2, minute = 30, timezone = ZONE,
          dst_repeat = "both" }, "3d"))
      end)

      it("reads a crontab string's options the same way", function()
        assert.same({
          "2026-10-24T02:30:00+02:00",
          "2026-10-25T02:30:00+02:00",
          "2026-10-25T02:30:00+01:00",
          "2026-10-26T02:30:00+01:00",
        }, run({ "cron", "30 2 * * *", timezone = ZONE,
          dst_repeat = "both" }, "3d"))
      end)

      it("skips the second 02:30 when searching from 02:10 +01", function()
        local trigger = { "cron", hour = 2, minute = 30, timezone = ZONE }
        -- 2026-10-25 01:10 UTC is the second 02:10, +01:00.
        local fires = h.scheduler.preview(trigger, 1,
          harness.time("2026-10-25T01:10:00Z"))
        assert.equal("2026-10-26T02:30:00+01:00", time.format(fires[1], ZONE))
      end)

      it("fires */15 in both 02:00 hours, 15 real minutes apart", function()
        local fires, steps = preview(
          { "cron", "*/15 * * * *", timezone = ZONE }, 10, "2026-10-25 01:50")
        assert.same({
          "2026-10-25T02:00:00+02:00", "2026-10-25T02:15:00+02:00",
          "2026-10-25T02:30:00+02:00", "2026-10-25T02:45:00+02:00",
          "2026-10-25T02:00:00+01:00", "2026-10-25T02:15:00+01:00",
          "2026-10-25T02:30:00+01:00", "2026-10-25T02:45:00+01:00",
          "2026-10-25T03:00:00+01:00", "2026-10-25T03:15:00+01:00",
        }, fires)
        assert.same(rep(900, 9), steps)
      end)

      it("runs a daily interval 24 real hours apart: 11:00 after it", function()
        assert.same({
          "2026-10-24T12:00:00+02:00",
          "2026-10-25T11:00:00+01:00",
          "2026-10-26T11:00:00+01:00",
        }, run({ "interval", days = 1, start_date = "2026-10-24 12:00",
          timezone = ZONE }, "3d"))
      end)

      it("runs an hourly interval at 02:00 twice", function()
        assert.same({
          "2026-10-25T01:00:00+02:00",
          "2026-10-25T02:00:00+02:00",
          "2026-10-25T02:00:00+01:00",
          "2026-10-25T03:00:00+01:00",
        }, preview({ "interval", hours = 1, start_date = "2026-10-25 01:00",
          timezone = ZONE }, 4, "2026-10-25 00:30"))
      end)
    end)
  end)

  describe("America/New_York", function()
    local ZONE = "America/New_York"

    -- 2026-03-08 02:00 EST (-05) jumps to 03:00 EDT (-04).
    describe("spring forward on 2026-03-08", function()
      starting "2026-03-07T05:00:00Z"

      it("runs a 02:30 job at 03:00", function()
        assert.same({
          "2026-03-07T02:30:00-05:00",
          "2026-03-08T03:00:00-04:00",
          "2026-03-09T02:30:00-04:00",
        }, run({ "cron", hour = 2, minute = 30, timezone = ZONE }, "3d"))
      end)

      it("skips a 02:30 job that day with dst_gap = skip", function()
        assert.same({
          "2026-03-07T02:30:00-05:00",
          "2026-03-09T02:30:00-04:00",
        }, run({ "cron", "30 2 * * *", timezone = ZONE, dst_gap = "skip" },
          "3d"))
      end)

      it("fires hourly every real hour, 01:00 then 03:00", function()
        local fires, steps = preview(
          { "cron", "0 * * * *", timezone = ZONE }, 4, "2026-03-08 00:30")
        assert.same({
          "2026-03-08T01:00:00-05:00", "2026-03-08T03:00:00-04:00",
          "2026-03-08T04:00:00-04:00", "2026-03-08T05:00:00-04:00",
        }, fires)
        assert.same(rep(3600, 3), steps)
      end)

      it("runs a 30-minute interval across the jump in real time", function()
        assert.same({
          "2026-03-08T01:00:00-05:00", "2026-03-08T01:30:00-05:00",
          "2026-03-08T03:00:00-04:00", "2026-03-08T03:30:00-04:00",
        }, preview({ "interval", minutes = 30, start_date = "2026-03-08 01:00",
          timezone = ZONE }, 4, "2026-03-08 00:00"))
      end)
    end)

    -- 2026-11-01 02:00 EDT (-04) falls back to 01:00 EST (-05).
    describe("fall back on 2026-11-01", function()
      starting "2026-10-31T04:00:00Z"

      it("runs a 01:30 job at the first 01:30 only", function()
        assert.same({
          "2026-10-31T01:30:00-04:00",
          "2026-11-01T01:30:00-04:00",
          "2026-11-02T01:30:00-05:00",
        }, run({ "cron", hour = 1, minute = 30, timezone = ZONE }, "3d"))
      end)

      it("runs it at the second 01:30 only with dst_repeat = last", function()
        assert.same({
          "2026-10-31T01:30:00-04:00",
          "2026-11-01T01:30:00-05:00",
          "2026-11-02T01:30:00-05:00",
        }, run({ "cron", hour = 1, minute = 30, timezone = ZONE,
          dst_repeat = "last" }, "3d"))
      end)

      it("runs it at both 01:30s with dst_repeat = both", function()
        assert.same({
          "2026-10-31T01:30:00-04:00",
          "2026-11-01T01:30:00-04:00",
          "2026-11-01T01:30:00-05:00",
          "2026-11-02T01:30:00-05:00",
        }, run({ "cron", hour = 1, minute = 30, timezone = ZONE,
          dst_repeat = "both" }, "3d"))
      end)

      it("fires hourly every real hour, 01:00 twice", function()
        local fires, steps = preview(
          { "cron", "0 * * * *", timezone = ZONE }, 4, "2026-11-01 00:30")
        assert.same({
          "2026-11-01T01:00:00-04:00", "2026-11-01T01:00:00-05:00",
          "2026-11-01T02:00:00-05:00", "2026-11-01T03:00:00-05:00",
        }, fires)
        assert.same(rep(3600, 3), steps)
      end)

      it("runs a 30-minute interval through both 01:00 hours", function()
        assert.same({
          "2026-11-01T01:00:00-04:00", "2026-11-01T01:30:00-04:00",
          "2026-11-01T01:00:00-05:00", "2026-11-01T01:30:00-05:00",
          "2026-11-01T02:00:00-05:00",
        }, preview({ "interval", minutes = 30, start_date = "2026-11-01 01:00",
          timezone = ZONE }, 5, "2026-11-01 00:00"))
      end)
    end)
  end)

  describe("Australia/Lord_Howe (30-minute DST)", function()
    local ZONE = "Australia/Lord_Howe"

    -- 2026-10-04 02:00 +10:30 jumps to 02:30 +11.
    describe("spring forward on 2026-10-04", function()
      starting "2026-10-02T13:30:00Z"

      it("runs a 02:15 job at 02:30", function()
        assert.same({
          "2026-10-03T02:15:00+10:30",
          "2026-10-04T02:30:00+11:00",
          "2026-10-05T02:15:00+11:00",
        }, run({ "cron", hour = 2, minute = 15, timezone = ZONE }, "3d"))
      end)

      it("skips a 02:15 job that day with dst_gap = skip", function()
        assert.same({
          "2026-10-03T02:15:00+10:30",
          "2026-10-05T02:15:00+11:00",
        }, run({ "cron", hour = 2, minute = 15, timezone = ZONE,
          dst_gap = "skip" }, "3d"))
      end)

      it("leaves a 02:45 job alone: only half an hour is skipped", function()
        assert.same({
          "2026-10-03T02:45:00+10:30",
          "2026-10-04T02:45:00+11:00",
          "2026-10-05T02:45:00+11:00",
        }, run({ "cron", hour = 2, minute = 45, timezone = ZONE,
          dst_gap = "skip" }, "3d"))
      end)

      it("fires */15 every real 15 minutes, 01:45 then 02:30", function()
        local fires, steps = preview(
          { "cron", "*/15 * * * *", timezone = ZONE }, 5, "2026-10-04 01:20")
        assert.same({
          "2026-10-04T01:30:00+10:30", "2026-10-04T01:45:00+10:30",
          "2026-10-04T02:30:00+11:00", "2026-10-04T02:45:00+11:00",
          "2026-10-04T03:00:00+11:00",
        }, fires)
        assert.same(rep(900, 4), steps)
      end)

      it("runs a 30-minute interval from 01:30 straight to 02:30", function()
        assert.same({
          "2026-10-04T01:00:00+10:30", "2026-10-04T01:30:00+10:30",
          "2026-10-04T02:30:00+11:00", "2026-10-04T03:00:00+11:00",
        }, preview({ "interval", minutes = 30, start_date = "2026-10-04 01:00",
          timezone = ZONE }, 4, "2026-10-04 00:30"))
      end)
    end)

    -- 2026-04-05 02:00 +11 falls back to 01:30 +10:30.
    describe("fall back on 2026-04-05", function()
      starting "2026-04-03T13:00:00Z"

      it("runs a 01:45 job at the first 01:45 only", function()
        assert.same({
          "2026-04-04T01:45:00+11:00",
          "2026-04-05T01:45:00+11:00",
          "2026-04-06T01:45:00+10:30",
        }, run({ "cron", hour = 1, minute = 45, timezone = ZONE }, "3d"))
      end)

      it("runs it at the second 01:45 only with dst_repeat = last", function()
        assert.same({
          "2026-04-04T01:45:00+11:00",
          "2026-04-05T01:45:00+10:30",
          "2026-04-06T01:45:00+10:30",
        }, run({ "cron", hour = 1, minute = 45, timezone = ZONE,
          dst_repeat = "last" }, "3d"))
      end)

      it("runs it at both 01:45s with dst_repeat = both", function()
        assert.same({
          "2026-04-04T01:45:00+11:00",
          "2026-04-05T01:45:00+11:00",
          "2026-04-05T01:45:00+10:30",
          "2026-04-06T01:45:00+10:30",
        }, run({ "cron", hour = 1, minute = 45, timezone = ZONE,
          dst_repeat = "both" }, "3d"))
      end)

      it("runs a 01:15 job once: 01:15 is not repeated", function()
        assert.same({
          "2026-04-04T01:15:00+11:00",
          "2026-04-05T01:15:00+11:00",
          "2026-04-06T01:15:00+10:30",
        }, run({ "cron", hour = 1, minute = 15, timezone = ZONE,
          dst_repeat = "both" }, "3d"))
      end)

      it("fires */15 in both 01:30s, 15 real minutes apart", function()
        local fires, steps = preview(
          { "cron", "*/15 * * * *", timezone = ZONE }, 5, "2026-04-05 01:20")
        assert.same({
          "2026-04-05T01:30:00+11:00", "2026-04-05T01:45:00+11:00",
          "2026-04-05T01:30:00+10:30", "2026-04-05T01:45:00+10:30",
          "2026-04-05T02:00:00+10:30",
        }, fires)
        assert.same(rep(900, 4), steps)
      end)

      it("runs a 30-minute interval at 01:30 twice", function()
        assert.same({
          "2026-04-05T01:00:00+11:00", "2026-04-05T01:30:00+11:00",
          "2026-04-05T01:30:00+10:30", "2026-04-05T02:00:00+10:30",
        }, preview({ "interval", minutes = 30, start_date = "2026-04-05 01:00",
          timezone = ZONE }, 4, "2026-04-05 00:30"))
      end)
    end)
  end)

  describe("Pacific/Chatham (+12:45 and +13:45)", function()
    local ZONE = "Pacific/Chatham"

    -- 2026-09-27 02:45 +12:45 jumps to 03:45 +13:45.
    describe("spring forward on 2026-09-27", function()
      starting "2026-09-25T11:15:00Z"

      it("runs a 03:00 job at 03:45", function()
        assert.same({
          "2026-09-26T03:00:00+12:45",
          "2026-09-27T03:45:00+13:45",
          "2026-09-28T03:00:00+13:45",
        }, run({ "cron", hour = 3, timezone = ZONE }, "3d"))
      end)

      it("skips a 03:00 job that day with dst_gap = skip", function()
        assert.same({
          "2026-09-26T03:00:00+12:45",
          "2026-09-28T03:00:00+13:45",
        }, run({ "cron", hour = 3, timezone = ZONE, dst_gap = "skip" }, "3d"))
      end)

      it("fires */15 every real 15 minutes, 02:30 then 03:45", function()
        local fires, steps = preview(
          { "cron", "*/15 * * * *", timezone = ZONE }, 4, "2026-09-27 02:10")
        assert.same({
          "2026-09-27T02:15:00+12:45", "2026-09-27T02:30:00+12:45",
          "2026-09-27T03:45:00+13:45", "2026-09-27T04:00:00+13:45",
        }, fires)
        assert.same(rep(900, 3), steps)
      end)

      it("runs an hourly interval from 01:45 to 03:45", function()
        assert.same({
          "2026-09-27T01:45:00+12:45", "2026-09-27T03:45:00+13:45",
          "2026-09-27T04:45:00+13:45",
        }, preview({ "interval", hours = 1, start_date = "2026-09-27 01:45",
          timezone = ZONE }, 3, "2026-09-27 01:00"))
      end)
    end)

    -- 2026-04-05 03:45 +13:45 falls back to 02:45 +12:45.
    describe("fall back on 2026-04-05", function()
      starting "2026-04-03T10:15:00Z"

      it("runs a 03:00 job at the first 03:00 only", function()
        assert.same({
          "2026-04-04T03:00:00+13:45",
          "2026-04-05T03:00:00+13:45",
          "2026-04-06T03:00:00+12:45",
        }, run({ "cron", hour = 3, timezone = ZONE }, "3d"))
      end)

      it("runs it at the second 03:00 only with dst_repeat = last", function()
        assert.same({
          "2026-04-04T03:00:00+13:45",
          "2026-04-05T03:00:00+12:45",
          "2026-04-06T03:00:00+12:45",
        }, run({ "cron", hour = 3, timezone = ZONE,
          dst_repeat = "last" }, "3d"))
      end)

      it("runs it at both 03:00s with dst_repeat = both", function()
        assert.same({
          "2026-04-04T03:00:00+13:45",
          "2026-04-05T03:00:00+13:45",
          "2026-04-05T03:00:00+12:45",
          "2026-04-06T03:00:00+12:45",
        }, run({ "cron", hour = 3, timezone = ZONE,
          dst_repeat = "both" }, "3d"))
      end)

      it("fires */15 back from 03:30 to 02:45 in 15 real minutes", function()
        local fires, steps = preview(
          { "cron", "*/15 * * * *", timezone = ZONE }, 4, "2026-04-05 03:10")
        assert.same({
          "2026-04-05T03:15:00+13:45", "2026-04-05T03:30:00+13:45",
          "2026-04-05T02:45:00+12:45", "2026-04-05T03:00:00+12:45",
        }, fires)
        assert.same(rep(900, 3), steps)
      end)

      it("runs an hourly interval from 03:15 back to 03:15", function()
        assert.same({
          "2026-04-05T02:15:00+13:45", "2026-04-05T03:15:00+13:45",
          "2026-04-05T03:15:00+12:45", "2026-04-05T04:15:00+12:45",
        }, preview({ "interval", hours = 1, start_date = "2026-04-05 02:15",
          timezone = ZONE }, 4, "2026-04-05 02:00"))
      end)
    end)
  end)

  describe("America/St_Johns (-3:30)", function()
    local ZONE = "America/St_Johns"

    -- 2026-03-08 02:00 NST (-03:30) jumps to 03:00 NDT (-02:30).
    describe("spring forward on 2026-03-08", function()
      starting "2026-03-07T03:30:00Z"

      it("runs a 02:30 job at 03:00", function()
        assert.same({
          "2026-03-07T02:30:00-03:30",
          "2026-03-08T03:00:00-02:30",
          "2026-03-09T02:30:00-02:30",
        }, run({ "cron", hour = 2, minute = 30, timezone = ZONE }, "3d"))
      end)

      it("skips a 02:30 job that day with dst_gap = skip", function()
        assert.same({
          "2026-03-07T02:30:00-03:30",
          "2026-03-09T02:30:00-02:30",
        }, run({ "cron", hour = 2, minute = 30, timezone = ZONE,
          dst_gap = "skip" }, "3d"))
      end)

      it("fires */15 every real 15 minutes, 01:45 then 03:00", function()
        local fires, steps = preview(
          { "cron", "*/15 * * * *", timezone = ZONE }, 4, "2026-03-08 01:20")
        assert.same({
          "2026-03-08T01:30:00-03:30", "2026-03-08T01:45:00-03:30",
          "2026-03-08T03:00:00-02:30", "2026-03-08T03:15:00-02:30",
        }, fires)
        assert.same(rep(900, 3), steps)
      end)

      it("runs an hourly interval from 01:30 to 03:30", function()
        assert.same({
          "2026-03-08T00:30:00-03:30", "2026-03-08T01:30:00-03:30",
          "2026-03-08T03:30:00-02:30",
        }, preview({ "interval", hours = 1, start_date = "2026-03-08 00:30",
          timezone = ZONE }, 3, "2026-03-08 00:00"))
      end)
    end)

    -- 2026-11-01 02:00 NDT (-02:30) falls back to 01:00 NST (-03:30).
    describe("fall back on 2026-11-01", function()
      starting "2026-10-31T02:30:00Z"

      it("runs a 01:30 job at the first 01:30 only", function()
        assert.same({
          "2026-10-31T01:30:00-02:30",
          "2026-11-01T01:30:00-02:30",
          "2026-11-02T01:30:00-03:30",
        }, run({ "cron", hour = 1, minute = 30, timezone = ZONE }, "3d"))
      end)

      it("runs it at the second 01:30 only with dst_repeat = last", function()
        assert.same({
          "2026-10-31T01:30:00-02:30",
          "2026-11-01T01:30:00-03:30",
          "2026-11-02T01:30:00-03:30",
        }, run({ "cron", hour = 1, minute = 30, timezone = ZONE,
          dst_repeat = "last" }, "3d"))
      end)

      it("runs it at both 01:30s with dst_repeat = both", function()
        assert.same({
          "2026-10-31T01:30:00-02:30",
          "2026-11-01T01:30:00-02:30",
          "2026-11-01T01:30:00-03:30",
          "2026-11-02T01:30:00-03:30",
        }, run({ "cron", hour = 1, minute = 30, timezone = ZONE,
          dst_repeat = "both" }, "3d"))
      end)

      it("fires */15 in both 01:00 hours, 15 real minutes apart", function()
        local fires, steps = preview(
          { "cron", "*/15 * * * *", timezone = ZONE }, 6, "2026-11-01 01:35")
        assert.same({
          "2026-11-01T01:45:00-02:30", "2026-11-01T01:00:00-03:30",
          "2026-11-01T01:15:00-03:30", "2026-11-01T01:30:00-03:30",
          "2026-11-01T01:45:00-03:30", "2026-11-01T02:00:00-03:30",
        }, fires)
        assert.same(rep(900, 5), steps)
      end)

      it("runs an hourly interval at 01:30 twice", function()
        assert.same({
          "2026-11-01T00:30:00-02:30", "2026-11-01T01:30:00-02:30",
          "2026-11-01T01:30:00-03:30", "2026-11-01T02:30:00-03:30",
        }, preview({ "interval", hours = 1, start_date = "2026-11-01 00:30",
          timezone = ZONE }, 4, "2026-11-01 00:00"))
      end)
    end)
  end)

  describe("Asia/Kolkata (no DST)", function()
    local ZONE = "Asia/Kolkata"
    starting "2026-03-28T00:00:00Z"

    it("runs a 02:30 job every day whatever the DST options", function()
      assert.same({
        "2026-03-29T02:30:00+05:30",
        "2026-03-30T02:30:00+05:30",
        "2026-03-31T02:30:00+05:30",
      }, run({ "cron", hour = 2, minute = 30, timezone = ZONE,
        dst_gap = "skip", dst_repeat = "both" }, "3d"))
    end)

    it("fires */15 on the quarter hour while Europe changes", function()
      local fires, steps = preview(
        { "cron", "*/15 * * * *", timezone = ZONE }, 3, "2026-03-29 06:20")
      -- 06:30 +05:30 is 01:00 UTC, the instant Europe springs forward.
      assert.same({
        "2026-03-29T06:30:00+05:30", "2026-03-29T06:45:00+05:30",
        "2026-03-29T07:00:00+05:30",
      }, fires)
      assert.same(rep(900, 2), steps)
    end)

    it("runs a daily interval at the same local time every day", function()
      assert.same({
        "2026-03-28T12:00:00+05:30",
        "2026-03-29T12:00:00+05:30",
        "2026-03-30T12:00:00+05:30",
      }, run({ "interval", days = 1, start_date = "2026-03-28 12:00",
        timezone = ZONE }, "3d"))
    end)
  end)

  describe("America/Santiago (changes at midnight)", function()
    local ZONE = "America/Santiago"

    -- 2026-09-06 00:00 -04 jumps to 01:00 -03: 00:30 never happens.
    describe("spring forward on 2026-09-06", function()
      starting "2026-09-05T04:00:00Z"

      it("runs a daily 00:30 job at 01:00", function()
        assert.same({
          "2026-09-05T00:30:00-04:00",
          "2026-09-06T01:00:00-03:00",
          "2026-09-07T00:30:00-03:00",
        }, run({ "cron", hour = 0, minute = 30, timezone = ZONE }, "2d"))
      end)

      it("skips the daily 00:30 job that day with dst_gap = skip", function()
        assert.same({
          "2026-09-05T00:30:00-04:00",
          "2026-09-07T00:30:00-03:00",
        }, run({ "cron", hour = 0, minute = 30, timezone = ZONE,
          dst_gap = "skip" }, "2d"))
      end)

      it("fires */15 every real 15 minutes, 23:45 then 01:00", function()
        local fires, steps = preview(
          { "cron", "*/15 * * * *", timezone = ZONE }, 3, "2026-09-05 23:40")
        assert.same({
          "2026-09-05T23:45:00-04:00", "2026-09-06T01:00:00-03:00",
          "2026-09-06T01:15:00-03:00",
        }, fires)
        assert.same(rep(900, 2), steps)
      end)

      it("runs an hourly interval from 23:00 to 01:00", function()
        assert.same({
          "2026-09-05T23:00:00-04:00", "2026-09-06T01:00:00-03:00",
          "2026-09-06T02:00:00-03:00",
        }, preview({ "interval", hours = 1, start_date = "2026-09-05 23:00",
          timezone = ZONE }, 3, "2026-09-05 22:00"))
      end)
    end)

    -- 2026-04-05 00:00 -03 falls back to 2026-04-04 23:00 -04: the hour
    -- before midnight repeats, 00:30 happens once.
    describe("fall back on 2026-04-05", function()
      starting "2026-04-04T03:00:00Z"

      it("runs a daily 00:30 job once on each day", function()
        assert.same({
          "2026-04-04T00:30:00-03:00",
          "2026-04-05T00:30:00-04:00",
          "2026-04-06T00:30:00-04:00",
        }, run({ "cron", hour = 0, minute = 30, timezone = ZONE,
          dst_repeat = "both" }, "3d"))
      end)

      it("runs a daily 23:30 job at the first 23:30 only", function()
        assert.same({
          "2026-04-04T23:30:00-03:00",
          "2026-04-05T23:30:00-04:00",
        }, run({ "cron", hour = 23, minute = 30, timezone = ZONE }, "2d1h"))
      end)

      it("runs it at the second 23:30 only with dst_repeat = last", function()
        assert.same({
          "2026-04-04T23:30:00-04:00",
          "2026-04-05T23:30:00-04:00",
        }, run({ "cron", hour = 23, minute = 30, timezone = ZONE,
          dst_repeat = "last" }, "2d1h"))
      end)

      it("runs it at both 23:30s with dst_repeat = both", function()
        assert.same({
          "2026-04-04T23:30:00-03:00",
          "2026-04-04T23:30:00-04:00",
          "2026-04-05T23:30:00-04:00",
        }, run({ "cron", hour = 23, minute = 30, timezone = ZONE,
          dst_repeat = "both" }, "2d1h"))
      end)

      it("fires */15 in both 23:00 hours, 15 real minutes apart", function()
        local fires, steps = preview(
          { "cron", "*/15 * * * *", timezone = ZONE }, 6, "2026-04-04 23:35")
        assert.same({
          "2026-04-04T23:45:00-03:00", "2026-04-04T23:00:00-04:00",
          "2026-04-04T23:15:00-04:00", "2026-04-04T23:30:00-04:00",
          "2026-04-04T23:45:00-04:00", "2026-04-05T00:00:00-04:00",
        }, fires)
        assert.same(rep(900, 5), steps)
      end)

      it("runs an hourly interval at 23:30 twice", function()
        assert.same({
          "2026-04-04T22:30:00-03:00", "2026-04-04T23:30:00-03:00",
          "2026-04-04T23:30:00-04:00", "2026-04-05T00:30:00-04:00",
        }, preview({ "interval", hours = 1, start_date = "2026-04-04 22:30",
          timezone = ZONE }, 4, "2026-04-04 22:00"))
      end)
    end)
  end)

  describe("Africa/Cairo (changes at midnight)", function()
    local ZONE = "Africa/Cairo"

    -- 2026-04-24 00:00 EET (+02) jumps to 01:00 EEST (+03).
    describe("spring forward on 2026-04-24", function()
      starting "2026-04-22T22:00:00Z"

      it("runs a daily 00:30 job at 01:00", function()
        assert.same({
          "2026-04-23T00:30:00+02:00",
          "2026-04-24T01:00:00+03:00",
          "2026-04-25T00:30:00+03:00",
        }, run({ "cron", hour = 0, minute = 30, timezone = ZONE }, "2d"))
      end)

      it("skips the daily 00:30 job that day with dst_gap = skip", function()
        assert.same({
          "2026-04-23T00:30:00+02:00",
          "2026-04-25T00:30:00+03:00",
        }, run({ "cron", hour = 0, minute = 30, timezone = ZONE,
          dst_gap = "skip" }, "2d"))
      end)

      it("fires */15 every real 15 minutes, 23:45 then 01:00", function()
        local fires, steps = preview(
          { "cron", "*/15 * * * *", timezone = ZONE }, 3, "2026-04-23 23:40")
        assert.same({
          "2026-04-23T23:45:00+02:00", "2026-04-24T01:00:00+03:00",
          "2026-04-24T01:15:00+03:00",
        }, fires)
        assert.same(rep(900, 2), steps)
      end)

      it("runs an hourly interval from 23:00 to 01:00", function()
        assert.same({
          "2026-04-23T23:00:00+02:00", "2026-04-24T01:00:00+03:00",
          "2026-04-24T02:00:00+03:00",
        }, preview({ "interval", hours = 1, start_date = "2026-04-23 23:00",
          timezone = ZONE }, 3, "2026-04-23 22:00"))
      end)
    end)

    -- 2026-10-30 00:00 EEST (+03) falls back to 2026-10-29 23:00 EET
    -- (+02): the hour before midnight repeats, 00:30 happens once.
    describe("fall back on 2026-10-29", function()
      starting "2026-10-28T21:00:00Z"

      it("runs a daily 00:30 job once on each day", function()
        assert.same({
          "2026-10-29T00:30:00+03:00",
          "2026-10-30T00:30:00+02:00",
        }, run({ "cron", hour = 0, minute = 30, timezone = ZONE,
          dst_repeat = "both" }, "2d"))
      end)

      it("runs a daily 23:30 job at the first 23:30 only", function()
        assert.same({ "2026-10-29T23:30:00+03:00" },
          run({ "cron", hour = 23, minute = 30, timezone = ZONE }, "2d"))
      end)

      it("runs it at the second 23:30 only with dst_repeat = last", function()
        assert.same({ "2026-10-29T23:30:00+02:00" },
          run({ "cron", hour = 23, minute = 30, timezone = ZONE,
            dst_repeat = "last" }, "2d"))
      end)

      it("runs it at both 23:30s with dst_repeat = both", function()
        assert.same({
          "2026-10-29T23:30:00+03:00",
          "2026-10-29T23:30:00+02:00",
        }, run({ "cron", hour = 23, minute = 30, timezone = ZONE,
          dst_repeat = "both" }, "2d"))
      end)

      it("fires */15 in both 23:00 hours, 15 real minutes apart", function()
        local fires, steps = preview(
          { "cron", "*/15 * * * *", timezone = ZONE }, 6, "2026-10-29 23:35")
        assert.same({
          "2026-10-29T23:45:00+03:00", "2026-10-29T23:00:00+02:00",
          "2026-10-29T23:15:00+02:00", "2026-10-29T23:30:00+02:00",
          "2026-10-29T23:45:00+02:00", "2026-10-30T00:00:00+02:00",
        }, fires)
        assert.same(rep(900, 5), steps)
      end)

      it("runs an hourly interval at 23:00 twice", function()
        assert.same({
          "2026-10-29T22:00:00+03:00", "2026-10-29T23:00:00+03:00",
          "2026-10-29T23:00:00+02:00", "2026-10-30T00:00:00+02:00",
        }, preview({ "interval", hours = 1, start_date = "2026-10-29 22:00",
          timezone = ZONE }, 4, "2026-10-29 21:00"))
      end)
    end)
  end)

  describe("Antarctica/Troll (+00 and +02)", function()
    local ZONE = "Antarctica/Troll"

    -- 2026-03-29 01:00 +00 jumps to 03:00 +02: two hours never happen.
    describe("spring forward on 2026-03-29", function()
      starting "2026-03-28T00:00:00Z"

      it("runs a 02:00 job at 03:00", function()
        assert.same({
          "2026-03-28T02:00:00+00:00",
          "2026-03-29T03:00:00+02:00",
          "2026-03-30T02:00:00+02:00",
        }, run({ "cron", hour = 2, timezone = ZONE }, "2d12h"))
      end)

      it("runs its 01:00 and 02:00 runs once, together, at 03:00", function()
        assert.same({
          "2026-03-28T01:00:00+00:00",
          "2026-03-28T02:00:00+00:00",
          "2026-03-29T03:00:00+02:00",
          "2026-03-30T01:00:00+02:00",
          "2026-03-30T02:00:00+02:00",
        }, run({ "cron", hour = "1-2", timezone = ZONE }, "2d12h"))
      end)

      it("skips both with dst_gap = skip", function()
        assert.same({
          "2026-03-28T01:00:00+00:00",
          "2026-03-28T02:00:00+00:00",
          "2026-03-30T01:00:00+02:00",
          "2026-03-30T02:00:00+02:00",
        }, run({ "cron", hour = "1-2", timezone = ZONE, dst_gap = "skip" },
          "2d12h"))
      end)

      it("fires */15 every real 15 minutes, 00:45 then 03:00", function()
        local fires, steps = preview(
          { "cron", "*/15 * * * *", timezone = ZONE }, 3, "2026-03-29 00:40")
        assert.same({
          "2026-03-29T00:45:00+00:00", "2026-03-29T03:00:00+02:00",
          "2026-03-29T03:15:00+02:00",
        }, fires)
        assert.same(rep(900, 2), steps)
      end)

      it("runs an hourly interval from 00:00 to 03:00", function()
        assert.same({
          "2026-03-29T00:00:00+00:00", "2026-03-29T03:00:00+02:00",
          "2026-03-29T04:00:00+02:00",
        }, preview({ "interval", hours = 1, start_date = "2026-03-29 00:00",
          timezone = ZONE }, 3, "2026-03-28 23:00"))
      end)
    end)

    -- 2026-10-25 03:00 +02 falls back to 01:00 +00: two hours repeat.
    describe("fall back on 2026-10-25", function()
      starting "2026-10-24T00:00:00Z"

      it("runs a 02:00 job at the first 02:00 only", function()
        assert.same({
          "2026-10-24T02:00:00+02:00",
          "2026-10-25T02:00:00+02:00",
          "2026-10-26T02:00:00+00:00",
        }, run({ "cron", hour = 2, timezone = ZONE }, "3d"))
      end)

      it("runs it at the second 02:00 only with dst_repeat = last", function()
        assert.same({
          "2026-10-24T02:00:00+02:00",
          "2026-10-25T02:00:00+00:00",
          "2026-10-26T02:00:00+00:00",
        }, run({ "cron", hour = 2, timezone = ZONE,
          dst_repeat = "last" }, "3d"))
      end)

      it("runs it at both 02:00s with dst_repeat = both", function()
        assert.same({
          "2026-10-24T02:00:00+02:00",
          "2026-10-25T02:00:00+02:00",
          "2026-10-25T02:00:00+00:00",
          "2026-10-26T02:00:00+00:00",
        }, run({ "cron", hour = 2, timezone = ZONE,
          dst_repeat = "both" }, "3d"))
      end)

      it("fires */15 in both passes, 15 real minutes apart", function()
        local fires, steps = preview(
          { "cron", "*/15 * * * *", timezone = ZONE }, 10, "2026-10-25 02:40")
        assert.same({
          "2026-10-25T02:45:00+02:00", "2026-10-25T01:00:00+00:00",
          "2026-10-25T01:15:00+00:00", "2026-10-25T01:30:00+00:00",
          "2026-10-25T01:45:00+00:00", "2026-10-25T02:00:00+00:00",
          "2026-10-25T02:15:00+00:00", "2026-10-25T02:30:00+00:00",
          "2026-10-25T02:45:00+00:00", "2026-10-25T03:00:00+00:00",
        }, fires)
        assert.same(rep(900, 9), steps)
      end)

      it("runs an hourly interval through 01:00 and 02:00 twice", function()
        assert.same({
          "2026-10-25T01:00:00+02:00", "2026-10-25T02:00:00+02:00",
          "2026-10-25T01:00:00+00:00", "2026-10-25T02:00:00+00:00",
          "2026-10-25T03:00:00+00:00",
        }, preview({ "interval", hours = 1, start_date = "2026-10-25 01:00",
          timezone = ZONE }, 5, "2026-10-25 00:00"))
      end)
    end)
  end)

  describe("Europe/Volgograd (offset changes without DST)", function()
    local ZONE = "Europe/Volgograd"

    -- 2018-10-28 02:00 MSK (+03) jumps to 03:00 +04, isdst=0 both sides.
    describe("moving to +04 on 2018-10-28", function()
      starting "2018-10-26T21:00:00Z"

      it("runs a 02:30 job at 03:00, as for DST", function()
        assert.same({
          "2018-10-27T02:30:00+03:00",
          "2018-10-28T03:00:00+04:00",
          "2018-10-29T02:30:00+04:00",
        }, run({ "cron", hour = 2, minute = 30, timezone = ZONE }, "3d"))
      end)

      it("skips a 02:30 job that day with dst_gap = skip", function()
        assert.same({
          "2018-10-27T02:30:00+03:00",
          "2018-10-29T02:30:00+04:00",
        }, run({ "cron", hour = 2, minute = 30, timezone = ZONE,
          dst_gap = "skip" }, "3d"))
      end)

      it("fires */15 every real 15 minutes, 01:45 then 03:00", function()
        local fires, steps = preview(
          { "cron", "*/15 * * * *", timezone = ZONE }, 3, "2018-10-28 01:40")
        assert.same({
          "2018-10-28T01:45:00+03:00", "2018-10-28T03:00:00+04:00",
          "2018-10-28T03:15:00+04:00",
        }, fires)
        assert.same(rep(900, 2), steps)
      end)

      it("runs an hourly interval from 01:00 to 03:00", function()
        assert.same({
          "2018-10-28T01:00:00+03:00", "2018-10-28T03:00:00+04:00",
          "2018-10-28T04:00:00+04:00",
        }, preview({ "interval", hours = 1, start_date = "2018-10-28 01:00",
          timezone = ZONE }, 3, "2018-10-28 00:00"))
      end)
    end)

    -- 2020-12-27 02:00 +04 falls back to 01:00 MSK (+03).
    describe("moving back to +03 on 2020-12-27", function()
      starting "2020-12-25T20:00:00Z"

      it("runs a 01:30 job at the first 01:30 only", function()
        assert.same({
          "2020-12-26T01:30:00+04:00",
          "2020-12-27T01:30:00+04:00",
          "2020-12-28T01:30:00+03:00",
        }, run({ "cron", hour = 1, minute = 30, timezone = ZONE }, "3d"))
      end)

      it("runs it at the second 01:30 only with dst_repeat = last", function()
        assert.same({
          "2020-12-26T01:30:00+04:00",
          "2020-12-27T01:30:00+03:00",
          "2020-12-28T01:30:00+03:00",
        }, run({ "cron", hour = 1, minute = 30, timezone = ZONE,
          dst_repeat = "last" }, "3d"))
      end)

      it("runs it at both 01:30s with dst_repeat = both", function()
        assert.same({
          "2020-12-26T01:30:00+04:00",
          "2020-12-27T01:30:00+04:00",
          "2020-12-27T01:30:00+03:00",
          "2020-12-28T01:30:00+03:00",
        }, run({ "cron", hour = 1, minute = 30, timezone = ZONE,
          dst_repeat = "both" }, "3d"))
      end)

      it("fires */15 in both 01:00 hours, 15 real minutes apart", function()
        local fires, steps = preview(
          { "cron", "*/15 * * * *", timezone = ZONE }, 6, "2020-12-27 01:40")
        assert.same({
          "2020-12-27T01:45:00+04:00", "2020-12-27T01:00:00+03:00",
          "2020-12-27T01:15:00+03:00", "2020-12-27T01:30:00+03:00",
          "2020-12-27T01:45:00+03:00", "2020-12-27T02:00:00+03:00",
        }, fires)
        assert.same(rep(900, 5), steps)
      end)

      it("runs an hourly interval at 01:00 twice", function()
        assert.same({
          "2020-12-27T00:00:00+04:00", "2020-12-27T01:00:00+04:00",
          "2020-12-27T01:00:00+03:00", "2020-12-27T02:00:00+03:00",
        }, preview({ "interval", hours = 1, start_date = "2020-12-27 00:00",
          timezone = ZONE }, 4, "2020-12-26 23:00"))
      end)
    end)
  end)

  describe("Pacific/Apia (skipped 2011-12-30)", function()
    local ZONE = "Pacific/Apia"

    -- 2011-12-29 23:59:59 -10 is followed by 2011-12-31 00:00 +14.
    describe("crossing the date line on 2011-12-30", function()
      starting "2011-12-28T10:00:00Z"

      it("runs the missing day's 12:00 job at 00:00 on the 31st", function()
        assert.same({
          "2011-12-28T12:00:00-10:00",
          "2011-12-29T12:00:00-10:00",
          "2011-12-31T00:00:00+14:00",
          "2011-12-31T12:00:00+14:00",
        }, run({ "cron", hour = 12, timezone = ZONE }, "3d"))
      end)

      it("skips the missing day with dst_gap = skip", function()
        assert.same({
          "2011-12-28T12:00:00-10:00",
          "2011-12-29T12:00:00-10:00",
          "2011-12-31T12:00:00+14:00",
        }, run({ "cron", hour = 12, timezone = ZONE, dst_gap = "skip" }, "3d"))
      end)

      it("fires */15 every real 15 minutes into the 31st", function()
        local fires, steps = preview(
          { "cron", "*/15 * * * *", timezone = ZONE }, 3, "2011-12-29 23:40")
        assert.same({
          "2011-12-29T23:45:00-10:00", "2011-12-31T00:00:00+14:00",
          "2011-12-31T00:15:00+14:00",
        }, fires)
        assert.same(rep(900, 2), steps)
      end)

      it("runs a daily interval 24 real hours apart, past the gap", function()
        assert.same({
          "2011-12-29T12:00:00-10:00",
          "2011-12-31T12:00:00+14:00",
        }, preview({ "interval", days = 1, start_date = "2011-12-29 12:00",
          timezone = ZONE }, 2, "2011-12-29 00:00"))
      end)
    end)
  end)

  describe("options", function()
    starting "2026-03-28T00:00:00Z"

    it("refuses a dst_gap that is not run or skip", function()
      local ok, err = pcall(h.scheduler.add_job, { id = "x",
        trigger = { "cron", hour = 2, dst_gap = "later" },
        run = function() end })
      assert.is_false(ok)
      assert.equal(
        "trigger.dst_gap: 'later' is not a choice (expected run or skip)", err)
    end)

    it("refuses a dst_repeat that is not first, last or both", function()
      local ok, err = pcall(h.scheduler.add_job, { id = "x",
        trigger = { "cron", hour = 2, dst_repeat = "twice" },
        run = function() end })
      assert.is_false(ok)
      assert.equal("trigger.dst_repeat: 'twice' is not a choice "
        .. "(expected first, last or both)", err)
    end)
  end)
end)
