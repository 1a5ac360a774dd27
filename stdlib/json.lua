-- moonbeat.json: JSON text to Lua values and back, with Debian's
-- lua-cjson doing the work. A private cjson instance keeps our settings
-- away from any other user of the library in the same process.

local cjson = require("cjson").new()

-- Deep structures are usually a bug (a cycle would otherwise loop); 100
-- levels is far beyond any document a job exchanges.
cjson.encode_max_depth(100)
cjson.decode_max_depth(100)
-- A sparse list ({[1]=1, [1000]=2}) is an error rather than a silent
-- object; NaN and infinity are refused, as JSON has no spelling for them.
cjson.encode_sparse_array(false)
cjson.encode_invalid_numbers(false)
cjson.decode_invalid_numbers(false)

-- cjson writes numbers with at most 14 significant digits, which would
-- round epoch microseconds and 64-bit ids. Integers longer than that
-- travel through the encoder as marked strings and are put back as
-- digits afterwards; tables are copied only when they hold one.
local BIG = 1e14
local MARK = "\0mbint:"
local MARKED = '"\\u0000mbint:(%-?%d+)"'

local function has_big(v, depth)
  if math.type(v) == "integer" then return v >= BIG or v <= -BIG end
  if type(v) ~= "table" or depth > 100 then return false end
  for k, x in next, v do
    if has_big(k, depth + 1) or has_big(x, depth + 1) then return true end
  end
  return false
end

local function mark_big(v, depth)
  if depth > 100 then error("cannot encode, excessive nesting", 0) end
  if math.type(v) == "integer" and (v >= BIG or v <= -BIG) then
    return MARK .. v
  end
  if type(v) ~= "table" then return v end
  local copy = {}
  for k, x in next, v do copy[k] = mark_big(x, depth + 1) end
  return setmetatable(copy, getmetatable(v))
end

local M = {}

-- The value JSON null decodes to (a light userdata, equal only to
-- itself). Put it in a table to encode a null: a nil field is absent.
M.null = cjson.null

-- Encode a value as JSON text. An empty table encodes as {}. A value
-- JSON cannot hold (a function, a cycle, a sparse list, NaN) raises.
function M.encode(value)
  local big = has_big(value, 0)
  local ok, text = true, value
  if big then ok, text = pcall(mark_big, value, 0) end
  if ok then ok, text = pcall(cjson.encode, text) end
  if ok and big then text = text:gsub(MARKED, "%1") end
  if not ok then
    error("json.encode: " .. tostring(text):gsub("^Cannot serialise", "cannot encode"), 2)
  end
  return text
end

-- cjson reads every number as a float; JSON does not tell 1 from 1.0,
-- and Lua code expects counts and ids to be integers, so whole numbers
-- within 2^53 become integers.
local function integers(v)
  local t = type(v)
  if t == "number" then
    return (v == v and v % 1 == 0 and v >= -2^53 and v <= 2^53)
      and math.tointeger(v) or v
  end
  if t == "table" then
    for k, x in next, v do
      local tx = type(x)
      if tx == "number" or tx == "table" then v[k] = integers(x) end
    end
  end
  return v
end

-- Decode JSON text. Text that is not JSON is data from outside, not a
-- bug: it returns nil and a message instead of raising. A non-string
-- argument raises.
function M.decode(text)
  if type(text) ~= "string" then
    error(("json.decode: expected a string, got %s"):format(type(text)), 2)
  end
  local ok, value = pcall(cjson.decode, text)
  if not ok then
    return nil, "json.decode: " .. tostring(value):gsub("^Expected", "expected")
  end
  return integers(value)
end

return M
