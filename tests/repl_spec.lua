-- `moonbeat repl` as a process: fed through a pipe (stdin not a
-- terminal), and typed at on a pseudo-terminal (tests/fixtures/
-- pty_driver.py), with completion, history, Ctrl-C and Ctrl-D. Every
-- wait is for output, polled with a real-time limit; the jobs used fire
-- at once or often.
local json = require "moonbeat.json"
local sock = require "mb.control_socket"
local support = require "tests.support"

local BIN = support.BIN
local PYTHON = "/usr/bin/python3"

local JOBS = {
  ["hello.lua"] = [[
scheduler.add_job { id = "hello", trigger = { "interval", hours = 1 },
  run = function(ctx) ctx.log.info("hello ran") end }
scheduler.add_job { id = "heartbeat", trigger = "0 2 * * *", run = function() end }
]],
}

local slurp = support.read

-- Run `moonbeat ARGS` with input on a pipe; return stdout, stderr and
-- the exit status.
local function run_piped(args, input)
  local files = support.tempdir { input = input }
  local cmd = ("%s %s <%s >%s 2>%s; echo $?"):format(support.quote(BIN), args,
    support.quote(files .. "/input"), support.quote(files .. "/out"),
    support.quote(files .. "/err"))
  local p = io.popen(cmd)
  local code = tonumber(p:read("a"):match("%d+"))
  p:close()
  local out, err = slurp(files .. "/out"), slurp(files .. "/err")
  support.remove_tree(files)
  return out, err, code
end

-- `moonbeat repl DIR --db :memory:` with input on a pipe, its control
-- socket in a directory of its own.
local function piped(dir, input, extra)
  local sockets = support.tempdir()
  local out, err, code = run_piped(("repl %s --db :memory: --socket %s %s")
    :format(support.quote(dir), support.quote(sockets .. "/moonbeat.sock"),
      extra or ""), input)
  support.remove_tree(sockets)
  return out, err, code
end

-- Start `moonbeat run DIR` in the background listening on socket; wait
-- (at most 20 s of real time) until the socket answers: a process
-- starting, not a schedule.
local function start_server(dir, socket, logdir)
  local p = { log = logdir .. "/server.log", pidfile = logdir .. "/server.pid",
    rcfile = logdir .. "/server.rc" }
  os.execute(("(%s run %s --db :memory: --socket %s >%s 2>&1 & pid=$!; "
    .. "echo $pid >%s; wait $pid; echo $? >%s) >/dev/null 2>&1 &"):format(
    support.quote(BIN), support.quote(dir), support.quote(socket),
    support.quote(p.log), support.quote(p.pidfile), support.quote(p.rcfile)))
  for _ = 1, 400 do
    local conn = sock.dial(socket, 1)
    if conn then
      conn:close()
      p.pid = slurp(p.pidfile):match("%d+")
      return p
    end
    if slurp(p.rcfile) then break end
    os.execute("sleep 0.05")
  end
  error("the scheduler did not start listening:\n" .. tostring(slurp(p.log)))
end

-- Wait (at most 20 s) for the server to end, after a SIGTERM unless it
-- is ending already; its exit status and log.
local function stop_server(p, signal)
  if signal ~= false then os.execute("kill -TERM " .. p.pid .. " 2>/dev/null") end
  for _ = 1, 400 do
    local rc = slurp(p.rcfile)
    if rc and rc:match("%d") then return tonumber(rc:match("%d+")), slurp(p.log) end
    os.execute("sleep 0.05")
  end
  error("the scheduler did not stop")
end

-- Drive `moonbeat ARGS` on a pseudo-terminal through steps (see
-- tests/fixtures/pty_driver.py); fails the spec, showing the screen,
-- when a step does.
local function typed(args, steps, home)
  local script = os.tmpname()
  local argv = { BIN }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  support.write(script, json.encode {
    argv = argv,
    env = { HOME = home, TERM = "xterm", INPUTRC = "/dev/null" },
    steps = steps,
  })
  local p = io.popen(PYTHON .. " tests/fixtures/pty_driver.py " .. support.quote(script))
  local out = p:read("a")
  p:close()
  os.remove(script)
  local result = assert(json.decode(out), out)
  assert(result.ok, ("step %s: %s; the screen:\n%s"):format(tostring(result.step),
    tostring(result.error), result.text))
  return result
end

local function send(text) return { send = text } end
local function expect(text) return { expect = text } end

