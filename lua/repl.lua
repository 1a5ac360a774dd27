-- The REPL's front end: prompts, lines that continue a chunk, history,
-- and where output goes. It talks to an evaluator, which may live in
-- this process (`moonbeat repl`) or in a scheduler at the other end of
-- the control socket (`moonbeat attach`):
--
--   evaluator.eval(text, done)      calls done{status =, output =} once,
--                                   now or later
--   evaluator.complete(line, word)  -> candidates replacing word

local term = require "mb.term"

local M = {}

M.PROMPT, M.MORE = "> ", ">> "

-- The history file: ~/.moonbeat_history, or none without $HOME.
function M.history_path()
  local home = os.getenv("HOME")
  if home and home ~= "" then return home .. "/.moonbeat_history" end
  return nil
end

-- Start reading stdin on the loop. opts: on_end(session) once the input
-- ends (Ctrl-D, or the end of a pipe); interruptible (Ctrl-C stops the
-- code a line runs); sigint (the terminal takes SIGINT itself: no
-- scheduler does); log_format, log_level (the log's, to draw it above
-- the prompt). Returns the session: interactive (stdin is a terminal),
-- failed (an evaluation raised an error), interrupt() (drop the line
-- being typed, as Ctrl-C does; false when stdin is not the REPL's
-- terminal), close().
function M.start(evaluator, opts)
  local session = { interactive = term.interactive(), failed = false }
  local pending, pending_error -- a chunk that goes on, and why
  local reading = true
  local on_line

  local function ask()
    if reading then term.read(pending and M.MORE or M.PROMPT, on_line) end
  end

  local function show(result)
    if result.output ~= "" then
      term.write(result.output, result.status == "ok" and "stdout" or "stderr")
    end
  end

  local function finished(text, result)
    if result.status == "incomplete" then
      pending, pending_error = text, result.output
    else
      pending, pending_error = nil, nil
      if session.interactive then term.add_history(text) end
      if result.status == "error" then session.failed = true end
      show(result)
    end
    ask()
  end

  on_line = function(line)
    if line == nil then
      reading = false
      if pending then
        -- The input ended inside a chunk: that is a syntax error.
        session.failed = true
        show { status = "error", output = pending_error }
      end
      if session.interactive then term.write("\n") end
      opts.on_end(session)
      return
    end
    if not pending and not line:find("%S") then return ask() end
    local text = pending and (pending .. "\n" .. line) or line
    evaluator.eval(text, function(result) finished(text, result) end)
  end

  term.open {
    history = M.history_path(),
    complete = function(line, word) return evaluator.complete(line, word) end,
    interrupt = function()
      pending, pending_error = nil, nil
      return M.PROMPT
    end,
    interruptible = opts.interruptible,
    sigint = opts.sigint,
    log_format = opts.log_format,
    log_level = opts.log_level,
  }
  ask()

  function session.interrupt()
    return term.interrupt()
  end

  function session.close()
    reading = false
    term.close()
  end

  return session
end

return M
