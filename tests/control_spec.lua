-- The control socket seen from outside: a `moonbeat run` process, the
-- commands that talk to it, and clients that misbehave. Runs happen
-- only when `trigger` asks: every job's own schedule is far away.
local support = require "tests.support"
local json = require "moonbeat.json"
local sock = require "mb.control_socket"

local BIN = support.quote(support.BIN)

local JOBS = [[
scheduler.add_job { id = "far", trigger = { "date", run_date = "2099-01-01" },
  run = function(ctx) ctx.log.info("far ran", { attempt = ctx.attempt }) end }
scheduler.add_job { id = "boom", trigger = { "cron", "0 0 1 1 *" },
  run = function() error("kaboom") end }
scheduler.add_job { id = "held", trigger = { "interval", hours = 1 },
  paused = true, run = function() end }
]]

local read = support.read

local function pause_a_moment()
  os.execute("sleep 0.05")
end

-- Ask the shell about a path: its mode in octal, or nil.
local function mode_of(path)
  local out = support.sh("stat -c %a " .. support.quote(path))
  return out:match("^(%d+)\n")
end

describe("the control socket", function()
  local dir, path, proc

  -- Start `moonbeat run` on dir with the socket at socket_path, in the
  -- background; wait until the socket answers (a process starting, not
  -- a schedule).
  -- env: variables to start it with, and then no --socket. Files are not
  -- watched: `reload` is what these specs use to load a change.
  local function start(socket_path, env)
    local n = proc and proc.n + 1 or 1
    local p = { n = n, log = ("%s/log%d"):format(dir, n),
      pidfile = ("%s/pid%d"):format(dir, n), rcfile = ("%s/rc%d"):format(dir, n) }
    os.execute(("(%s %s run %s --db :memory: --no-watch %s >%s 2>&1 & pid=$!; "
      .. "echo $pid >%s; wait $pid; echo $? >%s) >/dev/null 2>&1 &"):format(
      env or "", BIN, support.quote(dir .. "/jobs"),
      env and "" or "--socket " .. support.quote(socket_path),
      p.log, p.pidfile, p.rcfile))
    for _ = 1, 400 do
      local conn = sock.dial(socket_path, 1)
      if conn then
        conn:close()
        p.pid = read(p.pidfile):match("%d+")
        proc = p
        return p
      end
      if read(p.rcfile) then break end
      pause_a_moment()
    end
    error("the scheduler did not start listening:\n" .. tostring(read(p.log)))
  end

  -- Wait for the process to end; its exit code and log.
  local function wait_exit(p)
    for _ = 1, 400 do
      local rc = read(p.rcfile)
      if rc and rc:match("%d") then return tonumber(rc:match("%d+")), read(p.log) end
      pause_a_moment()
    end
    error("the scheduler did not stop")
  end

  local function stop(p, signal)
    os.execute(("kill -%s %s 2>/dev/null"):format(signal or "TERM", p.pid))
    return wait_exit(p)
  end

  -- `moonbeat COMMAND --socket PATH ARGS`: stdout, stderr, exit code.
  local function cli(args, socket_path)
    local command, rest = args:match("^(%S+)(.*)$")
    local out, code = support.sh(("{ %s %s --socket %s %s 2>%s/stderr; }"):format(
      BIN, command, support.quote(socket_path or path), rest, dir))
    return out, read(dir .. "/stderr"), code
  end

  -- One request over a fresh connection: the decoded answer.
  local function request(req)
    local conn = assert(sock.dial(path, 10))
    assert(conn:write(json.encode(req) .. "\n", 10))
    local line = assert(conn:read_line(10))
    conn:close()
    return json.decode(line)
  end

  -- Wait (for the process, not a schedule) until job has a run with
  -- status; returns the runs.
  local function wait_for_run(job, status)
    for _ = 1, 200 do
      local resp = request { id = 1, cmd = "history", args = { id = job } }
      if resp.ok and resp.result.runs[1] and resp.result.runs[1].status == status then
        return resp.result.runs
      end
      pause_a_moment()
    end
    error(("no %s run of %s came"):format(status, job))
  end

  before_each(function()
    dir = support.tempdir()
    support.sh("mkdir " .. support.quote(dir .. "/jobs"))
    support.write(dir .. "/jobs/jobs.lua", JOBS)
    path = dir .. "/s.sock"
    proc = nil
  end)

  after_each(function()
    if proc and not read(proc.rcfile) then stop(proc, "KILL") end
    support.remove_tree(dir)
  end)

  describe("commands", function()
    before_each(function() start(path) end)
    after_each(function()
      local code, log = stop(proc)
      assert.equal(0, code, log)
    end)

    it("ls lists the jobs as an aligned table", function()
      local out, err, code = cli("ls")
      assert.equal(0, code, err)
      local lines = {}
      for line in out:gmatch("[^\n]+") do lines[#lines + 1] = line end
      assert.equal(4, #lines)
      assert.matches("^ID +STATE +NEXT RUN +LAST RUN +TRIGGER$", lines[1])
      assert.matches("^boom +scheduled +in %d+d +%- +cron%[0 0 1 1 %*%]$", lines[2])
      assert.matches("^far +scheduled +in %d+d +%- +date%[2099%-01%-01", lines[3])
      assert.matches("^held +paused +%- +%- +interval%[1h%]$", lines[4])
      -- Every column starts where its header does.
      for _, header in ipairs { "STATE", "NEXT RUN", "LAST RUN", "TRIGGER" } do
        local col = lines[1]:find(header, 1, true)
        for i = 2, 4 do
          assert.matches("^%S", lines[i]:sub(col), header .. " in: " .. lines[i])
          assert.equal(" ", lines[i]:sub(col - 1, col - 1))
        end
      end
    end)

    it("ls --json gives every job's fields", function()
      local out, err, code = cli("ls --json")
      assert.equal(0, code, err)
      local result = json.decode(out)
      assert.equal(3, #result.jobs)
      local far = result.jobs[2]
      assert.equal("far", far.id)
      assert.equal("date[2099-01-01T00:00:00+00:00]", far.trigger:gsub("%+.*", "+00:00]"))
      assert.is_true(far.next_run_time > result.now)
      assert.is_false(far.paused)
      assert.equal(0, far.running)
      assert.same({ ok = 0, failed = 0, timed_out = 0, missed = 0, skipped = 0,
        cancelled = 0 }, far.counts)
      assert.is_true(result.jobs[3].paused)
      assert.is_nil(result.jobs[3].next_run_time)
    end)

    it("pause stops a job with a note that ls shows, and resume starts it again", function()
      local out, err, code = cli("pause far --note 'disk full'")
      assert.equal(0, code, err)
      assert.equal("paused far (note: disk full)\n", out)
      out = cli("ls")
      assert.matches("\nfar +paused +%- +%- +date%[[^\n]-%] +disk full\n", out)
      assert.matches("^ID +STATE +NEXT RUN +LAST RUN +TRIGGER +NOTE\n", out)
      local result = json.decode((cli("ls --json")))
      local by_id = {}
      for _, job in ipairs(result.jobs) do by_id[job.id] = job end
      assert.equal("disk full", by_id.far.pause_note)
      assert.is_true(by_id.far.paused)

      out, err, code = cli("resume far")
      assert.equal(0, code, err)
      assert.matches("^resumed far; next run in %d+d\n$", out)
      result = json.decode((cli("ls --json")))
      assert.equal("far", result.jobs[2].id)
      assert.is_false(result.jobs[2].paused)
      assert.is_nil(result.jobs[2].pause_note)
    end)

    it("pause and resume answer --json with the job", function()
      local out, err, code = cli("pause boom --json")
      assert.equal(0, code, err)
      local r = json.decode(out)
      assert.equal("boom", r.job.id)
      assert.is_true(r.job.paused)
      out = cli("resume boom --json")
      assert.is_false(json.decode(out).job.paused)
    end)

    it("trigger runs a job now, outside its schedule, and history shows it", function()
      local out, err, code = cli("trigger far")
      assert.equal(0, code, err)
      assert.equal("triggered far: it runs now\n", out)
      wait_for_run("far", "success")
      out, err, code = cli("trigger far --json")
      assert.equal(0, code, err)
      assert.equal("far", json.decode(out).job.id)
      for _ = 1, 200 do
        if #json.decode((cli("history far --json"))).runs == 2 then break end
        pause_a_moment()
      end
      local runs = wait_for_run("far", "success")
      assert.equal(2, #runs)
      assert.matches("far ran job=far run=%d+ attempt=1", read(proc.log))
      local ls = json.decode((cli("ls --json")))
      assert.equal("far", ls.jobs[2].id)
      assert.is_true(ls.jobs[2].next_run_time > ls.now + 86400 * 365)
      out = cli("ls")
      assert.matches("\nfar +scheduled +in %d+d +success %S+[^\n]*\n", out)
    end)

    it("history lists runs newest first, filtered by job, status and count", function()
      cli("trigger boom")
      wait_for_run("boom", "error")
      cli("trigger far")
      wait_for_run("far", "success")
      cli("trigger boom")
      for _ = 1, 200 do
        local r = json.decode((cli("history boom --json")))
        if #r.runs == 2 and r.runs[1].status == "error" then break end
        pause_a_moment()
      end

      local out, err, code = cli("history")
      assert.equal(0, code, err)
      local lines = {}
      for line in out:gmatch("[^\n]+") do lines[#lines + 1] = line end
      assert.equal(4, #lines)
      assert.matches("^RUN +JOB +STATUS +TRY +WHEN +DURATION +ERROR$", lines[1])
      assert.matches("^3 +boom +error +1 +%S+ +%S+ +[^\n]*jobs%.lua:4: kaboom$", lines[2])
      assert.matches("^2 +far +success +1 +%S+ +%d+[mu]?s$", lines[3])
      assert.matches("^1 +boom +error ", lines[4])

      out = cli("history boom -n 1")
      assert.matches("^RUN[^\n]*\n3 +boom +error [^\n]*\n$", out)
      out = cli("history --status success")
      assert.matches("^RUN[^\n]*\n2 +far +success [^\n]*\n$", out)

      local r = json.decode((cli("history far --json")))
      assert.equal(1, #r.runs)
      assert.equal("far", r.runs[1].job_id)
      assert.equal("success", r.runs[1].status)
      assert.equal(1, r.runs[1].attempt)
      assert.matches("far ran", r.runs[1].log, 1, true)
    end)

    it("history of a job with no runs is empty, of an unknown id not found", function()
      local out, err, code = cli("history held")
      assert.equal(0, code, err)
      assert.equal("no runs\n", out)
      out = cli("history held --json")
      assert.matches('"runs":%[%]', out)
      assert.same({}, json.decode(out).runs)
      out, err, code = cli("history nosuch")
      assert.equal(3, code)
      assert.equal("", out)
      assert.equal("moonbeat: no job with id 'nosuch'\n", err)
    end)

    it("rm removes a job; its history stays", function()
      cli("trigger far")
      wait_for_run("far", "success")
      local out, err, code = cli("rm far")
      assert.equal(0, code, err)
      assert.equal("removed far\n", out)
      out, err, code = cli("rm boom --json")
      assert.equal(0, code, err)
      assert.same({ id = "boom", removed = true }, json.decode(out))
      out = cli("ls")
      assert.is_nil(out:find("\nfar ", 1, true))
      out, err, code = cli("rm far")
      assert.equal(3, code)
      assert.equal("moonbeat: no job with id 'far'\n", err)
      out, err, code = cli("history far")
      assert.equal(0, code, err)
      assert.matches("\n1 +far +success ", out)
    end)

    it("status tells uptime, jobs, runs and failures", function()
      cli("trigger boom")
      wait_for_run("boom", "error")
      cli("trigger far")
      wait_for_run("far", "success")
      local out, err, code = cli("status")
      assert.equal(0, code, err)
      assert.matches("^scheduler +pid " .. proc.pid .. ", up %d+s\n", out)
      assert.matches("\njobs +3 %(1 paused, 0 running now%)\n", out)
      assert.matches("\nruns +2 %(1 failed%)\n", out)
      assert.matches("\nsocket +" .. path:gsub("%p", "%%%0") .. "\n", out)
      assert.matches("\ndatabase +:memory:\n", out)
      -- The load at start counts as the last reload.
      assert.matches("\nlast reload +[%w ]+: 3 added, 0 changed, 0 removed, 0 failed\n", out)

      local r = json.decode((cli("status --json")))
      assert.equal(tonumber(proc.pid), r.pid)
      assert.equal(3, r.jobs)
      assert.equal(1, r.paused)
      assert.equal(2, r.runs)
      assert.equal(1, r.failures)
      assert.is_true(r.uptime >= 0 and r.uptime < 3600)
      assert.equal(path, r.socket)
    end)

    it("reload rescans the directory and says what changed", function()
      support.write(dir .. "/jobs/more.lua", [[
scheduler.add_job { id = "more", trigger = { "date", run_date = "2099-01-01" },
  run = function() end }
]])
      local out, err, code = cli("reload")
      assert.equal(0, code, err)
      assert.equal("reloaded: 1 added, 0 changed, 0 removed, 0 failed\n", out)
      assert.matches("\nmore ", (cli("ls")))

      -- A broken file keeps its jobs, fails the reload, and shows in status.
      support.write(dir .. "/jobs/more.lua", "scheduler.add_job { id = 'more', trigger = }\n")
      out, err, code = cli("reload")
      assert.equal(1, code)
      assert.matches("^reloaded: 0 added, 0 changed, 0 removed, 1 failed\n", out)
      assert.matches("more%.lua:1: ", out)
      assert.matches("\nmore ", (cli("ls")))
      out = cli("status")
      assert.matches("\nlast reload +[%w ]+: 0 added, 0 changed, 0 removed, 1 failed\n", out)
      assert.matches("more%.lua:1: ", out)
    end)

    it("answers an unknown job with exit code 3 for every command that takes one", function()
      for _, cmd in ipairs { "pause", "resume", "trigger", "rm" } do
        local out, err, code = cli(cmd .. " nosuch")
        assert.equal(3, code, cmd)
        assert.equal("", out)
        assert.equal("moonbeat: no job with id 'nosuch'\n", err)
      end
    end)

    it("refuses bad usage with exit code 2 and the command's usage", function()
      local cases = {
        { "pause", "moonbeat: pause needs ID\nusage: moonbeat pause ID" },
        { "rm a b", "moonbeat: rm takes ID\nusage: moonbeat rm ID" },
        { "ls extra", "moonbeat: ls takes no arguments\nusage: moonbeat ls" },
        { "ls --frob", "moonbeat: unknown option --frob\nusage: moonbeat ls" },
        { "pause far --note", "moonbeat: option --note needs a value\n" },
        { "history -n many", "moonbeat: -n: expected a count, got 'many'\n" },
        { "history -n 0", "moonbeat: history: n: expected a count from 1 to 100000, got 0\n" },
        { "history --status fine", "moonbeat: history: status: 'fine' is not a "
          .. "run status (expected success, error, timeout, cancelled, missed, "
          .. "skipped, running, interrupted)\n" },
      }
      for _, case in ipairs(cases) do
        local out, err, code = cli(case[1])
        assert.equal(2, code, case[1])
        assert.equal("", out)
        assert.equal(case[2], err:sub(1, #case[2]), case[1])
      end
    end)

    it("answers the protocol's requests with the request's id", function()
      local r = request { id = "abc", cmd = "ls" }
      assert.equal("abc", r.id)
      assert.is_true(r.ok)
      assert.equal(3, #r.result.jobs)
      r = request { id = 7, cmd = "pause", args = { id = "nosuch" } }
      assert.same({ id = 7, ok = false, error = "no job with id 'nosuch'",
        code = "not_found" }, r)
      r = request { id = 8, cmd = "pause", args = { id = "far", colour = "red" } }
      assert.same({ id = 8, ok = false, code = "usage",
        error = "pause: unknown argument 'colour' (pause takes id, note)" }, r)
      r = request { cmd = "fly" }
      assert.equal(json.null, r.id)
      assert.equal("usage", r.code)
      assert.equal("unknown command 'fly' (known: complete, eval, history, ls, "
        .. "pause, reload, repl_output, resume, rm, status, trigger)", r.error)
    end)
  end)

  describe("clients that misbehave", function()
    before_each(function() start(path) end)
    after_each(function()
      local code, log = stop(proc)
      assert.equal(0, code, log)
    end)

    local function resources()
      -- Wait until the server has noticed every client that left.
      for _ = 1, 200 do
        local r = request { id = 1, cmd = "status" }
        local res = r.result.resources
        -- What the garbage collector holds varies; what must not leak
        -- is counted.
        if res.clients == 1 then
          res.lua_memory = nil
          return res
        end
        pause_a_moment()
      end
      error("clients that left are still counted")
    end

    it("gets an error answer for garbage, and the connection stays usable", function()
      local conn = assert(sock.dial(path, 10))
      local bad = {
        { "this is not json", "bad request: " },
        { "[1, 2, 3]", "bad request: cmd: expected a command name" },
        { '{"id": 1}', "bad request: cmd: expected a command name" },
        { '{"id": {}, "cmd": "ls"}', "bad request: id: expected a string or a number" },
        { '{"id": 2, "cmd": "ls", "args": 5}', "bad request: args: expected an object" },
        { "\0\1\2\255\254", "bad request: " },
        { "", "bad request: " },
      }
      for _, case in ipairs(bad) do
        assert(conn:write(case[1] .. "\n", 10))
        local r = json.decode(assert(conn:read_line(10)))
        assert.is_false(r.ok, case[1])
        assert.equal("usage", r.code)
        assert.equal(case[2], r.error:sub(1, #case[2]), case[1])
      end
      assert(conn:write('{"id": 3, "cmd": "ls"}\r\n', 10))
      local r = json.decode(assert(conn:read_line(10)))
      assert.is_true(r.ok)
      assert.equal(3, r.id)
      conn:close()
    end)

    it("takes a long request that stays within the limit", function()
      local note = ("n"):rep(1024 * 1024 - 100)
      local conn = assert(sock.dial(path, 10))
      local line = json.encode { id = 1, cmd = "pause", args = { id = "far", note = note } }
      assert.is_true(#line <= 1024 * 1024)
      assert(conn:write(line .. "\n", 10))
      local r = json.decode(assert(conn:read_line(10)))
      assert.is_true(r.ok)
      assert.equal(#note, #r.result.job.pause_note)
      -- The same connection goes on with short ones.
      assert(conn:write('{"id": 2, "cmd": "resume", "args": {"id": "far"}}\n', 10))
      assert.is_false(json.decode(assert(conn:read_line(10))).result.job.paused)
      conn:close()
    end)

    it("answers a request line that is too long with an error and hangs up", function()
      local before = resources()
      local conn = assert(sock.dial(path, 10))
      local chunk = ("x"):rep(65536)
      local sent = 0
      -- The server hangs up once it has seen too much, and writing fails.
      while sent < 4 * 1024 * 1024 do
        if not conn:write(chunk, 10) then break end
        sent = sent + #chunk
      end
      assert.is_true(sent < 4 * 1024 * 1024, "the server read 4 MiB of one line")
      local r = json.decode(assert(conn:read_line(10)))
      assert.same({ id = json.null, ok = false, code = "usage",
        error = "request too long (more than 1048576 bytes)" }, r)
      assert.matches("WARN  control request too long; client dropped client=%d+ "
        .. "max_bytes=1048576", read(proc.log))
      -- Hung up: the rest of the line was never read.
      local line, _, code = conn:read_line(10)
      assert.is_nil(line)
      assert.is_truthy(code == "EOF" or code == "ECONNRESET", code)
      conn:close()
      assert.same(before, resources())
    end)

    it("drops a client that hangs up mid-request or before its answer, and nothing else notices", function()
      local before = resources()
      for _ = 1, 20 do
        local conn = assert(sock.dial(path, 10))
        assert(conn:write('{"id": 1, "cmd": "ls", "ar', 10))
        conn:close()
        conn = assert(sock.dial(path, 10))
        assert(conn:write('{"id": 1, "cmd": "history", "args": {"n": 100000}}\n', 10))
        conn:close()
        conn = assert(sock.dial(path, 10))
        conn:close()
      end
      assert.same(before, resources())
      -- The scheduler still runs jobs.
      cli("trigger far")
      wait_for_run("far", "success")
    end)

    it("answers in order a client that asks a lot before it reads", function()
      -- Big answers: far carries a 100 KB note, and 100 ls answers are
      -- far more than the server keeps unwritten for one client.
      local note = ("n"):rep(100000)
      assert.is_true(request { id = 1, cmd = "pause", args = { id = "far", note = note } }.ok)
      local conn = assert(sock.dial(path, 10))
      local asks = {}
      for i = 1, 100 do asks[i] = ('{"id": %d, "cmd": "ls"}\n'):format(i) end
      assert(conn:write(table.concat(asks), 10))
      for i = 1, 100 do
        local r = json.decode(assert(conn:read_line(10)))
        assert.equal(i, r.id)
        assert.equal(3, #r.result.jobs)
      end
      conn:close()
    end)

    it("serves many clients at once, each its own answers in order", function()
      local before = resources()
      local conns = {}
      for i = 1, 50 do
        conns[i] = assert(sock.dial(path, 10))
        -- Half a request now, the rest later: the others do not wait.
        assert(conns[i]:write(('{"id": %d, "cmd": '):format(i), 10))
      end
      for i = 50, 1, -1 do
        assert(conns[i]:write(('"status"}\n{"id": %d, "cmd": "ls"}\n'):format(i + 1000), 10))
        local r = json.decode(assert(conns[i]:read_line(10)))
        assert.equal(i, r.id)
        assert.equal(50, r.result.resources.clients)
      end
      for i = 1, 50 do
        local r = json.decode(assert(conns[i]:read_line(10)))
        assert.equal(i + 1000, r.id)
        assert.equal(3, #r.result.jobs)
        conns[i]:close()
      end
      assert.same(before, resources())
    end)

    it("turns away clients beyond 128 at once", function()
      local conns = {}
      for i = 1, 128 do conns[i] = assert(sock.dial(path, 10)) end
      local extra = assert(sock.dial(path, 10))
      local r = json.decode(assert(extra:read_line(10)))
      assert.same({ id = json.null, ok = false, code = "failed",
        error = "too many clients (at most 128 at once)" }, r)
      extra:close()
      conns[1]:close()
      -- One left; there is room for one again.
      for _ = 1, 200 do
        local c = assert(sock.dial(path, 10))
        assert(c:write('{"id": 1, "cmd": "ls"}\n', 10))
        local line = c:read_line(10)
        c:close()
        if line and json.decode(line).ok then break end
        pause_a_moment()
      end
      for i = 2, 128 do conns[i]:close() end
    end)
  end)

  describe("the command line", function()
    it("shows each command's usage with --help, no scheduler needed", function()
      for _, cmd in ipairs { "ls", "pause", "resume", "trigger", "rm", "history",
        "status", "reload" } do
        local out, code = support.sh(("%s %s --help"):format(BIN, cmd))
        assert.equal(0, code, cmd)
        assert.equal("usage: moonbeat " .. cmd, out:sub(1, 16 + #cmd))
        assert.matches("--socket PATH", out, 1, true)
        assert.matches("Exit codes: 0 ok, 1 failure, 2 usage, 3 no such job.", out, 1, true)
        local help = support.sh(("%s help %s"):format(BIN, cmd))
        assert.equal(out, help)
      end
      local out = support.sh(BIN .. " help")
      assert.matches("  ls | pause ID | resume ID | trigger ID | rm ID | history [ID] | status",
        out, 1, true)
    end)
  end)

  describe("the socket file", function()
    it("is made 0600 in a directory made 0700, and removed on exit", function()
      local sub = dir .. "/run/moonbeat"
      support.sh("mkdir " .. support.quote(dir .. "/run"))
      local p = start(sub .. "/s.sock")
      assert.equal("700", mode_of(sub))
      assert.equal("600", mode_of(sub .. "/s.sock"))
      local out = support.sh("test -S " .. support.quote(sub .. "/s.sock") .. " && echo socket")
      assert.equal("socket\n", out)
      local code, log = stop(p)
      assert.equal(0, code, log)
      assert.is_nil(mode_of(sub .. "/s.sock"))
      assert.matches("control socket listening path=" .. sub:gsub("%p", "%%%0"), log)
    end)

    it("refuses a directory that group or others can enter", function()
      support.sh("mkdir -m 755 " .. support.quote(dir .. "/open"))
      local out, code = support.sh(("%s run %s --db :memory: --socket %s"):format(BIN,
        support.quote(dir .. "/jobs"), support.quote(dir .. "/open/s.sock")))
      assert.equal(1, code)
      assert.matches(("moonbeat: socket directory %s/open is open to group or others "
        .. "(mode 0755); it must be 0700 (chmod 700 %s/open)\n"):format(dir, dir), out, 1, true)
      assert.is_nil(mode_of(dir .. "/open/s.sock"))
    end)

    it("refuses a directory that someone else owns", function()
      local root = support.sh("id -u") == "0\n"
      local other = dir .. "/theirs"
      if root then
        support.sh(("mkdir -m 700 %s && chown 65534 %s"):format(other, other))
      else
        other = "/"
      end
      local sock_path = other == "/" and "/s.sock" or other .. "/s.sock"
      local out, code = support.sh(("%s run %s --db :memory: --socket %s"):format(BIN,
        support.quote(dir .. "/jobs"), support.quote(sock_path)))
      assert.equal(1, code)
      assert.matches(("moonbeat: socket directory %s belongs to uid %d, not to this user")
        :format(other, root and 65534 or 0), out, 1, true)
    end)

    it("refuses a path where a file that is not a socket stands", function()
      support.write(dir .. "/s.sock", "mine\n")
      local out, code = support.sh(("%s run %s --db :memory: --socket %s"):format(BIN,
        support.quote(dir .. "/jobs"), support.quote(path)))
      assert.equal(1, code)
      assert.matches(("moonbeat: %s exists and is not a socket; remove it or choose "
        .. "another --socket\n"):format(path), out, 1, true)
      assert.equal("mine\n", read(path))
    end)

    it("replaces a stale socket left by a killed scheduler", function()
      local first = start(path)
      assert.equal(137, stop(first, "KILL"))
      assert.equal("600", mode_of(path))
      local second = start(path)
      local out, err, code = cli("ls")
      assert.equal(0, code, err)
      assert.matches("^ID ", out)
      local rc, log = stop(second)
      assert.equal(0, rc, log)
      assert.matches("stale control socket removed path=" .. path:gsub("%p", "%%%0"), log)
    end)

    it("keeps a second scheduler off a socket where one is listening", function()
      local first = start(path)
      local out, code = support.sh(("%s run %s --db :memory: --socket %s"):format(BIN,
        support.quote(dir .. "/jobs"), support.quote(path)))
      assert.equal(1, code)
      assert.matches(("moonbeat: a scheduler is already listening on %s; stop it, or "
        .. "give this one another --socket\n"):format(path), out, 1, true)
      -- It never said it started.
      assert.is_nil(out:find("scheduler started", 1, true))
      local _, err, ls_code = cli("ls")
      assert.equal(0, ls_code, err)
      local rc, log = stop(first)
      assert.equal(0, rc, log)
    end)

    it("is $XDG_RUNTIME_DIR/moonbeat/moonbeat.sock unless --socket says otherwise", function()
      local runtime = dir .. "/runtime"
      support.sh("mkdir -m 700 " .. support.quote(runtime))
      local env = "XDG_RUNTIME_DIR=" .. support.quote(runtime)
      local p = start(runtime .. "/moonbeat/moonbeat.sock", env)
      assert.equal("700", mode_of(runtime .. "/moonbeat"))
      local out, code = support.sh(("%s %s ls"):format(env, BIN))
      assert.equal(0, code, out)
      assert.matches("^ID ", out)
      local rc, log = stop(p)
      assert.equal(0, rc, log)
      assert.is_nil(mode_of(runtime .. "/moonbeat/moonbeat.sock"))
    end)

    it("is /tmp/moonbeat-UID/moonbeat.sock without $XDG_RUNTIME_DIR", function()
      support.write(dir .. "/where.lua", 'print(require("mb.control").default_path())')
      local uid = support.sh("id -u"):match("%d+")
      for _, env in ipairs { "env -u XDG_RUNTIME_DIR", "XDG_RUNTIME_DIR=" } do
        local out = support.sh(("%s %s lua %s"):format(env, BIN, support.quote(dir .. "/where.lua")))
        assert.equal(("/tmp/moonbeat-%s/moonbeat.sock\n"):format(uid), out)
      end
    end)

    it("tells a client when no scheduler listens", function()
      local out, err, code = cli("ls")
      assert.equal(1, code)
      assert.equal("", out)
      assert.equal(("moonbeat: no scheduler is listening on %s (start one with "
        .. "`moonbeat run`, or say where with --socket)\n"):format(path), err)
    end)
  end)
end)
