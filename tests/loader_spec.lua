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

  it("walks subdirectories in sorted order and leaves lib/ and hidden names out", function()
    dir = support.tempdir()
    os.execute("mkdir -p " .. support.quote(dir .. "/lib") .. " "
      .. support.quote(dir .. "/team/lib") .. " " .. support.quote(dir .. "/.git"))
    support.write(dir .. "/b.lua", job_file("b"))
    support.write(dir .. "/team/a.lua", job_file("team-a"))
    support.write(dir .. "/team/lib/x.lua", job_file("team-lib"))
    support.write(dir .. "/lib/util.lua", "return {}")
    support.write(dir .. "/.git/hook.lua", job_file("git"))
    support.write(dir .. "/.#b.lua", job_file("lock"))
    local summary = loader.load_dir(h.core, dir)
    assert.same({ files = 3, failed = 0, jobs = 3, errors = {} }, summary)
    local files = {}
    for i, entry in ipairs(h:logged("job file loaded")) do files[i] = entry.fields.file end
    assert.same({ dir .. "/b.lua", dir .. "/team/a.lua", dir .. "/team/lib/x.lua" }, files)
  end)

  it("keeps the job a failing file would have replaced", function()
    h.scheduler.add_job { id = "x", trigger = { "interval", seconds = 10 }, run = function() end }
    local jobs, err = h:load("jobs/a.lua", "scheduler.add_job { id = 'x', replace_existing = true, "
      .. "trigger = { 'interval', seconds = 99 }, run = function() end }\nerror('boom')\n")
    assert.is_nil(jobs)
    assert.equal("jobs/a.lua:2: boom", err)
    assert.equal("interval[10s]", h.scheduler.get_job("x").trigger)
    assert.is_nil(h.scheduler.get_job("x").file)
  end)

  it("lets a file take a job over with replace_existing, keeping its ctx.state", function()
    assert.truthy(h:load("jobs/a.lua", job_file("x")))
    local spec = h.core:job_spec(h.scheduler.get_job("x"))
    spec.state = { kept = true }
    local jobs = h:load("jobs/b.lua", "scheduler.add_job { id = 'x', replace_existing = true, "
      .. "trigger = { 'interval', seconds = 30 }, run = function() end }")
    assert.equal(1, #jobs)
    local x = h.scheduler.get_job("x")
    assert.equal("jobs/b.lua", x.file)
    assert.equal("interval[30s]", x.trigger)
    assert.same({ kept = true }, h.core:job_spec(x).state)
  end)

  it("refuses a job id declared twice in one file", function()
    local jobs, err = h:load("jobs/twice.lua", job_file("x") .. job_file("x"))
    assert.is_nil(jobs)
    assert.equal("jobs/twice.lua:4: job id 'x' already exists (declared in jobs/twice.lua); "
      .. "pass replace_existing = true to replace it", err)
    assert.is_nil(h.scheduler.get_job("x"))
  end)

  it("makes a job live once its whole file has loaded; add_job returns its id", function()
    local jobs, err = h:load("jobs/a.lua", "local id = scheduler.add_job { id = 'a', "
      .. "trigger = { 'interval', seconds = 10 }, run = function() end }\n"
      .. "assert(id == 'a', 'id')\nassert(scheduler.get_job('a') == nil, 'live too soon')\n")
    assert.truthy(jobs, err)
    assert.truthy(h.scheduler.get_job("a"))
  end)

  it("stops a file whose top level never ends", function()
    local limit = loader.CPU_LIMIT
    loader.CPU_LIMIT = 0.05
    local jobs, err = h:load("jobs/spin.lua", job_file("s") .. "while true do end\n")
    loader.CPU_LIMIT = limit
    assert.is_nil(jobs)
    assert.equal("jobs/spin.lua:3: loading took more than 0.05 s of CPU time (an endless loop?)", err)
    assert.is_nil(h.scheduler.get_job("s"))
  end)

  it("names a file by its whole path, however long", function()
    local path = "jobs/" .. ("very-long-directory-name/"):rep(4) .. "broken.lua"
    local jobs, err = h:load(path, "scheduler.add_job {")
    assert.is_nil(jobs)
    assert.equal(path .. ":1: unexpected symbol near <eof>", err)
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
