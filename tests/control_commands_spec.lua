-- The control protocol in-process, on the virtual clock: what each
-- command answers, how the command table is extended, sessions, and how
-- the command line prints answers. tests/control_spec.lua covers the
-- socket and the process.
local harness = require "tests.harness"
local support = require "tests.support"
local control = require "mb.control"
local cli = require "mb.cli_control"
local json = require "moonbeat.json"
local sock = require "mb.control_socket"

describe("control commands", function()
  local h, d

  before_each(function()
    h = harness.new()
    d = { sched = h.core, api = h.scheduler, dir = "jobs/", db = ":memory:",
      started_at = h.core:now() }
  end)
  after_each(function()
    control.commands.echo = nil
    control.commands.boom = nil
    control.close(d)
    h:close()
  end)

  local function call(cmd, args, session)
    local req = { id = 1, cmd = cmd, args = args }
    return json.decode(control.handle(d, json.encode(req), session))
  end

  it("ls gives each job's state, next run and last run", function()
    h:record("tick", { "interval", minutes = 10 })
    h.scheduler.add_job { id = "bad", trigger = { "interval", hours = 1 },
      run = function() error("no") end }
    h:advance("1h")
    local r = call("ls")
    assert.is_true(r.ok)
    assert.equal(h.core:now(), r.result.now)
    local tick, bad = r.result.jobs[1], r.result.jobs[2]
    assert.equal("tick", tick.id)
    assert.equal("interval[10m]", tick.trigger)
    assert.equal(h.start + 4200, tick.next_run_time)
    assert.equal(6, tick.counts.ok)
    assert.equal("success", tick.last_run.status)
    assert.equal("bad", bad.id)
    assert.equal("error", bad.last_run.status)
    assert.matches("no$", bad.last_run.error)
    assert.equal(1, bad.counts.failed)
  end)

  it("ls of no jobs is an empty list", function()
    local text = control.handle(d, '{"id":1,"cmd":"ls"}')
    assert.matches('"jobs":%[%]', text)
  end)

  it("pause, resume, trigger and rm act through the scheduler API", function()
    local fires = h:record("tick", { "interval", minutes = 10 })
    assert.is_true(call("pause", { id = "tick", note = "maintenance" }).ok)
    local job = h.scheduler.get_job("tick")
    assert.is_true(job.paused)
    assert.equal("maintenance", job.pause_note)
    h:advance("30m")
    assert.same({}, fires)

    local r = call("resume", { id = "tick" })
    assert.is_false(r.result.job.paused)
    assert.equal(h.core:now() + 600, r.result.job.next_run_time)

    assert.is_true(call("trigger", { id = "tick" }).ok)
    h:advance(0)
    assert.equal(1, #fires)

    assert.same({ id = "tick", removed = true }, call("rm", { id = "tick" }).result)
    assert.is_nil(h.scheduler.get_job("tick"))
  end)

  it("resume of a job with no fire left says it was removed", function()
    h.scheduler.add_job { id = "ending", paused = true, run = function() end,
      trigger = { "interval", seconds = 30, end_date = h.start + 60 } }
    h:advance("2m")
    local r = call("resume", { id = "ending" })
    assert.is_true(r.ok)
    assert.is_true(r.result.job.removed)
    assert.equal("resumed ending; it had no fire left and was removed\n",
      cli.commands.resume.show(r.result))
  end)

  it("trigger on a stopping scheduler fails with the API's message", function()
    h:record("tick", { "interval", minutes = 10 })
    h.scheduler.shutdown { wait = false }
    local r = call("trigger", { id = "tick" })
    assert.same({ id = 1, ok = false, code = "failed",
      error = "the scheduler is shutting down" }, r)
  end)

  it("history filters by job and status, and knows a removed job by its runs", function()
    h.scheduler.add_job { id = "flaky", trigger = { "interval", minutes = 1 },
      run = function(ctx) if ctx.scheduled_time % 120 == 0 then error("even") end end }
    h:advance("5m")
    local r = call("history", { id = "flaky", status = "error", n = 10 })
    assert.equal(2, #r.result.runs)
    for _, run in ipairs(r.result.runs) do assert.equal("error", run.status) end
    assert.equal(3, #call("history", { status = "success" }).result.runs)
    assert.equal(1, #call("history", { n = 1 }).result.runs)
    h.scheduler.remove_job("flaky")
    assert.equal(5, #call("history", { id = "flaky" }).result.runs)
    assert.same({ id = 1, ok = false, code = "not_found",
      error = "no job with id 'ghost'" }, call("history", { id = "ghost" }))
  end)

  it("refuses arguments of the wrong kind", function()
    h:record("tick", { "interval", minutes = 10 })
    local cases = {
      { "pause", { id = 5 }, "pause: id: expected a job id (a string)" },
      { "pause", { id = "tick", note = 5 }, "pause: note: expected a string, got number" },
      { "resume", {}, "resume: id: expected a job id (a string)" },
      { "history", { n = 1.5 }, "history: n: expected a count from 1 to 100000, got 1.5" },
      { "history", { id = "" }, "history: id: expected a job id (a string)" },
      { "ls", { all = true }, "ls: unknown argument 'all' (ls takes no arguments)" },
    }
    for _, case in ipairs(cases) do
      assert.same({ id = 1, ok = false, code = "usage", error = case[3] },
        call(case[1], case[2]))
    end
  end)

  it("status reports uptime on the scheduler's clock, counts and the last reload", function()
    h:record("tick", { "interval", minutes = 30 })
    h.scheduler.add_job { id = "off", trigger = { "interval", hours = 1 }, paused = true,
      run = function() end }
    h:advance("2h")
    d.last_reload = { at = h.core:now() - 300, added = 1, changed = 0, removed = 0,
      failed = 1, errors = { { file = "jobs/bad.lua", line = 3,
        message = "jobs/bad.lua:3: trigger.hour: 25 is out of range 0-23" } } }
    local r = call("status").result
    assert.equal(7200, r.uptime)
    assert.equal(2, r.jobs)
    assert.equal(1, r.paused)
    assert.equal(4, r.runs)
    assert.equal(0, r.failures)
    assert.equal(1, r.last_reload.failed)
    assert.equal("jobs/bad.lua", r.last_reload.errors[1].file)

    r.pid = 4242
    assert.equal(table.concat({
      "scheduler    pid 4242, up 2h",
      "jobs         2 (1 paused, 0 running now)",
      "runs         4 (0 failed)",
      "directory    jobs/",
      "database     :memory:",
      "socket       -",
      "last reload  5m ago: 1 added, 0 changed, 0 removed, 1 failed",
      "  jobs/bad.lua:3: trigger.hour: 25 is out of range 0-23",
      "" }, "\n"), cli.commands.status.show(r))
  end)

  it("reload calls the daemon's reload and answers with the last reload", function()
    local calls = 0
    d.reload = function(self)
      assert.equal(d, self)
      calls = calls + 1
      self.last_reload = { at = 1, added = 0, changed = 2, removed = 1, failed = 0,
        errors = {} }
      return self.last_reload
    end
    local text = control.handle(d, '{"id":1,"cmd":"reload"}')
    assert.equal(1, calls)
    assert.matches('"errors":%[%]', text)
    local r = json.decode(text).result
    assert.equal(2, r.changed)
    assert.equal("reloaded: 0 added, 2 changed, 1 removed, 0 failed\n",
      cli.commands.reload.show(r))
    assert.equal(0, cli.commands.reload.exit(r))
    assert.equal(1, cli.commands.reload.exit { failed = 1 })

    d.reload = function() error("the directory is gone") end
    local failed = call("reload")
    assert.equal("failed", failed.code)
    assert.matches("^reload failed: .*the directory is gone$", failed.error)
  end)

  it("runs commands other modules add, with their args and the client's session", function()
    local seen = {}
    control.commands.echo = function(dd, args, session)
      assert.equal(d, dd)
      session.count = (session.count or 0) + 1
      seen[#seen + 1] = session
      return { said = args.text, count = session.count }
    end
    local session = {}
    assert.same({ said = "hi", count = 1 }, call("echo", { text = "hi" }, session).result)
    assert.same({ said = "ho", count = 2 }, call("echo", { text = "ho" }, session).result)
    assert.equal(session, seen[2])
  end)

  it("turns a command's error into a failed answer and logs its traceback", function()
    control.commands.boom = function() error("it broke", 0) end
    assert.same({ id = 1, ok = false, code = "failed", error = "boom: it broke" },
      call("boom"))
    local logged = h:logged("control command failed")
    assert.equal(1, #logged)
    assert.equal("boom", logged[1].fields.command)
    assert.matches("stack traceback", logged[1].fields.traceback)

    control.commands.boom = function() return function() end end
    local r = call("boom")
    assert.equal("failed", r.code)
    assert.matches("^boom: the result cannot be sent: ", r.error)

    control.commands.boom = function() return nil, "not today", "weird" end
    assert.same({ id = 1, ok = false, code = "failed", error = "not today" }, call("boom"))
    control.commands.boom = function() return nil, "gone", "not_found" end
    assert.equal("not_found", call("boom").code)
  end)

  it("keeps a session per connected client and closes it when the client goes", function()
    local dir = support.tempdir()
    finally(function() support.remove_tree(dir) end)
    local closed = {}
    control.commands.echo = function(_, args, session)
      session.count = (session.count or 0) + 1
      session.on_close = function(s) closed[#closed + 1] = s.count end
      return { said = args.text, count = session.count }
    end
    assert(control.listen(d, dir .. "/s.sock"))
    assert.equal(dir .. "/s.sock", d.socket)

    local function ask(conn, text)
      assert(conn:write(control.encode { id = 1, cmd = "echo", args = { text = text } }
        .. "\n", 5))
      local line
      assert(h:settle(function()
        line = conn:read_line(0)
        return line
      end))
      return json.decode(line).result
    end
    local a, b = assert(sock.dial(dir .. "/s.sock", 5)), assert(sock.dial(dir .. "/s.sock", 5))
    assert.equal(1, ask(a, "x").count)
    assert.equal(2, ask(a, "y").count)
    assert.equal(1, ask(b, "z").count)
    a:close()
    assert(h:settle(function() return #closed == 1 end))
    assert.same({ 2 }, closed)
    b:close()
    assert(h:settle(function() return #closed == 2 end))
    assert.same({ 2, 1 }, closed)

    control.close(d)
    assert.is_nil(d.control)
    local f = io.open(dir .. "/s.sock")
    assert.is_nil(f)
  end)
end)

describe("control output", function()
  it("says how far a time is from now in one unit", function()
    local now = 1000000
    assert.equal("now", cli.relative(now + 0.4, now))
    assert.equal("in 45s", cli.relative(now + 45, now))
    assert.equal("in 3m", cli.relative(now + 239, now))
    assert.equal("2h ago", cli.relative(now - 7300, now))
    assert.equal("3d ago", cli.relative(now - 3 * 86400 - 5, now))
    assert.equal("-", cli.relative(nil, now))
  end)

  it("writes durations short", function()
    assert.equal("214us", cli.duration(0.000214))
    assert.equal("12ms", cli.duration(0.012))
    assert.equal("3.2s", cli.duration(3.24))
    assert.equal("2m15s", cli.duration(135.5))
    assert.equal("1h3m", cli.duration(3780))
    assert.equal("2d1h", cli.duration(2 * 86400 + 3700))
    assert.equal("-", cli.duration(nil))
  end)

  it("aligns columns two spaces apart, with no trailing spaces", function()
    assert.equal("ID    STATE   NOTE\nlong  a       x\nb     paused\n",
      cli.table({ "ID", "STATE", "NOTE" }, { { "long", "a", "x" }, { "b", "paused", "" } }))
  end)

  it("prints ls and history rows from an answer", function()
    local now = 1000000
    local ls = cli.commands.ls.show { now = now, jobs = {
      { id = "a", trigger = "interval[5m]", next_run_time = now + 200, running = 0,
        paused = false, last_run = { status = "success", start_time = now - 100 } },
      { id = "bb", trigger = "cron[0 2 * * *]", running = 1, paused = false,
        next_run_time = now + 7200 },
      { id = "c", trigger = "interval[1h]", running = 0, paused = true,
        pause_note = "disk" },
      { id = "d", trigger = "interval[1h]", running = 0, paused = false,
        next_run_time = now + 3600, next_retry_time = now + 30 },
    } }
    assert.equal(table.concat({
      "ID  STATE      NEXT RUN      LAST RUN        TRIGGER          NOTE",
      "a   scheduled  in 3m         success 1m ago  interval[5m]",
      "bb  running    in 2h         -               cron[0 2 * * *]",
      "c   paused     -             -               interval[1h]     disk",
      "d   retrying   retry in 30s  -               interval[1h]",
      "" }, "\n"), ls)
    assert.equal("no jobs\n", cli.commands.ls.show { now = now, jobs = {} })

    local history = cli.commands.history.show { now = now, runs = {
      { run_id = 12, job_id = "a", status = "error", attempt = 2,
        start_time = now - 30, duration = 0.0021, error = "jobs/a.lua:3: no\nstack" },
      { run_id = 11, job_id = "a", status = "missed", attempt = 1,
        scheduled_time = now - 7200 },
    } }
    assert.equal(table.concat({
      "RUN  JOB  STATUS  TRY  WHEN     DURATION  ERROR",
      "12   a    error   2    30s ago  2ms       jobs/a.lua:3: no",
      "11   a    missed  1    2h ago   -",
      "" }, "\n"), history)
  end)
end)
