-- `moonbeat repl [DIR]`: a scheduler and an interactive Lua prompt on
-- the same loop. lua/main.lua opens the daemon with the flags `run`
-- takes and hands it here. `moonbeat attach`: the same prompt,
-- evaluating inside a running scheduler over its control socket
-- (lua/repl_control.lua is the other end).

local control = require "mb.control"
local daemon = require "mb.daemon"
local front = require "mb.repl"
local repl_env = require "mb.repl_env"
local repl_eval = require "mb.repl_eval"
local term = require "mb.term"

local M = {}

M.USAGE = [[
usage: moonbeat repl [DIR] [options]

Schedules the jobs in DIR (default: jobs/) as `moonbeat run` does, with
an interactive Lua prompt on the same loop: jobs keep firing while the
prompt waits. Expressions print their values; a chunk that is not
finished continues on the next line.

  scheduler            the scheduler API (add_job, get_job, pause_job...)
  jobs()               print a table of the jobs
  next_runs(what, n)   print the next n fires of a job (id or object), a
                       trigger table or a crontab string (n: 5)
  run_now(id)          run a job now; its result prints when it ends

On a terminal: line editing, history in ~/.moonbeat_history, Tab
completes globals, fields (scheduler.ad<Tab>) and job ids inside a
string; Ctrl-C clears the line (or stops code that runs too long);
Ctrl-D shuts the scheduler down gracefully, as SIGTERM does. With stdin
not a terminal, each chunk read is evaluated and its results printed;
the end of input shuts down gracefully, and the exit status is 1 when
a chunk failed.

Options: those of `moonbeat run` (moonbeat help run).
]]

M.ATTACH_USAGE = [[
usage: moonbeat attach [--socket PATH]

The prompt of `moonbeat repl`, evaluating inside a scheduler that is
already running (`moonbeat run` or `moonbeat repl`), over its control
socket: `scheduler`, jobs(), next_runs() and run_now() act on that
scheduler, and globals you set live there until you detach. Output that
comes later (run_now results) shows at the prompt within a second.
Ctrl-D detaches; the scheduler goes on. With stdin not a terminal, each
chunk read is evaluated, run_now results are waited for, and the exit
status is 1 when a chunk failed.

An evaluation runs on the scheduler's loop: it is stopped after 10s of
processor time.

Options:
  --socket PATH  the scheduler's control socket (default:
                 $XDG_RUNTIME_DIR/moonbeat/moonbeat.sock, else
                 /tmp/moonbeat-UID/moonbeat.sock)
  -h, --help     show this help
]]

-- Serve daemon d with the prompt until the scheduler stops. opts:
-- shutdown_timeout, socket, log_format, log_level. Returns the exit
-- code.
function M.serve(d, opts)
  local env, close_env = repl_env.new(d, function(text) term.write(text) end)
  local evaluator = {
    eval = function(text, done)
      done(repl_eval.eval(env, text, { stream = true }))
    end,
    complete = function(line, word)
      return repl_eval.complete(env, line, word)
    end,
  }
  local session = front.start(evaluator, {
    interruptible = true,
    log_format = opts.log_format,
    log_level = opts.log_level,
    on_end = function(s)
      s.close()
      d.api.shutdown { wait = true }
    end,
  })
  -- Jobs that print (through the global print) print above the prompt.
  local plain_print = print
  if session.interactive then
    _G.print = function(...)
      local parts = table.pack(...)
      for i = 1, parts.n do parts[i] = tostring(parts[i]) end
      term.write(table.concat(parts, "\t", 1, parts.n) .. "\n")
    end
  end
  local served, err, code = daemon.serve(d, {
    shutdown_timeout = opts.shutdown_timeout,
    socket = opts.socket,
    -- Ctrl-C is a key at the prompt; a SIGINT from elsewhere clears the
    -- line too while the REPL has the terminal.
    on_sigint = session.interactive and session.interrupt or nil,
    on_stopped = function()
      _G.print = plain_print
      close_env()
      session.close()
    end,
  })
  if not served then
    io.stderr:write("moonbeat: ", err, "\n")
    return code
  end
  return (session.failed and not session.interactive) and 1 or 0
