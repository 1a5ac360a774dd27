-- moonbeat.exec: run a command from a job's run without blocking the
-- loop. No shell is involved unless exec.shell is used. The command runs
-- in a process group of its own, and the whole group is killed when its
-- timeout passes, when the run ends first (timeout, cancellation), and
-- when the command exits (so nothing it started in the background is
-- left running). See host/exec.c.

local core = require "moonbeat.core.exec"
local duration = require "mb.duration"

local M = {}

-- What is kept of each of stdout and stderr unless max_output says
-- otherwise; the rest is read and dropped, and the result says
-- truncated = true.
M.MAX_OUTPUT = 1024 * 1024

local OPTIONS = {
  env = true, cwd = true, stdin = true, timeout = true, max_output = true,
}

-- Misuse is raised at the caller of run or shell (see checked).
local function fail(name, msg)
  error(name .. ": " .. msg, 0)
end

local function check_env(name, env)
  if type(env) ~= "table" then
    fail(name, "env must be a table of NAME = value, got " .. type(env))
  end
  local out = {}
  for k, v in pairs(env) do
    if type(k) ~= "string" or k == "" or k:find("[=%z]") then
      fail(name, ("env: %s is not a variable name"):format(
        type(k) == "string" and ("'" .. k .. "'") or tostring(k)))
    end
    if v == false then
      out[k] = false
    elseif type(v) == "string" or type(v) == "number" then
      v = tostring(v)
      if v:find("%z") then fail(name, ("env.%s holds a NUL byte"):format(k)) end
      out[k] = v
    else
      fail(name, ("env.%s must be a string, a number or false, got %s")
        :format(k, type(v)))
    end
  end
  return out
end

-- Check a run{} table; returns argv and options for the host.
local function check(name, spec)
  if type(spec) ~= "table" then
    fail(name, ('expected a table { "cmd", "arg", ... }, got %s')
      :format(type(spec)))
  end
  local argv, n = {}, 0
  for k in pairs(spec) do
    if math.type(k) == "integer" then
      if k > n then n = k end
    elseif not OPTIONS[k] then
      fail(name, ("unknown option '%s'"):format(tostring(k)))
    end
  end
  if n == 0 then fail(name, "no command given") end
  for i = 1, n do
    local a = spec[i]
    if type(a) == "number" then a = tostring(a) end
    if type(a) ~= "string" then
      fail(name, ("argument %d must be a string, got %s"):format(i, type(a)))
    end
    if a:find("%z") then
      fail(name, ("argument %d holds a NUL byte"):format(i))
    end
    argv[i] = a
  end
  local opts = {}
  if spec.env ~= nil then opts.env = check_env(name, spec.env) end
  for _, field in ipairs { "cwd", "stdin" } do
    local v = spec[field]
    if v ~= nil and type(v) ~= "string" then
      fail(name, ("%s must be a string, got %s"):format(field, type(v)))
    end
    opts[field] = v
  end
  if spec.timeout ~= nil and spec.timeout ~= false then
    local seconds, err = duration.parse(spec.timeout)
    if not seconds then fail(name, "timeout: " .. err) end
    if seconds > 0 then opts.timeout = seconds end
  end
  opts.max_output = M.MAX_OUTPUT
  if spec.max_output ~= nil then
    local m = spec.max_output
    if math.type(m) ~= "integer" or m < 0 then
      fail(name, ("max_output must be a whole number of bytes >= 0, got %s")
        :format(tostring(m)))
    end
    opts.max_output = m
  end
  return argv, opts
end

local function checked(name, spec)
  local ok, argv, opts = pcall(check, name, spec)
  if not ok then error(argv, 3) end
  return argv, opts
end

-- run{ "cmd", "arg", ..., env =, cwd =, stdin =, timeout =, max_output = }
-- -> { code, signal, stdout, stderr, timed_out, truncated }, or nil,
-- message, code when the command cannot start. A non-zero exit is a
-- result like any other (code); a child killed by a signal has signal
-- set and no code.
function M.run(spec)
  local argv, opts = checked("exec.run", spec)
  return core.spawn("exec.run", argv, opts)
end

-- shell("command line", opts): the same through /bin/sh -c, for pipes,
-- redirections and globs. opts takes run's options.
function M.shell(command, opts)
  if type(command) ~= "string" then
    error("exec.shell: expected a command line (string), got "
      .. type(command), 2)
  end
  if opts ~= nil and type(opts) ~= "table" then
    error("exec.shell: options must be a table, got " .. type(opts), 2)
  end
  local spec = { "/bin/sh", "-c", command }
  for k, v in pairs(opts or {}) do
    if math.type(k) == "integer" then
      error("exec.shell: options cannot hold arguments; put them in the "
        .. "command line", 2)
    end
    spec[k] = v
  end
  local argv, options = checked("exec.shell", spec)
  return core.spawn("exec.shell", argv, options)
end

return M
