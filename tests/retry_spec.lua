-- Retry policies: backoff, retry_on, exhaustion, and retries as fires of
-- their own that pause holds and remove cancels.
local harness = require "tests.harness"
local time = require "moonbeat.time"

describe("retries", function()
  local h, s
  before_each(function()
    h = harness.new()
    s = h.scheduler
  end)
  after_each(function() h:close() end)

  -- A job that records (attempt, seconds after start) and fails while
  -- fail(attempt) says so.
  local function flaky(id, trigger, retry, fail, extra)
    local tries = {}
    local spec = { id = id, trigger = trigger, retry = retry, run = function(ctx)
      tries[#tries + 1] = { ctx.attempt, time.now() - h.start }
      if fail(ctx.attempt) then error("attempt " .. ctx.attempt .. " failed") end
    end }
    for k, v in pairs(extra or {}) do spec[k] = v end
    s.add_job(spec)
    return tries
  end

  local function always() return true end

  it("backs off exponentially, then reports the retries exhausted", function()
    local events = h:events { "retry", "retries_exhausted" }
    local tries = flaky("exp", { "date", delay = 1 },
      { attempts = 4, backoff = "exponential", delay = "2s" }, always)
    h:advance("1m")
    assert.same({ { 1, 1 }, { 2, 3 }, { 3, 7 }, { 4, 15 } }, tries)
    local kinds = {}
    for i, ev in ipairs(events) do kinds[i] = ev.kind end
    assert.same({ "retry", "retry", "retry", "retries_exhausted" }, kinds)
    assert.equal(4, events[4].attempt)
    assert.equal("exp", events[4].job_id)
    assert.matches("attempt 4 failed", events[4].error)
    assert.equal(1, #h:logged("retries exhausted"))
    -- A one-shot job goes once its last retry is over.
    assert.is_nil(s.get_job("exp"))
  end)

  it("backs off by a fixed or a linear delay, capped by max_delay", function()
    local fixed = flaky("fixed", { "date", delay = 1 },
      { attempts = 3, backoff = "fixed", delay = "5s" }, always)
    local linear = flaky("linear", { "date", delay = 1 },
      { attempts = 4, backoff = "linear", delay = "10s", max_delay = "25s" }, always)
    h:advance("2m")
    assert.same({ { 1, 1 }, { 2, 6 }, { 3, 11 } }, fixed)
    -- Delays 10, 20, then 30 capped to 25.
    assert.same({ { 1, 1 }, { 2, 11 }, { 3, 31 }, { 4, 56 } }, linear)
  end)

  it("keeps a jittered delay within its fraction", function()
    local tries = flaky("jittery", { "date", delay = 1 },
      { attempts = 50, backoff = "fixed", delay = "10s", jitter = 0.2 }, always)
    h:advance("1h")
    assert.equal(50, #tries)
    local varied = false
    for i = 2, #tries do
      local gap = tries[i][2] - tries[i - 1][2]
      assert.is_true(gap >= 8 and gap <= 12, "gap " .. gap)
      if gap ~= 10 then varied = true end
    end
    assert.is_true(varied)
  end)

  it("stops retrying once a try succeeds", function()
    local tries = flaky("second-time", { "date", delay = 1 },
      { attempts = 5, delay = 1 }, function(attempt) return attempt < 2 end)
    h:advance("1m")
    assert.same({ { 1, 1 }, { 2, 2 } }, tries)
    assert.equal(0, #h:logged("retries exhausted"))
  end)

  it("asks retry_on about each error", function()
    local asked = {}
    local tries = flaky("picky", { "date", delay = 1 }, {
      attempts = 5, delay = 1,
      retry_on = function(err)
        asked[#asked + 1] = err
        return err.message:find("transient") ~= nil
      end,
    }, function(attempt)
      if attempt == 1 then error("transient glitch") end
      error("permanent: bad credentials")
    end)
    h:advance("1m")
    assert.equal(2, #tries)
    assert.equal(2, #asked)
    assert.equal("error", asked[1].kind)
    assert.equal(1, asked[1].attempt)
    assert.matches("transient glitch", asked[1].message)
    assert.matches("stack traceback", asked[1].traceback)
  end)

  it("takes the retry's delay from the policy retry_on left the job with", function()
    local tries = flaky("remade", { "date", delay = 1 }, {
      attempts = 3, delay = 13,
      retry_on = function()
        -- The job's old policy, held by it alone, goes with this change.
        s.modify_job("remade", { retry = { attempts = 3, delay = 4 } })
        return true
      end,
    }, function(attempt) return attempt == 1 end)
    h:advance("1m")
    assert.same({ { 1, 1 }, { 2, 5 } }, tries)
  end)

  it("retries a timed-out run, and retry_on sees kind timeout", function()
    local kinds = {}
    local tries = 0
    s.add_job { id = "slowpoke", trigger = { "date", delay = 1 }, timeout = "5s",
      retry = { attempts = 3, delay = "10s", backoff = "fixed",
        retry_on = function(err) kinds[#kinds + 1] = err.kind return true end },
      run = function(ctx)
        tries = tries + 1
        if ctx.attempt < 3 then time.sleep("1m") end
      end }
    h:advance("5m")
    assert.equal(3, tries)
    assert.same({ "timeout", "timeout" }, kinds)
    assert.equal(2, #h:logged("run timed out"))
    assert.equal(1, #h:logged("run finished"))
  end)

  it("shows the pending retry on the job and in ctx.attempt", function()
    flaky("visible", { "interval", hours = 1 }, { attempts = 2, delay = "30s" }, always)
    h:advance("1h")
    local job = s.get_job("visible")
    assert.equal(h.start + 3600 + 30, job.next_retry_time)
    assert.equal(h.start + 7200, job.next_run_time)
    h:advance("30s")
    assert.is_nil(s.get_job("visible").next_retry_time)
  end)

  it("holds a retry while the job is paused and lets it fire on resume", function()
    local tries = flaky("held", { "date", delay = 1 }, { attempts = 2, delay = "10s" }, always)
    h:advance("2s")
    s.pause_job("held")
    h:advance("1m")
    assert.equal(1, #tries)
    assert.equal(h.start + 11, s.get_job("held").next_retry_time)
    s.resume_job("held")
    h:advance(0)
    assert.same({ { 1, 1 }, { 2, 62 } }, tries)
  end)

  it("cancels a pending retry when the job is removed", function()
    local tries = flaky("gone", { "interval", hours = 1 }, { attempts = 3, delay = "10s" }, always)
    h:advance("1h")
    s.remove_job("gone")
    h:advance("1h")
    assert.equal(1, #tries)
    assert.equal(0, h:stats().timers)
  end)

  it("does not shift the regular schedule", function()
    local tries = flaky("steady", { "interval", seconds = 10 }, { attempts = 2, delay = 3 },
      function(attempt) return attempt == 1 end)
    h:advance("30s")
    -- 10 fails, 13 retries and succeeds; 20 fails, 23; 30 fails.
    assert.same({ { 1, 10 }, { 2, 13 }, { 1, 20 }, { 2, 23 }, { 1, 30 } }, tries)
  end)

  it("records each attempt as a run with its attempt number", function()
    flaky("counted", { "date", delay = 1 }, { attempts = 3, delay = 1 }, always)
    h:advance("10s")
    local failed = h:logged("run failed")
    assert.equal(3, #failed)
    assert.is_nil(failed[1].fields.attempt)
    assert.equal(2, failed[2].fields.attempt)
    assert.equal(3, failed[3].fields.attempt)
  end)

  it("takes attempts from job_defaults", function()
    s.configure { job_defaults = { retry = { attempts = 2, delay = 1 } } }
    local tries = flaky("defaulted", { "date", delay = 1 }, nil, always)
    h:advance("10s")
    assert.equal(2, #tries)
  end)
end)