describe("moonbeat repl through a pipe", function()
  local dir
  before_each(function() dir = support.tempdir(JOBS) end)
  after_each(function() support.remove_tree(dir) end)

  it("prints each chunk's values and shuts down gracefully at the end of input", function()
    local out, err, code = piped(dir, table.concat({
      "1+1",
      "{ 1, { a = 'x' } }",
      "function double(x)",
      "  return x * 2",
      "end",
      "double(21)",
      "print('hi', nil)",
      "'text'",
    }, "\n") .. "\n")
    assert.equal(0, code, err)
    assert.equal('2\n{ 1, { a = "x" } }\n42\nhi\tnil\ntext\n', out)
    assert.matches("scheduler stopping runs=0 wait=30s\n", err, 1, true)
    assert.matches("INFO  scheduler stopped\n$", err)
  end)

  it("evaluates the last line even without a line end", function()
    local out, _, code = piped(dir, "x = 6\nx * 7")
    assert.equal(0, code)
    assert.equal("42\n", out)
  end)

  it("prints the helpers' output and waits for run_now's result before exiting", function()
    local out, err, code = piped(dir, 'jobs()\nnext_runs("0 2 * * *", 2)\nrun_now("hello")\n')
    assert.equal(0, code, err)
    assert.matches("^ID +TRIGGER +NEXT RUN +STATE +LAST RUN +RUNS\n", out)
    assert.matches("\nhello +interval%[1h%] +%S+ +scheduled +%- +%-\n", out)
    assert.matches("\n0 2 %* %* %*  %(%S+%)\n  %a%a%a %S+  in %S+\n  %a%a%a %S+  in %S+\n", out)
    assert.matches("run_now: job 'hello' starts on the next loop turn\n", out, 1, true)
    assert.matches("run_now: job 'hello' run 1: success in %S+\n$", out)
    assert.matches("hello ran job=hello run=1", err, 1, true)
  end)

  it("reports an error on stderr, goes on, and exits 1", function()
    local out, err, code = piped(dir, "error('boom')\n1+1\n")
    assert.equal(1, code)
    assert.equal("2\n", out)
    assert.matches("\nstdin:1: boom\nstack traceback:\n", err, 1, true)
  end)

  it("reports a chunk that the end of input cuts off", function()
    local out, err, code = piped(dir, "function f(\n")
    assert.equal(1, code)
    assert.equal("", out)
    assert.matches("\nstdin:1: <name> or '...' expected near <eof>\n", err, 1, true)
  end)

  it("takes the flags of moonbeat run and shows its own help", function()
    local out, code = support.sh(support.quote(BIN) .. " repl --help")
    assert.equal(0, code)
    assert.matches("usage: moonbeat repl [DIR] [options]", out, 1, true)
    assert.matches("run_now(id)", out, 1, true)
    out, code = support.sh(support.quote(BIN) .. " repl --frobnicate")
    assert.equal(2, code)
    assert.matches("^moonbeat: unknown option %-%-frobnicate\nusage: moonbeat repl", out)
    local _, err
    out, err, code = piped(dir, "1\n", "--log-format json")
    assert.equal(0, code)
    assert.equal("1\n", out)
    assert.matches('"msg":"scheduler stopped"}\n$', err)
  end)
end)

