-- What the REPL does with a chunk of text, in-process: evaluation
-- (lua/repl_eval.lua), completion, and the helpers of its environment
-- (lua/repl_env.lua) on a scheduler on the virtual clock.
local harness = require "tests.harness"
local repl_env = require "mb.repl_env"
local repl_eval = require "mb.repl_eval"

describe("repl eval", function()
  local env, written
  before_each(function()
    written = {}
    env = repl_eval.new_env { write = function(text) written[#written + 1] = text end }
  end)

  local function eval(text, opts) return repl_eval.eval(env, text, opts) end

  it("prints an expression's value, as lua's prompt does", function()
    assert.same({ status = "ok", output = "2\n" }, eval("1+1"))
    assert.same({ status = "ok", output = "1\thi\tnil\n" }, eval("1, 'hi', nil"))
    assert.same({ status = "ok", output = "{ 1, 2, { a = 1 } }\n" }, eval("{1, 2, {a = 1}}"))
  end)

  it("runs statements, keeping globals from one chunk to the next", function()
    assert.same({ status = "ok", output = "" }, eval("x = 20"))
    assert.same({ status = "ok", output = "" }, eval("local y = 1"))
    assert.same({ status = "ok", output = "22\n" }, eval("x + 2"))
    assert.is_nil(rawget(_G, "x"))
  end)

  it("puts what print writes before the values, in order", function()
    assert.same({ status = "ok", output = "a\t1\nb\n3\n" },
      eval("print('a', 1) print('b') return 3"))
  end)

  it("says a chunk that stops at the end of the text is incomplete", function()
    for _, text in ipairs { "function f(x)", "x = ", "for i = 1, 3 do", "t = {",
      "s = [[", "f(1,", "if x then\n  y = 1" } do
      assert.equal("incomplete", eval(text).status, text)
    end
    assert.same({ status = "ok", output = "42\n" }, eval("function f(x)\n  return x * 2\nend\nreturn f(21)"))
  end)

  it("reports a syntax error with the line", function()
    assert.same({ status = "error", output = "stdin:1: unexpected symbol near '*'\n" },
      eval("x = 1 +* 2"))
    assert.same({ status = "error", output = "stdin:2: 'end' expected (to close 'do' at line 1) near 'until'\n" },
      eval("do\nuntil"))
  end)

  it("reports a runtime error with its traceback down to the chunk", function()
    local r = eval("local function boom() error('boom') end\nboom()")
    assert.equal("error", r.status)
    assert.equal("stdin:1: boom\nstack traceback:\n\t[C]: in function 'error'\n"
      .. "\tstdin:1: in local 'boom'\n\tstdin:2: in main chunk\n", r.output)
  end)

  it("describes an error value that is not a string", function()
    local r = eval("error({ code = 7 })")
    assert.equal("error", r.status)
    assert.matches("^%(error object is a table value: { code = 7 }%)\n", r.output)
  end)

  it("keeps what was printed before an error", function()
    local r = eval("print('before') error('after', 0)")
    assert.matches("^before\nafter\n", r.output)
  end)

  it("stops code that runs past the limit", function()
    local r = eval("while true do end", { limit = 0.05 })
    assert.equal("error", r.status)
    assert.matches("^stdin:1: stopped: ran longer than 0.05s\n", r.output)
    assert.is_nil(debug.gethook())
  end)

  it("streams what the code prints to the write function when asked", function()
    assert.same({ status = "ok", output = "3\n" }, eval("print('now') return 3", { stream = true }))
    assert.same({ "now\n" }, written)
  end)

  it("sends print between evaluations to the write function", function()
    eval("function later() print('later', 2) end")
    env.later()
    assert.same({ "later\t2\n" }, written)
  end)
end)

describe("repl completion", function()
  local env
  before_each(function()
    env = repl_eval.new_env {}
    env.scheduler = { add_job = 1, add_listener = 2, get_job = 3 }
    env.t = { alpha = { beta = 1, bravo = 2 }, ["not a name"] = 1 }
    env.s = "text"
  end)

  local function complete(line, word) return repl_eval.complete(env, line, word) end

  it("completes globals, keywords and the environment's own names", function()
    assert.same({ "print" }, complete("pri"))
    assert.same({ "function" }, complete("x = func"))
    assert.same({ "scheduler" }, complete("sched"))
    assert.same({ "select", "setmetatable" }, complete("(se"))
  end)

  it("completes the fields of a table after a dot, at any depth", function()
    assert.same({ "scheduler.add_job", "scheduler.add_listener" }, complete("scheduler.ad"))
    assert.same({ "t.alpha.beta", "t.alpha.bravo" }, complete("x = t.alpha.b"))
    assert.same({ "t.alpha" }, complete("t."))
    assert.same({ "string.format" }, complete("string.form"))
    assert.same({}, complete("nothing.here"))
    assert.same({}, complete("t.alpha.beta.x"))
  end)

  it("completes methods after a colon", function()
    assert.same({ "s:upper" }, complete("s:up"))
    assert.same({}, complete("t:al"))
  end)

  it("completes job ids inside a string", function()
    env.scheduler = {
      get_jobs = function() return { { id = "heartbeat" }, { id = "hello" }, { id = "sync" } } end,
    }
    assert.same({ "heartbeat", "hello" }, complete('scheduler.get_job("he'))
    assert.same({ "heartbeat" }, complete("run_now('hea"))
    assert.same({ "heartbeat", "hello", "sync" }, complete('x = "'))
    -- A closed string is code again; a comment is not completed.
    assert.same({ "print" }, complete('x = "a" .. pri'))
    assert.same({}, complete('-- "he'))
  end)

  it("takes the word readline found when it is given", function()
    assert.same({ "scheduler.get_job" }, complete("(scheduler.get", "scheduler.get"))
  end)
end)

describe("repl helpers", function()
  local h, env, close, written
  local function out()
    local text = table.concat(written)
    written = {}
    return text
  end
  before_each(function()
    h = harness.new {}
    written = {}
    env, close = repl_env.new({ sched = h.core, api = h.scheduler },
      function(text) written[#written + 1] = text end)
    h.scheduler.add_job { id = "tick", trigger = { "interval", seconds = 10 },
      run = function() end }
    h.scheduler.add_job { id = "nightly", trigger = "0 2 * * *", paused = true,
      run = function() end }
    h.scheduler.add_job { id = "broken", trigger = { "interval", hours = 1 },
      run = function() error("disk full", 0) end }
  end)
  after_each(function()
    close()
    h:close()
  end)

  local function eval(text)
    local r = repl_eval.eval(env, text)
    assert.equal("ok", r.status, r.output)
    return r.output
  end

  it("has the scheduler API as `scheduler`", function()
    assert.equal("tick", eval("scheduler.get_job('tick').id"):match("^(%S+)"))
  end)

  it("is a job file's environment: what would block the loop is refused", function()
    local r = repl_eval.eval(env, "os.exit(1)")
    assert.equal("error", r.status)
    assert.matches("^stdin:1: os.exit would stop the scheduler and every job", r.output)
    r = repl_eval.eval(env, "io.read()")
    assert.matches("^stdin:1: io.read reads the terminal and blocks the scheduler", r.output)
    assert.equal("table\n", eval("type(require('moonbeat.json'))"))
  end)

  it("jobs() prints a table of the jobs", function()
    h:advance("10s")
    assert.equal(
      "ID       TRIGGER          NEXT RUN                   STATE      LAST RUN     RUNS\n" ..
      "tick     interval[10s]    2026-01-01T00:00:20+00:00  scheduled  success 0us  1 ok\n" ..
      "broken   interval[1h]     2026-01-01T01:00:00+00:00  scheduled  -            -\n" ..
      "nightly  cron[0 2 * * *]  -                          paused     -            -\n",
      eval("jobs()"))
  end)

  it("next_runs prints a job's next fires", function()
    assert.equal("job 'tick'  interval[10s]  (UTC)\n" ..
      "  Thu 2026-01-01T00:00:10+00:00  in 10s\n" ..
      "  Thu 2026-01-01T00:00:20+00:00  in 20s\n" ..
      "  Thu 2026-01-01T00:00:30+00:00  in 30s\n", eval("next_runs('tick', 3)"))
    assert.equal("job 'nightly'  cron[0 2 * * *]  (UTC)\n  (paused)\n",
      eval("next_runs(scheduler.get_job('nightly'))"))
  end)

  it("next_runs previews a crontab string or a trigger table", function()
    assert.equal("0 2 * * mon  (UTC)\n" ..
      "  Mon 2026-01-05T02:00:00+00:00  in 4d2h\n" ..
      "  Mon 2026-01-12T02:00:00+00:00  in 11d2h\n", eval("next_runs('0 2 * * mon', 2)"))
    assert.equal('{ "interval", hours = 6, timezone = "Asia/Tokyo" }  (Asia/Tokyo)\n' ..
      "  Thu 2026-01-01T15:00:00+09:00  in 6h\n",
      eval("next_runs({ 'interval', hours = 6, timezone = 'Asia/Tokyo' }, 1)"))
  end)

  it("next_runs refuses what is not a schedule, with one clear message", function()
    local r = repl_eval.eval(env, "next_runs('0 25 * * *')")
    assert.matches("^stdin:1: next_runs: trigger: '0 25 %* %* %*': hour: 25 is out of range 0%-23\n", r.output)
    r = repl_eval.eval(env, "next_runs(42)")
    assert.matches("^stdin:1: next_runs: expected a job id, a job, a trigger table or a crontab string, got number\n", r.output)
    r = repl_eval.eval(env, "next_runs('tick', 0)")
    assert.matches("^stdin:1: next_runs: n: expected a count from 1 to 1000, got 0\n", r.output)
  end)

  it("run_now runs a job and prints its result when the run ends", function()
    assert.equal("run_now: job 'tick' starts on the next loop turn\n", eval("run_now('tick')"))
    assert.same({}, written)
    h:advance(0)
    assert.equal("run_now: job 'tick' run 1: success in 0us\n", out())
    eval("run_now(scheduler.get_job('broken'))")
    h:advance(0)
    assert.equal("run_now: job 'broken' run 2: error in 0us: disk full\n", out())
  end)

  it("run_now says when the fire is skipped", function()
    local time = require "moonbeat.time"
    h.scheduler.add_job { id = "slow", trigger = { "date", delay = 0 },
      run = function() time.sleep(60) end }
    h:advance(0)
    eval("run_now('slow')")
    h:advance(0)
    assert.matches("^run_now: job 'slow': fire skipped", out())
    h:advance("60s")
  end)

  it("run_now refuses an unknown job", function()
    local r = repl_eval.eval(env, "run_now('nope')")
    assert.equal("error", r.status)
    assert.matches("^stdin:1: run_now: no job with id 'nope'\n", r.output)
  end)
end)
