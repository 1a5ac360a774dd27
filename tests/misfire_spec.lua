-- Late fires: misfire_grace_time, coalescing, and jitter.
local harness = require "tests.harness"
local time = require "moonbeat.time"

local MIN, HOUR = 60, 3600

describe("late fires", function()
  local h, s
  before_each(function()
    h = harness.new()
    s = h.scheduler
  end)
  after_each(function() h:close() end)

  it("run late, once, with their lateness recorded, by default", function()
    local fires = h:record("daily", { "cron", hour = 1 })
    h:stall("1h30m")
    h:advance(0)
    assert.same({ HOUR }, fires)
    local started = h:logged("run started")[1]
    assert.equal(30 * MIN, started.fields.late)
  end)

  it("coalesce several overdue fires into one run of the latest after an hour's stall", function()
    local events = h:events { "started", "missed" }
    local fires = h:record("minutely", { "interval", minutes = 1 })
    h:stall("1h")
    h:advance(0)
    assert.same({ HOUR }, fires)
    assert.equal(1, #events)
    h:advance("1m")
    assert.same({ HOUR, HOUR + MIN }, fires)
  end)

  it("run every overdue fire with coalesce = false", function()
    local fires = h:record("each", { "interval", minutes = 10 }, { coalesce = false })
    h:stall("1h")
    h:advance(0)
    assert.same({ 10 * MIN, 20 * MIN, 30 * MIN, 40 * MIN, 50 * MIN, 60 * MIN }, fires)
  end)

  it("record a fire later than misfire_grace_time as missed, not run", function()
    local events = h:events { "missed" }
    local fires = h:record("strict", { "cron", minute = 0 }, { misfire_grace_time = "5m" })
    h:advance("1s")
    h:stall("1h10m")
    h:advance(0)
    assert.same({ 0 }, fires)
    assert.equal(1, #events)
    assert.equal(HOUR, events[1].scheduled_time - h.start)
    assert.equal("10m1s late, more than misfire_grace_time 5m", events[1].reason)
    assert.equal(1, #h:logged("fire missed"))
    h:advance("1h")
    assert.same({ 0, 2 * HOUR }, fires)
  end)

  it("run a fire exactly misfire_grace_time late and miss one a microsecond later", function()
    local a = h:record("at-boundary", { "date", run_date = h.start + 10 }, { misfire_grace_time = "30s" })
    local b = h:record("past-boundary", { "date", run_date = h.start + 10 - 1e-6 }, { misfire_grace_time = "30s" })
    h:stall("40s")
    h:advance(0)
    assert.same({ 10 }, a)
    assert.same({}, b)
    assert.equal(1, #h:logged("fire missed"))
    assert.equal("past-boundary", h:logged("fire missed")[1].fields.job)
  end)

  it("with coalesce = false, run the overdue fires within the grace and miss the rest", function()
    local fires = h:record("window", { "interval", minutes = 10 },
      { coalesce = false, misfire_grace_time = "25m" })
    h:stall("1h")
    h:advance(0)
    -- Now is 60 min: fires at 40, 50 and 60 min are within 25 min.
    assert.same({ 40 * MIN, 50 * MIN, 60 * MIN }, fires)
    assert.equal(3, #h:logged("fire missed"))
  end)

  it("apply the same rules after a wall-clock jump", function()
    local fires = h:record("jumped", { "cron", minute = "*/10" }, { misfire_grace_time = "5m" })
    h:advance("1s")
    h:jump(HOUR + 7 * MIN)
    h:advance(0)
    -- The latest overdue fire, 01:00, is 7 min late: missed.
    assert.same({ 0 }, fires)
    assert.equal(1, #h:logged("fire missed"))
    h:advance("3m")
    assert.same({ 0, HOUR + 10 * MIN }, fires)
  end)

  it("take misfire_grace_time and coalesce from job_defaults", function()
    s.configure { job_defaults = { misfire_grace_time = "1m", coalesce = false } }
    local fires = h:record("defaulted", { "interval", seconds = 30 })
    h:stall("2m")
    h:advance(0)
    -- Fires at 30, 60, 90 and 120 s; at 120 the first is 90 s late.
    assert.same({ 60, 90, 120 }, fires)
    assert.equal(1, #h:logged("fire missed"))
  end)
end)

describe("jitter", function()
  it("delays each fire by a random amount in [0, jitter], over 10,000 fires", function()
    local h = harness.new { seed = 42 }
    local fires = h:record("jittery", { "interval", seconds = 10, jitter = 4 })
    h:advance(10000 * 10 + 5)
    h:close()
    assert.equal(10000, #fires)
    local min, max, sum = math.huge, -math.huge, 0
    for i, t in ipairs(fires) do
      local offset = t - 10 * i
      assert.is_true(offset >= 0 and offset <= 4, ("fire %d offset %s"):format(i, offset))
      min, max, sum = math.min(min, offset), math.max(max, offset), sum + offset
    end
    -- Spread over the whole range, centred: the grid does not drift.
    assert.is_true(min < 0.01 and max > 3.99)
    assert.is_true(math.abs(sum / #fires - 2) < 0.1)
  end)

  it("is the same sequence for the same seed", function()
    local function run(seed)
      local h = harness.new { seed = seed }
      local fires = h:record("c", { "cron", minute = "*", jitter = "30s" })
      h:advance("1h")
      h:close()
      return fires
    end
    local a, b, c = run(7), run(7), run(8)
    assert.same(a, b)
    assert.are_not.same(a, c)
    for i, t in ipairs(a) do
      local offset = t - 60 * (i - 1)
      assert.is_true(offset >= 0 and offset <= 30)
    end
  end)

  it("does not apply to run_job", function()
    local h = harness.new()
    local fires = h:record("j", { "interval", hours = 1, jitter = "10m" })
    h.scheduler.run_job("j")
    h:advance(0)
    h:close()
    assert.same({ 0 }, fires)
  end)
end)
