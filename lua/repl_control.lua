-- The REPL's commands on the control socket, so that `moonbeat attach`
-- evaluates inside a running scheduler. Each client has an environment
-- of its own (lua/repl_env.lua), made at its first request and let go
-- when it hangs up:
--
--   eval {text}            -> {status, output, earlier}
--   complete {line, word}  -> {candidates = [...]}
--   repl_output {}         -> {output, pending}
--
-- What prints between requests (a run_now result, a job defined at the
-- prompt that prints) waits in the session: `earlier` and `output` of
-- repl_output hand it over; `pending` counts run_now results to come.

local control = require "mb.control"

-- Loaded with the first request: a scheduler nobody attaches to starts
-- without them.
local function repl_env() return require "mb.repl_env" end
local function repl_eval() return require "mb.repl_eval" end

local M = {}

-- Processor seconds one evaluation may take: it runs on the scheduler's
-- loop, and nobody can press Ctrl-C on it.
M.LIMIT = 10
-- Output kept for a client that does not ask for it; more is dropped.
M.MAX_WAITING = 1024 * 1024

local function usage(message) return nil, message, "usage" end

-- The client's REPL state, made on first use.
local function repl_of(d, session)
  local repl = session.repl
  if repl then return repl end
  repl = { waiting = {}, size = 0, dropped = false }
  repl.env, repl.close, repl.pending = repl_env().new(d, function(text)
    if repl.size + #text > M.MAX_WAITING then
      repl.dropped = true
      return
    end
    repl.waiting[#repl.waiting + 1] = text
    repl.size = repl.size + #text
  end)
  session.repl = repl
  local previous = session.on_close
  session.on_close = function(s)
    repl.close()
    if previous then previous(s) end
  end
  return repl
end

local function take_waiting(repl)
  local text = table.concat(repl.waiting)
  if repl.dropped then text = text .. "(more output was dropped)\n" end
  repl.waiting, repl.size, repl.dropped = {}, 0, false
  return text
end

-- args holds only the given string fields.
local function check(name, args, fields, required)
  for k, v in pairs(args) do
    if not fields[k] then
      return usage(("%s: unknown argument '%s'"):format(name, tostring(k)))
    end
    if type(v) ~= "string" then
      return usage(("%s: %s: expected a string, got %s"):format(name, k,
        type(v)))
    end
  end
  if required and args[required] == nil then
    return usage(("%s: %s: required"):format(name, required))
  end
  return true
end

local commands = control.commands

function commands.eval(d, args, session)
  local ok, err, code = check("eval", args, { text = true }, "text")
  if not ok then return nil, err, code end
  local repl = repl_of(d, session)
  local earlier = take_waiting(repl)
  local result = repl_eval().eval(repl.env, args.text, { limit = M.LIMIT })
  result.earlier = earlier
  return result
end

function commands.complete(d, args, session)
  local ok, err, code = check("complete", args, { line = true, word = true },
    "line")
  if not ok then return nil, err, code end
  local repl = repl_of(d, session)
  local found = repl_eval().complete(repl.env, args.line, args.word)
  return { candidates = control.list(found) }
end

function commands.repl_output(d, args, session)
  local ok, err, code = check("repl_output", args, {})
  if not ok then return nil, err, code end
  local repl = repl_of(d, session)
  return { output = take_waiting(repl), pending = repl.pending() }
end

return M
