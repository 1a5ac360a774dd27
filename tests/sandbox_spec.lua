-- The environment of a job file: calls that would block the loop or end
-- the process are refused with the stdlib call to use instead, and
-- require finds modules in the job directory's lib/.
local harness = require "tests.harness"
local support = require "tests.support"

local RUN = "use moonbeat.exec.run (or exec.shell for a command line)"
local READ = "read files with moonbeat.fs.read or io.open"

describe("the job sandbox", function()
  local h, dir
  before_each(function() h = harness.new() end)
  after_each(function()
    h:close()
    if dir then support.remove_tree(dir) end
    dir = nil
  end)

  local function load_error(source)
    local jobs, err = h:load("jobs/x.lua", source)
    assert.is_nil(jobs)
    return err
  end

  it("refuses what blocks the loop or ends the process, naming what to use", function()
    assert.equal("jobs/x.lua:1: os.execute blocks the scheduler; " .. RUN,
      load_error("os.execute('true')"))
    assert.equal("jobs/x.lua:1: os.execute blocks the scheduler; " .. RUN,
      load_error("os.execute()"))
    assert.equal("jobs/x.lua:2: io.popen blocks the scheduler; " .. RUN,
      load_error("local x = 1\nio.popen('ls')"))
    assert.equal("jobs/x.lua:1: os.exit would stop the scheduler and every job; return "
      .. "(or raise an error) to end a run, or use scheduler.shutdown",
      load_error("os.exit(0)"))
    assert.equal("jobs/x.lua:1: io.read reads the terminal and blocks the scheduler; " .. READ,
      load_error("io.read('l')"))
    assert.equal("jobs/x.lua:1: io.lines() without a file reads the terminal and blocks the "
      .. "scheduler; " .. READ, load_error("for l in io.lines() do end"))
    assert.equal("jobs/x.lua:1: io.stdin is the terminal: reading it blocks the scheduler; "
      .. READ, load_error("local f = io.stdin"))
    assert.equal("jobs/x.lua:1: io.input() is the terminal: reading it blocks the scheduler; "
      .. READ, load_error("io.input():read()"))
    assert.equal("jobs/x.lua:1: loadfile without a file reads the terminal and blocks the "
      .. "scheduler; " .. READ, load_error("loadfile()"))
    assert.equal("jobs/x.lua:1: dofile without a file reads the terminal and blocks the "
      .. "scheduler; " .. READ, load_error("dofile()"))
  end)

  it("refuses them inside a run too, failing only that run", function()
    local jobs = h:load("jobs/x.lua", [[
      scheduler.add_job { id = "shell-out", trigger = { "date", delay = 1 }, run = function()
        os.execute("sleep 5")
      end }
    ]])
    assert.truthy(jobs)
    local fires = h:record("steady", { "interval", seconds = 1 })
    h:advance(2)
    local failed = h:logged("run failed")
    assert.equal(1, #failed)
    assert.equal("jobs/x.lua:2: os.execute blocks the scheduler; " .. RUN, failed[1].fields.error)
    assert.same({ 1, 2 }, fires)
  end)

  it("closes the back doors: _G, require 'os' and load without an environment", function()
    for _, source in ipairs {
      "_G.os.execute('true')",
      "require('os').execute('true')",
      "require('io').popen('ls')",
      "load('os.execute(\"true\")')()",
    } do
      assert.matches("blocks the scheduler; use moonbeat%.exec%.run", load_error(source))
    end
  end)

  it("keeps the rest of os and io", function()
    dir = support.tempdir { ["data.txt"] = "one\ntwo\n" }
    local jobs, err = h:load("jobs/x.lua", ([[
      local path = %q
      assert(type(os.time()) == "number" and os.getenv("PATH"))
      local f = assert(io.open(path))
      assert(f:read("l") == "one")
      f:close()
      local n = 0
      for _ in io.lines(path) do n = n + 1 end
      assert(n == 2)
      io.stdout:write("")
      assert(io.input(path))
    ]]):format(dir .. "/data.txt"))
    assert.truthy(jobs, err)
    io.input(io.stdin)
  end)

  it("gives each file its own os and io tables", function()
    assert.truthy(h:load("jobs/a.lua", "os.custom = 1; io.custom = 2"))
    assert.truthy(h:load("jobs/b.lua", "assert(os.custom == nil and io.custom == nil)"))
    assert.is_nil(os.custom)
    assert.is_nil(io.custom)
  end)

  describe("require", function()
    local function job_dir(files)
      dir = support.tempdir()
      os.execute("mkdir -p " .. dir .. "/lib/helpers " .. dir .. "/other/lib " .. dir .. "/team")
      for name, text in pairs(files) do support.write(dir .. "/" .. name, text) end
      return dir
    end

    it("finds the stdlib and modules in the job directory's lib/", function()
      job_dir {
        ["lib/util.lua"] = "local M = {} function M.twice(x) return 2 * x end return M",
        ["lib/helpers/init.lua"] = "return { name = 'helpers', util = require('util') }",
        ["job.lua"] = [[
          local util = require "util"
          local helpers = require "helpers"
          local exec = require "moonbeat.exec"
          assert(util.twice(21) == 42)
          assert(helpers.util == util, "one instance per file")
          assert(type(exec.run) == "function")
          scheduler.add_job { id = "uses-lib", trigger = { "interval", seconds = 1 },
            run = function() result = util.twice(5) end }
        ]],
      }
      local path_before = package.path
      local jobs, err = h:load(dir .. "/job.lua")
      assert.truthy(jobs, err)
      assert.equal(path_before, package.path)
      assert.is_nil(package.loaded.util)
      assert.is_nil(package.loaded.helpers)
    end)

    it("runs lib modules in the sandbox, with the file's globals readable", function()
      job_dir {
        ["lib/shell.lua"] = "return function() os.execute('true') end",
        ["lib/seer.lua"] = "leaked = true; return scheduler ~= nil",
        ["job.lua"] = [[
          assert(require("seer") == true)
          assert(leaked == nil, "a module's globals stay its own")
          require("shell")()
        ]],
      }
      local jobs, err = h:load(dir .. "/job.lua")
      assert.is_nil(jobs)
      assert.equal(dir .. "/lib/shell.lua:1: os.execute blocks the scheduler; " .. RUN, err)
    end)

    it("finds the job directory's lib/ from a file in a subdirectory", function()
      job_dir {
        ["lib/shared.lua"] = "return { answer = 42 }",
        ["team/job.lua"] = [[
          local shared = require "shared"
          scheduler.add_job { id = "deep", trigger = { "interval", seconds = 1 },
            run = function() return shared.answer end }
        ]],
      }
      local summary = require("mb.loader").load_dir(h.core, dir)
      assert.same({}, summary.errors)
      assert.equal(1, summary.jobs)
      assert.truthy(h.scheduler.get_job("deep"))
    end)

    it("does not see another directory's lib/", function()
      job_dir {
        ["lib/only_here.lua"] = "return 1",
        ["other/job.lua"] = "require 'only_here'",
      }
      local jobs, err = h:load(dir .. "/other/job.lua")
      assert.is_nil(jobs)
      assert.equal(dir .. "/other/job.lua:1: module 'only_here' not found:", err)
      local full = h:logged("job file failed to load")[1].fields.error
      assert.equal(err, full)
    end)

    it("says where it looked for a missing module", function()
      job_dir { ["job.lua"] = "require 'missing_mod'" }
      local ok, err = pcall(function()
        local env = require("mb.sandbox").env(dir)
        env.require("missing_mod")
      end)
      assert.is_false(ok)
      assert.matches("module 'missing_mod' not found:", err, 1, true)
      assert.matches("no file '" .. dir .. "/lib/missing_mod.lua'", err, 1, true)
      assert.matches("no file '" .. dir .. "/lib/missing_mod/init.lua'", err, 1, true)
    end)

    it("reports a lib module's syntax error with its file and line", function()
      job_dir {
        ["lib/broken.lua"] = "local x = \nreturn (",
        ["job.lua"] = "require 'broken'",
      }
      local jobs, err = h:load(dir .. "/job.lua")
      assert.is_nil(jobs)
      assert.matches("^" .. dir:gsub("%p", "%%%0") .. "/lib/broken%.lua:2: ", err)
    end)

    it("loads lib modules afresh when the file is loaded again", function()
      job_dir {
        ["lib/counter.lua"] = "count = (count or 0) + 1; return { n = 1 }",
        ["job.lua"] = "local c = require 'counter'; c.n = c.n + 1; assert(c.n == 2)",
      }
      assert.truthy(h:load(dir .. "/job.lua"))
      assert.truthy(h:load(dir .. "/job.lua"))
    end)
  end)
end)
