-- The moonbeat binary itself: `moonbeat run` on a job directory,
-- signals, log formats and the command line.
local support = require "tests.support"

describe("moonbeat run", function()
  local dir
  after_each(function()
    if dir then support.remove_tree(dir) end
    dir = nil
  end)

  local NOW_JOB = [[
scheduler.add_job {
  id = "now",
  trigger = { "date", delay = 0 },
  run = function(ctx) ctx.log.info("hello from the job", { answer = 42 }) end,
}
]]

  it("runs the jobs of a directory and stops cleanly on SIGINT", function()
    dir = support.tempdir { ["now.lua"] = NOW_JOB }
    local out, code = support.run_until("run --db " .. dir .. "/m.db " .. dir, "run finished", "INT")
    assert.equal(0, code)
    assert.matches("job added job=now", out, 1, true)
    assert.matches("hello from the job job=now run=%d+ answer=42", out)
    assert.matches("run finished job=now run=%d+ status=success", out)
    assert.matches("scheduler stopping runs=0 wait=30s signal=SIGINT", out, 1, true)
    assert.matches("scheduler stopped", out, 1, true)
  end)

  it("stops cleanly on SIGTERM", function()
    dir = support.tempdir { ["now.lua"] = NOW_JOB }
    local out, code = support.run_until("run --db " .. dir .. "/m.db " .. dir, "run finished", "TERM")
    assert.equal(0, code)
    assert.matches("signal=SIGTERM", out, 1, true)
  end)

  it("writes one JSON object per line with --log-format json", function()
    dir = support.tempdir { ["now.lua"] = NOW_JOB }
    local out, code = support.run_until("run --db :memory: --log-format json " .. dir, "run finished", "INT")
    assert.equal(0, code)
    for line in out:gmatch("[^\n]+") do
      assert.matches('^{"time":"[%d%-T:%.]+%+00:00","level":"%a+","msg":"[^"]+".*}$', line)
    end
    assert.matches('"msg":"run finished","job":"now","run":%d+,"status":"success","duration":[%d.]+}', out)
  end)

  it("reports a broken file with file and line and runs the others", function()
    dir = support.tempdir {
      ["now.lua"] = NOW_JOB,
      ["broken.lua"] = "scheduler.add_job {\n  id = 'broken',\n  trigger = { 'cron', hour = 25 },\n"
        .. "  run = function() end,\n}\n",
    }
    local out, code = support.run_until("run --db " .. dir .. "/m.db " .. dir, "run finished", "INT")
    assert.equal(0, code)
    assert.matches("ERROR job file failed to load error=\"" .. dir
      .. "/broken.lua:1: trigger.hour: 25 is out of range 0-23\" file=" .. dir
      .. "/broken.lua\n", out, 1, true)
    assert.matches("failed=1 files=2 interrupted=0 jobs=1", out, 1, true)
  end)

  it("logs a failing job's error with its traceback and keeps running", function()
    dir = support.tempdir {
      ["fail.lua"] = "scheduler.add_job { id = 'fail', trigger = { 'date', delay = 0 },\n"
        .. "  run = function() error('disk full') end }\n",
      ["z-after.lua"] = NOW_JOB:gsub('delay = 0', 'delay = 0.2'),
    }
    local out, code = support.run_until("run --db " .. dir .. "/m.db " .. dir, "hello from the job", "INT")
    assert.equal(0, code)
    assert.matches("run failed job=fail run=%d+ status=error duration=%S+ error=\"[^\"]*fail.lua:2: disk full\"", out)
    assert.matches("\n    stack traceback:\n", out, 1, true)
  end)

  it("describes every option in --help", function()
    local out, code = support.sh(support.quote(support.BIN) .. " run --help")
    assert.equal(0, code)
    for _, option in ipairs { "--log-format", "--log-level", "--timezone", "--help" } do
      assert.matches(option, out, 1, true)
    end
    out, code = support.sh(support.quote(support.BIN) .. " --help")
    assert.equal(0, code)
    assert.matches("run [DIR]", out, 1, true)
  end)

  it("refuses an unknown option and a missing directory", function()
    local out, code = support.sh(support.quote(support.BIN) .. " run --frobnicate")
    assert.equal(2, code)
    assert.matches("moonbeat: unknown option --frobnicate", out, 1, true)
    out, code = support.sh(support.quote(support.BIN) .. " run --timezone Mars/Olympus")
    assert.equal(2, code)
    assert.matches("moonbeat: --timezone: unknown time zone 'Mars/Olympus'", out, 1, true)
    out, code = support.sh(support.quote(support.BIN) .. " run /nonexistent/jobs")
    assert.equal(2, code)
    assert.matches("moonbeat: cannot read the job directory /nonexistent/jobs: No such file or directory", out, 1, true)
  end)
end)
