-- Restoring jobs added at run time: many stored specs that differ only
-- in their id share one check and still come back as jobs of their own;
-- rows that restoring leaves as they were are not written again.
local harness = require "tests.harness"
local support = require "tests.support"

-- The functions these jobs run by reference; a spec may take one away.
local jobs = {}
package.preload["restore_jobs"] = function() return jobs end

local function reset_jobs()
  for k in pairs(jobs) do jobs[k] = nil end
  jobs.calls = {}
  function jobs.note(ctx, label, opts)
    jobs.calls[#jobs.calls + 1] = { ctx.job_id, label, opts and opts.tag }
  end
  function jobs.bump(ctx)
    ctx.state.n = (ctx.state.n or 0) + 1
    ctx.state.who = ctx.job_id
  end
end

describe("restoring stored jobs", function()
  local dir, db
  before_each(function()
    dir = support.tempdir()
    db = dir .. "/m.db"
    reset_jobs()
  end)
  after_each(function() support.remove_tree(dir) end)

  local function add_many(h, ids, extra)
    for _, id in ipairs(ids) do
      local spec = { id = id, trigger = { "cron", minute = "*/5" },
        run = "restore_jobs.note", args = { "hello" }, kwargs = { tag = "t" } }
      for k, v in pairs(extra or {}) do spec[k] = v end
      h.scheduler.add_job(spec)
    end
  end

  it("brings back jobs that differ only in their id, each with its own id, name, args and schedule", function()
    local h = harness.new { db = db, start = "2026-01-01T00:01:00Z" }
    add_many(h, { "a1", "a2", "a3" })
    h.scheduler.add_job { id = "named", name = "A name", trigger = { "cron", minute = "*/5" },
      run = "restore_jobs.note", args = { "hello" }, kwargs = { tag = "t" } }
    h:close()
    h = harness.new { db = db, start = "2026-01-01T00:02:00Z" }
    local summary = h.scheduler.restore()
    assert.equal(4, summary.restored)
    for _, id in ipairs { "a1", "a2", "a3" } do
      local job = h.scheduler.get_job(id)
      assert.equal(id, job.id)
      assert.equal(id, job.name)
      assert.equal(harness.time("2026-01-01 00:05"), job.next_run_time)
    end
    assert.equal("A name", h.scheduler.get_job("named").name)
    local a1 = h.core:job_spec(h.scheduler.get_job("a1"))
    local a2 = h.core:job_spec(h.scheduler.get_job("a2"))
    assert.are_not.equal(a1.args, a2.args)
    assert.are_not.equal(a1.kwargs, a2.kwargs)
    a1.kwargs.tag = "changed"
    h:advance("4m")
    h:close()
    table.sort(jobs.calls, function(x, y) return x[1] < y[1] end)
    assert.same({ { "a1", "hello", "changed" }, { "a2", "hello", "t" },
      { "a3", "hello", "t" }, { "named", "hello", "t" } }, jobs.calls)
  end)

  it("keeps an id inside a job's data apart from the job's own", function()
    local h = harness.new { db = db }
    add_many(h, { "n1", "n2" }, { args = { { id = "n1" }, "x" } })
    h:close()
    h = harness.new { db = db }
    h.scheduler.restore()
    for _, id in ipairs { "n1", "n2" } do
      local spec = h.core:job_spec(h.scheduler.get_job(id))
      assert.equal(id, spec.id)
      assert.same({ { id = "n1" }, "x", n = 2 }, spec.args)
    end
    h:close()
  end)

  it("brings back a job whose data holds its own id ahead of it, from another's check", function()
    -- y1's text has y1's id entry inside args first; x1's check is the
    -- one that fits y1 once its top-level entry is found.
    local h = harness.new { db = db }
    add_many(h, { "x1", "y1" }, { args = { { id = "y1" } } })
    h:close()
    h = harness.new { db = db }
    assert.equal(2, h.scheduler.restore().restored)
    for _, id in ipairs { "x1", "y1" } do
      local spec = h.core:job_spec(h.scheduler.get_job(id))
      assert.equal(id, spec.id)
      assert.same({ { id = "y1" }, n = 1 }, spec.args)
    end
    h:close()
  end)

  it("writes no row that restoring leaves as it was, and loses nothing by it", function()
    local h = harness.new { db = db }
    add_many(h, { "r1", "r2", "r3" })
    h.scheduler.add_job { id = "paused", trigger = { "interval", minutes = 7 },
      run = "restore_jobs.note" }
    h:advance("11m")
    h.scheduler.pause_job("paused", { note = "maintenance" })
    h:close()
    h = harness.new { db = db, start = "2026-01-01T00:12:00Z" }
    h.scheduler.restore()
    assert.equal(0, h.core:store_stats().rows)
    h:close()
    -- The third start sees what the first left, through the second.
    h = harness.new { db = db, start = "2026-01-01T00:13:00Z" }
    h.scheduler.restore()
    local r1 = h.scheduler.get_job("r1")
    assert.equal(3, r1.counts.ok)
    assert.equal(harness.time("2026-01-01 00:15"), r1.next_run_time)
    local paused = h.scheduler.get_job("paused")
    assert.is_nil(paused.next_run_time)
    assert.equal("maintenance", paused.pause_note)
    assert.equal(1, paused.counts.ok)
    h:close()
  end)

  it("gives each job its own saved ctx.state", function()
    local h = harness.new { db = db }
    for _, id in ipairs { "s1", "s2" } do
      h.scheduler.add_job { id = id, trigger = { "interval", minutes = 1 },
        run = "restore_jobs.bump" }
    end
    h:advance("2m")
    h:close()
    h = harness.new { db = db, start = "2026-01-01T00:02:30Z" }
    h.scheduler.restore()
    for _, id in ipairs { "s1", "s2" } do
      assert.same({ n = 2, who = id }, h.core:job_spec(h.scheduler.get_job(id)).state)
    end
    h:close()
  end)

  -- Jobs restored from specs that differ only in their id share one spec
  -- table until each needs its own: to run, or to be read whole.
  local function add_bumpers(h, ids)
    for _, id in ipairs(ids) do
      h.scheduler.add_job { id = id, trigger = { "cron", minute = "*" },
        run = "restore_jobs.bump" }
    end
  end

  it("runs jobs restored from one checked spec each with its own ctx.state", function()
    local h = harness.new { db = db, start = "2026-01-01T00:00:30Z" }
    add_bumpers(h, { "b1", "b2", "b3" })
    h:close()
    h = harness.new { db = db, start = "2026-01-01T00:00:30Z" }
    h.scheduler.restore()
    h:advance("2m")
    for _, id in ipairs { "b1", "b2", "b3" } do
      assert.same({ n = 2, who = id }, h.core:job_spec(h.scheduler.get_job(id)).state)
    end
    h:close()
    h = harness.new { db = db, start = "2026-01-01T00:02:30Z" }
    h.scheduler.restore()
    h.scheduler.remove_job("b3")
    h:advance("1m")
    for _, id in ipairs { "b1", "b2" } do
      assert.same({ n = 3, who = id }, h.core:job_spec(h.scheduler.get_job(id)).state)
    end
    h:close()
  end)

  it("lets a listener of the added event read each restored job's own spec", function()
    local h = harness.new { db = db, start = "2026-01-01T00:01:00Z" }
    add_many(h, { "e1", "e2", "e3" })
    h:close()
    h = harness.new { db = db, start = "2026-01-01T00:01:00Z" }
    local seen = {}
    h.scheduler.add_listener(function(ev)
      local spec = h.core:job_spec(h.scheduler.get_job(ev.job_id))
      seen[#seen + 1] = ev.job_id .. "=" .. spec.id
      spec.kwargs.tag = ev.job_id
    end, { "added" })
    h.scheduler.restore()
    table.sort(seen)
    assert.same({ "e1=e1", "e2=e2", "e3=e3" }, seen)
    h:advance("4m")
    h:close()
    table.sort(jobs.calls, function(x, y) return x[1] < y[1] end)
    assert.same({ { "e1", "hello", "e1" }, { "e2", "hello", "e2" },
      { "e3", "hello", "e3" } }, jobs.calls)
  end)

  it("keeps running the others when jobs sharing a spec are removed before they ran", function()
    local h = harness.new { db = db, start = "2026-01-01T00:01:00Z" }
    add_many(h, { "k1", "k2", "k3", "k4" })
    h:close()
    h = harness.new { db = db, start = "2026-01-01T00:01:00Z" }
    h.scheduler.restore()
    h.scheduler.remove_job("k1")
    h.scheduler.remove_job("k3")
    collectgarbage("collect")
    h:advance("4m")
    h:close()
    table.sort(jobs.calls, function(x, y) return x[1] < y[1] end)
    assert.same({ { "k2", "hello", "t" }, { "k4", "hello", "t" } }, jobs.calls)
  end)

  -- What the store holds of each job's spec, by id.
  local function stored_specs()
    local out = {}
    local q = io.popen(("sqlite3 -separator '|' %s 'SELECT id, spec FROM jobs ORDER BY id'"):format(db))
    for line in q:lines() do
      local id, spec = line:match("^([^|]*)|(.*)$")
      out[id] = spec
    end
    q:close()
    return out
  end

  it("writes the rows of jobs restored from one stored text with each job's own text", function()
    local h = harness.new { db = db, start = "2026-01-01T00:01:00Z" }
    add_many(h, { "w1", "w2", "w3" })
    h:close()
    local first = stored_specs()
    assert.truthy(first.w2:find('["id"]="w2"', 1, true))
    h = harness.new { db = db, start = "2026-01-01T00:01:00Z" }
    h.scheduler.restore()
    h.scheduler.pause_job("w2", { note = "rows written again" })
    h:advance("9m")
    h:close()
    assert.same(first, stored_specs())
    h = harness.new { db = db, start = "2026-01-01T00:10:00Z" }
    assert.equal(3, h.scheduler.restore().restored)
    assert.equal("rows written again", h.scheduler.get_job("w2").pause_note)
    assert.equal(2, h.scheduler.get_job("w1").counts.ok)
    h:advance("5m")
    h:close()
    -- 00:05 and 00:10 before the restart, 00:15 after; w2 stays paused.
    local runs = {}
    for _, call in ipairs(jobs.calls) do
      assert.same({ "hello", "t" }, { call[2], call[3] })
      runs[call[1]] = (runs[call[1]] or 0) + 1
    end
    assert.same({ w1 = 3, w3 = 3 }, runs)
  end)

  it("runs and reads jobs restored from one spec whose data nests deeply", function()
    local function nest(depth)
      local t = { "leaf" }
      for _ = 1, depth do t = { t } end
      return t
    end
    local function depth_of(t)
      local d = 0
      while type(t[1]) == "table" do t, d = t[1], d + 1 end
      return d, t[1]
    end
    local reached = {}
    function jobs.deep(ctx, t) reached[ctx.job_id] = { depth_of(t) } end
    local h = harness.new { db = db, start = "2026-01-01T00:01:00Z" }
    for _, id in ipairs { "d1", "d2", "d3" } do
      h.scheduler.add_job { id = id, trigger = { "cron", minute = "*/5" },
        run = "restore_jobs.deep", args = { nest(150) } }
    end
    h:close()
    h = harness.new { db = db, start = "2026-01-01T00:01:00Z" }
    h.scheduler.restore()
    -- A full collection shrinks the stack the copies are made on.
    collectgarbage()
    collectgarbage()
    assert.same({ 150, "leaf" }, { depth_of(h.core:job_spec(h.scheduler.get_job("d3")).args[1]) })
    collectgarbage()
    h:advance("4m")
    h:close()
    assert.same({ d1 = { 150, "leaf" }, d2 = { 150, "leaf" }, d3 = { 150, "leaf" } }, reached)
  end)

  it("holds jobs restored from one checked spec in one spec table until each needs its own", function()
    local h = harness.new { db = db }
    local ids = {}
    for i = 1, 2000 do ids[i] = "m" .. i end
    add_many(h, ids)
    h:close()
    h = harness.new { db = db }
    collectgarbage("collect")
    local before = collectgarbage("count")
    assert.equal(2000, h.scheduler.restore().restored)
    h.logs = {}
    collectgarbage("collect")
    -- A table of its own per job, with its args and kwargs, would take
    -- more than 500 bytes each.
    assert.is_true((collectgarbage("count") - before) * 1024 < 2000 * 50)
    h:close()
  end)

  it("logs the jobs it brings back at debug level, not each at info", function()
    local h = harness.new { db = db }
    add_many(h, { "l1", "l2" })
    h.scheduler.add_job { id = "other", trigger = { "interval", minutes = 7 },
      run = "restore_jobs.note" }
    for _, line in ipairs(h:logged("job added")) do assert.equal("info", line.level) end
    h:close()
    h = harness.new { db = db }
    h.scheduler.add_job { id = "new", trigger = { "cron", minute = "*" }, run = function() end }
    assert.equal(3, h.scheduler.restore().restored)
    local levels = {}
    for _, line in ipairs(h:logged("job added")) do levels[line.fields.job] = line.level end
    assert.same({ new = "info", l1 = "debug", l2 = "debug", other = "debug" }, levels)
    h:close()
  end)

  it("gives a row to the job a file declares under its id, even where its spec is like others", function()
    local h = harness.new { db = db, start = "2026-01-01T00:01:00Z" }
    add_many(h, { "k1", "k2", "k3" })
    h:advance("10m")
    h:close()
    h = harness.new { db = db, start = "2026-01-01T00:12:00Z" }
    -- As a job file would declare it, before the restore.
    h.scheduler.add_job { id = "k2", trigger = { "interval", minutes = 7 },
      run = function() end }
    local summary = h.scheduler.restore()
    assert.equal(3, summary.restored)
    assert.equal(0, summary.removed)
    assert.same({}, h:logged("stored job could not be added back"))
    local k2 = h.scheduler.get_job("k2")
    assert.equal("interval[7m]", k2.trigger)
    -- The row's history stays with it.
    assert.equal(2, k2.counts.ok)
    for _, id in ipairs { "k1", "k3" } do
      assert.equal(harness.time("2026-01-01 00:15"), h.scheduler.get_job(id).next_run_time)
    end
    h:close()
  end)

  it("names each stored job whose function is gone, and drops it", function()
    local h = harness.new { db = db }
    add_many(h, { "g1", "g2" })
    h:close()
    jobs.note = nil
    h = harness.new { db = db }
    local summary = h.scheduler.restore()
    assert.equal(2, summary.removed)
    assert.is_nil(h.scheduler.get_job("g1"))
    assert.is_nil(h.scheduler.get_job("g2"))
    local said = h:logged("stored job could not be added back")
    local seen = {}
    for _, line in ipairs(said) do
      assert.equal("error", line.level)
      assert.equal("run: 'restore_jobs.note': module 'restore_jobs' has no function 'note'",
        line.fields.error)
      seen[#seen + 1] = line.fields.job
    end
    table.sort(seen)
    assert.same({ "g1", "g2" }, seen)
    h:close()
  end)
end)
