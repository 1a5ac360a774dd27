-- Bad job specs: each gets one message naming the file, the line and
-- the field, and nothing else is disturbed.
local harness = require "tests.harness"

describe("validation at add_job", function()
  local h
  before_each(function() h = harness.new() end)
  after_each(function() h:close() end)

  -- Load a one-job file whose add_job table holds `fields` (on line 2)
  -- and return the load error.
  local function error_for(fields)
    local src = "-- report\nscheduler.add_job { " .. fields .. " }\n"
    local jobs, err = h:load("jobs/report.lua", src)
    assert.is_nil(jobs)
    return err
  end

  local RUN = "run = function() end"
  local cases = {
    { "a cron field out of range",
      [[id = "r", trigger = { "cron", hour = 25 }, ]] .. RUN,
      "jobs/report.lua:2: trigger.hour: 25 is out of range 0-23" },
    { "a misspelt job field",
      [[id = "r", nmae = "x", trigger = "* * * * *", ]] .. RUN,
      "jobs/report.lua:2: nmae: unknown field (did you mean 'name'?)" },
    { "a misspelt timeout",
      [[id = "r", timout = "30s", trigger = "* * * * *", ]] .. RUN,
      "jobs/report.lua:2: timout: unknown field (did you mean 'timeout'?)" },
    { "an unknown job field",
      [[id = "r", colour = "blue", trigger = "* * * * *", ]] .. RUN,
      "jobs/report.lua:2: colour: unknown field" },
    { "a timeout that is not a duration",
      [[id = "r", timeout = "soon", trigger = "* * * * *", ]] .. RUN,
      [[jobs/report.lua:2: timeout: 'soon' is not a duration (expected seconds, or a string such as "90s", "5m", "1h30m")]] },
    { "a timeout of zero",
      [[id = "r", timeout = 0, trigger = "* * * * *", ]] .. RUN,
      "jobs/report.lua:2: timeout: must be more than 0 (or false)" },
    { "an unknown overlap policy",
      [[id = "r", overlap = "queue", trigger = "* * * * *", ]] .. RUN,
      "jobs/report.lua:2: overlap: 'queue' is not a policy (expected skip, "
        .. "buffer_one, buffer_all, cancel_other or allow_all)" },
    { "max_instances below 1",
      [[id = "r", max_instances = 0, trigger = "* * * * *", ]] .. RUN,
      "jobs/report.lua:2: max_instances: expected an integer >= 1, got 0" },
    { "a misspelt retry field",
      [[id = "r", retry = { atempts = 3 }, trigger = "* * * * *", ]] .. RUN,
      "jobs/report.lua:2: retry.atempts: unknown field (did you mean 'attempts'?)" },
    { "an unknown backoff",
      [[id = "r", retry = { backoff = "random" }, trigger = "* * * * *", ]] .. RUN,
      "jobs/report.lua:2: retry.backoff: 'random' is not a backoff (expected "
        .. "fixed, linear or exponential)" },
    { "a retry jitter above 1",
      [[id = "r", retry = { jitter = 2 }, trigger = "* * * * *", ]] .. RUN,
      "jobs/report.lua:2: retry.jitter: expected a fraction from 0 to 1, got 2" },
    { "a retry_on that is not a function",
      [[id = "r", retry = { retry_on = "timeouts" }, trigger = "* * * * *", ]] .. RUN,
      "jobs/report.lua:2: retry.retry_on: expected a function(err), got string" },
    { "a coalesce that is not a boolean",
      [[id = "r", coalesce = "yes", trigger = "* * * * *", ]] .. RUN,
      "jobs/report.lua:2: coalesce: expected true or false, got string" },
    { "a trigger jitter that is not a duration",
      [[id = "r", trigger = { "interval", minutes = 5, jitter = "a bit" }, ]] .. RUN,
      [[jobs/report.lua:2: trigger.jitter: 'a bit' is not a duration (expected seconds, or a string such as "90s", "5m", "1h30m")]] },
    { "jitter on a date trigger",
      [[id = "r", trigger = { "date", delay = 5, jitter = 1 }, ]] .. RUN,
      "jobs/report.lua:2: trigger.jitter: unknown field for a date trigger" },
    { "an interval shorter than 1ms",
      [[id = "r", trigger = { "interval", seconds = 1e-7 }, ]] .. RUN,
      "jobs/report.lua:2: trigger: interval of 1e-07s is shorter than the shortest allowed, 1ms" },
    { "an endless interval",
      [[id = "r", trigger = { "interval", seconds = math.huge }, ]] .. RUN,
      "jobs/report.lua:2: trigger.seconds: inf is not a usable length" },
    { "a run_date past the year 9999",
      [[id = "r", trigger = { "date", run_date = 1e300 }, ]] .. RUN,
      "jobs/report.lua:2: trigger.run_date: 1e+300 is not a time between the years 1 and 9999" },
    { "an args.n that is not a count",
      [[id = "r", args = { n = -1 }, trigger = "* * * * *", ]] .. RUN,
      "jobs/report.lua:2: args.n: expected an integer from 0 to 250, got -1" },
    { "a job without an id in a file",
      [[trigger = "* * * * *", ]] .. RUN,
      "jobs/report.lua:2: id: required for jobs declared in files (it is "
        .. "the job's identity across reloads and restarts)" },
    { "an id that is not a string",
      [[id = 7, trigger = "* * * * *", ]] .. RUN,
      "jobs/report.lua:2: id: expected a non-empty string without spaces, got number" },
    { "a job without run",
      [[id = "r", trigger = "* * * * *"]],
      "jobs/report.lua:2: run: required (the function the job runs)" },
    { "a run that is neither a function nor a reference",
      [[id = "r", trigger = "* * * * *", run = 42]],
      "jobs/report.lua:2: run: expected a function or a \"module.function\" reference, got number" },
    { "a run reference to a module that does not exist",
      [[id = "r", trigger = "* * * * *", run = "cleanup.sh"]],
      "jobs/report.lua:2: run: 'cleanup.sh': module 'cleanup' not found" },
    { "a run reference to a function a module lacks",
      [[id = "r", trigger = "* * * * *", run = "moonbeat.time.nap"]],
      "jobs/report.lua:2: run: 'moonbeat.time.nap': module 'moonbeat.time' has no function 'nap'" },
    { "a run that is not a reference",
      [[id = "r", trigger = "* * * * *", run = "rm -rf /tmp/x"]],
      "jobs/report.lua:2: run: 'rm -rf /tmp/x' is not a reference such as \"module.function\"" },
    { "a job without a trigger",
      [[id = "r", ]] .. RUN,
      'jobs/report.lua:2: trigger: required (a table such as { "interval", '
        .. 'minutes = 5 } or a crontab string)' },
    { "an unknown trigger kind",
      [[id = "r", trigger = { "crn", hour = 1 }, ]] .. RUN,
      "jobs/report.lua:2: trigger[1]: unknown trigger kind 'crn' (expected "
        .. "date, interval or cron)" },
    { "an interval of no length",
      [[id = "r", trigger = { "interval" }, ]] .. RUN,
      "jobs/report.lua:2: trigger: interval needs a positive length: give "
        .. "weeks, days, hours, minutes or seconds" },
    { "a negative interval",
      [[id = "r", trigger = { "interval", seconds = -5 }, ]] .. RUN,
      "jobs/report.lua:2: trigger.seconds: must be >= 0, got -5" },
    { "a misspelt interval field",
      [[id = "r", trigger = { "interval", second = 5 }, ]] .. RUN,
      "jobs/report.lua:2: trigger.second: unknown field for an interval "
        .. "trigger (did you mean 'seconds'?)" },
    { "a misspelt cron field",
      [[id = "r", trigger = { "cron", hours = 5 }, ]] .. RUN,
      "jobs/report.lua:2: trigger.hours: unknown field for a cron trigger "
        .. "(did you mean 'hour'?)" },
    { "a cron trigger with no field",
      [[id = "r", trigger = { "cron" }, ]] .. RUN,
      "jobs/report.lua:2: trigger: cron needs a crontab string or at least one "
        .. "field (year, month, day, week, day_of_week, hour, minute, second)" },
    { "a date trigger without a date",
      [[id = "r", trigger = { "date" }, ]] .. RUN,
      "jobs/report.lua:2: trigger: date needs run_date or delay" },
    { "a delay that is not a duration",
      [[id = "r", trigger = { "date", delay = "5 minutes" }, ]] .. RUN,
      [[jobs/report.lua:2: trigger.delay: '5 minutes' is not a duration ]]
        .. [[(expected seconds, or a string such as "90s", "5m", "1h30m")]] },
    { "a cron expression that can never fire",
      [[id = "r", trigger = "0 0 30 2 *", ]] .. RUN,
      "jobs/report.lua:2: trigger: '0 0 30 2 *' can never fire" },
    { "a field table that can never fire",
      [[id = "r", trigger = { "cron", month = 2, day = 31 }, ]] .. RUN,
      "jobs/report.lua:2: trigger: cron[month='2', day='31'] can never fire" },
    { "a crontab string with too few fields",
      [[id = "r", trigger = "* * *", ]] .. RUN,
      "jobs/report.lua:2: trigger: '* * *': expected 5, 6 or 7 fields, got 3" },
    { "a crontab string with a bad field",
      [[id = "r", trigger = "61 * * * *", ]] .. RUN,
      "jobs/report.lua:2: trigger: '61 * * * *': minute: 61 is out of range 0-59" },
    { "a day name that is not one",
      [[id = "r", trigger = { "cron", day_of_week = "funday" }, ]] .. RUN,
      "jobs/report.lua:2: trigger.day_of_week: 'funday' is not a day name" },
    { "a fractional cron field",
      [[id = "r", trigger = { "cron", minute = 2.5 }, ]] .. RUN,
      "jobs/report.lua:2: trigger.minute: expected an integer or an "
        .. "expression string, got 2.5" },
    { "a crontab string mixed with fields",
      [[id = "r", trigger = { "cron", "0 * * * *", hour = 3 }, ]] .. RUN,
      "jobs/report.lua:2: trigger.hour: cannot be combined with a crontab string" },
    { "an unknown time zone",
      [[id = "r", trigger = { "cron", hour = 1, timezone = "Mars/Olympus" }, ]] .. RUN,
      "jobs/report.lua:2: trigger.timezone: unknown time zone 'Mars/Olympus'" },
    { "an end_date before start_date",
      [[id = "r", trigger = { "interval", hours = 1, start_date = "2026-02-01", ]]
        .. [[end_date = "2026-01-15" }, ]] .. RUN,
      "jobs/report.lua:2: trigger.end_date: 2026-01-15T00:00:00+00:00 is "
        .. "before start_date 2026-02-01T00:00:00+00:00" },
    { "an end_date that has passed",
      [[id = "r", trigger = { "cron", hour = 1, end_date = "2025-06-01" }, ]] .. RUN,
      "jobs/report.lua:2: trigger.end_date: 2025-06-01T00:00:00+00:00 has "
        .. "passed, so it can never fire" },
    { "args that are not a list",
      [[id = "r", trigger = "* * * * *", args = "x", ]] .. RUN,
      "jobs/report.lua:2: args: expected a list, got string" },
    { "a run_date that is not a time",
      [[id = "r", trigger = { "date", run_date = true }, ]] .. RUN,
      "jobs/report.lua:2: trigger.run_date: expected a time (a string such "
        .. "as '2026-12-01 09:00' or seconds since the epoch), got boolean" },
  }

  for _, case in ipairs(cases) do
    it("names the field for " .. case[1], function()
      assert.equal(case[3], error_for(case[2]))
    end)
  end

  it("reports a time that does not exist", function()
    local err = error_for([[id = "r", trigger = { "date", run_date = "2026-02-30 10:00" }, ]] .. RUN)
    assert.matches("^jobs/report.lua:2: trigger.run_date: '2026%-02%-30 10:00' ", err)
  end)

  it("points at the line of the add_job call in a longer file", function()
    local src = table.concat({
      "local time = require 'moonbeat.time'",
      "",
      "scheduler.add_job {",
      "  id = 'r',",
      "  trigger = { 'cron', hour = 24 },",
      "  run = function() end,",
      "}",
    }, "\n")
    local jobs, err = h:load("jobs/report.lua", src)
    assert.is_nil(jobs)
    assert.equal("jobs/report.lua:3: trigger.hour: 24 is out of range 0-23", err)
  end)

  it("reports a syntax error with file and line", function()
    local jobs, err = h:load("jobs/broken.lua", "scheduler.add_job {\n  id = 'x'\n  run = 1 }")
    assert.is_nil(jobs)
    assert.equal("jobs/broken.lua:3: '}' expected (to close '{' at line 1) near 'run'", err)
  end)

  it("reports a runtime error in a job file with file and line", function()
    local jobs, err = h:load("jobs/broken.lua", "local x = nil\nreturn x.field")
    assert.is_nil(jobs)
    assert.equal("jobs/broken.lua:2: attempt to index a nil value (local 'x')", err)
  end)

  it("refuses a second job with the same id, naming the first file", function()
    assert.truthy(h:load("jobs/a.lua", "scheduler.add_job { id = 'x', trigger = '* * * * *', run = function() end }"))
    local jobs, err = h:load("jobs/b.lua", "scheduler.add_job { id = 'x', trigger = '* * * * *', run = function() end }")
    assert.is_nil(jobs)
    assert.equal("jobs/b.lua:1: job id 'x' already exists (declared in jobs/a.lua); "
      .. "pass replace_existing = true to replace it", err)
  end)

  it("replaces a job with replace_existing = true", function()
    h.scheduler.add_job { id = "x", trigger = "* * * * *", run = function() end }
    local job = h.scheduler.add_job { id = "x", trigger = { "interval", hours = 1 },
      replace_existing = true, run = function() end }
    assert.equal("interval[1h]", job.trigger)
    assert.equal(1, #h.scheduler.get_jobs())
  end)

  it("refuses an add_job argument that is not a table", function()
    local jobs, err = h:load("jobs/report.lua", "scheduler.add_job 'every minute'")
    assert.is_nil(jobs)
    assert.equal("jobs/report.lua:1: add_job: expected a table, got string", err)
  end)

  it("takes back the jobs a failing file added and disturbs no other job", function()
    local fires = h:record("other", { "interval", seconds = 10 })
    local src = "scheduler.add_job { id = 'first', trigger = '* * * * *', run = function() end }\n"
      .. "scheduler.add_job { id = 'second', trigger = { 'cron', hour = 99 }, run = function() end }\n"
    local jobs, err = h:load("jobs/half.lua", src)
    assert.is_nil(jobs)
    assert.equal("jobs/half.lua:2: trigger.hour: 99 is out of range 0-23", err)
    assert.is_nil(h.scheduler.get_job("first"))
    h:advance("30s")
    assert.same({ 10, 20, 30 }, fires)
    local logged = h:logged("job file failed to load")
    assert.equal(1, #logged)
    assert.equal("jobs/half.lua", logged[1].fields.file)
  end)

  it("raises at the caller's line when used from Lua directly", function()
    local ok, err = pcall(h.scheduler.add_job, { id = "x", trigger = { "cron", minute = 60 },
      run = function() end })
    assert.is_false(ok)
    assert.matches("trigger.minute: 60 is out of range 0%-59$", err)
  end)
end)