describe("moonbeat repl on a terminal", function()
  local dir, home
  before_each(function()
    dir = support.tempdir(JOBS)
    home = support.tempdir()
  end)
  after_each(function()
    support.remove_tree(dir)
    support.remove_tree(home)
  end)

  local ARGS
  before_each(function()
    ARGS = { "repl", dir, "--db", ":memory:", "--socket", home .. "/moonbeat.sock" }
  end)

  it("prints values, continues an unfinished chunk, and exits on Ctrl-D", function()
    local r = typed(ARGS, {
      expect("\n> "),
      send("1+1\r"), expect("\n2\n> "),
      send("function double(x)\r"), expect("\n>> "),
      send("return x * 2\r"), expect("\n>> "),
      send("end\r"), expect("\n> "),
      send("double(21)\r"), expect("\n42\n> "),
      send("{ 1, { a = 'x' } }\r"), expect('\n{ 1, { a = "x" } }\n> '),
      send("\4"), { exit = 20 },
    }, home)
    assert.equal(0, r.status)
    assert.matches("scheduler stopping runs=0 wait=30s\n", r.text, 1, true)
    assert.matches("scheduler stopped\n$", r.text)
    -- The terminal is given back as it was: echo, lines, Ctrl-C.
    assert.same({ echo = true, icanon = true, vintr = 3 }, r.tty)
  end)

  it("shuts down on SIGTERM while the prompt waits, and gives the terminal back", function()
    local r = typed(ARGS, {
      expect("\n> "),
      send("half typed"), expect("half typed"),
      { signal = "TERM" }, { exit = 20 },
    }, home)
    assert.equal(0, r.status)
    assert.matches("scheduler stopping runs=0 wait=30s signal=SIGTERM\n", r.text, 1, true)
    assert.matches("scheduler stopped\n$", r.text)
    assert.same({ echo = true, icanon = true, vintr = 3 }, r.tty)
  end)

  it("clears the line on Ctrl-C, also inside an unfinished chunk", function()
    typed(ARGS, {
      expect("\n> "),
      send("this is not lua"), send("\3"), expect("this is not lua^C\n> "),
      send("function broken(\r"), expect("\n>> "),
      send("\3"), expect("^C\n> "),
      send("2+2\r"), expect("\n4\n> "),
      send("\4"), { exit = 20 },
    }, home)
  end)

  it("takes a SIGINT as Ctrl-C while the prompt is up: the scheduler goes on", function()
    local r = typed(ARGS, {
      expect("\n> "),
      send("half a line"), expect("half a line"),
      { signal = "INT" }, expect("^C\n> "),
      send("scheduler.get_job('hello').id\r"), expect("\nhello\n> "),
      send("\4"), { exit = 20 },
    }, home)
    assert.equal(0, r.status)
    assert.not_matches("signal=SIGINT", r.text, 1, true)
  end)

  it("stops code that runs too long on Ctrl-C and keeps the prompt", function()
    typed(ARGS, {
      expect("\n> "),
      send("print('spinning') while true do end\r"), expect("\nspinning\n"),
      send("\3"), expect("interrupted!"), expect("\n> "),
      send("3*3\r"), expect("\n9\n> "),
      send("\4"), { exit = 20 },
    }, home)
  end)

  it("completes globals, table fields and job ids", function()
    typed(ARGS, {
      expect("\n> "),
      send("type(next_r\t"), expect("type(next_runs"),
      send(")\r"), expect("\nfunction\n> "),
      send("scheduler.resu\t"), expect("scheduler.resume_job"),
      send("\3"), expect("^C\n> "),
      -- Several candidates: Tab Tab lists them.
      send("scheduler.re\t\t"), expect("scheduler.remove_job"), expect("scheduler.resume_job"),
      send("\3"), expect("^C\n> "),
      -- A job id inside a string, closed by the completion.
      send('scheduler.get_job("hea\t'), expect('scheduler.get_job("heartbeat"'),
      send(").id\r"), expect("\nheartbeat\n> "),
      send("\4"), { exit = 20 },
    }, home)
  end)

  it("keeps history in ~/.moonbeat_history across sessions", function()
    typed(ARGS, {
      expect("\n> "),
      send("remembered = 41\r"), expect("\n> "),
      send("\4"), { exit = 20 },
    }, home)
    local f = assert(io.open(home .. "/.moonbeat_history"))
    local history = f:read("a")
    f:close()
    assert.equal("remembered = 41\n", history)
    typed(ARGS, {
      expect("\n> "),
      -- Up arrow recalls the line from the last session.
      send("\27[A"), expect("remembered = 41"),
      send("\r"), expect("\n> "),
      send("remembered + 1\r"), expect("\n42\n> "),
      send("\4"), { exit = 20 },
    }, home)
  end)

  it("prints log lines above the prompt, keeps the line being typed, and fires jobs meanwhile", function()
    support.write(dir .. "/tick.lua", [[
scheduler.add_job { id = "tick", trigger = { "interval", seconds = 0.2 },
  run = function(ctx) ctx.log.info("tick") print("tock " .. ctx.run_id) end }
]])
    local r = typed(ARGS, {
      expect("\n> "),
      send("1 +"),
      -- Two fires while the prompt waits.
      expect("INFO  tick job=tick run=1\n"), expect("INFO  tick job=tick run=2\n"),
      send(" 41\r"), expect("\n42\n> "),
      send("\4"), { exit = 20 },
    }, home)
    -- Each log line is written on a cleared line, and the prompt with
    -- what was typed is drawn again below it.
    assert.matches("\r\27%[K\r?%d[%d%- :.]+ INFO  tick job=tick run=1\r\n> 1 %+", r.output)
    -- So is what a job prints.
    assert.matches("\r\27%[K\r?tock 1\r\n> 1 %+", r.output)
  end)
end)

