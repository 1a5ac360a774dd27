-- ctx.state to text and back. The text is a Lua table constructor,
-- read back with load() in an empty environment. Only what can be
-- rebuilt exactly is kept: strings, numbers (integers stay integers),
-- booleans and nested tables with such keys. A cycle, a function, a
-- coroutine or userdata is refused with the path that leads to it.

local M = {}

local function number_text(n)
  if math.type(n) == "integer" then return ("%d"):format(n) end
  if n ~= n then return "(0/0)" end
  if n == math.huge then return "math.huge" end
  if n == -math.huge then return "(-math.huge)" end
  return ("%.17g"):format(n)
end

local function key_path(path, k)
  if type(k) == "string" and k:match("^[%a_][%w_]*$") then
    return path .. "." .. k
  end
  return ("%s[%s]"):format(path, type(k) == "string" and ("%q"):format(k)
    or tostring(k))
end

local function encode(v, path, seen, out)
  local t = type(v)
  if t == "string" then
    out[#out + 1] = ("%q"):format(v)
  elseif t == "number" then
    out[#out + 1] = number_text(v)
  elseif t == "boolean" then
    out[#out + 1] = tostring(v)
  elseif t == "table" then
    if seen[v] then
      return nil, ("%s: a cycle cannot be saved (it leads back to %s)")
        :format(path, seen[v])
    end
    seen[v] = path
    -- Sorted keys: the same state always gives the same text.
    local keys = {}
    for k in pairs(v) do
      local kt = type(k)
      if kt ~= "string" and kt ~= "number" and kt ~= "boolean" then
        return nil, ("%s: a key of type %s cannot be saved"):format(path, kt)
      end
      keys[#keys + 1] = k
    end
    table.sort(keys, function(a, b)
      local ta, tb = type(a), type(b)
      if ta ~= tb then return ta < tb end
      if ta == "boolean" then return (not a) and b end
      return a < b
    end)
    out[#out + 1] = "{"
    for _, k in ipairs(keys) do
      out[#out + 1] = "["
      local ok, err = encode(k, path, seen, out)
      if not ok then return nil, err end
      out[#out + 1] = "]="
      ok, err = encode(v[k], key_path(path, k), seen, out)
      if not ok then return nil, err end
      out[#out + 1] = ","
    end
    out[#out + 1] = "}"
    seen[v] = nil
  else
    return nil, ("%s: a %s cannot be saved"):format(path, t)
  end
  return true
end

-- state (a table, or nil) to text; nil and "ctx.state.x: why" when it
-- holds what cannot be saved.
function M.serialize(state)
  if state == nil then return "{}" end
  if type(state) ~= "table" then
    return nil, ("ctx.state: must stay a table, not a %s"):format(type(state))
  end
  local out = {}
  local ok, err = encode(state, "ctx.state", {}, out)
  if not ok then return nil, err end
  return table.concat(out)
end

-- Text written by serialize back to a table.
function M.deserialize(text)
  local chunk, err = load("return " .. text, "=ctx.state", "t",
    { math = { huge = math.huge } })
  if not chunk then return nil, err end
  local ok, value = pcall(chunk)
  if not ok or type(value) ~= "table" then
    return nil, "ctx.state: the saved text is not a table"
  end
  return value
end

return M
