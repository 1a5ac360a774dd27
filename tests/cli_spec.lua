-- The command line's job defaults and store options: each bad value gets
-- one message naming the flag, and good ones take effect.
local support = require "tests.support"

local BIN = support.quote(support.BIN)

describe("moonbeat run options", function()
  local dir
  before_each(function() dir = support.tempdir() end)
  after_each(function() support.remove_tree(dir) end)

  local bad = {
    { "--timeout soon", [[--timeout: 'soon' is not a duration (expected seconds, or a string such as "90s", "5m", "1h30m")]] },
    { "--max-instances 0", "--max-instances: expected an integer >= 1, got 0" },
    { "--max-instances many", "--max-instances: expected a whole number, got 'many'" },
    { "--overlap queue", "--overlap: 'queue' is not a policy (expected skip, buffer_one, buffer_all, cancel_other or allow_all)" },
    { "--misfire-grace-time later", [[--misfire-grace-time: 'later' is not a duration (expected seconds, or a string such as "90s", "5m", "1h30m")]] },
    { "--retries 0", "--retries: expected an integer from 1 to 1000, got 0" },
    { "--shutdown-timeout never", [[--shutdown-timeout: 'never' is not a duration (expected seconds, or a string such as "90s", "5m", "1h30m")]] },
    { "--memory-limit lots", "--memory-limit: 'lots' is not a size (such as 512MiB or 2GiB)" },
    { "--keep-runs -1", "--keep-runs: expected an integer >= 0 (0: keep all), got -1" },
    { "--keep-for forever", [[--keep-for: 'forever' is not a duration (expected seconds, or a string such as "90s", "5m", "1h30m")]] },
  }
  for _, case in ipairs(bad) do
    it("refuses " .. case[1], function()
      local out, code = support.sh(("%s run --db :memory: %s %s"):format(BIN, case[1], dir))
      assert.equal(2, code)
      assert.equal("moonbeat: " .. case[2] .. "\n", out)
    end)
  end

  it("applies job defaults from flags to jobs that do not say otherwise", function()
    support.write(dir .. "/slow.lua", [[
local time = require "moonbeat.time"
scheduler.add_job { id = "slow", trigger = { "date", delay = 0 }, run = function() time.sleep(60) end }
scheduler.add_job { id = "own", trigger = { "date", delay = 0 }, timeout = false,
  run = function() time.sleep(60) end }
]])
    local out, code = support.run_until(("run --db :memory: --timeout 0.2 --shutdown-timeout 0.1 %s"):format(dir),
      "run timed out", "TERM")
    assert.equal(0, code)
    assert.matches('run timed out job=slow run=%d+ status=timeout duration=%S+ error="timed out after 200ms"', out)
    assert.is_nil(out:find("run timed out job=own", 1, true))
  end)
end)

describe("scheduler API misuse", function()
  local harness = require "tests.harness"
  local h, s
  before_each(function()
    h = harness.new()
    s = h.scheduler
  end)
  after_each(function() h:close() end)

  local function error_of(fn, ...)
    local ok, err = pcall(fn, ...)
    assert.is_false(ok)
    return err
  end

  it("names an unknown configure setting", function()
    assert.equal("configure: jobdefaults: unknown setting (expected job_defaults, keep_runs or keep_for)",
      error_of(s.configure, { jobdefaults = {} }))
    assert.equal("configure: job_defaults.timout: unknown field (did you mean 'timeout'?)",
      error_of(s.configure, { job_defaults = { timout = 5 } }))
  end)

  it("refuses a pause note that is not text", function()
    h:record("p", "* * * * *")
    assert.equal('pause_job: expected { note = "text" } as the second argument',
      error_of(s.pause_job, "p", { note = 42 }))
    assert.is_false(s.get_job("p").paused)
  end)

  it("refuses get_runs filters of the wrong kind", function()
    assert.equal("get_runs: limit: expected a number, got string", error_of(s.get_runs, { limit = "ten" }))
    assert.matches("^get_runs: since: '2026%-13%-01' is not a valid time", error_of(s.get_runs, { since = "2026-13-01" }))
  end)
end)
