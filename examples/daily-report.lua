-- Daily sales report: every day at 09:00 Shanghai time, sum up the
-- previous day's orders from a CSV export, per region, into a summary
-- file beside the earlier ones.
--
--   REPORT_INPUT=orders.csv REPORT_DIR=reports/ moonbeat run examples/
--
-- Settings, from the environment:
--   REPORT_INPUT  the orders: a CSV with a header line and the columns
--                 date (YYYY-MM-DD, Shanghai), region, amount; plain
--                 fields without quotes or commas inside
--                 (default /var/lib/shop/orders.csv)
--   REPORT_DIR    where summary-YYYY-MM-DD.csv files go, made if missing
--                 (default /var/lib/shop/reports)
--
-- A missing or unreadable input fails the run, and the retry policy
-- tries again 10 and 20 minutes later (the export may be late). Lines
-- that do not parse are skipped and counted in the log.

local fs = require "moonbeat.fs"
local log = require "moonbeat.log"
local time = require "moonbeat.time"

local INPUT = os.getenv("REPORT_INPUT") or "/var/lib/shop/orders.csv"
local DIR = os.getenv("REPORT_DIR") or "/var/lib/shop/reports"
local ZONE = "Asia/Shanghai"

-- The Shanghai date of a moment: "2026-01-31".
local function local_date(t)
  return time.format(t, ZONE):sub(1, 10)
end

-- Totals per region of the orders dated `day`, and how many lines were
-- skipped as malformed.
local function aggregate(text, day)
  local regions, skipped = {}, 0
  local first = true
  for line in text:gmatch("[^\r\n]+") do
    if first then
      first = false                    -- the header
    else
      local date, region, amount = line:match("^([^,]*),([^,]*),([^,]*)$")
      amount = tonumber(amount)
      if not (date and region ~= "" and amount) then
        skipped = skipped + 1
      elseif date == day then
        local r = regions[region] or { orders = 0, amount = 0 }
        r.orders = r.orders + 1
        r.amount = r.amount + amount
        regions[region] = r
      end
    end
  end
  return regions, skipped
end

local function summary(regions)
  local names = {}
  for name in pairs(regions) do names[#names + 1] = name end
  table.sort(names)
  local lines = { "region,orders,amount" }
  local orders, amount = 0, 0
  for _, name in ipairs(names) do
    local r = regions[name]
    lines[#lines + 1] = ("%s,%d,%.2f"):format(name, r.orders, r.amount)
    orders, amount = orders + r.orders, amount + r.amount
  end
  lines[#lines + 1] = ("total,%d,%.2f"):format(orders, amount)
  return table.concat(lines, "\n") .. "\n", orders, amount
end

scheduler.add_job {
  id = "daily-sales-report",
  name = "Yesterday's sales per region",
  trigger = { "cron", hour = 9, minute = 0, timezone = ZONE },
  timeout = "5m",
  retry = { attempts = 3, backoff = "linear", delay = "10m" },
  run = function(ctx)
    -- The day before the scheduled fire, so that a late or retried run
    -- still reports the same day.
    local day = local_date(ctx.scheduled_time - 86400)
    local text, err = fs.read(INPUT)
    if not text then error("cannot read the orders: " .. err) end
    local regions, skipped = aggregate(text, day)
    if skipped > 0 then
      log.warn("skipped malformed lines", { file = INPUT, lines = skipped })
    end
    local body, orders, amount = summary(regions)
    assert(fs.mkdir(DIR))
    -- Written atomically: a reader never sees half a report.
    local path = ("%s/summary-%s.csv"):format(DIR, day)
    assert(fs.write(path, body))
    log.info("report written", { day = day, file = path, orders = orders,
      amount = amount })
  end,
}
