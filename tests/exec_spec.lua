-- moonbeat.exec: commands run from a job's run wait on the loop, and a
-- command's whole process group goes when its timeout passes, when the
-- run ends first, and when the command itself exits.
local harness = require "tests.harness"
local support = require "tests.support"
local core = require "moonbeat.core"
local exec = require "moonbeat.exec"
local exec_core = require "moonbeat.core.exec"

local function open_fds()
  collectgarbage()
  collectgarbage()
  return #core.listdir("/proc/self/fd")
end

local function exists(path)
  local f = io.open(path)
  if f then f:close() end
  return f ~= nil
end

-- Whether pid is a live process: kill -0 reaches it and it is not a
-- zombie waiting for whoever adopted it to reap it.
local function alive(pid)
  local f = io.open("/proc/" .. pid .. "/stat")
  if not f then return false end
  local stat = f:read("a")
  f:close()
  if stat:match("^%d+ %b() (%a)") == "Z" then return false end
  return os.execute("kill -0 " .. pid .. " 2>/dev/null") == true
end

local function read_pids(path)
  local pids = {}
  local f = io.open(path)
  if not f then return pids end
  for line in f:lines() do
    if line:match("^%d+$") then pids[#pids + 1] = tonumber(line) end
  end
  f:close()
  return pids
end

describe("exec.run", function()
  local h, dir
  before_each(function()
    h = harness.new()
    dir = support.tempdir()
  end)
  after_each(function()
    h:close()
    support.remove_tree(dir)
    assert.equal(0, exec_core.live())
  end)

  -- Run fn in a job's run; what it returned, packed ({} if it failed).
  local function in_run(fn, extra)
    return h:in_run(fn, extra) or {}
  end

  it("runs a command without a shell and returns its exit and output", function()
    local res = in_run(function()
      return exec.run { "sh", "-c", 'printf "%s|" "$@"; echo oops >&2; exit 3',
        "sh", "a b", "$HOME", "*" }
    end)[1]
    assert.same({ code = 3, stdout = "a b|$HOME|*|", stderr = "oops\n" }, res)
  end)

  it("treats a non-zero exit as a result, not an error", function()
    local out = in_run(function() return exec.run { "false" } end)
    assert.equal(1, out.n)
    assert.equal(1, out[1].code)
    assert.is_nil(out[1].signal)
  end)

  it("runs a command line through /bin/sh with exec.shell", function()
    local res = in_run(function()
      return exec.shell("echo abc | tr a-z A-Z; echo $((6 * 7))")
    end)[1]
    assert.same({ code = 0, stdout = "ABC\n42\n", stderr = "" }, res)
  end)

  it("gives the child our environment with env's changes", function()
    local res = in_run(function()
      return exec.shell('echo "$MB_EXEC_A|${HOME-unset}|$MB_EXEC_N"', {
        env = { MB_EXEC_A = "x y", HOME = false, MB_EXEC_N = 5 },
      })
    end)[1]
    assert.equal("x y|unset|5\n", res.stdout)
    assert.truthy(os.getenv("HOME"))
  end)

  it("runs in cwd", function()
    local res = in_run(function() return exec.run { "pwd", cwd = dir } end)[1]
    assert.equal(dir .. "\n", res.stdout)
  end)

  it("feeds stdin, however long, and gives /dev/null otherwise", function()
    local out = in_run(function()
      return exec.run { "wc", "-c", stdin = ("x"):rep(300000) },
        exec.run { "cat" },
        exec.run { "true", stdin = ("y"):rep(300000) },
        exec.run { "cat", stdin = "" }
    end)
    assert.equal("300000", out[1].stdout:match("%d+"))
    assert.same({ code = 0, stdout = "", stderr = "" }, out[2])
    -- A child that exits without reading its input is no failure.
    assert.equal(0, out[3].code)
    assert.same({ code = 0, stdout = "", stderr = "" }, out[4])
  end)

  it("keeps at most max_output bytes of each stream and says so", function()
    local out = in_run(function()
      return exec.shell("head -c 100000 /dev/zero; head -c 10 /dev/zero >&2",
        { max_output = 1000 }),
        exec.shell("head -c 1500000 /dev/zero"),
        exec.shell("head -c 1000 /dev/zero", { max_output = 1000 })
    end)
    assert.equal(1000, #out[1].stdout)
    assert.equal(10, #out[1].stderr)
    assert.is_true(out[1].truncated)
    assert.equal(0, out[1].code)
    assert.equal(exec.MAX_OUTPUT, #out[2].stdout)
    assert.equal(1024 * 1024, exec.MAX_OUTPUT)
    assert.is_true(out[2].truncated)
    assert.is_nil(out[3].truncated)
  end)

  it("reports a child killed by a signal with signal and no code", function()
    local res = in_run(function() return exec.shell("kill -TERM $$") end)[1]
    assert.equal(15, res.signal)
    assert.is_nil(res.code)
  end)

  it("returns nil, a message and a code when the command cannot start", function()
    local out = in_run(function()
      return { exec.run { "no-such-command-for-moonbeat" } },
        { exec.run { "pwd", cwd = dir .. "/missing" } },
        { exec.run { dir } }
    end)
    assert.same({ nil, "cannot run no-such-command-for-moonbeat: no such file or directory",
      "ENOENT" }, out[1])
    assert.same({ nil, "cannot run pwd in " .. dir .. "/missing: no such file or directory",
      "ENOENT" }, out[2])
    assert.same({ nil, "cannot run " .. dir .. ": permission denied", "EACCES" }, out[3])
  end)

  it("kills what the command left in the background when it exits", function()
    local out = in_run(function()
      return exec.shell("sleep 300 & echo $!")
    end)[1]
    local pid = tonumber(out.stdout)
    assert.equal(0, out.code)
    assert.is_true(h:settle(function() return not alive(pid) end))
  end)

  it("stops a command at its own timeout: SIGTERM to its group", function()
    local res
    h.scheduler.add_job { id = "slow", trigger = { "date", delay = 1 }, run = function()
      res = exec.shell("sleep 300 & echo $! > " .. dir .. "/pids; sleep 300",
        { timeout = "5s" })
    end }
    h:advance(1)
    assert.is_true(h:settle(function() return #read_pids(dir .. "/pids") == 1 end))
    h:advance(4)
    assert.is_nil(res)
    h:advance(1)
    assert.is_true(h:settle(function() return res ~= nil end))
    assert.equal(15, res.signal)
    assert.is_true(res.timed_out)
    local pid = read_pids(dir .. "/pids")[1]
    assert.is_true(h:settle(function() return not alive(pid) end))
  end)

  it("sends SIGKILL after a grace when SIGTERM is ignored", function()
    local res
    h.scheduler.add_job { id = "stubborn", trigger = { "date", delay = 1 }, run = function()
      res = exec.shell("trap '' TERM; touch " .. dir .. "/ready; while :; do sleep 1; done",
        { timeout = 1 })
    end }
    h:advance(1)
    assert.is_true(h:settle(function() return exists(dir .. "/ready") end))
    h:advance(1)
    -- Still there: SIGTERM is ignored until the grace has passed.
    h:settle(function() return res ~= nil end, 0.3)
    assert.is_nil(res)
    h:advance(2)
    assert.is_true(h:settle(function() return res ~= nil end))
    assert.equal(9, res.signal)
    assert.is_true(res.timed_out)
  end)

  describe("when the run ends first", function()
    -- The first child of a loop makes libuv open the pipes its SIGCHLD
    -- handling uses for the loop's life: counts of open descriptors
    -- start after one.
    local function warm_up()
      in_run(function() return exec.run { "true" } end)
    end

    local function background_script(pids)
      return ("sleep 300 & echo $! >> %s; sleep 300 & echo $! >> %s; echo $$ >> %s; wait")
        :format(pids, pids, pids)
    end

    it("leaves none of a script's background children behind after a run timeout", function()
      local pids_file = dir .. "/pids"
      warm_up()
      local fds = open_fds()
      local events = h:events { "timeout" }
      local after = false
      h.scheduler.add_job { id = "spawner", trigger = { "date", delay = 1 }, timeout = "10s",
        run = function()
          exec.shell(background_script(pids_file))
          after = true
        end }
      h:advance(1)
      assert.is_true(h:settle(function() return #read_pids(pids_file) == 3 end))
      local pids = read_pids(pids_file)
      for _, pid in ipairs(pids) do assert.is_true(alive(pid)) end
      h:advance(9)
      assert.equal(0, #events)
      h:advance(1)
      assert.equal(1, #events)
      assert.is_false(after)
      assert.is_true(h:settle(function() return exec_core.live() == 0 end))
      assert.is_true(h:settle(function()
        for _, pid in ipairs(pids) do if alive(pid) then return false end end
        return true
      end))
      assert.equal(0, h:stats().runs)
      assert.equal(0, h:stats().timers)
      assert.equal(fds, open_fds())
    end)

    it("kills the group when the run is cancelled, and releases everything", function()
      local pids_file = dir .. "/pids"
      warm_up()
      local fds = open_fds()
      local events = h:events { "cancelled" }
      h.scheduler.add_job { id = "spawner", trigger = { "date", delay = 1 },
        run = function() exec.shell(background_script(pids_file), { timeout = "1h" }) end }
      h:advance(1)
      assert.is_true(h:settle(function() return #read_pids(pids_file) == 3 end))
      h.scheduler.shutdown { wait = false }
      assert.equal(1, #events)
      assert.is_true(h:settle(function() return exec_core.live() == 0 end))
      for _, pid in ipairs(read_pids(pids_file)) do
        assert.is_true(h:settle(function() return not alive(pid) end))
      end
      assert.equal(0, h:stats().timers)
      assert.equal(fds, open_fds())
    end)

    it("reaps a child whose scheduler closes under it", function()
      local pids_file = dir .. "/pids"
      h.scheduler.add_job { id = "spawner", trigger = { "date", delay = 1 },
        run = function() exec.shell(background_script(pids_file)) end }
      h:advance(1)
      assert.is_true(h:settle(function() return #read_pids(pids_file) == 3 end))
      h:close()
      assert.equal(0, exec_core.live())
      h = harness.new()
      for _, pid in ipairs(read_pids(pids_file)) do
        assert.is_true(h:settle(function() return not alive(pid) end))
      end
    end)
  end)

  describe("misuse", function()
    local function raised(fn)
      local ok, err = pcall(fn)
      assert.is_false(ok)
      return err
    end
    local where = "^tests/exec_spec%.lua:%d+: "

    it("raises with the function's name", function()
      assert.matches(where .. 'exec%.run: expected a table { "cmd", "arg", %.%.%. }, got string$',
        raised(function() exec.run("ls -l") end))
      assert.matches(where .. "exec%.run: no command given$",
        raised(function() exec.run { cwd = "/" } end))
      assert.matches(where .. "exec%.run: unknown option 'timout'$",
        raised(function() exec.run { "ls", timout = 5 } end))
      assert.matches(where .. "exec%.run: argument 2 must be a string, got table$",
        raised(function() exec.run { "ls", {} } end))
      assert.matches(where .. "exec%.run: argument 2 must be a string, got nil$",
        raised(function() exec.run { "ls", nil, "x" } end))
      assert.matches(where .. "exec%.run: env%.A must be a string, a number or false, got table$",
        raised(function() exec.run { "ls", env = { A = {} } } end))
      assert.matches(where .. "exec%.run: env: 'A=B' is not a variable name$",
        raised(function() exec.run { "ls", env = { ["A=B"] = "x" } } end))
      assert.matches(where .. "exec%.run: cwd must be a string, got number$",
        raised(function() exec.run { "ls", cwd = 5 } end))
      assert.matches(where .. "exec%.run: timeout: 'soon' is not a duration %(.*%)$",
        raised(function() exec.run { "ls", timeout = "soon" } end))
      assert.matches(where .. "exec%.run: max_output must be a whole number of bytes >= 0, got %-1$",
        raised(function() exec.run { "ls", max_output = -1 } end))
      assert.matches(where .. "exec%.shell: expected a command line %(string%), got table$",
        raised(function() exec.shell { "ls" } end))
      assert.matches(where .. "exec%.shell: options cannot hold arguments; put them in the command line$",
        raised(function() exec.shell("ls", { "-l" }) end))
      assert.matches(where .. "exec%.shell: unknown option 'stdout'$",
        raised(function() exec.shell("ls", { stdout = "x" }) end))
    end)

    it("raises outside a job's run", function()
      assert.matches(where .. "exec%.run: only a job's run can wait for a command %(this code is "
        .. "not running as a job's run function%)$",
        raised(function() exec.run { "true" } end))
    end)
  end)
end)
