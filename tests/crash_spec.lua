-- Kill the scheduler with SIGKILL at random moments, again and again,
-- and check that the store lost nothing and ran nothing twice.
local support = require "tests.support"
local core = require "moonbeat.core"

local KILLS = 20

local JOBS = [[
local time = require "moonbeat.time"

-- Every overdue fire runs (no coalescing), so its fires form a grid with
-- no hole, across every restart.
scheduler.add_job { id = "tick", trigger = { "interval", seconds = 0.1,
  start_date = "2026-01-01" }, coalesce = false, run = function() end }

scheduler.add_job { id = "sleepy", trigger = { "interval", seconds = 0.3 },
  run = function() time.sleep(0.2) end }

scheduler.add_job { id = "flaky", trigger = { "interval", seconds = 0.25 },
  retry = { attempts = 3, delay = 0.05, backoff = "fixed" },
  run = function(ctx)
    ctx.state.n = (ctx.state.n or 0) + 1
    if math.random() < 0.5 then error("flaked") end
  end }
]]

describe("crashes", function()
  local dir
  before_each(function() dir = support.tempdir { ["jobs.lua"] = JOBS } end)
  after_each(function() support.remove_tree(dir) end)

  it("lose nothing and run nothing twice after " .. KILLS .. " kills", function()
    local db = dir .. "/m.db"
    local bin = support.quote(support.BIN)
    math.randomseed(7)
    local lines = {}
    for i = 1, KILLS do
      -- Kill at a random moment 0.15 to 0.6 s into each life.
      lines[#lines + 1] = ("%s run --db %s %s >>%s/log 2>&1 & pid=$!; sleep %.2f; kill -KILL $pid; wait $pid 2>/dev/null")
        :format(bin, db, dir, dir, 0.15 + math.random() * 0.45)
    end
    lines[#lines + 1] = ("%s run --db %s %s >>%s/log 2>&1 & pid=$!; sleep 0.5; kill -TERM $pid; wait $pid; echo final=$?")
      :format(bin, db, dir, dir)
    local out = support.sh(table.concat(lines, "\n"))
    assert.matches("final=0", out, 1, true)

    local sched = assert(core.new { clock = "virtual", db = db })
    local api = require("mb.scheduler").new(sched)
    local stats = sched:store_stats()
    local runs = api.get_runs { limit = 1000000 }
    sched:close()
    assert.equal("ok", stats.integrity)
    assert.is_true(#runs > 100, "only " .. #runs .. " runs recorded")

    local seen, success, pids = {}, {}, {}
    local tick = {}
    for _, run in ipairs(runs) do
      assert.are_not.equal("running", run.status)
      local key = ("%s|%.3f|%d"):format(run.job_id, run.scheduled_time, run.attempt)
      assert.is_nil(seen[key], "recorded twice: " .. key)
      seen[key] = true
      if run.status == "success" then
        local fire = ("%s|%.3f"):format(run.job_id, run.scheduled_time)
        assert.is_nil(success[fire], "succeeded twice: " .. fire)
        success[fire] = true
      end
      pids[run.pid] = true
      if run.job_id == "tick" and run.attempt == 1 then tick[#tick + 1] = run.scheduled_time end
    end
    local lives = 0
    for _ in pairs(pids) do lives = lives + 1 end
    assert.is_true(lives >= KILLS / 2, "runs from only " .. lives .. " processes")

    -- tick: every grid point from its first fire to its last, once.
    table.sort(tick)
    for i = 2, #tick do
      local step = math.floor((tick[i] - tick[i - 1]) * 1000 + 0.5)
      assert.equal(100, step, ("hole or repeat in tick's fires at %.3f"):format(tick[i]))
    end
  end)
end)
