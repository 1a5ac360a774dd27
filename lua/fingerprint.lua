-- Fingerprints of job declarations, so that a reload can tell a job the
-- file changed from one it only declared again. Two values get the same
-- fingerprint when they would behave the same: plain data by content,
-- tables by their entries (and metatable), Lua functions by their
-- bytecode without debug information (moving a job down a file does not
-- change it) and by the fingerprints of their upvalues, so that
-- `local limit = 5` read by a job's function counts as part of the job.
-- Loaded modules stand for themselves by name. What cannot be compared
-- (userdata, threads, C functions) counts by identity: when in doubt, a
-- job is taken as changed, which replaces it and loses nothing.

local M = {}

local unpack = string.unpack

-- A 128-bit hash of s, as 32 hex digits: not cryptographic, only a
-- short stand-in for long text.
local function hash(s)
  local h1, h2 = 0x243F6A8885A308D3, 0x13198A2E03707344 ~ #s
  local n = #s
  local i = 1
  while i + 31 <= n do
    local a, b, c, d = unpack("<i8i8i8i8", s, i)
    h1 = ((h1 ~ a) * 0x100000001B3) ~ b
    h1 = (h1 ~ (h1 >> 29)) * 0x100000001B3
    h2 = ((h2 + c) * 0x5851F42D4C957F2D) ~ d
    h2 = (h2 ~ (h2 >> 31)) * 0x5851F42D4C957F2D
    h1 = h1 ~ (h2 >> 17)
    i = i + 32
  end
  while i + 7 <= n do
    local k = unpack("<i8", s, i)
    h1 = (h1 ~ k) * 0x100000001B3
    h1 = h1 ~ (h1 >> 29)
    h2 = (h2 + k) * 0x5851F42D4C957F2D
    h2 = h2 ~ (h2 >> 31)
    i = i + 8
  end
  if i <= n then
    local k = unpack("<i8", s:sub(i) .. ("\0"):rep(8 - (n - i + 1)))
    h1 = (h1 ~ k) * 0x100000001B3
    h2 = (h2 + k) * 0x5851F42D4C957F2D
  end
  h1 = h1 ~ (h1 >> 33) ~ h2
  h2 = h2 ~ (h2 >> 29) ~ h1
  return ("%016x%016x"):format(h1, h2)
end
M.hash = hash

-- string.dump without debug information still holds the lines where
-- each function starts and ends. Read the dump (the Lua 5.4 format) and
-- leave those out; nil when the dump is not as expected.
local HEADER = 31  -- signature, version, format, data, sizes, checks

local function line_free(dump)
  local pos, parts = HEADER + 2, { dump:sub(1, HEADER + 1) }
  local function size()
    local x = 0
    repeat
      local b = dump:byte(pos)
      if not b then error("truncated") end
      pos = pos + 1
      x = (x << 7) | (b & 0x7f)
    until b & 0x80 ~= 0
    return x
  end
  local function keep(from) parts[#parts + 1] = dump:sub(from, pos - 1) end
  local function skip_string()
    local n = size()
    if n > 0 then pos = pos + n - 1 end
  end
  local function proto()
    local from = pos
    skip_string()                 -- source (absent when stripped)
    keep(from)
    size()                        -- linedefined
    size()                        -- lastlinedefined
    from = pos
    pos = pos + 3                 -- numparams, is_vararg, maxstacksize
    pos = pos + 4 * size()        -- code
    for _ = 1, size() do          -- constants
      local tag = dump:byte(pos)
      pos = pos + 1
      if tag == 0x03 or tag == 0x13 then
        pos = pos + 8
      elseif tag == 0x04 or tag == 0x14 then
        skip_string()
      elseif tag ~= 0x00 and tag ~= 0x01 and tag ~= 0x11 then
        error("unknown constant")
      end
    end
    pos = pos + 3 * size()        -- upvalues
    local nested = size()
    keep(from)
    for _ = 1, nested do proto() end
    from = pos
    for _ = 1, 4 do               -- debug information: empty
      if size() ~= 0 then error("not stripped") end
    end
    keep(from)
  end
  local ok = pcall(proto)
  if not ok or pos ~= #dump + 1 then return nil end
  return table.concat(parts)
end
M.line_free = line_free

-- Nodes one fingerprinter reads at most: beyond that, values count by
-- identity (so as changed).
local BUDGET = 200000

-- A fingerprinter for one load of a file. env: the file's environment,
-- read as data but for the keys in env_skip (its `scheduler`). Values
-- met again are not read again: a helper shared by many jobs costs once.
function M.new(env, env_skip)
  local memo = {}
  local on_path = {}  -- value -> depth, while being read (cycles)
  local depth = 0
  local budget = BUDGET
  local modules = {}
  for name, mod in pairs(package.loaded) do
    local t = type(mod)
    if (t == "table" or t == "function")
      and (not modules[mod] or name < modules[mod]) then
      modules[mod] = name
    end
  end

  local fp

  -- Parts, each with its length (so no two lists read the same), kept
  -- as they are when short and hashed when long.
  local function composite(parts)
    for i, part in ipairs(parts) do parts[i] = #part .. ":" .. part end
    local text = table.concat(parts)
    if #text <= 160 then return "(" .. text .. ")" end
    return "h" .. hash(text)
  end

  local function table_fp(t, skip)
    local entries = {}
    for k, v in next, t do
      if not (skip and skip[k]) then
        entries[#entries + 1] = fp(k) .. "=" .. fp(v)
      end
    end
    table.sort(entries)
    local mt = debug.getmetatable(t)
    if mt then entries[#entries + 1] = "mt=" .. fp(mt) end
    return composite(entries)
  end

  local function function_fp(f)
    local ok, code = pcall(string.dump, f, true)
    if not ok then return ("c%p"):format(f) end
    code = line_free(code) or code
    local parts = { code }
    for i = 1, 255 do
      local name, value = debug.getupvalue(f, i)
      if name == nil then break end
      parts[#parts + 1] = fp(value)
    end
    return composite(parts)
  end

  function fp(v)
    local t = type(v)
    if t == "nil" then return "n" end
    if t == "boolean" then return v and "T" or "F" end
    if t == "number" then
      if math.type(v) == "integer" then return "i" .. v end
      return "f" .. ("%a"):format(v)
    end
    if t == "string" then
      if #v <= 64 then return "s" .. #v .. ":" .. v end
      return "S" .. hash(v)
    end
    if modules[v] then return "m" .. modules[v] end
    if t ~= "table" and t ~= "function" then return ("u%p"):format(v) end
    local known = memo[v]
    if known then return known end
    if on_path[v] then return "c" .. (depth - on_path[v]) end
    budget = budget - 1
    if budget < 0 then return ("u%p"):format(v) end
    depth = depth + 1
    on_path[v] = depth
    local result
    if t == "table" then
      result = table_fp(v, v == env and env_skip or nil)
    else
      result = function_fp(v)
    end
    on_path[v] = nil
    depth = depth - 1
    memo[v] = result
    return result
  end

  return fp
end

return M
