-- Jobs made from equal trigger specs share one trigger, which keeps the
-- first fire it searched for; each job still behaves as if it had its own.
local harness = require "tests.harness"

describe("jobs on one trigger", function()
  local h, s
  before_each(function()
    h = harness.new()
    s = h.scheduler
  end)
  after_each(function() h:close() end)

  local HOUR = 3600

  it("keep firing when another job on the trigger is rescheduled or goes", function()
    local a = h:record("a", { "cron", hour = 6 })
    local b = h:record("b", { "cron", hour = 6 })
    local c = h:record("c", { "cron", hour = 6 })
    s.reschedule_job("a", { "cron", hour = 7 })
    s.remove_job("c")
    h:advance("2d")
    assert.same({ 7 * HOUR, 31 * HOUR }, a)
    assert.same({ 6 * HOUR, 30 * HOUR }, b)
    assert.same({}, c)
    -- The last holder gone, an equal spec makes the trigger anew.
    s.remove_job("a")
    s.remove_job("b")
    local d = h:record("d", { "cron", hour = 6 })
    h:advance("1d")
    assert.same({ 54 * HOUR }, d)
  end)

  it("give a job added after the trigger's first fire its own next fire", function()
    h:record("early", { "cron", hour = 6 })
    assert.equal(h.start + 6 * HOUR, s.get_job("early").next_run_time)
    h:advance("7h")
    h:record("late", { "cron", hour = 6 })
    assert.equal(h.start + 30 * HOUR, s.get_job("late").next_run_time)
    assert.equal(h.start + 30 * HOUR, s.get_job("early").next_run_time)
  end)

  it("follow the wall clock back to before the trigger was made", function()
    h:record("a", { "cron", hour = 6 })
    h:jump(-86400)
    h:advance(0)
    assert.equal(h.start - 18 * HOUR, s.get_job("a").next_run_time)
    h:record("b", { "cron", hour = 6 })
    assert.equal(h.start - 18 * HOUR, s.get_job("b").next_run_time)
  end)

  it("keep apart specs that differ in zone or bounds", function()
    h:record("utc", { "cron", hour = 6 })
    h:record("tokyo", { "cron", hour = 6, timezone = "Asia/Tokyo" })
    h:record("later", { "cron", hour = 6, start_date = h.start + 2 * 86400 })
    assert.equal("cron[hour='6']", s.get_job("utc").trigger)
    assert.equal("cron[hour='6', timezone='Asia/Tokyo']", s.get_job("tokyo").trigger)
    assert.equal(h.start + 6 * HOUR, s.get_job("utc").next_run_time)
    assert.equal(h.start + 21 * HOUR, s.get_job("tokyo").next_run_time)
    assert.equal(h.start + 54 * HOUR, s.get_job("later").next_run_time)
  end)
end)
