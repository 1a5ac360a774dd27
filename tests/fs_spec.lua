-- moonbeat.fs: file operations on libuv's requests. Inside a run they
-- wait on the loop; outside one they run at once; a run that ends
-- while one is in flight abandons it safely.
local harness = require "tests.harness"
local support = require "tests.support"
local core = require "moonbeat.core"
local fs = require "moonbeat.fs"
local fs_core = require "moonbeat.core.fs"

local function open_fds()
  collectgarbage()
  collectgarbage()
  return #core.listdir("/proc/self/fd")
end

local slurp = support.read

-- libuv's thread pool: four threads unless the environment says.
local POOL = tonumber(os.getenv("UV_THREADPOOL_SIZE")) or 4

-- How many of our threads are blocked opening a FIFO that has no
-- writer yet (the kernel's wait_for_partner): requests running in the
-- pool, which no uv_cancel can stop.
local function threads_waiting_on_fifos()
  local count = 0
  for _, tid in ipairs(core.listdir("/proc/self/task")) do
    local f = io.open("/proc/self/task/" .. tid .. "/wchan")
    if f then
      if f:read("a") == "wait_for_partner" then count = count + 1 end
      f:close()
    end
  end
  return count
end

describe("moonbeat.fs", function()
  local h, dir
  before_each(function()
    h = harness.new()
    dir = support.tempdir()
  end)
  after_each(function()
    h:close()
    support.remove_tree(dir)
    assert.equal(0, fs_core.live())
  end)

  -- Run fn in a job's run; what it returned, packed.
  local function in_run(fn, extra)
    local out = h:in_run(fn, extra)
    assert.truthy(out, "the run failed")
    return out
  end

  describe("inside a run", function()
    it("writes and reads back any bytes, however many", function()
      local data = ("\0binary\255\n"):rep(200000)
      local out = in_run(function()
        return fs.write(dir .. "/a.bin", data), fs.read(dir .. "/a.bin"),
          fs.write(dir .. "/empty", ""), fs.read(dir .. "/empty")
      end)
      assert.is_true(out[1])
      assert.equal(#data, #out[2])
      assert.is_true(out[2] == data)
      assert.is_true(out[3])
      assert.equal("", out[4])
      assert.equal(data, slurp(dir .. "/a.bin"))
    end)

    it("replaces a file whole, keeps its mode, and leaves no temporary file", function()
      support.write(dir .. "/conf", "old contents that are longer")
      os.execute("chmod 600 " .. dir .. "/conf")
      local out = in_run(function()
        return fs.write(dir .. "/conf", "new"), fs.stat(dir .. "/conf"), fs.list(dir)
      end)
      assert.is_true(out[1])
      assert.equal("new", slurp(dir .. "/conf"))
      assert.equal(tonumber("600", 8), out[2].mode)
      assert.same({ "conf" }, out[3])
    end)

    it("appends, creating the file", function()
      local out = in_run(function()
        return fs.append(dir .. "/log", "one\n"), fs.append(dir .. "/log", "two\n"),
          fs.append(dir .. "/log", 3)
      end)
      assert.same({ true, true, true, n = 3 }, out)
      assert.equal("one\ntwo\n3", slurp(dir .. "/log"))
    end)

    it("lists a directory's names, sorted", function()
      for _, name in ipairs { "b", "a", "c.txt", ".hidden" } do support.write(dir .. "/" .. name, "") end
      os.execute("mkdir " .. dir .. "/sub")
      local out = in_run(function() return fs.list(dir), fs.list(dir .. "/sub") end)
      assert.same({ ".hidden", "a", "b", "c.txt", "sub" }, out[1])
      assert.same({}, out[2])
    end)

    it("stats files and directories", function()
      support.write(dir .. "/f", "12345")
      local out = in_run(function() return fs.stat(dir .. "/f"), fs.stat(dir) end)
      assert.equal("file", out[1].type)
      assert.equal(5, out[1].size)
      assert.equal("directory", out[2].type)
      assert.is_true(math.abs(out[1].mtime - os.time()) < 3600)
      assert.equal("number", type(out[1].atime))
      assert.equal("number", type(out[1].ctime))
    end)

    it("removes files and empty directories", function()
      support.write(dir .. "/f", "x")
      os.execute("mkdir -p " .. dir .. "/empty " .. dir .. "/full/inner")
      local out = in_run(function()
        return fs.remove(dir .. "/f"), fs.remove(dir .. "/empty"), { fs.remove(dir .. "/full") }
      end)
      assert.is_true(out[1])
      assert.is_true(out[2])
      assert.same({ nil, dir .. "/full: directory not empty", "ENOTEMPTY" }, out[3])
      assert.same({ "full" }, core.listdir(dir))
    end)

    it("makes a directory with its parents, and accepts one that exists", function()
      local out = in_run(function()
        return fs.mkdir(dir .. "/a/b//c/"), fs.mkdir(dir .. "/a/b"), fs.stat(dir .. "/a/b/c")
      end)
      assert.is_true(out[1])
      assert.is_true(out[2])
      assert.equal("directory", out[3].type)
    end)

    it("returns nil, a message naming the path and a code when the world says no", function()
      support.write(dir .. "/file", "x")
      local d = dir
      local out = in_run(function()
        return { fs.read(d .. "/missing") }, { fs.read(d) }, { fs.write(d .. "/no/such/f", "x") },
          { fs.append(d .. "/no/f", "x") }, { fs.list(d .. "/missing") }, { fs.list(d .. "/file") },
          { fs.stat(d .. "/missing") }, { fs.remove(d .. "/missing") },
          { fs.mkdir(d .. "/file") }, { fs.mkdir(d .. "/file/sub/deeper") }, { fs.write(d, "x") }
      end)
      assert.same({
        { nil, d .. "/missing: no such file or directory", "ENOENT" },
        { nil, d .. ": illegal operation on a directory", "EISDIR" },
        { nil, d .. "/no/such/f: no such file or directory", "ENOENT" },
        { nil, d .. "/no/f: no such file or directory", "ENOENT" },
        { nil, d .. "/missing: no such file or directory", "ENOENT" },
        { nil, d .. "/file: not a directory", "ENOTDIR" },
        { nil, d .. "/missing: no such file or directory", "ENOENT" },
        { nil, d .. "/missing: no such file or directory", "ENOENT" },
        { nil, d .. "/file: file already exists", "EEXIST" },
        { nil, d .. "/file/sub/deeper: not a directory", "ENOTDIR" },
        { nil, d .. ": illegal operation on a directory", "EISDIR" },
      }, { table.unpack(out, 1, out.n) })
      -- The failed writes left nothing behind.
      assert.same({ "file" }, core.listdir(dir))
    end)

    it("refuses to wait in a coroutine the job made, naming the job's line", function()
      local out = in_run(function()
        local co = coroutine.create(function()
          local text = fs.read("/etc/hostname")
          return text
        end)
        return coroutine.resume(co)
      end)
      assert.is_false(out[1])
      assert.matches("^tests/fs_spec%.lua:%d+: fs%.read: a coroutine a job made cannot "
        .. "wait on the loop; call it from the run's own code$", out[2])
    end)
  end)

  it("runs at once outside a run, as when a job file is loaded", function()
    support.write(dir .. "/settings", "limit=5")
    local jobs, err = h:load(dir .. "/job.lua", ([[
      local fs = require "moonbeat.fs"
      local text = assert(fs.read(%q))
      assert(fs.write(%q, text:upper()))
      scheduler.add_job { id = "configured", trigger = { "interval", seconds = 10 },
        kwargs = { limit = tonumber(text:match("limit=(%%d+)")) }, run = function() end }
    ]]):format(dir .. "/settings", dir .. "/copy"))
    assert.truthy(jobs, err)
    assert.equal("LIMIT=5", slurp(dir .. "/copy"))
    assert.same({ nil, dir .. "/nope: no such file or directory", "ENOENT" },
      { fs.read(dir .. "/nope") })
  end)

  it("raises on misuse, with the function's name", function()
    local where = "^tests/fs_spec%.lua:%d+: "
    local function raised(fn)
      local ok, err = pcall(fn)
      assert.is_false(ok)
      return err
    end
    assert.matches(where .. "fs%.read: path must be a string, got nil$", raised(function() fs.read() end))
    assert.matches(where .. "fs%.write: data must be a string, got table$",
      raised(function() fs.write(dir .. "/x", {}) end))
    assert.matches(where .. "fs%.append: data must be a string, got nil$",
      raised(function() fs.append(dir .. "/x") end))
    assert.matches(where .. "fs%.list: '' is not a path$", raised(function() fs.list("") end))
    assert.matches(where .. "fs%.mkdir: path must be a string, got number$", raised(function() fs.mkdir(1) end))
    assert.matches(where .. "fs%.stat: path must be a string, got boolean$", raised(function() fs.stat(true) end))
    assert.matches(where .. "fs%.remove: path must be a string, got nil$", raised(function() fs.remove() end))
  end)

  describe("when the run ends while a request is in flight", function()
    local function mkfifo(path)
      assert.is_true(os.execute("mkfifo " .. path))
    end

    -- Open a FIFO for writing (a reader in the pool is waiting for it),
    -- write text and close it.
    local function feed(path, text)
      local f = assert(io.open(path, "w"))
      f:write(text or "")
      f:close()
    end

    it("lets a running request finish in the pool, then closes its descriptor", function()
      mkfifo(dir .. "/fifo")
      -- A first call outside a run makes libuv's default loop, for good.
      fs.read("/etc/hostname")
      local fds = open_fds()
      local events = h:events { "timeout" }
      local after = false
      h.scheduler.add_job { id = "reader", trigger = { "date", delay = 1 }, timeout = 5,
        run = function()
          -- Opening a FIFO blocks in the pool until a writer comes.
          fs.read(dir .. "/fifo")
          after = true
        end }
      h:advance(1)
      assert.is_true(h:settle(function() return threads_waiting_on_fifos() == 1 end))
      h:advance(5)
      assert.equal(1, #events)
      assert.equal(0, h:stats().runs)
      -- Abandoned, not freed: its request still runs in the pool.
      assert.equal(1, fs_core.live())
      feed(dir .. "/fifo", "late")
      assert.is_true(h:settle(function() return fs_core.live() == 0 end))
      assert.is_false(after)
      assert.equal(fds, open_fds())
    end)

    it("cancels a request still queued, and nothing is written", function()
      fs.read("/etc/hostname")
      local fds = open_fds()
      local got = {}
      for i = 1, POOL do
        mkfifo(dir .. "/fifo" .. i)
        h.scheduler.add_job { id = "blocker" .. i, trigger = { "date", delay = 1 }, run = function()
          got[i] = fs.read(dir .. "/fifo" .. i)
        end }
      end
      h.scheduler.add_job { id = "writer", trigger = { "date", delay = 2 }, timeout = 5,
        run = function() fs.write(dir .. "/target", "never") end }
      h:advance(1)
      assert.is_true(h:settle(function() return threads_waiting_on_fifos() == POOL end))
      -- Every pool thread waits on a FIFO; the write's first request waits
      -- in the queue behind them.
      h:advance(1)
      h:advance(5)
      assert.equal(1, #h:logged("run timed out"))
      assert.is_true(h:settle(function() return fs_core.live() == POOL end))
      for i = 1, POOL do feed(dir .. "/fifo" .. i, "fed " .. i) end
      assert.is_true(h:settle(function() return fs_core.live() == 0 end))
      assert.equal("fed 1", got[1])
      assert.equal(POOL, #got)
      assert.is_nil(slurp(dir .. "/target"))
      local names = core.listdir(dir)
      for _, name in ipairs(names) do assert.matches("^fifo%d$", name) end
      assert.equal(fds, open_fds())
    end)

    it("leaves the old file or the whole new one, and no temporary file, wherever it stops", function()
      fs.read("/etc/hostname")
      local data = ("0123456789abcdef"):rep(65536)
      for polls = 0, 8 do
        local target = dir .. "/target" .. polls
        support.write(target, "old")
        local fds = open_fds()
        h.scheduler.add_job { id = "writer" .. polls, trigger = { "date", delay = 1 }, timeout = 5,
          run = function() fs.write(target, data) end }
        h:advance(1)
        for _ = 1, polls do h.core:poll(0.05) end
        h:advance(5)
        assert.is_true(h:settle(function() return fs_core.live() == 0 end))
        local now = slurp(target)
        assert.is_true(now == "old" or now == data)
        assert.equal(fds, open_fds())
      end
      local names = core.listdir(dir)
      assert.equal(9, #names)
      for _, name in ipairs(names) do assert.matches("^target%d$", name) end
    end)
  end)
end)
