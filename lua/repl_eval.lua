-- Evaluating what is typed at the REPL, wherever the front end is: in
-- the scheduler's own process (`moonbeat repl`) or at the other end of
-- the control socket (`moonbeat attach`). Both halves only trade text:
--
--   eval(env, text)           -> { status = "ok" | "incomplete" | "error",
--                                  output = text }
--   complete(env, line, word) -> { candidate, ... }
--
-- An environment reads globals through _G; its `print` writes into the
-- output of the evaluation under way, or, between evaluations (a job
-- defined at the prompt that prints, a result that arrives later), to
-- the environment's write function.

local pretty = require "mb.pretty"

local M = {}

-- What each environment keeps beside its variables.
local state_of = setmetatable({}, { __mode = "k" })

local KEYWORDS = {
  "and", "break", "do", "else", "elseif", "end", "false", "for",
  "function", "goto", "if", "in", "local", "nil", "not", "or", "repeat",
  "return", "then", "true", "until", "while",
}

-- A fresh environment. opts.env: the table to make it from (default: a
-- new one that reads through to _G); opts.write(text): where output
-- goes between evaluations (default stdout); opts.job_ids(): the ids to
-- complete inside a string (default: those of env.scheduler).
function M.new_env(opts)
  opts = opts or {}
  local env = opts.env or setmetatable({}, { __index = _G })
  state_of[env] = {
    write = opts.write or function(text) io.stdout:write(text) end,
    job_ids = opts.job_ids,
  }
  env.print = function(...)
    local parts = table.pack(...)
    for i = 1, parts.n do parts[i] = tostring(parts[i]) end
    M.output(env, table.concat(parts, "\t", 1, parts.n) .. "\n")
  end
  return env
end

