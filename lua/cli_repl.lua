-- `moonbeat repl [DIR]`: a scheduler and an interactive Lua prompt on
-- the same loop. lua/main.lua opens the daemon with the flags `run`
-- takes and hands it here.

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
  local served, err, code = daemon.serve(d, {
    shutdown_timeout = opts.shutdown_timeout,
    socket = opts.socket,
    -- Ctrl-C is a key at the prompt; a SIGINT from elsewhere clears the
    -- line too while the REPL has the terminal.
    on_sigint = session.interactive and session.interrupt or nil,
    on_stopped = function()
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

return M
