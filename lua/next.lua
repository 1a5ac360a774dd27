-- Previewing a schedule: the next fire times of a cron expression with
-- their offsets and how far away each is, and errors shown with a caret
-- under the field that is wrong. `moonbeat next` uses it; so can the
-- REPL and `moonbeat check`.

local core = require "moonbeat.core"
local validate = require "mb.validate"

local M = {}

-- Field names of a crontab string with n fields, in order.
local LAYOUTS = {
  [5] = { "minute", "hour", "day", "month", "day_of_week" },
  [6] = { "second", "minute", "hour", "day", "month", "day_of_week" },
  [7] = { "second", "minute", "hour", "day", "month", "day_of_week", "year" },
}

-- Where each whitespace-separated token of expr starts and ends.
local function tokens(expr)
  local out = {}
  for from, token, to in expr:gmatch("()(%S+)()") do
    out[#out + 1] = { from = from, to = to - 1, text = token }
  end
  return out
end

-- The caret line under expr for an error message naming a field, or
-- under the whole expression when the message names none.
function M.caret(expr, message)
  local toks = tokens(expr)
  local layout = LAYOUTS[#toks]
  local field = message:match("^(%a[%w_]*): ")
  local from, to = 1, #expr
  if layout and field then
    for i, name in ipairs(layout) do
      if name == field then from, to = toks[i].from, toks[i].to end
    end
  end
  return (" "):rep(from - 1) .. ("^"):rep(math.max(1, to - from + 1))
end

local WEEKDAYS = { "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" }

local function weekday(t, zone)
  -- The formatted date is local; the day of the week follows from it.
  local y, m, d = core.format_time(t, zone):match("^(%d+)-(%d+)-(%d+)")
  y, m, d = tonumber(y), tonumber(m), tonumber(d)
  if m < 3 then y, m = y - 1, m + 12 end
  local k = (d + (13 * (m + 1)) // 5 + y + y // 4 - y // 100 + y // 400) % 7
  return WEEKDAYS[(k + 6) % 7 + 1]
end

local function away(seconds)
  if seconds < 0 then return core.format_duration(-seconds) .. " ago" end
  if seconds < 1 then return "now" end
  return "in " .. core.format_duration(math.floor(seconds))
end

-- One fire as a preview line: "  Mon 2026-03-30T02:00:00+02:00  in 2d13h".
function M.fire_line(t, zone, from)
  return ("  %s %s  %s"):format(weekday(t, zone), core.format_time(t, zone),
    away(t - from))
end

-- Preview expr. opts: zone (name or nil for the machine's), n, from
-- (epoch seconds, default now). Returns the lines to print, or nil and
-- the error lines.
function M.preview(expr, opts)
  local zone = opts.zone or "local"
  local ok, err = core.timezone_ok(zone)
  if not ok then return nil, { err } end
  local from = opts.from or core.now()
  local sched = core.new { clock = "virtual", start = from, timezone = zone }
  local trigger
  trigger, err = validate.trigger(sched, { "cron", expr, timezone = zone })
  local lines
  if not trigger then
    -- "trigger: '<expr>': minute: 61 is out of range 0-59"
    local detail = err:gsub("^trigger: ", ""):gsub("^'.-': ", "", 1)
    lines = { detail, "  " .. expr, "  " .. M.caret(expr, detail) }
    sched:close()
    return nil, lines
  end
  lines = { ("%s  (%s)"):format(expr, zone) }
  local fires = trigger:next_fires(opts.n or 5, from)
  for _, t in ipairs(fires) do
    lines[#lines + 1] = M.fire_line(t, zone, from)
  end
  if #fires == 0 then lines[#lines + 1] = "  (no fire after the start)" end
  sched:close()
  return lines
end

return M
