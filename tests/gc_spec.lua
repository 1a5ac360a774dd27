-- Lua's collector, paced around the real clock's turns (host/gc.c):
-- young collections at the end of a turn that made enough garbage, a
-- full one once the heap has doubled, and none of the collector's own
-- full collections left to fall in the middle of a burst of fires.
describe("the collector's pace", function()
  local core = require "moonbeat.core"
  local time = require "moonbeat.time"
  core.configure_log { stream = "none" }

  -- body(sched) as the run of a job due at once on the real clock; its
  -- results once the scheduler has stopped.
  local function in_run(body)
    local sched = assert(core.new { clock = "real" })
    local api = require("mb.scheduler").new(sched)
    local results
    api.add_job { id = "body", trigger = { "date", run_date = core.now() - 1 },
      misfire_grace_time = false, run = function()
        results = table.pack(body(sched))
        api.shutdown()
      end }
    sched:run()
    sched:close()
    return table.unpack(results, 1, results.n)
  end

  -- Small live tables into t until the heap holds kb kilobytes.
  local function grow(t, kb)
    local n = #t
    while collectgarbage("count") < kb do
      for _ = 1, 100 do
        n = n + 1
        t[n] = { n }
      end
    end
    return t
  end

  -- A collector with no mark left by earlier specs, just collected, with
  -- a heap of 8 MB or more: its own next full collection comes once the
  -- heap has doubled from here.
  local ballast = {}
  local function fresh_heap()
    collectgarbage("generational")
    collectgarbage("collect")
    grow(ballast, 8 * 1024)
    collectgarbage("collect")
    return collectgarbage("count")
  end

  it("still frees garbage that outlived young collections, as the collector's full collections would", function()
    local sched = assert(core.new { clock = "real" })
    local api = require("mb.scheduler").new(sched)
    local live = {}  -- a long-lived heap of a few megabytes
    for i = 1, 50000 do live[i] = { i, tostring(i) } end
    collectgarbage("collect")
    local base, grown, majors = collectgarbage("count"), nil, nil
    api.add_job { id = "churn", trigger = { "date", run_date = core.now() - 1 },
      misfire_grace_time = false, run = function()
        local before = sched:stats().major_collections
        local ring = {}
        for turn = 1, 600 do
          -- About 120 KB a turn, each batch alive for 8 turns: old by the
          -- time it is dropped.
          local batch = {}
          for i = 1, 1000 do batch[i] = { i, i + 1, i + 2 } end
          ring[turn % 8] = batch
          time.sleep(0)
        end
        grown = collectgarbage("count") - base
        majors = sched:stats().major_collections - before
        api.shutdown()
      end }
    sched:run()
    sched:close()
    assert.is_true(#live == 50000)
    -- About 1 MB is alive at the end; 600 turns made 70 MB. A full
    -- collection comes once the heap has doubled, so it may end up to the
    -- heap it started from (the whole test process's) larger, no more.
    local bound = base + 6 * 1024
    assert.is_true(bound < 35 * 1024, ("a heap of %.0f KB to start from "
      .. "leaves this spec nothing to tell"):format(base))
    assert.is_true(grown < bound, ("the heap grew by %.0f KB"):format(grown))
    assert.is_true(majors > 0)
  end)

  it("takes a young collection, not a full one, at the first turn that made enough garbage", function()
    local live = {}  -- a heap of several megabytes before the scheduler
    for i = 1, 100000 do live[i] = { i } end
    local sched = assert(core.new { clock = "real" })
    local api = require("mb.scheduler").new(sched)
    local st
    api.add_job { id = "churn", trigger = { "date", run_date = core.now() - 1 },
      misfire_grace_time = false, run = function()
        for i = 1, 1500 do local _ = { i, i + 1, i + 2 } end
        time.sleep(0)
        st = sched:stats()
        api.shutdown()
      end }
    sched:run()
    sched:close()
    assert.is_true(#live == 100000)
    assert.equal(0, st.major_collections)
    assert.is_true(st.young_collections >= 1)
  end)

  it("collects nothing at the end of a turn while job code has stopped the collector", function()
    local sched = assert(core.new { clock = "real" })
    local api = require("mb.scheduler").new(sched)
    local collections, running
    api.add_job { id = "stopper", trigger = { "date", run_date = core.now() - 1 },
      misfire_grace_time = false, run = function()
        collectgarbage("stop")
        local st = sched:stats()
        local before = st.young_collections + st.major_collections
        for _ = 1, 20 do
          for i = 1, 2000 do local _ = { i } end
          time.sleep(0)
        end
        st = sched:stats()
        collections = st.young_collections + st.major_collections - before
        running = collectgarbage("isrunning")
        collectgarbage("restart")
        api.shutdown()
      end }
    sched:run()
    sched:close()
    assert.equal(0, collections)
    assert.is_false(running)
  end)

  it("collects young garbage at the end of a turn that made enough of it", function()
    local sched = assert(core.new { clock = "real" })
    local api = require("mb.scheduler").new(sched)
    local function collections() return sched:stats().young_collections end
    local quiet, churned
    api.add_job { id = "churn", trigger = { "date", run_date = core.now() - 1 },
      misfire_grace_time = false, run = function()
        -- A young collection now: the collector's own next one is a fifth
        -- of the heap away, further than the garbage made below.
        collectgarbage("step")
        time.sleep(0)
        local before = collections()
        time.sleep(0)  -- a turn that made next to no garbage
        quiet = collections() - before
        before = collections()
        -- About 125 KB of garbage, more than a turn may leave.
        for i = 1, 1200 do local _ = { i, i + 1, i + 2 } end
        time.sleep(0)
        churned = collections() - before
        api.shutdown()
      end }
    sched:run()
    sched:close()
    assert.equal(0, quiet)
    assert.equal(1, churned)
  end)

  -- Lua marks a full collection that freed little of the heap's growth
  -- as bad, and makes its next collection a full one.
  it("takes a young collection at the end of a turn after the collector's own full collection went bad", function()
    local h0 = fresh_heap()
    local pad = grow({}, 1.5 * h0)  -- live, and short of the doubling
    local base, after, st = in_run(function(sched)
      local base = collectgarbage("count")
      -- The collector's own full collection comes at twice h0 and frees
      -- nothing: bad. What was made before it is old from then on.
      local old = grow({}, 2.6 * h0)
      old = nil  -- luacheck: ignore
      time.sleep(0)  -- the turn's end: less than twice the base, young
      return base, collectgarbage("count"), sched:stats()
    end)
    assert.is_true(#pad > 0)
    assert.equal(0, st.major_collections)
    assert.is_true(st.young_collections >= 1)
    -- A young collection leaves the old garbage (half of h0 or more); the
    -- full one the mark asked for would have freed it.
    assert.is_true(after - base > 0.3 * h0,
      ("%.0f KB above the base, %.0f KB was old garbage"):format(after - base,
        0.5 * h0))
  end)

  it("leaves no mark after its full collection at the end of a turn: the collector's next own collection is young", function()
    local h0 = fresh_heap()
    local freed, st = in_run(function(sched)
      -- The collector's own full collection at twice h0 frees nothing:
      -- bad. Its next, at twice that, finds the heap still growing: bad
      -- again, and it stays incremental until its next collection, which
      -- is full. The turn's end finds the heap doubled: a full collection.
      local old = grow({}, 4.6 * h0)
      time.sleep(0)
      local st = sched:stats()
      old = nil  -- luacheck: ignore
      local before = collectgarbage("count")
      collectgarbage("step", 0)  -- what the collector does on its own
      return before - collectgarbage("count"), st
    end)
    assert.equal(1, st.major_collections)
    -- Young: the old garbage (3.6 h0) stays; a full one frees it all.
    assert.is_true(freed < 0.5 * h0,
      ("the step freed %.0f KB of %.0f"):format(freed, 3.6 * h0))
  end)

  it("leaves the incremental collector to job code that chose it, at a young collection", function()
    local mode, st = in_run(function(sched)
      collectgarbage("incremental")
      for i = 1, 2000 do local _ = { i, i + 1, i + 2 } end  -- over 64 KB
      time.sleep(0)
      local mode = collectgarbage("generational")  -- the previous mode
      return mode, sched:stats()
    end)
    assert.is_true(st.young_collections >= 1)
    assert.equal("incremental", mode)
  end)

  it("leaves the incremental collector to job code that chose it, at a full collection", function()
    local h0 = fresh_heap()
    local mode, st = in_run(function(sched)
      collectgarbage("incremental")
      local live = grow({}, 2.5 * h0)
      time.sleep(0)
      local mode = collectgarbage("generational")
      assert(#live > 0)
      return mode, sched:stats()
    end)
    assert.equal(1, st.major_collections)
    assert.equal("incremental", mode)
  end)
end)
