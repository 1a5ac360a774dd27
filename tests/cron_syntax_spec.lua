-- The full crontab syntax: names, steps, ?, L, W, #, macros, seven
-- fields, and the day-of-month / day-of-week rule.
local harness = require "tests.harness"

describe("crontab syntax", function()
  local h
  before_each(function() h = harness.new { start = "2026-01-01T00:00:00Z" } end)
  after_each(function() h:close() end)

  -- The next n fires of expr from start, as "YYYY-MM-DD HH:MM:SS" in UTC.
  local function fires(expr, n, from)
    local out = {}
    local times = h.scheduler.preview({ "cron", expr, timezone = "UTC" }, n or 5,
      from and harness.time(from) or h.start)
    for i, t in ipairs(times) do out[i] = os.date("!%Y-%m-%d %H:%M:%S", math.floor(t)) end
    return out
  end

  it("reads month and day names in any case", function()
    assert.same({ "2026-03-02 09:00:00", "2026-03-04 09:00:00" }, fires("0 9 * MAR Mon,wed", 2))
  end)

  it("steps within ranges of names", function()
    -- mon-fri/2: Monday, Wednesday, Friday.
    assert.same({ "2026-01-02 00:00:00", "2026-01-05 00:00:00", "2026-01-07 00:00:00" },
      fires("0 0 * * mon-fri/2", 3))
    assert.same({ "2026-01-01 00:10:00", "2026-01-01 00:20:00", "2026-01-01 00:30:00",
      "2026-01-01 00:40:00", "2026-01-01 00:50:00", "2026-01-01 01:10:00" }, fires("10-50/10 * * * *", 6))
  end)

  it("takes ? for day-of-month or day-of-week", function()
    assert.same(fires("0 12 ? * fri", 3), fires("0 12 * * fri", 3))
    assert.same(fires("0 12 15 * ?", 3), fires("0 12 15 * *", 3))
  end)

  it("reads L as the last day of the month and L-3 as three days before", function()
    assert.same({ "2026-01-31 00:00:00", "2026-02-28 00:00:00", "2026-03-31 00:00:00" }, fires("0 0 L * *", 3))
    assert.same({ "2026-01-28 00:00:00", "2026-02-25 00:00:00" }, fires("0 0 L-3 * *", 2))
  end)

  it("reads 5L and friL as the last Friday of the month", function()
    local want = { "2026-01-30 18:00:00", "2026-02-27 18:00:00", "2026-03-27 18:00:00" }
    assert.same(want, fires("0 18 * * 5L", 3))
    assert.same(want, fires("0 18 * * friL", 3))
  end)

  it("reads 15W as the weekday nearest the 15th, without leaving the month", function()
    -- 2026-02-15 is a Sunday: Monday the 16th. 2026-03-15 is a Sunday too.
    -- 2026-08-15 is a Saturday: Friday the 14th.
    assert.same({ "2026-01-15 00:00:00", "2026-02-16 00:00:00", "2026-03-16 00:00:00" }, fires("0 0 15W * *", 3))
    assert.same({ "2026-08-14 00:00:00" }, fires("0 0 15W 8 *", 1))
    -- 1W in a month that starts on Saturday: Monday the 3rd, not the 31st before.
    assert.same({ "2026-08-03 00:00:00" }, fires("0 0 1W 8 *", 1))
  end)

  it("reads LW as the last weekday of the month", function()
    -- 2026-01-31 is a Saturday, 2026-05-31 a Sunday.
    assert.same({ "2026-01-30 00:00:00" }, fires("0 0 LW 1 *", 1))
    assert.same({ "2026-05-29 00:00:00" }, fires("0 0 LW 5 *", 1))
  end)

  it("reads fri#3 and 5#3 as the third Friday", function()
    local want = { "2026-01-16 12:00:00", "2026-02-20 12:00:00", "2026-03-20 12:00:00" }
    assert.same(want, fires("0 12 * * fri#3", 3))
    assert.same(want, fires("0 12 * * 5#3", 3))
  end)

  it("knows the macros", function()
    assert.same({ "2027-01-01 00:00:00" }, fires("@yearly", 1, "2026-01-01 00:00:01"))
    assert.same(fires("@yearly", 2), fires("@annually", 2))
    assert.same({ "2026-02-01 00:00:00" }, fires("@monthly", 1, "2026-01-01 00:00:01"))
    assert.same({ "2026-01-04 00:00:00" }, fires("@weekly", 1))
    assert.same({ "2026-01-02 00:00:00" }, fires("@daily", 1, "2026-01-01 00:00:01"))
    assert.same(fires("@daily", 3), fires("@midnight", 3))
    assert.same({ "2026-01-01 01:00:00" }, fires("@hourly", 1, "2026-01-01 00:00:01"))
  end)

  it("takes seven fields with the year last", function()
    assert.same({ "2028-02-29 12:00:00", "2032-02-29 12:00:00" }, fires("0 0 12 29 2 * 2028-2040", 2))
  end)

  it("matches day-of-month OR day-of-week when both are restricted", function()
    assert.same({ "2026-01-02 00:00:00", "2026-01-09 00:00:00", "2026-01-13 00:00:00" },
      fires("0 0 13 * fri", 3))
  end)

  it("requires both with a leading +", function()
    -- Friday the 13th: February and March 2026.
    assert.same({ "2026-02-13 00:00:00", "2026-03-13 00:00:00", "2026-11-13 00:00:00" },
      fires("+0 0 13 * fri", 3))
  end)

  it("treats a day field starting with * as unrestricted, as Vixie cron does", function()
    -- */2 in the day with a weekday: both must match.
    assert.same({ "2026-01-05 00:00:00", "2026-01-19 00:00:00" }, fires("0 0 */2 * mon", 2))
  end)
end)

describe("APScheduler field expressions", function()
  local h
  before_each(function() h = harness.new { start = "2026-01-01T00:00:00Z" } end)
  after_each(function() h:close() end)

  local function fires(fields, n)
    fields[1] = "cron"
    fields.timezone = "UTC"
    local out = {}
    for i, t in ipairs(h.scheduler.preview(fields, n)) do
      out[i] = os.date("!%Y-%m-%d %H:%M", math.floor(t))
    end
    return out
  end

  it("reads last fri and last", function()
    assert.same({ "2026-01-30 09:00", "2026-02-27 09:00" }, fires({ day = "last fri", hour = 9 }, 2))
    assert.same({ "2026-01-31 09:00", "2026-02-28 09:00" }, fires({ day = "last", hour = 9 }, 2))
  end)

  it("reads the ISO week", function()
    -- ISO week 2 of 2026 starts on Monday 5 January.
    assert.same({ "2026-01-05 00:00", "2026-01-06 00:00" }, fires({ week = 2, hour = 0 }, 2))
  end)

  it("reads a list of mixed expressions", function()
    assert.same({ "2026-01-01 01:00", "2026-01-01 05:00", "2026-01-01 07:00", "2026-01-01 09:00" },
      fires({ hour = "1,5-9/2" }, 4))
  end)
end)
