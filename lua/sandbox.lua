-- The environment a job file runs in. Globals a file sets stay in its
-- own table; everything else is read through to _G, except what would
-- block the loop or end the process, which is refused with an error
-- naming the call to use instead:
--
--   os.execute, io.popen        -> moonbeat.exec.run / exec.shell
--   os.exit                     -> return or error() ends a run
--   io.read, io.lines(), io.stdin, io.input()   (the terminal)
--                               -> moonbeat.fs.read, io.open
--
-- The rest of os and io stays. `require` finds moonbeat's modules, then
-- Lua modules in the job directory's lib/ folder (DIR/lib/?.lua and
-- DIR/lib/?/init.lua), then the usual package.path; package.path itself
-- is not changed. This guards against accidents; it is not a security
-- boundary.

local M = {}

local RUN = "use moonbeat.exec.run (or exec.shell for a command line)"
local READ = "read files with moonbeat.fs.read or io.open"

local function refusal(text)
  return function() error(text, 2) end
end

local function copy(t)
  local c = {}
  for k, v in pairs(t) do c[k] = v end
  return c
end

local function safe_os()
  local o = copy(os)
  o.execute = refusal("os.execute blocks the scheduler; " .. RUN)
  o.exit = refusal("os.exit would stop the scheduler and every job; "
    .. "return (or raise an error) to end a run, or use scheduler.shutdown")
  return o
end

local function safe_io()
  local i = copy(io)
  local real_lines, real_input = io.lines, io.input
  i.stdin = nil
  i.popen = refusal("io.popen blocks the scheduler; " .. RUN)
  i.read = refusal("io.read reads the terminal and blocks the scheduler; "
    .. READ)
  i.lines = function(file, ...)
    if file == nil then
      error("io.lines() without a file reads the terminal and blocks the "
        .. "scheduler; " .. READ, 2)
    end
    return real_lines(file, ...)
  end
  i.input = function(...)
    if select("#", ...) == 0 then
      error("io.input() is the terminal: reading it blocks the scheduler; "
        .. READ, 2)
    end
    return real_input(...)
  end
  return setmetatable(i, {
    __index = function(_, key)
      if key == "stdin" then
        error("io.stdin is the terminal: reading it blocks the scheduler; "
          .. READ, 2)
      end
    end,
  })
end

local function file_exists(path)
  local f = io.open(path, "r")
  if f then f:close() end
  return f ~= nil
end

-- require for code in dir: moonbeat's modules, then dir/lib, then the
-- usual search. Modules from lib/ are kept per environment, so another
-- directory's lib/ never answers, and a file loaded again gets them
-- afresh. Each module read from lib/ goes into deps, a key by its path
-- relative to dir ("lib/shop/db.lua"), so that a change to it can
-- reload the files that use it.
local function make_require(dir, env, deps)
  local lib = (dir:sub(-1) == "/" and dir or dir .. "/") .. "lib/"
  local loaded = {}
  return function(name)
    if type(name) ~= "string" then
      error("require: the module name must be a string, got " .. type(name), 2)
    end
    if name == "os" or name == "io" then return env[name] end
    if package.preload[name] then return require(name) end
    if loaded[name] ~= nil then return loaded[name] end
    local rel = name:gsub("%.", "/")
    local tried = { lib .. rel .. ".lua", lib .. rel .. "/init.lua" }
    for _, path in ipairs(tried) do
      if file_exists(path) then
        deps["lib/" .. path:sub(#lib + 1)] = true
        local chunk, err = loadfile(path, "t",
          setmetatable({}, { __index = env }))
        -- The message names the module's file and line already.
        if not chunk then error(err, 0) end
        local value = chunk(name, path)
        if value == nil then value = true end
        loaded[name] = value
        return value, path
      end
    end
    local ok, value, extra = pcall(require, name)
    if ok then return value, extra end
    if type(value) == "string"
      and value:find("module '" .. name .. "' not found:", 1, true) == 1 then
      error(value .. "\n\tno file '" .. tried[1] .. "'\n\tno file '"
        .. tried[2] .. "'", 2)
    end
    error(value, 0)
  end
end

-- A fresh environment for a job file in dir. Its require adds the lib/
-- modules it reads, while the file loads or later, to deps (a set the
-- caller may give, see make_require), which it returns too.
function M.env(dir, deps)
  local env = setmetatable({}, { __index = _G })
  deps = deps or {}
  env._G = env
  env.os = safe_os()
  env.io = safe_io()
  env.require = make_require(dir, env, deps)
  -- Code loaded from job code runs in the same environment unless told
  -- otherwise.
  env.load = function(chunk, name, mode, ...)
    if select("#", ...) == 0 then return load(chunk, name, mode, env) end
    return load(chunk, name, mode, ...)
  end
  local stdin = "without a file reads the terminal and blocks the "
    .. "scheduler; " .. READ
  env.loadfile = function(path, mode, ...)
    if path == nil then error("loadfile " .. stdin, 2) end
    if select("#", ...) == 0 then return loadfile(path, mode, env) end
    return loadfile(path, mode, ...)
  end
  env.dofile = function(path)
    if path == nil then error("dofile " .. stdin, 2) end
    local chunk, err = loadfile(path, "bt", env)
    if not chunk then error(err, 2) end
    return chunk()
  end
  return env, deps
end

return M
