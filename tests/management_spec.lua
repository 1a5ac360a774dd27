-- The scheduler's management verbs and job objects.
local harness = require "tests.harness"

-- rand(n) in [0, n), the same sequence every run for a seed.
local function seeded_rand(seed)
  return function(n)
    seed = (seed * 1103515245 + 12345) % 2147483648
    return seed % n
  end
end

describe("managing jobs", function()
  local h, s
  before_each(function()
    h = harness.new()
    s = h.scheduler
  end)
  after_each(function() h:close() end)

  it("returns a job object with id, name, next_run_time, paused and trigger", function()
    local job = s.add_job { id = "report", name = "Daily report",
      trigger = { "cron", hour = 2, minute = 30 }, run = function() end }
    assert.equal("report", job.id)
    assert.equal("Daily report", job.name)
    assert.equal(h.start + 2 * 3600 + 30 * 60, job.next_run_time)
    assert.is_false(job.paused)
    assert.equal("cron[hour='2', minute='30']", job.trigger)
    assert.equal(job, s.get_job("report"))
  end)

  it("finds every job by id through many adds and removals in any order", function()
    local noop = function() end
    local live, order = {}, {}
    for i = 1, 6000 do
      local id = "job-" .. i
      s.add_job { id = id, trigger = { "interval", hours = 1 }, run = noop }
      live[id] = true
      order[#order + 1] = id
    end
    -- Remove about half in a scrambled order, then add some back.
    local seed = 7
    for i = #order, 2, -1 do
      seed = (seed * 1103515245 + 12345) % 2147483648
      local k = seed % i + 1
      order[i], order[k] = order[k], order[i]
    end
    for i = 1, 3000 do
      s.remove_job(order[i])
      live[order[i]] = nil
    end
    for i = 1, 3000, 3 do
      s.add_job { id = order[i], trigger = { "interval", hours = 1 }, run = noop }
      live[order[i]] = true
    end
    local count = 0
    for i = 1, 6000 do
      local id = "job-" .. i
      local job = s.get_job(id)
      if live[id] then
        count = count + 1
        assert.equal(id, job and job.id)
      else
        assert.is_nil(job)
      end
    end
    assert.equal(count, #s.get_jobs())
    s.remove_all_jobs()
    assert.equal(0, #s.get_jobs())
    assert.is_nil(s.get_job(order[1]))
  end)

  it("hands out one handle per job, with no finalizer to run when it is collected", function()
    local job = s.add_job { id = "one", trigger = { "interval", hours = 1 },
      run = function() end }
    assert.is_true(rawequal(job, s.get_job("one")))
    assert.is_true(rawequal(job, s.get_jobs()[1]))
    assert.is_nil(getmetatable(job).__gc)
  end)

  it("keeps a removed job readable through its handle while the handle lives", function()
    local core = require "moonbeat.core"
    local noop = function() end
    collectgarbage()
    local before = core.job_memory().live
    local kept = s.add_job { id = "kept", name = "Kept",
      trigger = { "interval", seconds = 10 }, run = noop }
    h:advance("10s")
    kept:remove()
    -- Hundreds of removed jobs whose handles are dropped: sweeps run and
    -- let go of them, and must not let go of the one still held.
    for i = 1, 500 do
      s.add_job { id = "gone" .. i, trigger = { "interval", hours = 1 },
        run = noop }
      s.remove_job("gone" .. i)
    end
    h:advance("1s")  -- a turn: the store's flush lets go of them too
    collectgarbage()
    collectgarbage()
    assert.equal(before + 1, core.job_memory().live)
    assert.equal("kept", kept.id)
    assert.equal("Kept", kept.name)
    assert.is_true(kept.removed)
    assert.equal(1, kept.counts.ok)
    assert.equal("job 'kept' (trigger: interval[10s], next run at: removed)",
      tostring(kept))
    -- Dropped and collected, it is given back at the next sweep.
    kept = nil
    collectgarbage()
    collectgarbage()
    assert.equal(before, core.job_memory().live)
  end)

  it("lets the table of live handles shrink once a listing of every job is dropped", function()
    -- A sweep walks every slot of that table, live or not: left at the
    -- size a listing of 100,000 jobs gave it, a removal of them all
    -- walked it every 64 removals (half a minute for a million jobs).
    local noop = function() end
    for i = 1, 100000 do
      s.add_job { id = "many" .. i, trigger = { "interval", hours = 1 }, run = noop }
    end
    local all = s.get_jobs()
    assert.equal(100000, #all)
    all = nil
    collectgarbage()
    collectgarbage()
    local before = collectgarbage("count")
    for i = 1, 200 do s.remove_job("many" .. i) end
    collectgarbage()
    collectgarbage()
    local freed = (before - collectgarbage("count")) * 1024
    assert.is_true(freed > 1000000, ("freed %d bytes"):format(freed))
  end)

  it("keeps every handle finalizers make while a sweep renews the table", function()
    local core = require "moonbeat.core"
    local noop = function() end
    for i = 1, 20000 do
      s.add_job { id = "f" .. i, trigger = { "interval", hours = 1 }, run = noop }
    end
    -- A listing dropped but for a quarter of it: the table is renewed at
    -- 5,000 live handles, an allocation large enough to step the collector.
    local all, quarter = s.get_jobs(), {}
    for k = 1, #all, 4 do quarter[#quarter + 1] = all[k] end
    all = nil
    collectgarbage()
    collectgarbage()
    s.remove_job("f1")  -- a removed job: the next sweep renews the table
    local kept, removed, ran, ran_in_sweep = {}, {}, 0, 0
    -- Finalizers made with the collector stopped, which restarts owing a
    -- step: the first allocation after, the renewal's, collects and runs
    -- them. They hand out handles, keep them, and remove jobs (starting
    -- sweeps of their own).
    collectgarbage("stop")
    for k = 1, 200 do
      setmetatable({}, { __gc = function()
        ran = ran + 1
        local job = s.get_job("f" .. (k * 97 % 20000 + 2))
        if not job then return end
        if k % 3 == 0 then
          removed[#removed + 1] = job
          for i = k * 50, k * 50 + 40 do pcall(s.remove_job, "f" .. i) end
          pcall(s.remove_job, job)
        else
          kept[#kept + 1] = job
        end
      end })
    end
    local before = ran
    collectgarbage("restart")
    core.job_memory()
    ran_in_sweep = ran - before
    h:advance("1s")  -- a turn: the store's flush lets go of removed jobs too
    collectgarbage()
    collectgarbage()
    core.job_memory()
    for i = 2, 20000, 3 do pcall(s.remove_job, "f" .. i) end
    h:advance("1s")
    collectgarbage()
    core.job_memory()
    assert.is_true(ran_in_sweep > 0, "no finalizer ran during the sweep")
    assert.is_true(#kept > 50 and #removed > 20)
    for _, job in ipairs(kept) do assert.equal(job.id, job.name) end
    for _, job in ipairs(quarter) do assert.equal(job.id, job.name) end
    for _, job in ipairs(removed) do
      assert.is_true(job.removed)
      assert.matches("^f%d+$", job.id)
    end
  end)

  it("refuses a replacing add when the removal's listener adds the id again", function()
    local noop = function() end
    s.add_job { id = "d", trigger = { "interval", hours = 1 }, run = noop }
    s.add_listener(function(ev)
      if ev.kind == "removed" and ev.job_id == "d" and ev.reason == "replaced" then
        s.add_job { id = "d", name = "from listener",
          trigger = { "interval", hours = 2 }, run = noop }
      end
    end)
    local ok, err = pcall(s.add_job, { id = "d", name = "replacement",
      trigger = { "interval", hours = 3 }, run = noop, replace_existing = true })
    assert.is_false(ok)
    assert.matches("job id 'd' was added again while the job it replaces was removed", err)
    local named = {}
    for _, job in ipairs(s.get_jobs()) do
      if job.id == "d" then named[#named + 1] = job.name end
    end
    assert.same({ "from listener" }, named)
  end)

  it("reads no scheduler from a handle whose user value was replaced", function()
    local job = s.add_job { id = "u", trigger = { "interval", hours = 1 },
      run = function() end }
    assert.is_table(job.scheduler)
    debug.setuservalue(job, "not a scheduler", 1)
    assert.is_nil(job.scheduler)
    assert.equal("u", job.id)
  end)

  it("keeps a removed job for a handle that only a finalizer can still reach", function()
    local core = require "moonbeat.core"
    collectgarbage()
    local before = core.job_memory().live
    local saved, seen
    local function leave_behind()
      local job = s.add_job { id = "r", trigger = { "interval", hours = 1 },
        run = function() end }
      job:remove()
      -- Made first, finalized last: reads the handle, and keeps it.
      setmetatable({ job }, { __gc = function(t)
        seen = t[1].id
        saved = t[1]
      end })
      -- Made last, finalized first: sweeps the removed jobs.
      setmetatable({}, { __gc = function() core.job_memory() end })
    end
    leave_behind()
    h:advance("1s")  -- a turn: the store's flush lets go of it too
    collectgarbage()
    collectgarbage()
    assert.equal("r", seen)
    assert.equal(before + 1, core.job_memory().live)
    assert.equal("r", saved.id)
    assert.is_true(saved.removed)
    assert.equal("job 'r' (trigger: interval[1h], next run at: removed)",
      tostring(saved))
    saved = nil
    collectgarbage()
    collectgarbage()
    assert.equal(before, core.job_memory().live)
  end)

  it("gives back the memory of removed jobs, chunk by chunk", function()
    local core = require "moonbeat.core"
    local noop = function() end
    collectgarbage()
    collectgarbage()
    local before = core.job_memory()
    for i = 1, 20000 do
      s.add_job { id = "m" .. i, trigger = { "interval", hours = 1 }, run = noop }
    end
    local full = core.job_memory()
    assert.equal(before.live + 20000, full.live)
    s.remove_all_jobs()
    h:advance("1s")  -- a turn: the store's flush lets go of them too
    collectgarbage()
    collectgarbage()
    local after = core.job_memory()
    assert.equal(before.live, after.live)
    -- Built with AddressSanitizer, jobs come from calloc: no chunks.
    if full.chunks > 0 then
      assert.is_true(full.chunks >= before.chunks + 3)
      assert.is_true(after.chunks <= before.chunks + 1)
    end
  end)

  it("finds every job, and no removed one, through thousands of adds and removals", function()
    local noop = function() end
    local rng = 12345
    local function random(n)  -- repeatable across runs and Lua builds
      rng = (rng * 1103515245 + 12345) % 2147483648
      return rng % n + 1
    end
    local present, count = {}, 0
    for step = 1, 30000 do
      local id = "t" .. random(4000)
      if present[id] and random(3) > 1 then
        s.remove_job(id)
        present[id] = nil
        count = count - 1
      elseif not present[id] then
        s.add_job { id = id, trigger = { "interval", hours = 1 }, run = noop }
        present[id] = true
        count = count + 1
      end
      if step % 3000 == 0 then
        for i = 1, 4000 do
          local job = s.get_job("t" .. i)
          assert.equal(present["t" .. i] and "t" .. i or nil, job and job.id)
        end
        assert.equal(count, #s.get_jobs())
      end
    end
    s.remove_all_jobs()
    assert.equal(0, #s.get_jobs())
    for i = 1, 4000 do assert.is_nil(s.get_job("t" .. i)) end
  end)

  it("gives back the memory of its indexes once a burst of jobs at many instants is gone", function()
    local noop = function() end
    -- At their least: one instant has been held.
    s.add_job { id = "first", trigger = { "date", run_date = h.start + 0.5 }, run = noop }
    h:advance("1s")
    local small = h:stats().index_bytes
    -- 20,000 jobs, each at an instant of its own, fired and gone.
    for i = 1, 20000 do
      s.add_job { id = "burst" .. i, trigger = { "date", run_date = h.start + 1 + i / 100 },
        run = noop }
    end
    local grown = h:stats().index_bytes
    assert.is_true(grown > 50 * small, ("%d, then %d bytes"):format(small, grown))
    h:advance("250s")
    assert.equal(0, h:stats().jobs)
    assert.equal(small, h:stats().index_bytes)
    -- Removed, not fired: the same.
    for i = 1, 20000 do
      s.add_job { id = "later" .. i, trigger = { "date", run_date = h.start + 9999 + i },
        run = noop }
    end
    s.remove_all_jobs()
    assert.equal(small, h:stats().index_bytes)
  end)

  it("keeps a job whole while its event goes out, when the log sink removes it", function()
    -- Under AddressSanitizer this read a freed job: the sink's removal is
    -- the 64th, whose sweep lets go of jobs no handle is left of.
    local core = require "moonbeat.core"
    local noop = function() end
    local function remove_while(verb, message, prefix)
      for i = 1, 64 do
        s.add_job { id = prefix .. i, trigger = { "interval", hours = 1 }, run = noop }
      end
      if verb == "resume_job" then h.core:pause_job(prefix .. 1) end
      h:advance("1s")
      collectgarbage()
      for i = 2, 64 do s.remove_job(prefix .. i) end
      h:advance("1s")
      collectgarbage()
      local removed
      core.set_log_sink(function(_, msg)
        if msg == message and not removed then
          removed = h.core:remove_job(prefix .. 1)
        end
      end)
      assert.is_true(h.core[verb](h.core, prefix .. 1))
      core.set_log_sink(nil)
      assert.is_true(removed)
      assert.is_nil(s.get_job(prefix .. 1))
    end
    remove_while("pause_job", "job paused", "p")
    remove_while("resume_job", "job resumed", "r")
  end)

  it("takes an add's registry ref at a run's memory limit, as host memory, and leaks none", function()
    local core = require "moonbeat.core"
    -- A function each: every add takes a registry ref of its own, and
    -- the registry grows past the limit (host memory: never refused).
    local specs = {}
    for i = 1, 40000 do
      specs[i] = { id = "m" .. i, trigger = { "interval", hours = 1 },
        run = load("return function() end")() }
    end
    collectgarbage()
    collectgarbage()
    local used, limit = core.memory()
    core.set_memory_limit(used + 300000)
    local added = 0
    h:in_run(function()
      for i = 1, #specs do
        if not pcall(s.add_job, specs[i]) then return end
        added = i
      end
    end)
    core.set_memory_limit(limit)
    assert.equal(#specs, added)
    -- Every job added holds one ref, and nothing else is left.
    local refs = core.live_refs()
    s.remove_all_jobs()
    h:advance("1s")
    assert.equal(refs - added, core.live_refs())
  end)

  it("holds one reference for jobs added with one run function, each job still its own", function()
    local core = require "moonbeat.core"
    local ran = {}
    local function tick(ctx) ran[#ran + 1] = ctx.job_id end
    local before = core.live_refs()
    for i = 1, 500 do
      s.add_job { id = "same" .. i, trigger = { "interval", seconds = 10 }, run = tick }
    end
    -- One for the function, not one a job.
    assert.equal(before + 1, core.live_refs())
    -- A job whose spec is changed gets a function of its own; the others
    -- keep theirs.
    s.modify_job("same1", { run = function(ctx) ran[#ran + 1] = "new:" .. ctx.job_id end })
    assert.equal("table", type(h.core:job_spec(s.get_job("same2"))))
    -- The last of the others gone, the shared one goes: a spec each is left.
    for i = 3, 500 do s.remove_job("same" .. i) end
    assert.equal(before + 2, core.live_refs())
    h:advance("10s")
    table.sort(ran)
    assert.same({ "new:same1", "same2" }, ran)
  end)

  it("holds one policy for jobs alike, and a change to one job's policy is its own", function()
    local core = require "moonbeat.core"
    local time = require "moonbeat.time"
    local before = core.job_memory().policies
    local nap = function() time.sleep(2.5) end
    for _, id in ipairs { "a", "b" } do
      s.add_job { id = id, trigger = { "interval", seconds = 1 }, run = nap,
        timeout = "1234s" }
    end
    assert.equal(before + 1, core.job_memory().policies)
    s.modify_job("a", { max_instances = 2 })
    assert.equal(before + 2, core.job_memory().policies)
    h:advance("3s")
    -- a: runs at 1 and 2 side by side, skips at 3; b: one at a time.
    assert.equal(1, s.get_job("a").counts.skipped)
    assert.equal(2, s.get_job("b").counts.skipped)
    s.remove_job("a")
    s.remove_job("b")
    h:advance("3s")  -- their runs end
    collectgarbage()
    collectgarbage()
    assert.equal(before, core.job_memory().policies)
  end)

  it("holds one policy for a retry jitter of 0 and of -0.0", function()
    local core = require "moonbeat.core"
    local before = core.job_memory().policies
    for i, jitter in ipairs { 0.0, -0.0 } do
      s.add_job { id = "j" .. i, trigger = { "interval", hours = 1 }, run = function() end,
        retry = { attempts = 2, delay = "3s", jitter = jitter }, timeout = "4321s" }
    end
    assert.equal(before + 1, core.job_memory().policies)
  end)

  it("keeps two chunks mapped ahead of a growing job table", function()
    local core = require "moonbeat.core"
    local noop = function() end
    local function add(from, to)
      for i = from, to do
        s.add_job { id = "g" .. i, trigger = { "interval", hours = 1 }, run = noop }
      end
    end
    add(1, 20000)
    local grown = core.job_memory()
    -- Built with AddressSanitizer, jobs come from calloc: nothing ahead.
    if grown.chunks == 0 then
      assert.equal(0, grown.ahead)
      return
    end
    assert.equal(2, grown.ahead)
    -- Growing further takes the chunks ahead and maps as many again;
    -- every job carved from them is whole.
    add(20001, 40000)
    local more = core.job_memory()
    assert.equal(2, more.ahead)
    assert.is_true(more.chunks >= grown.chunks + 2)
    for _, i in ipairs { 1, 20000, 20001, 30000, 40000 } do
      assert.equal("g" .. i, s.get_job("g" .. i).id)
    end
    assert.equal(40000, #s.get_jobs())
    s.remove_all_jobs()
    h:advance("1s")
    collectgarbage()
    collectgarbage()
    local after = core.job_memory()
    -- Back to one chunk: what was mapped ahead goes too.
    assert.equal(1, after.chunks)
    assert.equal(0, after.ahead)
  end)

  it("maps nothing ahead for a job table of two chunks", function()
    local core = require "moonbeat.core"
    local noop = function() end
    -- A chunk holds a few thousand jobs.
    for i = 1, 20000 do
      if core.job_memory().chunks >= 2 then break end
      s.add_job { id = "two" .. i, trigger = { "interval", hours = 1 }, run = noop }
    end
    local memory = core.job_memory()
    -- Built with AddressSanitizer, jobs come from calloc: no chunks.
    if memory.chunks == 0 then return end
    assert.equal(2, memory.chunks)
    assert.equal(0, memory.ahead)
  end)

  it("removes every job there when asked, while a listener adds others", function()
    local added = 0
    s.add_listener(function(ev)
      if added < 1000 then
        added = added + 1
        s.add_job { id = "again" .. added, trigger = { "interval", hours = 1 },
          run = function() end }
      end
    end, { "removed" })
    for i = 1, 10 do
      s.add_job { id = "first" .. i, trigger = { "interval", hours = 1 }, run = function() end }
    end
    s.remove_all_jobs()
    -- The ten there were removed; the ten their removals added stay.
    assert.equal(10, added)
    local left = {}
    for _, job in ipairs(s.get_jobs()) do left[#left + 1] = job.id end
    table.sort(left)
    assert.same({ "again1", "again10", "again2", "again3", "again4", "again5",
      "again6", "again7", "again8", "again9" }, left)
  end)

  it("names a job after its id when it has no name", function()
    assert.equal("cleanup", s.add_job { id = "cleanup", trigger = "* * * * *",
      run = function() end }.name)
  end)

  it("gives jobs added from Lua without an id one of their own", function()
    local a = s.add_job { trigger = "* * * * *", run = function() end }
    local b = s.add_job { trigger = "* * * * *", run = function() end }
    assert.is_string(a.id)
    assert.are_not.equal(a.id, b.id)
  end)

  it("lists jobs by next run time, paused ones last", function()
    h:record("hourly", { "interval", hours = 1 })
    h:record("minutely", { "interval", minutes = 1 })
    h:record("daily", { "interval", days = 1 })
    s.pause_job("minutely")
    local ids = {}
    for i, job in ipairs(s.get_jobs()) do ids[i] = job.id end
    assert.same({ "hourly", "daily", "minutely" }, ids)
  end)

  it("lists jobs due at the same time by id, byte by byte, paused ones last", function()
    local ids = { "report-2026-b", "report-2026-a", "report-2026", "report-20",
      "Report", "report-2026-\xe9", "r", "report-2026-\x01" }
    for _, id in ipairs(ids) do
      s.add_job { id = id, trigger = { "interval", hours = 1 }, run = function() end }
    end
    s.add_job { id = "a-paused", trigger = { "interval", hours = 1 }, run = function() end }
    s.pause_job("a-paused")
    s.add_job { id = "z-sooner", trigger = { "interval", minutes = 1 }, run = function() end }
    local listed = {}
    for i, job in ipairs(s.get_jobs()) do listed[i] = job.id end
    assert.same({ "z-sooner", "Report", "r", "report-20", "report-2026",
      "report-2026-\x01", "report-2026-a", "report-2026-b", "report-2026-\xe9",
      "a-paused" }, listed)
  end)

  it("returns nil from get_job for an unknown id", function()
    assert.is_nil(s.get_job("nope"))
  end)

  it("pauses a job so it does not fire, and resumes from now", function()
    local fires = h:record("tick", { "interval", minutes = 1 })
    h:advance("2m")
    s.pause_job("tick")
    assert.is_true(s.get_job("tick").paused)
    assert.is_nil(s.get_job("tick").next_run_time)
    h:advance("10m")
    assert.same({ 60, 120 }, fires)
    s.resume_job("tick")
    -- The grid is kept: its next point after now.
    assert.equal(h.start + 13 * 60, s.get_job("tick").next_run_time)
    h:advance("2m")
    assert.same({ 60, 120, 780, 840 }, fires)
  end)

  it("adds a job paused with paused = true", function()
    local fires = h:record("held", { "interval", seconds = 1 }, { paused = true })
    h:advance("1m")
    assert.same({}, fires)
    assert.is_true(s.get_job("held").paused)
  end)

  it("removes a job so it never fires again", function()
    local fires = h:record("gone", { "interval", seconds = 10 })
    h:advance("15s")
    s.remove_job("gone")
    h:advance("1m")
    assert.same({ 10 }, fires)
    assert.is_nil(s.get_job("gone"))
  end)

  it("removes every job with remove_all_jobs", function()
    local a = h:record("a", { "interval", seconds = 10 })
    local b = h:record("b", "* * * * *")
    s.remove_all_jobs()
    h:advance("5m")
    assert.same({}, a)
    assert.same({}, b)
    assert.same({}, s.get_jobs())
  end)

  it("reschedules a job with a new trigger from now", function()
    local fires = h:record("moving", { "interval", hours = 1 })
    h:advance("30m")
    local job = s.reschedule_job("moving", { "interval", minutes = 10 })
    assert.equal("interval[10m]", job.trigger)
    h:advance("30m")
    assert.same({ 40 * 60, 50 * 60, 60 * 60 }, fires)
  end)

  it("fires jobs with scattered times in time order through removals, replacements, reschedules and pauses", function()
    local rand = seeded_rand(12345)
    local fired, alive = {}, {}
    local function add(i)
      s.add_job { id = "j" .. i, replace_existing = true,
        trigger = { "date", run_date = h.start + 1 + rand(1000) },
        run = function(ctx) fired[#fired + 1] = ctx.scheduled_time end }
      alive[i] = true
    end
    for i = 1, 2000 do add(i) end
    for i = 1, 2000, 3 do  -- out of the middle of the queue
      s.remove_job("j" .. i)
      alive[i] = nil
    end
    for i = 2, 2000, 5 do add(i) end  -- replaced, or added again
    for i = 3, 2000, 7 do  -- moved where they are, earlier or later
      if alive[i] then
        s.reschedule_job("j" .. i, { "date", run_date = h.start + 1 + rand(1000) })
      end
    end
    for i = 5, 2000, 11 do
      if alive[i] then s.pause_job("j" .. i) end
    end
    for i = 5, 2000, 22 do
      if alive[i] then s.resume_job("j" .. i) end
    end
    local expected = 0
    for i in pairs(alive) do
      if i % 11 ~= 5 or i % 22 == 5 then expected = expected + 1 end
    end
    h:advance("20m")
    assert.equal(expected, #fired)
    for k = 2, #fired do
      assert(fired[k - 1] <= fired[k], ("fire %d at %s before %s"):format(k,
        fired[k], fired[k - 1]))
    end
  end)

  it("keeps the order of many jobs sharing few instants through removals, replacements, reschedules and pauses", function()
    local rand = seeded_rand(777)
    -- The model: each job's instant and when it was last set.
    local at, set_at, clock = {}, {}, 0
    local fired = {}
    local function set(i, t)
      clock = clock + 1
      at[i], set_at[i] = t, clock
    end
    local function add(i)
      local t = h.start + 1 + rand(10)
      s.add_job { id = "j" .. i, replace_existing = true,
        trigger = { "date", run_date = t },
        run = function() fired[#fired + 1] = i end }
      set(i, t)
    end
    for i = 1, 600 do add(i) end
    for i = 1, 600, 4 do  -- out of the middle of their instants
      s.remove_job("j" .. i)
      at[i] = nil
    end
    for i = 2, 600, 9 do add(i) end
    for i = 3, 600, 7 do
      if at[i] then
        local t = h.start + 1 + rand(10)
        s.reschedule_job("j" .. i, { "date", run_date = t })
        set(i, t)
      end
    end
    local paused = {}
    for i = 6, 600, 5 do
      if at[i] then
        s.pause_job("j" .. i)
        paused[i] = true
      end
    end
    for i = 6, 600, 10 do
      if paused[i] then
        s.resume_job("j" .. i)
        paused[i] = nil
        set(i, at[i])
      end
    end
    local expected = {}
    for i in pairs(at) do
      if not paused[i] then expected[#expected + 1] = i end
    end
    table.sort(expected, function(a, b)
      if at[a] ~= at[b] then return at[a] < at[b] end
      return set_at[a] < set_at[b]
    end)
    h:advance("20s")
    assert.same(expected, fired)
  end)

  it("starts fires due at the same instant in the order their times were set", function()
    local order = {}
    for _, id in ipairs { "a", "b", "c" } do
      s.add_job { id = id, trigger = { "interval", seconds = 10 },
        run = function() order[#order + 1] = id end }
    end
    h:advance("10s")
    assert.same({ "a", "b", "c" }, order)
    -- b's next fire, set again, is the instant a's and c's were set to
    -- at their fire: b comes after them from now on.
    s.reschedule_job("b", { "interval", seconds = 10 })
    order = {}
    h:advance("20s")
    assert.same({ "a", "c", "b", "a", "c", "b" }, order)
  end)

  it("modifies name, run, args and kwargs in place", function()
    local seen = {}
    s.add_job { id = "m", trigger = { "interval", seconds = 10 },
      run = function() seen[#seen + 1] = "old" end }
    h:advance("10s")
    s.modify_job("m", {
      name = "Modified",
      run = function(ctx, a, b, kw) seen[#seen + 1] = a .. b .. kw.c end,
      args = { "x", "y" }, kwargs = { c = "z" },
    })
    assert.equal("Modified", s.get_job("m").name)
    h:advance("10s")
    assert.same({ "old", "xyz" }, seen)
  end)

  it("modifies the trigger and the next run time", function()
    local fires = h:record("m", { "interval", hours = 1 })
    s.modify_job("m", { next_run_time = h.start + 5 })
    h:advance("10s")
    assert.same({ 5 }, fires)
    s.modify_job("m", { trigger = { "interval", seconds = 30 } })
    h:advance("1m")
    assert.same({ 5, 40, 70 }, fires)
  end)

  it("tells a scheduler or a job from any other value given in its place", function()
    local job = s.add_job { id = "j", trigger = { "interval", hours = 1 },
      run = function() end }
    local core_sched = h.core
    local sched_meta = debug.getmetatable(core_sched)
    local job_meta = debug.getmetatable(job)
    -- Other userdata of as many bytes or more, and of fewer.
    local others = { job, io.stdout, ("x"):rep(64), {}, 42 }
    for _, other in ipairs(others) do
      local ok, err = pcall(core_sched.stats, other)
      assert.is_false(ok)
      assert.matches("moonbeat.scheduler expected", err)
    end
    for _, other in ipairs { core_sched, io.stdout, {}, "j" } do
      local ok, err = pcall(job_meta.__index, other, "id")
      assert.is_false(ok)
      assert.matches("moonbeat.job expected", err)
    end
    assert.is_false(job_meta.__eq(job, core_sched))
    assert.is_true(job_meta.__eq(job, s.get_job("j")))
    assert.equal("j", job.id)
    assert.is_table(core_sched:stats())
    assert.is_function(sched_meta.__index.stats)
  end)

  it("refuses a modification of an unknown field", function()
    h:record("m", { "interval", hours = 1 })
    local ok, err = pcall(s.modify_job, "m", { id = "other" })
    assert.is_false(ok)
    assert.equal("modify_job: id: unknown or unchangeable field", err)
  end)

  it("runs a job now with run_job, outside its schedule", function()
    local fires = h:record("daily", { "cron", hour = 12 })
    h:advance("1h")
    s.run_job("daily")
    h:advance(0)
    assert.same({ 3600 }, fires)
    assert.equal(h.start + 12 * 3600, s.get_job("daily").next_run_time)
  end)

  it("raises for a verb on an unknown job id", function()
    for _, verb in ipairs { "pause_job", "resume_job", "remove_job", "run_job" } do
      local ok, err = pcall(s[verb], "ghost")
      assert.is_false(ok)
      assert.equal("no job with id 'ghost'", err)
    end
  end)

  it("points the error at the caller's line", function()
    local ok, err = pcall(function()
      s.pause_job("ghost")
    end)
    assert.is_false(ok)
    assert.matches("^tests/management_spec.lua:%d+: no job with id 'ghost'$", err)
  end)

  it("offers the verbs as job methods", function()
    local fires = h:record("obj", { "interval", seconds = 10 })
    local job = s.get_job("obj")
    job:pause()
    assert.is_true(job.paused)
    job:resume()
    assert.is_false(job.paused)
    job:modify { name = "Renamed" }
    assert.equal("Renamed", job.name)
    job:reschedule { "interval", seconds = 5 }
    h:advance("5s")
    job:run()
    h:advance(0)
    assert.same({ 5, 5 }, fires)
    job:remove()
    assert.is_true(job.removed)
    local ok, err = pcall(job.pause, job)
    assert.is_false(ok)
    assert.equal("job 'obj' was removed", err)
  end)

  it("prints a job readably", function()
    local job = s.add_job { id = "p", trigger = { "interval", minutes = 5 }, run = function() end }
    assert.equal("job 'p' (trigger: interval[5m], next run at: 2026-01-01T00:05:00+00:00)",
      tostring(job))
  end)

  it("logs added, paused, resumed and removed", function()
    h:record("logged", "* * * * *")
    s.pause_job("logged")
    s.resume_job("logged")
    s.remove_job("logged")
    for _, msg in ipairs { "job added", "job paused", "job resumed", "job removed" } do
      assert.equal(1, #h:logged(msg), msg)
      assert.equal("logged", h:logged(msg)[1].fields.job)
    end
  end)
end)

describe("previewing a trigger", function()
  it("lists the next fires a new job would have", function()
    local h = harness.new()
    local fires = h.scheduler.preview({ "cron", hour = "*/6" }, 3)
    h:close()
    assert.same({ h.start, h.start + 6 * 3600, h.start + 12 * 3600 }, fires)
  end)
end)

describe("job handles and finalizers", function()
  local core = require "moonbeat.core"

  it("lists jobs whole while a finalizer removes one of them", function()
    local h = harness.new { db = false }
    local s = h.scheduler
    s.add_job { id = "a", trigger = { "interval", hours = 1 }, run = function() end }
    s.add_job { id = "b", trigger = { "interval", hours = 1 }, run = function() end }
    -- Step the collector by hand until its finalizers are due, so that
    -- get_jobs' first allocation runs the one that removes "b".
    local due
    collectgarbage()
    collectgarbage("incremental", 100, 100, 1)
    collectgarbage("stop")
    setmetatable({}, { __gc = function()
      s.remove_job("b")
      core.job_memory()
    end })
    for _ = 1, 9 do setmetatable({}, { __gc = function() end }) end
    setmetatable({}, { __gc = function() due = true end })
    while not due do collectgarbage("step", 0) end
    collectgarbage("restart")
    local all = s.get_jobs()
    collectgarbage("generational")
    local seen = {}
    for _, job in ipairs(all) do seen[job.id] = job.removed end
    assert.same({ a = false, b = true }, seen)
    h:close()
  end)

  it("lets go of a job whose handle a run makes at its memory limit", function()
    local h = harness.new { memory_headroom = 4 * 1024 * 1024 }
    local s = h.scheduler
    local function live()
      collectgarbage()
      collectgarbage()
      return core.job_memory().live
    end
    local before = live()
    s.add_job { id = "y", trigger = { "interval", hours = 1 }, run = function() end }
    local got = { "unset", "unset" }  -- room made before memory runs out
    local hoard = {}
    local function big(i) hoard[#hoard + 1] = ("x"):rep(900) .. i end
    local function small() hoard[#hoard + 1] = {} end
    s.add_job { id = "r", trigger = { "interval", seconds = 10 }, run = function()
      local get = s.get_job
      pcall(get, "r")  -- the call path made before memory runs out
      local i = 0
      while pcall(big, i) do i = i + 1 end
      while pcall(small) do end
      got[1], got[2] = pcall(get, "y")
      hoard = nil
    end }
    collectgarbage()
    collectgarbage()  -- "y"'s handle from add_job is gone
    h:advance(10)
    assert.is_true(got[1])
    assert.equal("y", got[2].id)
    got = nil
    s.remove_job("y")
    s.remove_job("r")
    h:advance(1)
    assert.equal(before, live())
    h:close()
  end)
end)
