-- `moonbeat next`: previewing a schedule, and errors with a caret.
local support = require "tests.support"
local next_ = require "mb.next"
local harness = require "tests.harness"

describe("moonbeat next", function()
  local from = harness.time("2026-03-27 12:00", "Europe/Berlin")

  it("lists the next fires with their offsets and how far away they are", function()
    local lines = next_.preview("0 2 * * mon-fri", { zone = "Europe/Berlin", n = 3, from = from })
    assert.same({
      "0 2 * * mon-fri  (Europe/Berlin)",
      "  Mon 2026-03-30T02:00:00+02:00  in 2d13h",
      "  Tue 2026-03-31T02:00:00+02:00  in 3d13h",
      "  Wed 2026-04-01T02:00:00+02:00  in 4d13h",
    }, lines)
  end)

  it("shows a fixed-hour fire in a DST gap at the end of the gap", function()
    local lines = next_.preview("30 2 * * *", { zone = "Europe/Berlin", n = 2,
      from = harness.time("2026-03-28", "Europe/Berlin") })
    assert.same({
      "30 2 * * *  (Europe/Berlin)",
      "  Sat 2026-03-28T02:30:00+01:00  in 2h30m",
      "  Sun 2026-03-29T03:00:00+02:00  in 1d2h",
    }, lines)
  end)

  it("takes macros and six fields", function()
    local lines = next_.preview("@hourly", { zone = "UTC", n = 1, from = harness.time("2026-01-01 00:10") })
    assert.equal("  Thu 2026-01-01T01:00:00+00:00  in 50m", lines[2])
    lines = next_.preview("*/20 * * * * *", { zone = "UTC", n = 2, from = harness.time("2026-01-01 00:00:05") })
    assert.equal("  Thu 2026-01-01T00:00:20+00:00  in 15s", lines[2])
  end)

  it("puts a caret under the field that is wrong", function()
    local _, err = next_.preview("0 25 * * *", { zone = "UTC", n = 1, from = from })
    assert.same({ "hour: 25 is out of range 0-23", "  0 25 * * *", "    ^^" }, err)
    _, err = next_.preview("*/5 * * * funday", { zone = "UTC", n = 1, from = from })
    assert.same({ "day_of_week: 'funday' is not a day name", "  */5 * * * funday",
      "            ^^^^^^" }, err)
    _, err = next_.preview("5 * * * * * 1969", { zone = "UTC", n = 1, from = from })
    assert.equal("              ^^^^", err[3])
  end)

  it("underlines the whole expression when the count of fields is wrong", function()
    local _, err = next_.preview("*/5 * *", { zone = "UTC", n = 1, from = from })
    assert.same({ "expected 5, 6 or 7 fields, got 3", "  */5 * *", "  ^^^^^^^" }, err)
  end)

  it("says when an expression can never fire", function()
    local _, err = next_.preview("0 0 30 2 *", { zone = "UTC", n = 1, from = from })
    assert.equal("'0 0 30 2 *' can never fire", err[1])
  end)

  it("runs from the command line, with exit codes", function()
    local bin = support.quote(support.BIN)
    local out, code = support.sh(bin .. " next '0 9 * * 1' --tz America/New_York -n 2 --from 2026-03-06")
    assert.equal(0, code)
    assert.same({
      "0 9 * * 1  (America/New_York)",
      -- Real time: the clocks went forward an hour on the 8th.
      "  Mon 2026-03-09T09:00:00-04:00  in 3d8h",
      "  Mon 2026-03-16T09:00:00-04:00  in 10d8h",
    }, (function() local t = {} for l in out:gmatch("[^\n]+") do t[#t + 1] = l end return t end)())
    out, code = support.sh(bin .. " next '0 25 * * *'")
    assert.equal(1, code)
    assert.equal("moonbeat: hour: 25 is out of range 0-23\n  0 25 * * *\n    ^^\n", out)
    out, code = support.sh(bin .. " next '* * * * *' --tz Mars/Olympus")
    assert.equal(1, code)
    assert.equal("moonbeat: unknown time zone 'Mars/Olympus'\n", out)
    out, code = support.sh(bin .. " next '* * * * *' -n zero")
    assert.equal(2, code)
    assert.matches("-n: expected a count from 1 to 10000, got 'zero'", out, 1, true)
  end)
end)
