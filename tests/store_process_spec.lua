-- The store seen from the process: one scheduler per database, bad
-- database files, runs interrupted by a kill, and crashes that lose
-- nothing.
local support = require "tests.support"
local core = require "moonbeat.core"

local BIN = support.quote(support.BIN)

-- Read a database the way a later start would, without scheduling.
local function inspect(db)
  local sched = assert(core.new { clock = "virtual", db = db })
  local api = require("mb.scheduler").new(sched)
  local stats = sched:store_stats()
  local runs = api.get_runs { limit = 100000 }
  sched:close()
  return runs, stats
end

describe("the store file", function()
  local dir
  before_each(function() dir = support.tempdir() end)
  after_each(function() support.remove_tree(dir) end)

  -- A fixed date in the past: it runs at once, and only once.
  local SLEEPER = [[
local time = require "moonbeat.time"
scheduler.add_job { id = "sleeper", trigger = { "date", run_date = "2026-01-01" },
  retry = { attempts = 2, delay = 0 },
  run = function(ctx) if ctx.attempt == 1 then time.sleep(3600) end end }
]]

  it("lets only one scheduler use a database, naming the one that holds it", function()
    support.write(dir .. "/sleeper.lua", SLEEPER)
    local db = dir .. "/m.db"
    local script = ("%s run --db %s %s >%s/first.log 2>&1 & pid=$!\n"
      .. "i=0; while [ $i -lt 100 ] && ! grep -q 'run started' %s/first.log; do sleep 0.1; i=$((i+1)); done\n"
      .. "%s run --db %s %s 2>&1; echo \"second=$? first=$pid\"\n"
      .. "kill -TERM $pid; wait $pid"):format(BIN, db, dir, dir, dir, BIN, db, dir)
    local out = support.sh(script)
    local code, pid = out:match("second=(%d+) first=(%d+)")
    assert.equal("1", code)
    assert.matches(("moonbeat: %s is in use by process %s; only one scheduler may use a "
      .. "database at a time"):format(db, pid):gsub("%p", "%%%0"), out)
  end)

  it("marks a run killed with its process as interrupted and retries it on the next start", function()
    support.write(dir .. "/sleeper.lua", SLEEPER)
    local db = dir .. "/m.db"
    -- The kill comes once the run's start is committed: a start not yet
    -- committed when the process dies is a fire not yet begun, due again
    -- at the next start.
    local committed = ("[ \"$(sqlite3 %s \"SELECT count(*) FROM runs WHERE status = 'running'\" "
      .. "2>/dev/null)\" = 1 ]"):format(support.quote(db))
    local _, code = support.run_until(("run --db %s %s"):format(db, dir), "run started", "KILL",
      committed)
    assert.equal(137, code)
    local out
    out, code = support.run_until(("run --db %s %s"):format(db, dir), "status=success", "TERM")
    assert.equal(0, code)
    assert.matches("run interrupted by a stop of its process job=sleeper", out, 1, true)
    assert.matches("retry scheduled job=sleeper attempt=2", out, 1, true)
    local runs = inspect(db)
    assert.equal("success", runs[1].status)
    assert.equal(2, runs[1].attempt)
    assert.equal("interrupted", runs[2].status)
    assert.equal("the process running it stopped before it finished", runs[2].error)
  end)

  it("commits what was written before the loop waits, not at its next wake-up", function()
    -- "later" is added before the loop runs; "probe", already due, runs
    -- on the loop's first wake-up and looks for later's row from another
    -- process, holding the loop meanwhile. The row must be committed
    -- before the loop first waited.
    local db = dir .. "/m.db"
    local sched = assert(core.new { clock = "real", db = db })
    local api = require("mb.scheduler").new(sched)
    local now = core.now()
    api.add_job { id = "later", trigger = { "date", run_date = now + 3600 },
      run = function() end }
    local seen
    api.add_job { id = "probe", trigger = { "date", run_date = now - 1 },
      misfire_grace_time = false, run = function()
        local query = ("sqlite3 %s 'SELECT id FROM jobs' 2>/dev/null"):format(support.quote(db))
        for _ = 1, 40 do
          local p = io.popen(query)
          seen = p:read("a")
          p:close()
          if seen:find("later", 1, true) then break end
          os.execute("sleep 0.05")
        end
        api.shutdown()
      end }
    sched:run()
    sched:close()
    assert.matches("later", seen, 1, true)
  end)

  it("makes the loop wait for a writer that fell too far behind, and loses nothing", function()
    -- 5,000 jobs added before the loop runs are 5,000 row writes in its
    -- first turn, more than may wait for the writer here (a million
    -- by default).
    core.configure_log { stream = "none" }
    local db = dir .. "/m.db"
    local sched = assert(core.new { clock = "real", db = db })
    sched:store_set_lag(4096)
    local api = require("mb.scheduler").new(sched)
    local far = core.now() + 3600
    local noop = function() end
    for i = 1, 5000 do
      api.add_job { id = "j" .. i, trigger = { "date", run_date = far }, run = noop }
    end
    local stats
    api.add_job { id = "probe", trigger = { "date", run_date = core.now() - 1 },
      misfire_grace_time = false, run = function()
        stats = sched:store_stats()
        api.shutdown()
      end }
    sched:run()
    sched:close()
    assert.equal(1, stats.catch_ups)
    assert.equal(0, stats.failed_commits)
    local p = io.popen(("sqlite3 %s 'SELECT count(*) FROM jobs'"):format(support.quote(db)))
    local rows = p:read("a")
    p:close()
    assert.equal("5001", rows:match("%d+"))
  end)

  it("refuses a file that is not a database", function()
    local db = dir .. "/bad.db"
    support.write(db, ("this is not a database\n"):rep(200))
    local out, code = support.sh(("%s run --db %s %s"):format(BIN, db, dir))
    assert.equal(1, code)
    assert.matches(("moonbeat: %s: "):format(db):gsub("%p", "%%%0") .. ".*file is not a database", out)
  end)

  it("refuses a database written by a newer moonbeat", function()
    local db = dir .. "/new.db"
    inspect(db)
    -- user_version is the big-endian word at offset 60 of the header.
    local f = assert(io.open(db, "r+b"))
    f:seek("set", 60)
    f:write("\0\0\0\99")
    f:close()
    local out, code = support.sh(("%s run --db %s %s"):format(BIN, db, dir))
    assert.equal(1, code)
    assert.matches("was written by a newer moonbeat (schema version 99; this one knows up to 3)", out, 1, true)
  end)

  it("refuses a database it cannot write", function()
    local db = dir .. "/ro.db"
    inspect(db)
    os.remove(db .. ".lock")
    -- Root writes through file modes, so as root the check runs as nobody
    -- (with a copy of the binary that nobody may run).
    local p = io.popen("id -u")
    local root = p:read("l") == "0"
    p:close()
    local cmd = ("chmod 755 %s && chmod 444 %s && cp %s %s/mb && chmod 755 %s/mb && "
      .. "cd %s && ./mb run --db %s %s"):format(dir, db, BIN, dir, dir, dir, db, dir)
    if root then
      cmd = ("chmod 755 %s && chmod 444 %s && cp %s %s/mb && chmod 755 %s/mb && "
        .. "touch %s.lock && chmod 666 %s.lock && cd %s && su nobody -s /bin/sh -c "
        .. "'./mb run --db %s %s'"):format(dir, db, BIN, dir, dir, db, db, dir, db, dir)
    end
    local out, code = support.sh(cmd)
    assert.equal(1, code)
    assert.matches(db .. " is read-only; the scheduler must be able to write its state", out, 1, true)
  end)

  it("defaults to moonbeat.db in the working directory", function()
    support.write(dir .. "/jobs.lua", "scheduler.add_job { id = 'x', trigger = { 'date', delay = 0 }, run = function() end }")
    local out = support.sh(("cd %s && (%s run . >/dev/null 2>&1 & pid=$!; i=0; while [ $i -lt 100 ] && [ ! -e moonbeat.db ]; "
      .. "do sleep 0.1; i=$((i+1)); done; sleep 0.3; kill -TERM $pid; wait $pid); ls"):format(dir, support.quote(
      (os.getenv("PWD") or ".") .. "/" .. support.BIN)))
    assert.matches("moonbeat.db", out, 1, true)
  end)
end)
