-- Hot reload: files edited on disk while an in-process scheduler watches
-- their directory. h:settle lets the file-system events arrive (real
-- I/O, virtual time standing still); schedules move only with advance.
local harness = require "tests.harness"
local loader = require "mb.loader"
local reload = require "mb.reload"
local support = require "tests.support"

-- A job file declaring one interval job per entry of jobs:
-- { id, seconds, body (Lua statements run with ctx), extra fields }.
local function job_file(jobs)
  local out = {}
  for _, j in ipairs(jobs) do
    out[#out + 1] = ("scheduler.add_job { id = %q, trigger = { 'interval', "
      .. "seconds = %d }, %s run = function(ctx) %s end }\n"):format(j[1],
      j[2], j[4] or "", j[3] or "")
  end
  return table.concat(out)
end

-- The body of a job that counts its runs in ctx.state.n and notes which
-- version of its code ran in the global list `ran`.
local function counting(version)
  return ("ctx.state.n = (ctx.state.n or 0) + 1; "
    .. "ran[#ran + 1] = %q"):format(version)
end

describe("hot reload", function()
  local h, dir, r, reloads

  -- Save a file the way editors do: write a hidden temporary file, then
  -- rename it over the real one.
  local function save(name, text)
    local slash = name:find("/[^/]*$")
    local tmp = slash and (name:sub(1, slash) .. "." .. name:sub(slash + 1))
      or ("." .. name)
    support.write(dir .. "/" .. tmp .. ".swp", text)
    assert(os.rename(dir .. "/" .. tmp .. ".swp", dir .. "/" .. name))
  end

  local function start(files)
    dir = support.tempdir()
    for name, text in pairs(files or {}) do
      os.execute("mkdir -p " .. support.quote((dir .. "/" .. name):match("^(.*)/")))
      support.write(dir .. "/" .. name, text)
    end
    reloads = {}
    r = reload.new(h.core, dir, {
      on_reload = function(s) reloads[#reloads + 1] = s end,
    })
    assert(r:watch())
    assert(r:reload(nil, "start"))
  end

  local function settle(done)
    assert.truthy(h:settle(done), "the change was not seen in time")
  end

  local function job(id) return h.scheduler.get_job(id) end

  -- files, and lib/limits.lua ({ n = 1 }) with uses.lua, whose job "uses"
  -- notes limits.n in `ran` at each run.
  local function limits_user(files)
    files["lib/limits.lua"] = "return { n = 1 }\n"
    files["uses.lua"] = "local limits = require 'limits'\n"
      .. job_file { { "uses", 10, "ran[#ran + 1] = limits.n" } }
    return files
  end

  before_each(function()
    h = harness.new()
    _G.ran = {}
  end)

  after_each(function()
    if r then r:close() end
    r = nil
    h:close()
    _G.ran = nil
    if dir then support.remove_tree(dir) end
    dir = nil
  end)

  it("adds the jobs of a file created in the directory", function()
    start { ["a.lua"] = job_file { { "a", 10 } } }
    save("b.lua", job_file { { "b", 10, counting("b") } })
    settle(function() return job("b") end)
    assert.equal(dir .. "/b.lua", job("b").file)
    h:advance("10s")
    assert.same({ "b" }, ran)
    local last = reloads[#reloads]
    assert.same({ "watch", 1, 0, 0, 0 },
      { last.cause, last.added, last.changed, last.removed, last.failed })
  end)

  it("reschedules a job whose trigger changed and keeps its history and ctx.state", function()
    start { ["a.lua"] = job_file { { "a", 10, counting("v1") } } }
    h:advance("20s")
    local events = h:events { "modified", "added", "removed" }
    save("a.lua", job_file { { "a", 30, counting("v1") } })
    settle(function() return job("a").trigger == "interval[30s]" end)
    assert.equal(h.start + 20 + 30, job("a").next_run_time)
    assert.equal(2, job("a").counts.ok)
    assert.equal(2, #h.scheduler.get_runs { job_id = "a" })
    assert.same({ "modified" }, { events[1].kind })
    assert.equal(1, #events)
    h:advance("30s")
    assert.same({ n = 3 }, h.core:job_spec(job("a")).state)
    assert.equal(1, reloads[#reloads].changed)
  end)

  it("runs a job's new code and keeps its next fire when only the code changed", function()
    start { ["a.lua"] = job_file { { "a", 10, counting("v1") } } }
    h:advance("15s")
    local next_fire = job("a").next_run_time
    save("a.lua", job_file { { "a", 10, counting("v2") } })
    settle(function() return #reloads == 2 end)
    assert.equal(1, reloads[2].changed)
    assert.equal(next_fire, job("a").next_run_time)
    h:advance("5s")
    assert.same({ "v1", "v2" }, ran)
    assert.same({ n = 2 }, h.core:job_spec(job("a")).state)
  end)

  it("leaves alone a job whose declaration did not change", function()
    local src = "local beats = 0\n" .. job_file {
      { "a", 10, "beats = beats + 1; ran[#ran + 1] = beats" } }
    start { ["a.lua"] = src }
    h:advance("20s")
    local next_fire = job("a").next_run_time
    local events = h:events()
    -- A comment and a line moved: the same job.
    save("a.lua", "-- a comment\n\n" .. src)
    settle(function() return #reloads == 2 end)
    assert.same({ 0, 0, 0, 1 }, { reloads[2].added, reloads[2].changed,
      reloads[2].removed, reloads[2].unchanged })
    assert.same({}, events)
    assert.equal(next_fire, job("a").next_run_time)
    -- Its function was not replaced: the file's local counts on.
    h:advance("10s")
    assert.same({ 1, 2, 3 }, ran)
  end)

  it("takes a changed upvalue of a job's function for a change", function()
    start { ["a.lua"] = "local limit = 5\n"
      .. job_file { { "a", 10, "ran[#ran + 1] = limit" } } }
    save("a.lua", "local limit = 6\n"
      .. job_file { { "a", 10, "ran[#ran + 1] = limit" } })
    settle(function() return #reloads == 2 end)
    assert.equal(1, reloads[2].changed)
    h:advance("10s")
    assert.same({ 6 }, ran)
  end)

  it("removes the jobs of a deleted file and keeps their history", function()
    start {
      ["a.lua"] = job_file { { "a", 10 } },
      ["b.lua"] = job_file { { "b", 10 }, { "b2", 10 } },
    }
    h:advance("10s")
    assert(os.remove(dir .. "/b.lua"))
    settle(function() return not job("b") end)
    assert.is_nil(job("b2"))
    assert.truthy(job("a"))
    assert.equal(2, reloads[#reloads].removed)
    assert.equal(1, #h.scheduler.get_runs { job_id = "b" })
  end)

  it("removes a job its file no longer declares and adds one it newly does", function()
    start { ["a.lua"] = job_file { { "a", 10 }, { "old", 10 } } }
    save("a.lua", job_file { { "a", 10 }, { "new", 10 } })
    settle(function() return job("new") end)
    assert.is_nil(job("old"))
    assert.same({ 1, 0, 1 }, { reloads[#reloads].added,
      reloads[#reloads].changed, reloads[#reloads].removed })
  end)

  it("keeps a failing file's jobs running, reports the error, and loads the fix", function()
    start { ["a.lua"] = job_file { { "a", 10, counting("v1") } } }
    save("a.lua", "scheduler.add_job {\n  id = 'a',\n  run = function() end\n  trigger = '* * * * *' }\n")
    settle(function() return r.file_errors[dir .. "/a.lua"] end)
    local message = dir .. "/a.lua:4: '}' expected (to close '{' at line 1) near 'trigger'"
    assert.equal(message, r.file_errors[dir .. "/a.lua"])
    assert.same({ { file = dir .. "/a.lua", line = 4,
      message = "'}' expected (to close '{' at line 1) near 'trigger'" } },
      reloads[#reloads].errors)
    assert.equal(1, reloads[#reloads].failed)
    assert.equal(message, h:logged("job file failed to load")[1].fields.error)
    h:advance("10s")
    assert.same({ "v1" }, ran)

    save("a.lua", job_file { { "a", 10, counting("v2") } })
    settle(function() return not r.file_errors[dir .. "/a.lua"] end)
    assert.same({}, reloads[#reloads].errors)
    h:advance("10s")
    assert.same({ "v1", "v2" }, ran)
  end)

  it("keeps a file's jobs when a job in it fails validation", function()
    start { ["a.lua"] = job_file { { "a", 10 }, { "b", 10 } } }
    save("a.lua", job_file { { "a", 20 } }
      .. "scheduler.add_job { id = 'b', trigger = { 'cron', hour = 25 }, run = print }\n")
    settle(function() return r.file_errors[dir .. "/a.lua"] end)
    assert.equal(dir .. "/a.lua:2: trigger.hour: 25 is out of range 0-23",
      r.file_errors[dir .. "/a.lua"])
    assert.equal("interval[10s]", job("a").trigger)
    assert.truthy(job("b"))
  end)

  it("sees a save by rename over the file once, as one change", function()
    start { ["a.lua"] = job_file { { "a", 10 } } }
    save("a.lua", job_file { { "a", 20 } })
    settle(function() return job("a").trigger == "interval[20s]" end)
    assert.equal(2, #reloads)
    assert.same({ dir .. "/a.lua" }, loader.files(h.core))
  end)

  it("loads a file written in place", function()
    start { ["a.lua"] = job_file { { "a", 10 } } }
    support.write(dir .. "/a.lua", job_file { { "a", 20 } })
    settle(function() return job("a").trigger == "interval[20s]" end)
    assert.same({}, r.file_errors)
  end)

  it("watches a new subdirectory and the files in it", function()
    start { ["a.lua"] = job_file { { "a", 10 } } }
    assert(os.execute("mkdir " .. support.quote(dir .. "/team")))
    save("team/b.lua", job_file { { "b", 10 } })
    settle(function() return job("b") end)
    assert.equal(dir .. "/team/b.lua", job("b").file)
    -- Files in it are watched as the others are.
    save("team/b.lua", job_file { { "b", 20 } })
    settle(function() return job("b").trigger == "interval[20s]" end)
    assert.equal(2, r.watcher:dirs())
  end)

  it("loads a directory moved in whole, and drops the jobs of one moved out", function()
    start { ["a.lua"] = job_file { { "a", 10 } } }
    local outside = support.tempdir()
    os.execute("mkdir -p " .. support.quote(outside .. "/team/deep"))
    support.write(outside .. "/team/deep/c.lua", job_file { { "c", 10 } })
    assert(os.rename(outside .. "/team", dir .. "/team"))
    settle(function() return job("c") end)
    assert.equal(3, r.watcher:dirs())
    assert(os.rename(dir .. "/team", outside .. "/team"))
    settle(function() return not job("c") end)
    assert.equal(1, r.watcher:dirs())
    support.remove_tree(outside)
  end)

  it("refuses an id a second file declares, naming both, and keeps the first", function()
    start { ["a.lua"] = job_file { { "x", 10, counting("a") } } }
    save("b.lua", job_file { { "other", 10 }, { "x", 20, counting("b") } })
    settle(function() return r.file_errors[dir .. "/b.lua"] end)
    assert.equal(dir .. "/b.lua:2: job id 'x' already exists (declared in "
      .. dir .. "/a.lua); pass replace_existing = true to replace it",
      r.file_errors[dir .. "/b.lua"])
    assert.equal(dir .. "/a.lua", job("x").file)
    assert.is_nil(job("other"))
    h:advance("10s")
    assert.same({ "a" }, ran)
    -- The first file lets it go: the second loads on its next change.
    save("a.lua", "-- x moved to b.lua\n")
    save("b.lua", job_file { { "other", 10 }, { "x", 20, counting("b") } })
    settle(function() return job("other") end)
    assert.equal(dir .. "/b.lua", job("x").file)
  end)

  it("moves a job to the file it was renamed to, history and state kept", function()
    start { ["a.lua"] = job_file { { "a", 10, counting("v1") } } }
    h:advance("10s")
    assert(os.rename(dir .. "/a.lua", dir .. "/b.lua"))
    settle(function() return job("a").file == dir .. "/b.lua" end)
    assert.equal(1, job("a").counts.ok)
    h:advance("10s")
    assert.same({ n = 2 }, h.core:job_spec(job("a")).state)
    assert.same({ dir .. "/b.lua" }, loader.files(h.core))
  end)

  it("ignores files that are not job files, and loads no job from lib/", function()
    start { ["lib/helpers.lua"] = "return {}\n" }
    local batches = {}
    local w = h.core:watch(dir, function(paths) batches[#batches + 1] = paths end)
    support.write(dir .. "/notes.txt", "not lua")
    support.write(dir .. "/.a.lua.swp", "editor swap")
    support.write(dir .. "/.#a.lua", "emacs lock")
    support.write(dir .. "/a.lua~", "backup")
    support.write(dir .. "/lib/more.lua", job_file { { "lib", 10 } })
    save("z.lua", job_file { { "z", 10 } })
    settle(function() return job("z") end)
    w:close()
    assert.is_nil(job("lib"))
    local seen = {}
    for _, batch in ipairs(batches) do
      for _, p in ipairs(batch) do seen[#seen + 1] = p end
    end
    table.sort(seen)
    assert.same({ "lib/more.lua", "z.lua" }, seen)
  end)

  it("reloads the job files that use a changed lib/ module, and only those", function()
    start(limits_user { ["other.lua"] = job_file { { "other", 10 } } })
    h:advance("10s")
    save("lib/limits.lua", "return { n = 2 }\n")
    settle(function() return #reloads == 2 end)
    assert.equal(1, reloads[2].files)  -- uses.lua alone
    assert.equal(1, reloads[2].changed)
    h:advance("10s")
    assert.same({ 1, 2 }, ran)
  end)

  it("reloads a job file through the lib/ module that requires the changed one", function()
    start {
      ["lib/shop/db.lua"] = "return { name = 'old' }\n",
      ["lib/report.lua"] = "local db = require 'shop.db'\n"
        .. "return { name = function() return db.name end }\n",
      ["daily.lua"] = "local report = require 'report'\n"
        .. job_file { { "daily", 10, "ran[#ran + 1] = report.name()" } },
    }
    save("lib/shop/db.lua", "return { name = 'new' }\n")
    settle(function() return #reloads == 2 end)
    assert.equal(1, reloads[2].changed)
    h:advance("10s")
    assert.same({ "new" }, ran)
  end)

  it("replaces the jobs of a file whose runs require a changed lib/ module", function()
    start {
      ["lib/greeting.lua"] = "return { text = 'old' }\n",
      ["lazy.lua"] = job_file { { "lazy", 10,
        "ran[#ran + 1] = require('greeting').text" } },
    }
    h:advance("10s")  -- the run reads the module: the file uses it
    save("lib/greeting.lua", "return { text = 'new' }\n")
    settle(function() return #reloads == 2 end)
    assert.equal(1, reloads[2].changed)
    h:advance("10s")
    save("lib/greeting.lua", "return { text = 'newer' }\n")
    settle(function() return #reloads == 3 end)
    h:advance("10s")
    assert.same({ "old", "new", "newer" }, ran)
  end)

  it("loads a failing file again once the lib/ module it lacked is there", function()
    start {
      ["needs.lua"] = "local csv = require 'csv'\n"
        .. job_file { { "needs", 10, "ran[#ran + 1] = csv.sep" } },
    }
    assert.is_nil(job("needs"))
    assert.equal(1, reloads[1].failed)
    assert(os.execute("mkdir " .. support.quote(dir .. "/lib")))
    save("lib/csv.lua", "return { sep = ';' }\n")
    settle(function() return job("needs") end)
    assert.same({}, reloads[#reloads].errors)
    h:advance("10s")
    assert.same({ ";" }, ran)
  end)

  it("leaves the jobs that use a lib/ module alone while it is empty, being written in place", function()
    start(limits_user {})
    support.write(dir .. "/lib/limits.lua", "")
    save("z.lua", job_file { { "z", 10 } })
    settle(function() return job("z") end)
    local seen = #reloads
    for i = 2, seen do assert.equal(0, reloads[i].changed) end
    support.write(dir .. "/lib/limits.lua", "return { n = 2 }\n")
    settle(function() return #reloads > seen end)
    assert.equal(1, reloads[#reloads].changed)
    h:advance("10s")
    assert.same({ 2 }, ran)
  end)

  it("reloads nothing for a lib/ module no job file uses", function()
    start {
      ["lib/used.lua"] = "return {}\n",
      ["a.lua"] = "local used = require 'used'\n" .. job_file { { "a", 10 } },
    }
    save("lib/unused.lua", "return {}\n")
    save("z.lua", job_file { { "z", 10 } })
    settle(function() return job("z") end)
    for i = 2, #reloads do  -- z.lua alone
      assert.equal(1, reloads[i].files)
      assert.equal(0, reloads[i].changed)
    end
  end)

  it("lets a run in flight finish under the old code when its job changes or goes", function()
    local slow = "ran[#ran + 1] = 'start %s'; require('moonbeat.time').sleep(5); "
      .. "ran[#ran + 1] = 'end %s'"
    start { ["a.lua"] = job_file {
      { "a", 10, slow:format("a1", "a1") }, { "b", 10, slow:format("b", "b") } } }
    h:advance("12s")
    assert.same({ "start a1", "start b" }, ran)
    save("a.lua", job_file { { "a", 10, slow:format("a2", "a2") } })
    settle(function() return not job("b") end)
    h:advance("3s")
    assert.same({ "start a1", "start b", "end a1", "end b" }, ran)
    h:advance("5s")
    assert.same("start a2", ran[5])
  end)

  it("keeps a job paused at run time paused when its file changes", function()
    start { ["a.lua"] = job_file { { "a", 10 } } }
    h.scheduler.pause_job("a")
    save("a.lua", job_file { { "a", 10, "ran[#ran + 1] = 1" } })
    settle(function() return #reloads == 2 end)
    assert.equal(1, reloads[2].changed)
    assert.is_true(job("a").paused)
  end)

  it("pauses and resumes a job as its paused field changes", function()
    start { ["a.lua"] = job_file { { "a", 10 } } }
    save("a.lua", job_file { { "a", 10, nil, "paused = true," } })
    settle(function() return job("a").paused end)
    save("a.lua", job_file { { "a", 10 } })
    settle(function() return not job("a").paused end)
    assert.equal(h.start + 10, job("a").next_run_time)
  end)

  it("gives a file fixed after a failed start its jobs' history and ctx.state back", function()
    local store = support.tempdir()
    h:close()
    h = harness.new { db = store .. "/m.db" }
    start { ["a.lua"] = job_file { { "a", 10, counting("v1") } } }
    h:advance("20s")
    r:close()
    h:close()
    -- Restarted with the file broken: its job waits in the store.
    support.write(dir .. "/a.lua", "broken(")
    h = harness.new { db = store .. "/m.db" }
    r = reload.new(h.core, dir)
    assert.equal(1, r:reload(nil, "start").failed)
    h.scheduler.restore { keep_missing = true }
    assert.is_nil(job("a"))
    support.write(dir .. "/a.lua", job_file { { "a", 10, counting("v2") } })
    assert.equal(1, r:reload().added)
    assert.equal(2, job("a").counts.ok)
    -- Its schedule carries over too: this clock starts where the first
    -- did, and the store says the next fire is at 30 s.
    assert.equal(h.start + 30, job("a").next_run_time)
    h:advance("30s")
    assert.same({ "v1", "v1", "v2" }, ran)
    assert.same({ n = 3 }, h.core:job_spec(job("a")).state)
    support.remove_tree(store)
  end)

  it("logs a one-line summary of each reload", function()
    start { ["a.lua"] = job_file { { "a", 10 } } }
    save("a.lua", job_file { { "a", 20 }, { "b", 10 } })
    settle(function() return job("b") end)
    local lines = h:logged("reloaded")
    assert.equal(1, #lines)
    assert.same({ cause = "watch", files = 1, added = 1, changed = 1,
      removed = 0, failed = 0 }, lines[1].fields)
    assert.equal("info", lines[1].level)
  end)

  it("rescans the whole directory when asked", function()
    start { ["a.lua"] = job_file { { "a", 10 } } }
    r:close()
    support.write(dir .. "/a.lua", job_file { { "a", 30 } })
    support.write(dir .. "/b.lua", "syntax(")
    os.execute("mkdir " .. support.quote(dir .. "/sub"))
    support.write(dir .. "/sub/c.lua", job_file { { "c", 10 } })
    local summary = r:reload()
    assert.same({ "command", 3, 1, 1, 0, 1 }, { summary.cause, summary.files,
      summary.added, summary.changed, summary.removed, summary.failed })
    assert.equal(dir .. "/b.lua", summary.errors[1].file)
    assert.equal("interval[30s]", job("a").trigger)
    -- Nothing changed since: a second rescan changes nothing.
    summary = r:reload()
    assert.same({ 0, 0, 0, 1, 2 }, { summary.added, summary.changed,
      summary.removed, summary.failed, summary.unchanged })
  end)
end)

describe("the daemon's reload", function()
  local core = require "moonbeat.core"
  local daemon = require "mb.daemon"
  local dir, d

  before_each(function()
    core.configure_log { stream = "none" }
    dir = support.tempdir {
      ["a.lua"] = job_file { { "a", 10 } },
      ["b.lua"] = "broken(",
    }
  end)

  after_each(function()
    if d then d.sched:close() end
    d = nil
    support.remove_tree(dir)
  end)

  it("keeps last_reload and file_errors from the first load on", function()
    d = assert(daemon.open(dir, { db = ":memory:" }))
    assert.truthy(d.reloader.watcher)
    assert.same({ "start", 2, 1, 1 }, { d.last_reload.cause, d.last_reload.files,
      d.last_reload.added, d.last_reload.failed })
    assert.equal(dir .. "/b.lua:1: unexpected symbol near <eof>", d.file_errors[dir .. "/b.lua"])
    assert.same({ { file = dir .. "/b.lua", line = 1, message = "unexpected symbol near <eof>" } },
      d.last_reload.errors)
    support.write(dir .. "/b.lua", job_file { { "b", 10 } })
    local summary = d:reload()
    assert.equal(summary, d.last_reload)
    assert.same({ "command", 1, 0, 0 }, { summary.cause, summary.added, summary.failed,
      #summary.errors })
    assert.is_nil(d.file_errors[dir .. "/b.lua"])
  end)

  it("does not watch with watch = false, and reloads the paths it is given", function()
    d = assert(daemon.open(dir, { db = ":memory:", watch = false }))
    assert.is_nil(d.reloader.watcher)
    support.write(dir .. "/a.lua", job_file { { "a", 20 } })
    local summary = d:reload { dir .. "/a.lua" }
    -- b.lua was not looked at, and fails still.
    assert.same({ 1, 1, 0, 1 }, { summary.files, summary.changed, summary.failed,
      #summary.errors })
    assert.equal("interval[20s]", d.api.get_job("a").trigger)
  end)
end)

describe("moonbeat run reloading", function()
  local dir
  after_each(function() support.remove_tree(dir) end)

  -- Run `moonbeat ARGS` through steps: { wait = text } waits (at most
  -- 20 s) until the output holds text, { sh = command } runs a shell
  -- command, { signal = name } signals the process. Ends with SIGINT
  -- and returns the output and the exit code.
  local function session(args, steps)
    local out = os.tmpname()
    local lines = {
      support.quote(support.BIN) .. " " .. args .. " >" .. out .. " 2>&1 &",
      "pid=$!",
    }
    for _, step in ipairs(steps) do
      if step.wait then
        lines[#lines + 1] = "i=0; while [ $i -lt 200 ] && ! grep -qF -- "
          .. support.quote(step.wait) .. " " .. out
          .. "; do sleep 0.1; i=$((i+1)); done"
      elseif step.sh then
        lines[#lines + 1] = step.sh
      else
        lines[#lines + 1] = "kill -" .. step.signal .. " $pid"
      end
    end
    lines[#lines + 1] = "kill -INT $pid; wait $pid; echo \"exit=$?\""
    local p = io.popen(table.concat(lines, "\n"))
    local status = p:read("a")
    p:close()
    local f = io.open(out)
    local text = f:read("a")
    f:close()
    os.remove(out)
    return text, tonumber(status:match("exit=(%d+)"))
  end

  it("rescans the directory on SIGHUP and logs a one-line summary", function()
    dir = support.tempdir { ["a.lua"] = job_file { { "a", 100 } } }
    local out, code = session("run --db :memory: --no-watch " .. dir, {
      { wait = "scheduler started" },
      { sh = "printf %s " .. support.quote(job_file { { "a", 50 } }) .. " >" .. dir .. "/a.lua" },
      { sh = "printf %s " .. support.quote(job_file { { "b", 50 } }) .. " >" .. dir .. "/b.lua" },
      { signal = "HUP" },
      { wait = "reloaded" },
    })
    assert.equal(0, code)
    assert.matches("job modified job=a trigger=interval[50s]", out, 1, true)
    assert.matches("job added job=b", out, 1, true)
    assert.matches("INFO  reloaded added=1 cause=SIGHUP changed=1 failed=0 files=2 removed=0\n",
      out, 1, true)
  end)

  it("reloads a file saved by rename while it runs", function()
    dir = support.tempdir { ["a.lua"] = job_file { { "a", 100 } } }
    local out, code = session("run --db :memory: " .. dir, {
      { wait = "scheduler started" },
      { sh = "printf %s " .. support.quote(job_file { { "a", 100 }, { "b", 100 } })
        .. " >" .. dir .. "/.a.lua.swp && mv " .. dir .. "/.a.lua.swp " .. dir .. "/a.lua" },
      { wait = "reloaded" },
    })
    assert.equal(0, code)
    assert.matches("reloaded added=1 cause=watch changed=0 failed=0 files=1 removed=0", out, 1, true)
  end)
end)