describe("moonbeat attach", function()
  local dir, home, socket, server
  before_each(function()
    dir = support.tempdir(JOBS)
    home = support.tempdir()
    socket = home .. "/run/moonbeat.sock"
    server = start_server(dir, socket, home)
  end)
  after_each(function()
    if server then stop_server(server) end
    support.remove_tree(dir)
    support.remove_tree(home)
  end)

  it("evaluates piped chunks inside the running scheduler and waits for run_now", function()
    local out, err, code = run_piped("attach --socket " .. support.quote(socket), table.concat({
      "jobs()",
      "x = 5",
      "x * 2",
      "run_now('hello')",
      "scheduler.get_job('heartbeat').trigger",
    }, "\n") .. "\n")
    assert.equal(0, code, err)
    assert.matches("^ID +TRIGGER .*\nhello +interval%[1h%]", out)
    assert.matches("\n10\nrun_now: job 'hello' starts on the next loop turn\n", out)
    assert.matches("\ncron%[0 2 %* %* %*%]\n", out)
    -- It may come with the answer to the next chunk, or at the end.
    assert.matches("\nrun_now: job 'hello' run 1: success in %S+\n", out)
    -- The run happened in the scheduler, and a new client starts afresh.
    assert.matches("hello ran job=hello run=1", slurp(server.log), 1, true)
    out, err, code = run_piped("attach --socket " .. support.quote(socket), "x\nerror('no')\n")
    assert.equal(1, code)
    assert.equal("nil\n", out)
    assert.matches("^stdin:1: no\n", err)
  end)

  it("completes job ids from the scheduler, shows later output at the prompt, and detaches on Ctrl-D", function()
    local r = typed({ "attach", "--socket", socket }, {
      expect("Ctrl-D detaches\n> "),
      send('scheduler.get_job("hea\t'), expect('scheduler.get_job("heartbeat"'),
      send(").id\r"), expect("\nheartbeat\n> "),
      send("run_now('hello')\r"), expect("starts on the next loop turn\n> "),
      expect("run_now: job 'hello' run 1: success in"),
      send("\4"), { exit = 20 },
    }, home)
    assert.equal(0, r.status)
    -- Still running, still answering.
    local out, _, code = run_piped("attach --socket " .. support.quote(socket), "1+1\n")
    assert.equal(0, code)
    assert.equal("2\n", out)
  end)

  it("says so and exits 1 when the scheduler goes away", function()
    local r = typed({ "attach", "--socket", socket }, {
      expect("Ctrl-D detaches\n> "),
      send("scheduler.shutdown()\r"),
      expect(("moonbeat: lost the scheduler on %s: "):format(socket)),
      { exit = 20 },
    }, home)
    assert.equal(1, r.status)
    local code = stop_server(server, false)
    server = nil
    assert.equal(0, code)
  end)

  it("refuses a bad eval, complete or repl_output request with one clear error", function()
    local client = assert(require("mb.control").connect(socket, 20))
    local function refused(cmd, args)
      local result, message, code = client:call(cmd, args)
      assert.is_nil(result)
      assert.equal("usage", code)
      return message
    end
    assert.equal("eval: text: required", refused("eval", {}))
    assert.equal("eval: text: expected a string, got number", refused("eval", { text = 1 }))
    assert.equal("complete: unknown argument 'colour'",
      refused("complete", { line = "x", colour = "red" }))
    assert.equal("complete: line: required", refused("complete", { word = "x" }))
    assert.equal("repl_output: unknown argument 'n'", refused("repl_output", { n = "1" }))
    -- The session is still usable.
    local r = client:call("eval", { text = "1+1" })
    assert.same({ status = "ok", output = "2\n", earlier = "" }, r)
    r = client:call("complete", { line = "scheduler.get_jo" })
    assert.same({ candidates = { "scheduler.get_job", "scheduler.get_jobs" } }, r)
    client:close()
  end)

  it("says when no scheduler listens, and refuses a bad option", function()
    local out, code = support.sh(support.quote(BIN) .. " attach --socket "
      .. support.quote(home .. "/none/moonbeat.sock"))
    assert.equal(1, code)
    assert.equal(("moonbeat: no scheduler is listening on %s/none/moonbeat.sock (start one "
      .. "with `moonbeat run`, or say where with --socket)\n"):format(home), out)
    out, code = support.sh(support.quote(BIN) .. " attach --sockett x")
    assert.equal(2, code)
    assert.matches("^moonbeat: unknown option %-%-sockett\nusage: moonbeat attach", out)
    out, code = support.sh(support.quote(BIN) .. " help attach")
    assert.equal(0, code)
    assert.matches("^usage: moonbeat attach %[%-%-socket PATH%]", out)
  end)
end)
