-- Durations: a number of seconds, or a string of number-unit pairs such
-- as "90s", "5m", "1h30m", "2d", "1w", "250ms", "1.5h".

local M = {}

local UNITS = { w = 604800, d = 86400, h = 3600, m = 60, s = 1, ms = 0.001 }

local HINT = 'expected seconds, or a string such as "90s", "5m", "1h30m"'

-- Longer than any schedule means (a thousand years); keeps every
-- duration exact in microseconds.
M.MAX = 1000 * 366 * 86400

-- Returns seconds, or nil and a message that starts with the value.
function M.parse(value)
  local kind = type(value)
  if kind == "number" then
    if value ~= value or value == math.huge then
      return nil, ("%s is not a duration (%s)"):format(value, HINT)
    end
    if value < 0 then
      return nil, ("%s is negative"):format(value)
    end
    if value > M.MAX then
      return nil, ("%s is longer than a thousand years"):format(value)
    end
    return value
  end
  if kind ~= "string" then
    return nil, ("expected a duration (%s), got %s"):format(HINT, kind)
  end
  -- A bare number in a string ("30", from a command line) is seconds.
  if tonumber(value) and value:match("^%s*[%d.]+%s*$") then
    return M.parse(tonumber(value))
  end
  local text = value:gsub("%s+", "")
  if text == "" then
    return nil, ("'%s' is not a duration (%s)"):format(value, HINT)
  end
  local total, pos = 0, 1
  while pos <= #text do
    local number, unit, after = text:match("^(%d+%.?%d*)(%a+)()", pos)
    local size = unit and UNITS[unit:lower()]
    if not size then
      return nil, ("'%s' is not a duration (%s)"):format(value, HINT)
    end
    total = total + tonumber(number) * size
    pos = after
  end
  if total > M.MAX then
    return nil, ("'%s' is longer than a thousand years"):format(value)
  end
  return total
end

-- Like parse, but raises the message at the given level (default: the
-- caller's caller), prefixed with what.
function M.check(value, what, level)
  local seconds, err = M.parse(value)
  if not seconds then
    error(what and (what .. ": " .. err) or err, (level or 2) + 1)
  end
  return seconds
end

return M
