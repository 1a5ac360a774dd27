-- The store: run history, job state and ctx.state, kept across restarts.
local harness = require "tests.harness"
local support = require "tests.support"
local time = require "moonbeat.time"

local HOUR, DAY = 3600, 86400

describe("run history", function()
  local h, s
  before_each(function()
    h = harness.new()
    s = h.scheduler
  end)
  after_each(function() h:close() end)

  it("records every attempt with its status, times, error and log lines", function()
    s.add_job { id = "ok", trigger = { "date", delay = 10 }, run = function(ctx)
      ctx.log.info("copied", { files = 3 })
      time.sleep(2)
    end }
    s.add_job { id = "bad", trigger = { "date", delay = 10 }, run = function() error("disk full") end }
    h:advance("20s")
    local runs = s.get_runs()
    assert.equal(2, #runs)
    local ok = s.get_runs { job_id = "ok" }[1]
    assert.equal("success", ok.status)
    assert.equal(h.start + 10, ok.scheduled_time)
    assert.equal(h.start + 10, ok.start_time)
    assert.equal(h.start + 12, ok.end_time)
    assert.equal(2, ok.duration)
    assert.equal(1, ok.attempt)
    assert.equal("INFO copied files=3\n", ok.log)
    assert.is_string(ok.host)
    assert.is_number(ok.pid)
    local bad = s.get_runs { status = "error" }[1]
    assert.equal("bad", bad.job_id)
    assert.matches("disk full", bad.error)
    assert.matches("stack traceback", bad.traceback)
  end)

  it("records timeouts, missed and skipped fires and retries as attempts", function()
    s.add_job { id = "slow", trigger = { "date", delay = 1 }, timeout = 5,
      retry = { attempts = 2, delay = 1 }, run = function() time.sleep(60) end }
    s.add_job { id = "busy", trigger = { "interval", seconds = 10 },
      run = function() time.sleep(15) end }
    s.add_job { id = "strict", trigger = { "date", delay = 1 }, misfire_grace_time = 1,
      run = function() end }
    h:stall("3s")
    h:advance("25s")
    local statuses = {}
    for _, run in ipairs(s.get_runs { limit = 50 }) do
      statuses[#statuses + 1] = run.job_id .. ":" .. run.status .. ":" .. run.attempt
    end
    table.sort(statuses)
    -- busy: the run of 10 s lasts till 25 s, so the fire of 20 s is skipped.
    assert.same({ "busy:skipped:1", "busy:success:1", "slow:timeout:1",
      "slow:timeout:2", "strict:missed:1" }, statuses)
  end)

  it("filters by job, status, time and count, newest first", function()
    h:record("a", { "interval", seconds = 10 })
    h:record("b", { "interval", seconds = 15 })
    h:advance("1m")
    local a = s.get_runs { job_id = "a" }
    assert.equal(6, #a)
    assert.equal(h.start + 60, a[1].scheduled_time)
    assert.equal(h.start + 10, a[6].scheduled_time)
    assert.equal(2, #s.get_runs { job_id = "a", limit = 2 })
    -- a at 40, 50, 60 and b at 45, 60.
    assert.equal(5, #s.get_runs { since = h.start + 31 })
    assert.equal(0, #s.get_runs { status = "error" })
    local ok, err = pcall(s.get_runs, { jobid = "a" })
    assert.is_false(ok)
    assert.matches("get_runs: jobid: unknown filter", err)
  end)

  it("lets a listener read history while a restore reads the store", function()
    s.add_job { id = "p", trigger = { "interval", seconds = 10 }, run = function() end }
    s.pause_job("p")
    h:advance("1s")
    local seen
    s.add_listener(function() seen = #s.get_runs { job_id = "p" } end, { "paused" })
    s.add_job { id = "p", trigger = { "interval", seconds = 10 }, replace_existing = true,
      run = function() end }
    s.restore { only = { p = true } }
    assert.equal(0, seen)
    -- The read inside the restore's did not hold up a commit.
    assert.equal(0, h.core:store_stats().failed_commits)
    assert.is_true(s.get_job("p").paused)
  end)

  it("writes a burst of fires in one transaction per loop turn", function()
    for i = 1, 500 do h:record("burst-" .. i, { "date", delay = 5 }) end
    local before = h.core:store_stats()
    h:advance("5s")
    local after = h.core:store_stats()
    assert.equal(1, after.commits - before.commits)
    assert.is_true(after.rows - before.rows >= 500)
    assert.equal("ok", after.integrity)
  end)

  it("keeps the last keep_runs runs of a job", function()
    h:record("chatty", { "interval", seconds = 1 }, { keep_runs = 3 })
    h:advance("10s")
    local runs = s.get_runs { job_id = "chatty" }
    assert.equal(3, #runs)
    assert.equal(h.start + 10, runs[1].scheduled_time)
  end)

  it("drops runs older than keep_for", function()
    h:record("aging", { "interval", hours = 1 }, { keep_for = "3h" })
    h:advance("10h")
    local runs = s.get_runs { job_id = "aging" }
    -- At 10 h, runs of 7 h to 10 h are within 3 h.
    assert.equal(4, #runs)
    assert.equal(h.start + 7 * HOUR, runs[4].scheduled_time)
  end)

  it("counts outcomes and keeps the last run on the job", function()
    s.add_job { id = "mixed", trigger = { "interval", seconds = 10 }, run = function(ctx)
      if ctx.scheduled_time - h.start == 20 then error("second fails") end
    end }
    h:advance("30s")
    local job = s.get_job("mixed")
    assert.same({ ok = 2, failed = 1, timed_out = 0, missed = 0, skipped = 0, cancelled = 0 }, job.counts)
    assert.equal("success", job.last_run.status)
    assert.equal(h.start + 30, job.last_run.start_time)
  end)
end)

describe("ctx.state", function()
  local h, s
  before_each(function()
    h = harness.new()
    s = h.scheduler
  end)
  after_each(function() h:close() end)

  it("persists between runs", function()
    local seen = {}
    s.add_job { id = "counter", trigger = { "interval", seconds = 10 }, run = function(ctx)
      ctx.state.count = (ctx.state.count or 0) + 1
      ctx.state.history = ctx.state.history or {}
      table.insert(ctx.state.history, ctx.state.count)
      seen[#seen + 1] = ctx.state.count
    end }
    h:advance("30s")
    assert.same({ 1, 2, 3 }, seen)
    assert.equal("{[\"count\"]=3,[\"history\"]={[1]=1,[2]=2,[3]=3,},}", s.get_job("counter").saved_state)
  end)

  it("fails a run whose state holds a function, naming the key path", function()
    s.add_job { id = "fn", trigger = { "date", delay = 1 }, run = function(ctx)
      ctx.state.cache = { handler = print }
    end }
    h:advance("1s")
    local run = s.get_runs { job_id = "fn" }[1]
    assert.equal("error", run.status)
    assert.equal("ctx.state.cache.handler: a function cannot be saved", run.error)
  end)

  it("refuses a cycle, naming where it leads back to", function()
    s.add_job { id = "cyc", trigger = { "date", delay = 1 }, run = function(ctx)
      ctx.state.a = { b = {} }
      ctx.state.a.b.back = ctx.state.a
    end }
    h:advance("1s")
    assert.equal("ctx.state.a.b.back: a cycle cannot be saved (it leads back to ctx.state.a)",
      s.get_runs { job_id = "cyc" }[1].error)
  end)

  it("is the job's table, the same in every run and on a ctx kept past its run", function()
    local kept = {}
    s.add_job { id = "keeper", trigger = { "interval", seconds = 10 }, run = function(ctx)
      kept[#kept + 1] = ctx
      ctx.state.n = (ctx.state.n or 0) + 1
    end }
    h:advance("20s")
    assert.equal(2, #kept)
    -- Looked up after the runs ended, from outside any run.
    assert.equal(kept[1].state, kept[2].state)
    assert.equal(2, kept[1].state.n)
    assert.equal("keeper", kept[2].job_id)
    assert.is_number(kept[2].run_id)
  end)

  it("is saved after a run that changed it through a reference kept from an earlier run", function()
    local held
    s.add_job { id = "holder", trigger = { "interval", seconds = 10 }, run = function(ctx)
      held = held or ctx.state
      held.n = (held.n or 0) + 1
    end }
    h:advance("30s")
    assert.equal(3, held.n)
    assert.equal("{[\"n\"]=3,}", s.get_job("holder").saved_state)
  end)

  it("is saved for a job replaced with replace_existing whose runs never read it", function()
    s.add_job { id = "swapped", trigger = { "interval", seconds = 10 }, run = function(ctx)
      ctx.state.n = (ctx.state.n or 0) + 1
    end }
    h:advance("10s")
    s.add_job { id = "swapped", trigger = { "interval", seconds = 10 }, replace_existing = true,
      run = function() end }
    -- The replacement's row is written without the state until its first run saves it.
    h:advance("10s")
    assert.equal("{[\"n\"]=1,}", s.get_job("swapped").saved_state)
  end)

  it("is saved when set through the spec sched:job_spec hands out", function()
    s.add_job { id = "handed", trigger = { "interval", seconds = 10 }, run = function() end }
    h.core:job_spec(s.get_job("handed")).state = { set = "outside" }
    h:advance("10s")
    assert.equal("{[\"set\"]=\"outside\",}", s.get_job("handed").saved_state)
  end)

  it("follows the job when it is replaced while a run waits", function()
    s.add_job { id = "swap", trigger = { "date", delay = 1 }, run = function(ctx)
      time.sleep(10)
      ctx.state.after = "replaced"
    end }
    h:advance("2s")
    s.add_job { id = "swap", trigger = { "date", delay = 100 }, replace_existing = true,
      run = function() end }
    h:advance("10s")
    assert.equal("replaced", h.core:job_spec(s.get_job("swap")).state.after)
  end)

  it("is a table of its own once the job is gone", function()
    local state
    s.add_job { id = "gone", trigger = { "date", delay = 1 }, run = function(ctx)
      time.sleep(10)
      ctx.state.x = 1
      state = ctx.state
    end }
    h:advance("2s")
    s.remove_job("gone")
    h:advance("10s")
    assert.same({ x = 1 }, state)
    assert.equal("success", s.get_runs { job_id = "gone" }[1].status)
  end)

  it("keeps integers, floats, booleans and odd keys exactly", function()
    local codec = require "mb.state"
    local value = { 1, 2.5, 1e300, -0.0, true, ["key with space"] = "x\n\"y\"", [10] = false,
      nested = { deep = { math.huge } } }
    local back = codec.deserialize(assert(codec.serialize(value)))
    assert.same(value, back)
    assert.equal(math.type(back[1]), "integer")
    assert.equal(math.type(back[2]), "float")
  end)
end)

describe("restarting", function()
  local dir, db
  before_each(function()
    dir = support.tempdir()
    db = dir .. "/m.db"
  end)
  after_each(function() support.remove_tree(dir) end)

  -- A scheduler on db at start, with the given jobs added as a job file
  -- would add them, and restored.
  local function boot(start, add)
    local h = harness.new { db = db, start = start }
    add(h.scheduler)
    local summary = h.scheduler.restore()
    return h, summary
  end

  -- The job as a restart brought it back: its ok count and next fire.
  local function assert_back(h, id, ok, next_time)
    local job = h.scheduler.get_job(id)
    assert.equal(ok, job.counts.ok)
    assert.equal(harness.time(next_time), job.next_run_time)
    h:close()
  end

  it("takes a store of schema 2, where every row held every run, without counting a run twice", function()
    -- A store as the previous schema wrote it: a job's row written with
    -- each of its three runs.
    local writer = harness.new { db = false }
    writer:call(function()
      local sqlite = require "moonbeat.sqlite"
      local old = assert(sqlite.open(db))
      assert(old:exec([[
        CREATE TABLE jobs (id TEXT PRIMARY KEY, trigger TEXT, next_fire INTEGER,
          last_fire INTEGER, paused INTEGER NOT NULL DEFAULT 0, pause_note TEXT,
          retry_due INTEGER, retry_attempt INTEGER, retry_scheduled INTEGER,
          ok INTEGER NOT NULL DEFAULT 0, failed INTEGER NOT NULL DEFAULT 0,
          timed_out INTEGER NOT NULL DEFAULT 0, missed INTEGER NOT NULL DEFAULT 0,
          skipped INTEGER NOT NULL DEFAULT 0, cancelled INTEGER NOT NULL DEFAULT 0,
          last_status TEXT, last_start INTEGER, last_duration INTEGER,
          last_error TEXT, state TEXT, spec TEXT);
        CREATE TABLE runs (id INTEGER PRIMARY KEY, job_id TEXT NOT NULL,
          scheduled INTEGER, started INTEGER, finished INTEGER,
          attempt INTEGER NOT NULL, status TEXT NOT NULL, error TEXT,
          traceback TEXT, log_tail TEXT, host TEXT, pid INTEGER);
        CREATE INDEX runs_by_job ON runs (job_id, id);
        CREATE INDEX runs_running ON runs (status) WHERE status = 'running';
        PRAGMA user_version = 2;]]))
      local T = harness.time("2026-01-01 00:00:00") * 1000000
      assert(old:exec([[INSERT INTO jobs (id, trigger, next_fire, last_fire, ok,
        last_status, last_start, last_duration) VALUES ('tick', 'interval[10s]@UTC',
        ?, ?, 3, 'success', ?, 0)]], T + 40e6, T + 30e6, T + 30e6))
      for i = 1, 3 do
        local at = T + i * 10e6
        assert(old:exec([[INSERT INTO runs (id, job_id, scheduled, started, finished,
          attempt, status) VALUES (?, 'tick', ?, ?, ?, 1, 'success')]], i, at, at, at))
      end
      old:close()
    end)
    writer:close()
    local h = boot("2026-01-01T00:00:35Z", function(s)
      s.add_job { id = "tick", trigger = { "interval", seconds = 10 }, run = function() end }
    end)
    assert_back(h, "tick", 3, "2026-01-01 00:00:40")
  end)

  it("reads a last status it never writes, from a store edited by hand, as unknown", function()
    local function add(s)
      s.add_job { id = "tick", trigger = { "interval", minutes = 10 }, run = function() end }
      s.add_job { id = "tock", trigger = { "interval", minutes = 10 }, run = function() end }
    end
    local h = boot("2026-01-01T00:00:00Z", add)
    h:advance("15m")
    h:close()
    local editor = harness.new { db = false }
    editor:call(function()
      local sqlite = require "moonbeat.sqlite"
      local conn = assert(sqlite.open(db))
      assert(conn:exec("UPDATE jobs SET last_status = 'weird' WHERE id = 'tick'"))
      conn:close()
    end)
    editor:close()
    h = boot("2026-01-01T00:16:00Z", add)
    assert.equal("unknown", h.scheduler.get_job("tick").last_run.status)
    assert.equal("success", h.scheduler.get_job("tock").last_run.status)
    h:close()
  end)

  it("carries the schedule, counters and state over when the trigger is unchanged", function()
    local function add(s)
      s.add_job { id = "tick", trigger = { "interval", minutes = 10 }, run = function(ctx)
        ctx.state.n = (ctx.state.n or 0) + 1
      end }
    end
    local h = boot("2026-01-01T00:00:00Z", add)
    h:advance("35m")
    h:close()
    local summary
    h, summary = boot("2026-01-01T00:37:00Z", add)
    assert.equal(1, summary.restored)
    local job = h.scheduler.get_job("tick")
    -- The old grid, not "ten minutes after this start".
    assert.equal(harness.time("2026-01-01 00:40"), job.next_run_time)
    assert.equal(3, job.counts.ok)
    h:advance("3m")
    assert.equal(4, h.scheduler.get_job("tick").counts.ok)
    assert.equal('{["n"]=4,}', h.scheduler.get_job("tick").saved_state)
    h:close()
  end)

  it("keeps every string of a turn's writes, small ones and one larger than the queue's blocks", function()
    -- One turn: 300 jobs' runs, each with its own id and error, and a
    -- state of 200 KB between them.
    local big = ("0123456789"):rep(20000)
    local function add(s)
      for i = 1, 300 do
        s.add_job { id = "j" .. i, trigger = { "interval", minutes = 10 },
          run = function(ctx)
            if i == 150 then ctx.state.big = big end
            error("failed " .. i)
          end }
      end
    end
    local h = boot("2026-01-01T00:00:00Z", add)
    h:advance("10m")
    h:close()
    h = boot("2026-01-01T00:11:00Z", add)
    for _, i in ipairs { 1, 149, 150, 151, 300 } do
      local job = h.scheduler.get_job("j" .. i)
      assert.equal(1, job.counts.failed)
      local run = h.scheduler.get_runs { job_id = "j" .. i }[1]
      assert.matches("failed " .. i .. "$", run.error)
    end
    assert.equal(big, h.core:job_spec(h.scheduler.get_job("j150")).state.big)
    h:close()
  end)

  -- The files as a kill -9 would leave them: copied while the scheduler
  -- that wrote them is still open (the writer has committed the turn).
  local function crash_copy(h)
    local copy = dir .. "/crash.db"
    assert(os.execute(("cp %s %s && cp %s-wal %s-wal"):format(db, copy, db, copy)))
    h:close()
    db = copy
  end

  it("writes only a run's own row for a run that succeeds, and the job's row at the sweep", function()
    local h = boot("2026-01-01T00:00:00Z", function(s)
      s.add_job { id = "tick", trigger = { "interval", seconds = 1 }, run = function() end }
    end)
    h:advance(0)
    local before = h.core:store_stats().rows
    h:advance("5s")
    assert.equal(5, h.core:store_stats().rows - before)
    -- Ten seconds after the scheduler opened, the row catches up.
    h:advance("5s")
    assert.equal(5 + 1, h.core:store_stats().rows - before - 5)
    h:close()
  end)

  it("folds back in the runs a killed scheduler had not written into the job's row", function()
    local ran = 0
    local function add(s)
      s.add_job { id = "tick", trigger = { "interval", seconds = 1 }, run = function()
        ran = ran + 1
      end }
    end
    local h = boot("2026-01-01T00:00:00Z", add)
    h:advance("5s")
    assert.equal(5, ran)
    crash_copy(h)
    h = boot("2026-01-01T00:00:05.500Z", add)
    local job = h.scheduler.get_job("tick")
    assert.equal(5, job.counts.ok)
    assert.equal("success", job.last_run.status)
    -- The five fires are done: the next is the sixth, not an overdue one.
    assert.equal(harness.time("2026-01-01 00:00:06"), job.next_run_time)
    h:advance(0)
    assert.equal(5, ran)
    h:advance("1s")
    assert.equal(6, ran)
    assert.equal(6, h.scheduler.get_job("tick").counts.ok)
    h:close()
    -- Closed cleanly, the row holds them all: a third start agrees.
    h = boot("2026-01-01T00:00:07Z", add)
    assert.equal(6, h.scheduler.get_job("tick").counts.ok)
    h:close()
  end)

  it("keeps the row of a new job that took the id of one just done", function()
    local h = boot("2026-01-01T00:00:00Z", function(s)
      s.add_job { id = "reused", trigger = { "date", run_date = "2026-01-01T00:00:01Z" },
        run = function() end }
    end)
    h:advance("2s")
    h.scheduler.add_job { id = "reused", trigger = { "interval", seconds = 5 },
      run = function() end }
    -- Past the sweep, which must not write the done job over the new one.
    h:advance("20s")
    assert.equal(4, h.scheduler.get_job("reused").counts.ok)
    h:close()
    h = boot("2026-01-01T00:00:30Z", function(s)
      s.add_job { id = "reused", trigger = { "interval", seconds = 5 }, run = function() end }
    end)
    -- Its grid, from 00:00:02: the fire at 27 s fell while it was down.
    assert_back(h, "reused", 4, "2026-01-01 00:00:27")
  end)

  it("folds in the runs of a row kept while its file failed, once the file is back", function()
    local fires = {}
    local function add(s)
      s.add_job { id = "tick", trigger = { "interval", seconds = 3 }, coalesce = false,
        run = function(ctx) fires[#fires + 1] = ctx.scheduled_time end }
    end
    local h = boot("2026-01-01T00:00:00Z", add)
    h:advance("7s")
    assert.equal(2, #fires)
    crash_copy(h)
    -- The file fails to load at the restart: the row is kept as it was.
    h = harness.new { db = db, start = "2026-01-01T00:00:07.500Z" }
    h.scheduler.restore { keep_missing = true }
    -- Past the first sweeps: they must not settle past the kept row.
    h:advance("15s")
    -- The file is fixed: a reload adds the job and restores it alone.
    add(h.scheduler)
    h.scheduler.restore { only = { tick = true } }
    -- Its fires at 3 s and 6 s are done; the one at 9 s fell meanwhile.
    assert_back(h, "tick", 2, "2026-01-01 00:00:09")
  end)

  it("counts a buffered run cancelled by closing without a shutdown once", function()
    local time = require "moonbeat.time"
    local function add(s)
      s.add_job { id = "slow", trigger = { "interval", seconds = 10 }, overlap = "buffer_one",
        run = function() time.sleep(25) end }
    end
    local h = boot("2026-01-01T00:00:00Z", add)
    -- Run 1 in flight since 10 s, the fire at 20 s buffered behind it;
    -- closing cancels run 1, which starts the buffered one, cancelled too.
    h:advance("21s")
    h:close()
    h = boot("2026-01-01T00:00:22Z", add)
    local cancelled = 0
    for _, run in ipairs(h.scheduler.get_runs { job_id = "slow" }) do
      if run.status == "cancelled" then cancelled = cancelled + 1 end
    end
    assert.equal(2, cancelled)
    assert.equal(2, h.scheduler.get_job("slow").counts.cancelled)
    h:close()
  end)

  it("keeps the row of the newer of two one-shot jobs of one id done before a sweep", function()
    local runs = {}
    local function second(s)
      s.add_job { id = "once", trigger = { "date", run_date = "2026-01-01T00:00:03Z" },
        run = function() runs[#runs + 1] = "second" end }
    end
    local h = boot("2026-01-01T00:00:00Z", function(s)
      s.add_job { id = "once", trigger = { "date", run_date = "2026-01-01T00:00:01Z" },
        run = function() runs[#runs + 1] = "first" end }
    end)
    h:advance("2s")
    -- Its file now says 00:00:03: a reload adds it anew; it runs too.
    second(h.scheduler)
    h:advance("2s")
    h:close()
    h = boot("2026-01-01T00:00:05Z", second)
    h:advance("1s")
    h:close()
    assert.same({ "first", "second" }, runs)
  end)

  it("folds back in fires missed while the row was behind", function()
    local function add(s)
      s.add_job { id = "m", trigger = { "interval", seconds = 1 }, misfire_grace_time = "100ms",
        coalesce = false, run = function() end }
    end
    local h = boot("2026-01-01T00:00:00Z", add)
    -- Fires at 1 s and 2 s are missed, the one at 3 s runs.
    h:stall("3s")
    h:advance(0)
    assert.equal(2, h.scheduler.get_job("m").counts.missed)
    crash_copy(h)
    h = boot("2026-01-01T00:00:03.500Z", add)
    local job = h.scheduler.get_job("m")
    assert.equal(2, job.counts.missed)
    assert.equal(1, job.counts.ok)
    assert.equal(harness.time("2026-01-01 00:00:04"), job.next_run_time)
    h:close()
  end)

  it("recomputes the next fire when the trigger changed", function()
    local h = boot("2026-01-01T00:00:00Z", function(s)
      s.add_job { id = "j", trigger = { "cron", hour = 5 }, run = function() end }
    end)
    h:close()
    h = boot("2026-01-01T01:00:00Z", function(s)
      s.add_job { id = "j", trigger = { "cron", hour = 3 }, run = function() end }
    end)
    assert.equal(harness.time("2026-01-01 03:00"), h.scheduler.get_job("j").next_run_time)
    h:close()
  end)

  it("runs a daily fire missed during a short outage once on start", function()
    local fires = {}
    local function add(s)
      s.add_job { id = "daily", trigger = { "cron", hour = 2 }, misfire_grace_time = "1h",
        run = function(ctx) fires[#fires + 1] = ctx.scheduled_time end }
    end
    local h = boot("2026-01-01T01:58:00Z", add)
    h:close()
    h = boot("2026-01-01T02:03:00Z", add)
    h:advance(0)
    assert.same({ harness.time("2026-01-01 02:00") }, fires)
    local late = h:logged("run started")[1].fields.late
    assert.equal(180, late)
    h:close()
  end)

  it("records a fire missed beyond the grace during an outage as missed", function()
    local function add(s)
      s.add_job { id = "daily", trigger = { "cron", hour = 2 }, misfire_grace_time = "1h",
        run = function() end }
    end
    local h = boot("2026-01-01T01:58:00Z", add)
    h:close()
    h = boot("2026-01-01T05:00:00Z", add)
    h:advance(0)
    assert.equal(1, #h:logged("fire missed"))
    assert.equal("missed", h.scheduler.get_runs()[1].status)
    h:close()
  end)

  it("keeps a paused job paused, with its note", function()
    local function add(s)
      s.add_job { id = "p", trigger = { "interval", minutes = 1 }, run = function() end }
    end
    local h = boot("2026-01-01T00:00:00Z", add)
    h.scheduler.pause_job("p", { note = "waiting for the vendor" })
    h:close()
    h = boot("2026-01-01T01:00:00Z", add)
    local job = h.scheduler.get_job("p")
    assert.is_true(job.paused)
    assert.equal("waiting for the vendor", job.pause_note)
    h:advance("10m")
    assert.equal(0, #h.scheduler.get_runs { status = "success" })
    h:close()
  end)

  it("still retries at its time after a restart during the backoff", function()
    local tries = {}
    local function add(s)
      s.add_job { id = "r", trigger = { "date", run_date = "2026-01-01 00:00:10" },
        retry = { attempts = 3, delay = "5m", backoff = "fixed" },
        run = function(ctx)
          tries[#tries + 1] = { ctx.attempt, ctx.scheduled_time }
          error("flaky")
        end }
    end
    local h = boot("2026-01-01T00:00:00Z", add)
    h:advance("1m")
    h:close()
    h = boot("2026-01-01T00:02:00Z", add)
    assert.equal(harness.time("2026-01-01 00:05:10"), h.scheduler.get_job("r").next_retry_time)
    h:advance("10m")
    local t0 = harness.time("2026-01-01 00:00:10")
    assert.same({ { 1, t0 }, { 2, t0 }, { 3, t0 } }, tries)
    h:close()
  end)

  it("removes a job no file declares any more, keeping its history", function()
    local h = boot("2026-01-01T00:00:00Z", function(s)
      s.add_job { id = "gone", trigger = { "interval", seconds = 10 }, run = function() end }
    end)
    h:advance("30s")
    h:close()
    local summary
    h, summary = boot("2026-01-01T01:00:00Z", function() end)
    assert.equal(1, summary.removed)
    assert.equal(3, #h.scheduler.get_runs { job_id = "gone" })
    h:close()
  end)

  it("does not run a one-shot job again once it ran, after a kill or a stop", function()
    local runs = 0
    local function add(s)
      s.add_job { id = "once", trigger = { "date", run_date = "2026-01-01 00:00:10" },
        run = function() runs = runs + 1 end }
    end
    local h = boot("2026-01-01T00:00:00Z", add)
    h:advance("1m")
    -- Killed before its row was written as done: its run says so.
    crash_copy(h)
    h = boot("2026-01-01T00:05:00Z", add)
    h:advance("1m")
    assert.equal(1, runs)
    assert.is_nil(h.scheduler.get_job("once"))
    h:close()
    -- And after a clean stop, from the row.
    h = boot("2026-01-01T00:10:00Z", add)
    h:advance("1m")
    assert.equal(1, runs)
    h:close()
  end)
end)

describe("jobs added at run time", function()
  local dir, db
  local refjobs = require "tests.fixtures.refjobs"
  before_each(function()
    dir = support.tempdir()
    db = dir .. "/m.db"
    refjobs.calls = {}
  end)
  after_each(function() support.remove_tree(dir) end)

  it("persist when their run is a module.function reference", function()
    local h = harness.new { db = db }
    local job = h.scheduler.add_job { id = "ref", trigger = { "interval", minutes = 1 },
      run = "tests.fixtures.refjobs.count", args = { "hello" } }
    assert.is_true(job.persistent)
    h:advance("1m")
    h:close()
    h = harness.new { db = db, start = "2026-01-01T00:01:30Z" }
    h.scheduler.restore()
    assert.truthy(h.scheduler.get_job("ref"))
    assert.equal(harness.time("2026-01-01 00:02"), h.scheduler.get_job("ref").next_run_time)
    h:advance("30s")
    h:close()
    assert.same({ { "ref", "hello" }, { "ref", "hello" } }, refjobs.calls)
  end)

  it("stay in memory only when their run is a function, and say so", function()
    local h = harness.new { db = db }
    local job = h.scheduler.add_job { id = "closure", trigger = { "interval", minutes = 1 },
      run = function() end }
    assert.is_false(job.persistent)
    local said = h:logged("job kept in memory only")[1]
    assert.equal("closure", said.fields.job)
    h:close()
    h = harness.new { db = db }
    h.scheduler.restore()
    assert.is_nil(h.scheduler.get_job("closure"))
    h:close()
  end)

  it("refuse a reference job whose args cannot be kept", function()
    local h = harness.new { db = db }
    local ok, err = pcall(h.scheduler.add_job, { id = "bad-args", trigger = "* * * * *",
      run = "tests.fixtures.refjobs.count", args = { print } })
    assert.is_false(ok)
    assert.matches("args%[1%]: a function cannot be saved %(a job whose run is a reference", err)
    assert.is_nil(h.scheduler.get_job("bad-args"))
    h:close()
  end)
end)

describe("a full disk", function()
  local dir
  before_each(function() dir = support.tempdir() end)
  after_each(function() support.remove_tree(dir) end)

  it("fails writes that are logged once and retried, with nothing dropped", function()
    local h = harness.new { db = dir .. "/m.db" }
    local fires = h:record("steady", { "interval", seconds = 1 })
    h:advance("1s")
    -- The database may not grow past what it has now.
    h.core:store_limit_pages(1)
    h.scheduler.add_job { id = "chatty", trigger = { "interval", seconds = 1 }, run = function(ctx)
      ctx.log.info(("x"):rep(2000))
    end }
    h:advance("20s")
    assert.equal(21, #fires)
    local failed = h:logged("store write failed; retrying")
    assert.equal(1, #failed)
    assert.matches("database or disk is full", failed[1].fields.error)
    h.core:store_limit_pages(0)
    h:advance("1s")
    assert.equal(1, #h:logged("store writes resumed"))
    assert.equal(22, #h.scheduler.get_runs { job_id = "steady" })
    assert.equal(21, #h.scheduler.get_runs { job_id = "chatty" })
    h:close()
  end)
end)

describe("on the real clock", function()
  local core = require "moonbeat.core"
  local scheduler = require "mb.scheduler"

  -- Two runs in two loop turns; the scheduler stops after the second. Writes
  -- are not waited for here (a memory store gathers a few turns, a file
  -- store hands them to its writer thread): what is read back must
  -- still hold every run.
  local function one_run(db)
    local sched = assert(core.new { clock = "real", db = db, timezone = "UTC" })
    local api = scheduler.new(sched)
    -- "first" runs in the first loop turn, "second" in the next: the
    -- second's row comes after the first commit.
    api.add_job { id = "second", trigger = { "date", run_date = "2099-01-01" },
      run = function() api.shutdown() end }
    api.add_job { id = "first", trigger = { "date", delay = 0 }, run = function()
      api.run_job("second")
    end }
    sched:run()
    local runs = api.get_runs {}
    local stats = sched:store_stats()
    sched:close()
    return runs, stats
  end

  it("reads back every run from a store in memory", function()
    local runs, stats = one_run(":memory:")
    assert.equal(2, #runs)
    assert.equal("success", runs[1].status)
    assert.is_true(stats.rows >= 2)
  end)

  -- The policies of this process's threads, from Linux's /proc (field 41
  -- of each thread's stat), and their names, or nil elsewhere.
  local function thread_policies()
    -- The shell popen starts is a child of this process.
    local ls = io.popen("ls /proc/$PPID/task 2>/dev/null")
    local policies, names = {}, {}
    for tid in ls:lines() do
      local f = io.open("/proc/self/task/" .. tid .. "/stat")
      if f then
        local name, after = f:read("a"):match("%((.*)%) (.*)$")
        f:close()
        local fields = {}
        for field in after:gmatch("%S+") do fields[#fields + 1] = field end
        policies[#policies + 1] = tonumber(fields[41 - 2])
        names[name] = (names[name] or 0) + 1
      end
    end
    ls:close()
    if #policies == 0 then return nil end
    return policies, names
  end

  it("writes from a named batch thread, never one at idle priority that a busy core would starve", function()
    local before, names_before = thread_policies()
    if not before then return pending("no /proc here") end
    local dir = support.tempdir()
    local sched = assert(core.new { clock = "real", db = dir .. "/p.db" })
    local during, names = thread_policies()
    -- Named, so that top -H and perf tell it from the loop.
    assert.equal((names_before["moonbeat-writer"] or 0) + 1, names["moonbeat-writer"])
    sched:close()
    support.remove_tree(dir)
    local SCHED_BATCH, SCHED_IDLE = 3, 5
    local count = function(list, policy)
      local n = 0
      for _, p in ipairs(list) do if p == policy then n = n + 1 end end
      return n
    end
    assert.equal(count(before, SCHED_BATCH) + 1, count(during, SCHED_BATCH))
    assert.equal(0, count(during, SCHED_IDLE))
  end)

  it("reads back every run from a file written by its writer thread", function()
    local dir = support.tempdir()
    local runs, stats = one_run(dir .. "/w.db")
    support.remove_tree(dir)
    assert.equal(2, #runs)
    assert.equal("success", runs[1].status)
    assert.is_true(stats.rows >= 2)
  end)
end)
