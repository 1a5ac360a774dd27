-- Fire sequences of every trigger kind, over simulated days and months.
local harness = require "tests.harness"

local MIN, HOUR, DAY = 60, 3600, 86400

describe("triggers", function()
  local h
  -- 2026-01-01 is a Thursday.
  before_each(function() h = harness.new { start = "2026-01-01T00:00:00Z" } end)
  after_each(function() h:close() end)

  describe("interval", function()
    it("fires one interval after it is added, then every interval", function()
      local fires = h:record("tick", { "interval", seconds = 10 })
      h:advance("35s")
      assert.same({ 10, 20, 30 }, fires)
    end)

    it("adds up weeks, days, hours, minutes and seconds", function()
      local fires = h:record("odd", { "interval", days = 1, hours = 1, minutes = 1, seconds = 1 })
      h:advance("5d")
      local step = DAY + HOUR + MIN + 1
      assert.same({ step, 2 * step, 3 * step, 4 * step }, fires)
    end)

    it("keeps its grid from start_date", function()
      local fires = h:record("grid", {
        "interval", hours = 6, start_date = "2026-01-01 03:00:00",
      })
      h:advance("2d")
      assert.same({ 3 * HOUR, 9 * HOUR, 15 * HOUR, 21 * HOUR, 27 * HOUR,
        33 * HOUR, 39 * HOUR, 45 * HOUR }, fires)
    end)

    it("joins a grid whose start_date is in the past at its next point", function()
      local fires = h:record("late-grid", {
        "interval", minutes = 40, start_date = "2025-12-31 23:00:00",
      })
      h:advance("2h")
      -- 23:00 + k * 40 min: 23:40, 00:20, 01:00, 01:40.
      assert.same({ 20 * MIN, 60 * MIN, 100 * MIN }, fires)
    end)

    it("stops at end_date and the job goes away", function()
      local fires = h:record("bounded", {
        "interval", weeks = 1, end_date = "2026-01-20",
      })
      h:advance("60d")
      assert.same({ 7 * DAY, 14 * DAY }, fires)
      assert.is_nil(h.scheduler.get_job("bounded"))
    end)

    it("describes itself", function()
      h:record("d", { "interval", hours = 1, minutes = 30 })
      assert.equal("interval[1h30m]", h.scheduler.get_job("d").trigger)
    end)
  end)

  describe("date", function()
    it("fires once at run_date and the job is then removed", function()
      local fires = h:record("once", { "date", run_date = "2026-01-01 00:01:00" })
      assert.equal("date[2026-01-01T00:01:00+00:00]",
        h.scheduler.get_job("once").trigger)
      h:advance("1d")
      assert.same({ 60 }, fires)
      assert.is_nil(h.scheduler.get_job("once"))
    end)

    it("takes a delay from now", function()
      h:advance("1h")
      local fires = h:record("soon", { "date", delay = "1m30s" })
      h:advance("1h")
      assert.same({ HOUR + 90 }, fires)
    end)

    it("takes an ISO 8601 time with an offset", function()
      local fires = h:record("offset", { "date", run_date = "2026-01-01T09:00:00+08:00" })
      h:advance("1d")
      assert.same({ HOUR }, fires)
    end)

    it("takes seconds since the epoch", function()
      local fires = h:record("epoch", { "date", run_date = h.start + 42 })
      h:advance("1m")
      assert.same({ 42 }, fires)
    end)

    it("runs at once, once, when run_date has passed", function()
      local fires = h:record("past", { "date", run_date = "2025-12-31 12:00:00" })
      h:advance(0)
      assert.same({ -12 * HOUR }, fires)
      h:advance("1d")
      assert.equal(1, #fires)
    end)
  end)

  describe("cron fields (APScheduler's meaning)", function()
    it("fires daily at hour and minute, finer fields defaulting to 0", function()
      local fires = h:record("daily", { "cron", hour = 2, minute = 30 })
      assert.equal("cron[hour='2', minute='30']", h.scheduler.get_job("daily").trigger)
      h:advance("3d")
      assert.same({ 2 * HOUR + 30 * MIN, DAY + 2 * HOUR + 30 * MIN,
        2 * DAY + 2 * HOUR + 30 * MIN }, fires)
    end)

    it("reads day_of_week names and ranges", function()
      local fires = h:record("weekdays", { "cron", day_of_week = "mon-fri", hour = 9 })
      h:advance("14d")
      local days = {}
      for i, t in ipairs(fires) do
        days[i] = math.floor(t / DAY) + 1
        assert.equal(9 * HOUR, t % DAY)
      end
      -- Thu 1, Fri 2, Mon 5 ... Fri 9, Mon 12, Tue 13, Wed 14.
      assert.same({ 1, 2, 5, 6, 7, 8, 9, 12, 13, 14 }, days)
    end)

    it("counts day_of_week from 0 = Monday", function()
      local fires = h:record("mondays", { "cron", day_of_week = 0 })
      h:advance("31d")
      -- Only day_of_week given: hour, minute and second default to 0.
      assert.same({ 4 * DAY, 11 * DAY, 18 * DAY, 25 * DAY }, fires)
    end)

    it("steps with */n and a-b/n", function()
      local fires = h:record("steps", { "cron", hour = "8-17/3", minute = "*/30" })
      h:advance("1d")
      local want = {}
      for _, hr in ipairs { 8, 11, 14, 17 } do
        want[#want + 1] = hr * HOUR
        want[#want + 1] = hr * HOUR + 30 * MIN
      end
      assert.same(want, fires)
    end)

    it("fires on the last day of each month", function()
      local fires = h:record("month-end", { "cron", day = "last", hour = 23 })
      h:advance("120d")
      local want = {}
      for _, d in ipairs { "2026-01-31", "2026-02-28", "2026-03-31", "2026-04-30" } do
        want[#want + 1] = harness.time(d .. " 23:00") - h.start
      end
      assert.same(want, fires)
    end)

    it("fires on the third Friday with 'xth y'", function()
      local fires = h:record("third-friday", { "cron", day = "3rd fri", hour = 12 })
      h:advance("90d")
      local want = {}
      for _, d in ipairs { "2026-01-16", "2026-02-20", "2026-03-20" } do
        want[#want + 1] = harness.time(d .. " 12:00") - h.start
      end
      assert.same(want, fires)
    end)

    it("fires quarterly with month names, starting now when now matches", function()
      local fires = h:record("quarterly", { "cron", month = "jan,apr,jul,oct", day = 1, hour = 0 })
      h:advance("364d")
      local want = {}
      for _, d in ipairs { "2026-01-01", "2026-04-01", "2026-07-01", "2026-10-01" } do
        want[#want + 1] = harness.time(d) - h.start
      end
      assert.same(want, fires)
    end)

    it("respects start_date and end_date", function()
      local fires = h:record("window", {
        "cron", hour = 12, start_date = "2026-01-03", end_date = "2026-01-05 23:59:59",
      })
      h:advance("10d")
      assert.same({ 2 * DAY + 12 * HOUR, 3 * DAY + 12 * HOUR, 4 * DAY + 12 * HOUR }, fires)
    end)
  end)

  describe("crontab strings", function()
    it("fires every 15 minutes with */15", function()
      local fires = h:record("quarter-hour", { "cron", "*/15 * * * *" })
      h:advance("1h")
      assert.same({ 0, 15 * MIN, 30 * MIN, 45 * MIN, 60 * MIN }, fires)
    end)

    it("accepts a bare string as a cron trigger", function()
      local fires = h:record("bare", "0 2 * * mon-fri")
      h:advance("7d")
      assert.equal(5, #fires)
      assert.equal(2 * HOUR, fires[1])
    end)

    it("counts day-of-week from 0 = Sunday, with 7 also Sunday", function()
      local sun0 = h:record("sun0", "0 9 * * 0")
      local sun7 = h:record("sun7", "0 9 * * 7")
      local mon = h:record("mon", "0 9 * * 1")
      h:advance("14d")
      assert.same({ 3 * DAY + 9 * HOUR, 10 * DAY + 9 * HOUR }, sun0)
      assert.same(sun0, sun7)
      assert.same({ 4 * DAY + 9 * HOUR, 11 * DAY + 9 * HOUR }, mon)
    end)

    it("takes six fields with seconds first", function()
      local fires = h:record("seconds", "*/20 * * * * *")
      h:advance("1m")
      assert.same({ 0, 20, 40, 60 }, fires)
    end)

    it("matches day-of-month OR day-of-week when both are restricted", function()
      local fires = h:record("either", "0 0 13 * fri")
      h:advance("31d")
      local days = {}
      for i, t in ipairs(fires) do days[i] = math.floor(t / DAY) + 1 end
      -- Fridays 2, 9, 16, 23, 30 and the 13th (a Tuesday).
      assert.same({ 2, 9, 13, 16, 23, 30 }, days)
    end)

    it("fires monthly over a year", function()
      local fires = h:record("monthly", "30 6 1 * *")
      h:advance("365d")
      assert.equal(12, #fires)
      assert.equal(harness.time("2026-12-01 06:30") - h.start, fires[12])
    end)

    it("describes itself with the expression", function()
      h:record("described", "0 2 * * mon-fri")
      assert.equal("cron[0 2 * * mon-fri]", h.scheduler.get_job("described").trigger)
    end)
  end)

  describe("zones", function()
    it("reads cron fields in an IANA zone", function()
      local fires = h:record("tokyo", { "cron", hour = 9, timezone = "Asia/Tokyo" })
      assert.equal("cron[hour='9', timezone='Asia/Tokyo']", h.scheduler.get_job("tokyo").trigger)
      h:advance("1d")
      -- 09:00 in Tokyo (+09:00) is midnight UTC: the next one is a day on.
      assert.same({ 0, DAY }, fires)
    end)

    it("reads run_date without an offset in the trigger's zone", function()
      local fires = h:record("ny", { "date", run_date = "2025-12-31 20:00", timezone = "America/New_York" })
      h:advance("1d")
      assert.same({ HOUR }, fires)
    end)

    it("uses the scheduler's zone for triggers that name none", function()
      h:close()
      h = harness.new { timezone = "Asia/Kolkata" }
      local fires = h:record("ist", { "cron", hour = 5, minute = 30 })
      h:advance("1d")
      -- 05:30 in India (+05:30) is midnight UTC.
      assert.same({ 0, DAY }, fires)
    end)
  end)

  describe("the local zone", function()
    it("reads cron fields in the zone the trigger names", function()
      local fires = h:record("local-cron", { "cron", hour = 6, timezone = "local" })
      h:advance("1d")
      assert.equal(1, #fires)
      local t = os.date("*t", math.floor(h.start + fires[1]))
      assert.equal(6, t.hour)
      assert.equal(0, t.min)
    end)
  end)
end)

-- Times as text (a date trigger's description, logs, history): every
-- part zero-padded, fractions and odd offsets kept.
describe("time text", function()
  local core = require "moonbeat.core"

  it("pads every field and gives the offset as +HH:MM", function()
    assert.equal("0001-01-01T00:00:00+00:00", core.format_time(-62135596800, "UTC"))
    assert.equal("2026-03-05T07:08:09+01:00", core.format_time(1772690889, "Europe/Berlin"))
  end)

  it("keeps microseconds and a negative half-hour offset", function()
    assert.equal("1969-12-31T20:30:01.500000-03:30", core.format_time(1.5, "America/St_Johns"))
  end)

  it("gives seconds of an offset that has them (local mean time)", function()
    assert.equal("1900-01-01T00:19:32.250000+00:19:32",
      core.format_time(-2208988800 + 0.25, "Europe/Amsterdam"))
  end)

  it("writes a year past 9999 in full", function()
    assert.equal("10000-01-01T00:00:00+00:00", core.format_time(253402300800, "UTC"))
  end)
end)