-- Text for the person at the prompt, from print or a helper.
function M.output(env, text)
  local st = state_of[env]
  if st.buffer then
    st.buffer[#st.buffer + 1] = text
  else
    st.write(text)
  end
end

-- The chunk for text: an expression first (so that its value prints, as
-- lua's prompt does), else statements. Errors as load gives them. The
-- expression's values pass through a call, so that its own calls are
-- not tail calls: an error in one is still reported at the line typed.
local function compile(env, text)
  local chunk = load("return (function(...) return ... end)(" .. text .. "\n)",
    "=stdin", "t", env)
    or load("return " .. text, "=stdin", "t", env)
  if chunk then return chunk end
  return load(text, "=stdin", "t", env)
end

-- An error's traceback down to the typed chunk: what called it (this
-- module, the front end) is noise at a prompt.
local function traceback(err)
  local msg = type(err) == "string" and err
    or ("(error object is a %s value: %s)"):format(type(err),
      pretty.format(err))
  local trace = debug.traceback(msg, 2)
  local cut = trace:find("\n[^\n]*in main chunk\n")
  if cut then
    trace = trace:sub(1, trace:find("\n", cut + 1, true) - 1)
  end
  return trace
end

-- Stop code that runs longer than limit seconds of processor time
-- (checked every few thousand instructions): for evaluations that
-- nobody can interrupt with Ctrl-C.
local function set_limit(limit)
  local clock = os.clock
  local deadline = clock() + limit
  debug.sethook(function()
    if clock() > deadline then
      debug.sethook()
      error(("stopped: ran longer than %gs"):format(limit), 2)
    end
  end, "", 10000)
end

-- Evaluate text. opts.limit: seconds of processor time the code may
-- take; opts.stream: what the code prints goes to the write function as
-- it comes, not into the output (a local prompt shows it at once).
-- Results print as pretty does, a string as it is (as print would);
-- several values are separated by tabs.
function M.eval(env, text, opts)
  local chunk, err = compile(env, text)
  if not chunk then
    -- Code that stops at the end of the text may go on on the next line.
    local status = err:sub(-5) == "<eof>" and "incomplete" or "error"
    return { status = status, output = err .. "\n" }
  end
  opts = opts or {}
  local st = state_of[env]
  local outer = st.buffer
  st.buffer = not opts.stream and {} or nil
  if opts.limit then set_limit(opts.limit) end
  local results = table.pack(xpcall(chunk, traceback))
  if opts.limit then debug.sethook() end
  local printed = st.buffer and table.concat(st.buffer) or ""
  st.buffer = outer
  if not results[1] then
    return { status = "error", output = printed .. results[2] .. "\n" }
  end
  local values = {}
  for i = 2, results.n do
    values[#values + 1] = pretty.format(results[i], { top = true })
  end
  if #values > 0 then
    printed = printed .. table.concat(values, "\t") .. "\n"
  end
  return { status = "ok", output = printed }
end

-- ---- completion ----

-- Where the string the line ends inside starts (its quote), or nil.
local function open_string(line)
  local quote, start
  local i = 1
  while i <= #line do
    local c = line:sub(i, i)
    if quote then
      if c == "\\" then
        i = i + 1
      elseif c == quote then
        quote = nil
      end
    elseif c == '"' or c == "'" then
      quote, start = c, i
    elseif c == "-" and line:sub(i, i + 1) == "--" then
      return nil -- a comment runs to the end of the line
    end
    i = i + 1
  end
  return quote and start or nil
end

local function job_ids(env)
  local st = state_of[env]
  if st.job_ids then return st.job_ids() end
  local api = rawget(env, "scheduler")
  if type(api) ~= "table" or type(api.get_jobs) ~= "function" then return {} end
  local ok, jobs = pcall(api.get_jobs)
  local ids = {}
  if ok then
    for _, job in ipairs(jobs) do ids[#ids + 1] = job.id end
  end
  return ids
end

-- The fields a value offers: a table's keys and what its metatable's
-- __index tables add; a string's methods.
local function fields_of(value)
  local names, seen = {}, {}
  local function add(t, depth)
    if type(t) ~= "table" or seen[t] or depth > 5 then return end
    seen[t] = true
    for k in next, t do
      if type(k) == "string" then names[k] = true end
    end
    local mt = getmetatable(t)
    if type(mt) == "table" then add(rawget(mt, "__index"), depth + 1) end
  end
  if type(value) == "string" then
    add(string, 0)
  elseif type(value) == "table" then
    add(value, 0)
  else
    local ok, mt = pcall(getmetatable, value)
    if ok and type(mt) == "table" then add(rawget(mt, "__index"), 0) end
  end
  return names
end

-- What a dotted path names in env, or nil. Indexing is plain: a table's
-- __index runs as it would in code.
local function resolve(env, path)
  local value = env
  for name in path:gmatch("[^.]+") do
    if type(value) ~= "table" and type(value) ~= "string"
      and type(value) ~= "userdata" then
      return nil
    end
    local ok, v = pcall(function() return value[name] end)
    if not ok then return nil end
    value = v
  end
  return value
end

local function sorted(set)
  local list = {}
  for k in pairs(set) do list[#list + 1] = k end
  table.sort(list)
  return list
end

-- Candidates for word, the end of line: job ids inside a string;
-- globals, keywords, or fields after "name." and methods after
-- "name:". Each candidate replaces word whole.
function M.complete(env, line, word)
  line = line or ""
  local quote = open_string(line)
  if quote then
    word = word or line:sub(quote + 1)
    local found = {}
    for _, id in ipairs(job_ids(env)) do
      if id:sub(1, #word) == word then found[id] = true end
    end
    return sorted(found)
  end
  word = word or line:match("[%w_.:]*$")
  local base, sep, partial = word:match("^(.-)([.:]?)([%w_]*)$")
  local names
  if sep == "" then
    names = {}
    for _, k in ipairs(KEYWORDS) do names[k] = true end
    for k in pairs(fields_of(env)) do names[k] = true end
    for k in pairs(fields_of(_G)) do names[k] = true end
    base = ""
  else
    if base == "" or base:find(":", 1, true) then return {} end
    local value = resolve(env, base)
    if value == nil then return {} end
    names = fields_of(value)
    base = base .. sep
    if sep == ":" then
      -- Only what can be called as a method.
      for k in pairs(names) do
        local ok, v = pcall(function() return value[k] end)
        if not ok or (type(v) ~= "function" and not getmetatable(v)) then
          names[k] = nil
        end
      end
    end
  end
  local found = {}
  for k in pairs(names) do
    if k:sub(1, #partial) == partial and k:match("^[%a_][%w_]*$") then
      found[base .. k] = true
    end
  end
  return sorted(found)
end

return M
