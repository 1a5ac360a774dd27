-- Loading a job directory: sorted order, one environment per file, and
-- a failing file that disturbs nothing else.
local harness = require "tests.harness"
local loader = require "mb.loader"
local support = require "tests.support"

describe("the loader", function()
  local h, dir
  before_each(function() h = harness.new() end)
  after_each(function()
    h:close()
    if dir then support.remove_tree(dir) end
    dir = nil
  end)

  local function job_file(id, extra)
    return ("%s\nscheduler.add_job { id = %q, trigger = { 'interval', seconds = 10 }, "
      .. "run = function() end }\n"):format(extra or "", id)
  end

  it("loads every *.lua file in sorted order and nothing else", function()
    dir = support.tempdir {
      ["b.lua"] = job_file("b"), ["a.lua"] = job_file("a"),
      ["notes.txt"] = "not lua", ["c.lua.bak"] = job_file("c"),
    }
    local summary = loader.load_dir(h.core, dir)
    assert.same({ files = 2, failed = 0, jobs = 2, errors = {} }, summary)
    local loaded = h:logged("job file loaded")
    assert.equal(dir .. "/a.lua", loaded[1].fields.file)
    assert.equal(dir .. "/b.lua", loaded[2].fields.file)
    assert.equal(dir .. "/a.lua", h.scheduler.get_job("a").file)
  end)

  it("gives each file its own globals", function()
    dir = support.tempdir {
      ["1-set.lua"] = job_file("setter", "shared = 'from file 1'"),
      ["2-read.lua"] = job_file("reader", "seen_by_2 = shared"),
    }
    loader.load_dir(h.core, dir)
    assert.is_nil(rawget(_G, "shared"))
    -- File 2's job sees its own environment only.
    local ran
    h.scheduler.modify_job("reader", { run = function() ran = true end })
    h:advance("10s")
    assert.is_true(ran)
    local ok, err = h:load("probe.lua", "assert(shared == nil, 'leaked global')")
    assert.is_truthy(ok, err)
  end)

  it("loads the other files when one fails, and reports it with file and line", function()
    dir = support.tempdir {
      ["a.lua"] = job_file("a"),
      ["b.lua"] = "scheduler.add_job {\n  id = 'b',\n  trigger = { 'cron', minute = 75 },\n  run = function() end }\n",
      ["c.lua"] = job_file("c"),
    }
    local summary = loader.load_dir(h.core, dir)
    assert.equal(3, summary.files)
    assert.equal(1, summary.failed)
    assert.equal(2, summary.jobs)
    assert.same({ dir .. "/b.lua:1: trigger.minute: 75 is out of range 0-59" }, summary.errors)
    assert.truthy(h.scheduler.get_job("a"))
    assert.truthy(h.scheduler.get_job("c"))
  end)

  it("names the compiled-in Lua sources by file and line in tracebacks", function()
    local jobs = h:load("jobs/bad.lua", "scheduler.add_job { id = 'x', trigger = 'bad', run = print }")
    assert.is_nil(jobs)
    local trace = h:logged("job file failed to load")[1].fields.traceback
    assert.matches("lua/scheduler.lua:%d+: in field 'add_job'", trace)
    assert.matches("jobs/bad.lua:1: in main chunk", trace, 1, true)
  end)

  it("says why a directory cannot be read", function()
    local summary, err = loader.load_dir(h.core, "/nonexistent/jobs")
    assert.is_nil(summary)
    assert.equal("/nonexistent/jobs: No such file or directory", err)
  end)

  it("can load a file again and replace its jobs", function()
    dir = support.tempdir { ["r.lua"] = job_file("r") }
    loader.load_dir(h.core, dir)
    local path = dir .. "/r.lua"
    support.write(path, "scheduler.add_job { id = 'r', replace_existing = true, "
      .. "trigger = { 'cron', hour = 5 }, run = function() end }\n")
    assert.truthy(loader.load(h.core, path))
    assert.equal("cron[hour='5']", h.scheduler.get_job("r").trigger)
  end)
end)
