-- `moonbeat check DIR`: load without running, every error reported,
-- each job with its next fire times, a non-zero exit on any error.
local support = require "tests.support"

local BIN = support.quote(support.BIN)

-- Run `moonbeat check ARGS`; return stdout, stderr and the exit code.
local function check(args)
  local err = os.tmpname()
  local p = io.popen(("%s check %s 2>%s; echo \"exit=$?\""):format(BIN, args, err))
  local out = p:read("a")
  p:close()
  local f = io.open(err)
  local errors = f:read("a")
  f:close()
  os.remove(err)
  local body, code = out:match("^(.*)exit=(%d+)\n$")
  return body, errors, tonumber(code)
end

describe("moonbeat check", function()
  local dir
  before_each(function() dir = support.tempdir() end)
  after_each(function() support.remove_tree(dir) end)

  local GOOD = [[
scheduler.add_job { id = "hourly", name = "Hourly report",
  trigger = { "interval", hours = 1, start_date = "2099-01-01 00:00:00" },
  run = function() end }
scheduler.add_job { id = "new-year", trigger = { "date", run_date = "2099-01-01 09:00:00",
  timezone = "Europe/Berlin" }, run = function() end }
]]

  it("prints each job with its next three fire times and exits 0", function()
    support.write(dir .. "/good.lua", GOOD)
    local out, errors, code = check("--timezone UTC " .. dir)
    assert.equal(0, code)
    assert.equal("", errors)
    assert.equal(table.concat({
      dir .. "/good.lua: 2 jobs",
      "  hourly (Hourly report)  interval[1h]",
      "    2099-01-01T00:00:00+00:00",
      "    2099-01-01T01:00:00+00:00",
      "    2099-01-01T02:00:00+00:00",
      "  new-year  date[2099-01-01T09:00:00+01:00]",
      "    2099-01-01T09:00:00+01:00",
      "check: 1 file, 2 jobs, no errors",
      "" }, "\n"), out)
  end)

  it("reports every error in every file, with file and line, and exits 1", function()
    os.execute("mkdir " .. support.quote(dir .. "/team"))
    support.write(dir .. "/a.lua", "scheduler.add_job { id = 'a',\n  trigger = { 'cron', hour = 24 },\n  run = print }\n")
    support.write(dir .. "/good.lua", GOOD)
    support.write(dir .. "/team/b.lua", "scheduler.add_job {\n  id = 'b'\n  run = print }\n")
    support.write(dir .. "/team/c.lua", "scheduler.add_job { id = 'hourly', trigger = '@daily', run = print }\n")
    local out, errors, code = check("--timezone UTC " .. dir)
    assert.equal(1, code)
    assert.equal(table.concat({
      dir .. "/a.lua:1: trigger.hour: 24 is out of range 0-23",
      dir .. "/team/b.lua:3: '}' expected (to close '{' at line 1) near 'run'",
      dir .. "/team/c.lua:1: job id 'hourly' already exists (declared in "
        .. dir .. "/good.lua); pass replace_existing = true to replace it",
      "" }, "\n"), errors)
    assert.matches("  hourly (Hourly report)  interval[1h]", out, 1, true)
    assert.matches("check: 4 files, 2 jobs, 3 files failing\n$", out)
  end)

  it("runs no job", function()
    local marker = dir .. "/ran"
    support.write(dir .. "/now.lua", ("scheduler.add_job { id = 'now', trigger = { 'date', delay = 0 },"
      .. " run = function() io.open(%q, 'w'):close() end }\n"):format(marker))
    local out, _, code = check(dir)
    assert.equal(0, code)
    assert.matches("  now  date[", out, 1, true)
    assert.is_nil(io.open(marker))
  end)

  it("says when the directory cannot be read", function()
    local _, errors, code = check(dir .. "/missing")
    assert.equal(2, code)
    assert.equal("moonbeat: cannot read the job directory " .. dir
      .. "/missing: No such file or directory\n", errors)
  end)

  it("refuses a bad option with its usage", function()
    local _, errors, code = check("-n 0 " .. dir)
    assert.equal(2, code)
    assert.matches("^moonbeat: %-n: expected a count from 1 to 1000, got '0'\nusage: moonbeat check", errors)
  end)
end)
