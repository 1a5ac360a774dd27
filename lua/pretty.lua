-- The REPL's printer: values as a person reads them. Tables print
-- nested and indented (on one line when they are short), keys in a
-- stable order, a table met again inside itself as <cycle>, and a long
-- table cut after max_items entries with a count of the rest.

local M = {}

M.DEFAULTS = { max_items = 40, max_depth = 8, width = 78, indent = "  " }

local KEYWORDS = {}
for word in ([[and break do else elseif end false for function goto if in
  local nil not or repeat return then true until while]]):gmatch("%a+") do
  KEYWORDS[word] = true
end

local ESCAPES = {
  ["\\"] = "\\\\", ['"'] = '\\"', ["\n"] = "\\n", ["\r"] = "\\r",
  ["\t"] = "\\t", ["\a"] = "\\a", ["\b"] = "\\b", ["\f"] = "\\f",
  ["\v"] = "\\v",
}

-- A string as a Lua literal that reads on one line.
function M.quote(s)
  return '"' .. s:gsub('[%c"\\]', function(c)
    return ESCAPES[c] or ("\\%d"):format(c:byte())
  end) .. '"'
end

local function is_identifier(k)
  return type(k) == "string" and k:match("^[%a_][%w_]*$") and not KEYWORDS[k]
end

-- Numbers first (by value), then strings, then the rest by type and text.
local TYPE_ORDER = { number = 1, string = 2, boolean = 3 }
local function key_before(a, b)
  local ta, tb = type(a), type(b)
  if ta ~= tb then
    return (TYPE_ORDER[ta] or 4) < (TYPE_ORDER[tb] or 4)
      or ((TYPE_ORDER[ta] or 4) == (TYPE_ORDER[tb] or 4) and ta < tb)
  end
  if ta == "number" or ta == "string" then return a < b end
  return tostring(a) < tostring(b)
end

-- The array part (1..n with no hole) and the other keys, sorted.
local function ordered_keys(t)
  local n = 0
  while rawget(t, n + 1) ~= nil do n = n + 1 end
  local rest = {}
  for k in next, t do
    if not (math.type(k) == "integer" and k >= 1 and k <= n) then
      rest[#rest + 1] = k
    end
  end
  table.sort(rest, key_before)
  return n, rest
end

local function has_tostring(v)
  local mt = getmetatable(v)
  return type(mt) == "table" and rawget(mt, "__tostring") ~= nil
end

local format

local function format_key(k, opts, depth, path)
  if is_identifier(k) then return k end
  return "[" .. format(k, opts, depth, path, 0) .. "]"
end

-- One table: entries rendered, then joined on one line when that fits.
local function format_table(t, opts, depth, path, start)
  if path[t] then return "<cycle>" end
  local n, rest = ordered_keys(t)
  local total = n + #rest
  if total == 0 then return "{}" end
  if depth >= opts.max_depth then
    return ("{...} (%d %s)"):format(total, total == 1 and "entry" or "entries")
  end
  path[t] = true
  local entries, shown = {}, math.min(total, opts.max_items)
  local multiline = false
  -- Where an entry starts if the table goes over several lines.
  local column = #opts.indent * (depth + 1)
  for i = 1, shown do
    local text
    if i <= n then
      text = format(t[i], opts, depth + 1, path, column)
    else
      local k = rest[i - n]
      local key = format_key(k, opts, depth + 1, path) .. " = "
      text = key .. format(t[k], opts, depth + 1, path, column + #key)
    end
    if text:find("\n", 1, true) then multiline = true end
    entries[#entries + 1] = text
  end
  path[t] = nil
  if total > shown then
    entries[#entries + 1] = ("... (%d more)"):format(total - shown)
  end
  if not multiline then
    local line = "{ " .. table.concat(entries, ", ") .. " }"
    if start + #line <= opts.width then return line end
  end
  -- Over several lines: short list items share a line, the rest have
  -- one each.
  local inner = opts.indent
  local lines, current = {}, nil
  for i, text in ipairs(entries) do
    local packable = i <= n and not text:find("\n", 1, true)
    if packable and current
      and column + #current + 2 + #text <= opts.width then
      current = current .. ", " .. text
    else
      if current then lines[#lines + 1] = current end
      current = nil
      if packable then
        current = text
      else
        lines[#lines + 1] = text
      end
    end
  end
  if current then lines[#lines + 1] = current end
  for i, text in ipairs(lines) do
    lines[i] = inner .. text:gsub("\n", "\n" .. inner)
  end
  return "{\n" .. table.concat(lines, ",\n") .. "\n}"
end

format = function(v, opts, depth, path, column)
  local kind = type(v)
  if kind == "string" then return M.quote(v) end
  if kind == "table" and not has_tostring(v) then
    return format_table(v, opts, depth, path, column)
  end
  local ok, text = pcall(tostring, v)
  if not ok then return ("<%s: __tostring failed>"):format(kind) end
  return text
end

-- value as text. opts (all optional): max_items, max_depth, width,
-- indent; top = true prints a string as it is (as `print` would), not
-- quoted.
function M.format(value, opts)
  local o = {}
  for k, v in pairs(M.DEFAULTS) do o[k] = v end
  for k, v in pairs(opts or {}) do o[k] = v end
  if o.top and type(value) == "string" then return value end
  return format(value, o, 0, {}, 0)
end

return M