end

-- How often an attached prompt asks for output that came later.
M.POLL_SECONDS = 1

local function attach_options(args)
  local socket
  local i = 1
  while i <= #args do
    local a = args[i]
    if a == "-h" or a == "--help" then return { help = true } end
    if a == "--socket" then
      socket = args[i + 1]
      if not socket then return nil, "option --socket needs a value" end
      i = i + 1
    elseif a:match("^%-%-socket=") then
      socket = a:sub(#"--socket=" + 1)
    elseif a:match("^%-") then
      return nil, ("unknown option %s"):format(a)
    else
      return nil, ("attach takes no arguments, got '%s'"):format(a)
    end
    i = i + 1
  end
  return { socket = socket }
end

-- `moonbeat attach [--socket PATH]`: returns the exit code.
function M.attach(args)
  local opts, oerr = attach_options(args)
  if not opts then
    io.stderr:write("moonbeat: ", oerr, "\n", M.ATTACH_USAGE)
    return 2
  end
  if opts.help then
    io.stdout:write(M.ATTACH_USAGE)
    return 0
  end
  local client, err = control.connect(opts.socket)
  if not client then
    io.stderr:write("moonbeat: ", err, "\n")
    return 1
  end
  local status, code
  status, err = client:call("status", {})
  if status then
    -- Also opens this client's session on the other end.
    local _, rerr, rcode = client:call("repl_output", {})
    if rcode == "usage" then
      err = ("the scheduler on %s has no REPL commands"):format(client.path)
    end
    if rerr then status, err = nil, err or rerr end
  end
  if not status then
    client:close()
    io.stderr:write("moonbeat: ", err, "\n")
    return 1
  end

  local session
  local lost = false
  -- The scheduler went away (or stopped answering): say so and end.
  local function lose(message)
    lost = true
    term.write(("moonbeat: lost the scheduler on %s: %s\n"):format(client.path,
      tostring(message):gsub("^the scheduler on %S+ ", "it ")), "stderr")
    session.close()
  end
  local function broken() return client.conn == nil end

  local evaluator = {
    eval = function(text, done)
      local r, message = client:call("eval", { text = text })
      if not r then
        if broken() then return lose(message) end
        return done { status = "error", output = message .. "\n" }
      end
      if r.earlier ~= "" then term.write(r.earlier) end
      done(r)
    end,
    complete = function(line, word)
      local r = client:call("complete", { line = line, word = word })
      return r and r.candidates or {}
    end,
  }

  -- Output that came since the last request; false when the connection
  -- is gone. Otherwise how many run_now results are still to come.
  local function fetch()
    local r, message = client:call("repl_output", {})
    if not r then
      lose(message)
      return false
    end
    if r.output ~= "" then term.write(r.output) end
    return r.pending
  end

  local function poll()
    if fetch() then term.after(M.POLL_SECONDS, poll) end
  end

  session = front.start(evaluator, {
    sigint = true,
    on_end = function(s)
      -- Wait for run_now results before detaching: they are what a
      -- script piped in asked for.
      local function drain()
        local pending = fetch()
        if pending == false then return end
        if pending > 0 then return term.after(0.1, drain) end
        s.close()
      end
      drain()
    end,
  })
  if session.interactive then
    term.write(("attached to the scheduler on %s (pid %d, %d jobs); "
      .. "Ctrl-D detaches\n"):format(client.path, status.pid, status.jobs))
  end
  term.after(M.POLL_SECONDS, poll)
  term.run()
  client:close()
  if lost then return 1 end
  return (session.failed and not session.interactive) and 1 or 0
end

return M
