-- The REPL's printer (lua/pretty.lua): values as a person reads them.
local pretty = require "mb.pretty"

describe("pretty.format", function()
  it("prints scalars as Lua would write them, strings quoted and escaped", function()
    assert.equal("42", pretty.format(42))
    assert.equal("1.5", pretty.format(1.5))
    assert.equal("nil", pretty.format(nil))
    assert.equal("true", pretty.format(true))
    assert.equal([["a \"b\"\n\t\0\\"]], pretty.format('a "b"\n\t\0\\'))
  end)

  it("prints a top-level string as it is, as print does", function()
    assert.equal('two\nlines', pretty.format("two\nlines", { top = true }))
    assert.equal('{ "x" }', pretty.format({ "x" }, { top = true }))
  end)

  it("keeps a short table on one line, list items first, then keys in order", function()
    assert.equal('{ 1, 2, 3, [10] = 0, a = true, b = "x" }',
      pretty.format({ 1, 2, 3, b = "x", a = true, [10] = 0 }))
    assert.equal("{}", pretty.format({}))
  end)

  it("writes keys that are not names in brackets", function()
    assert.equal('{ [1.5] = 1, ["a b"] = 2, ["end"] = 3, [false] = 4 }',
      pretty.format({ [1.5] = 1, ["a b"] = 2, ["end"] = 3, [false] = 4 }))
  end)

  it("prints a long table nested and indented", function()
    local t = {
      id = "cleanup-tokens",
      trigger = { "cron", hour = 2, minute = 30, timezone = "Asia/Shanghai" },
      retry = { attempts = 4, backoff = "exponential", delay = "2s" },
    }
    assert.equal([[
{
  id = "cleanup-tokens",
  retry = { attempts = 4, backoff = "exponential", delay = "2s" },
  trigger = { "cron", hour = 2, minute = 30, timezone = "Asia/Shanghai" }
}]], pretty.format(t))
  end)

  it("marks a table met again inside itself as a cycle", function()
    local t = { name = "loop" }
    t.self = t
    t.child = { parent = t }
    assert.equal('{ child = { parent = <cycle> }, name = "loop", self = <cycle> }',
      pretty.format(t))
  end)

  it("prints a table that is shared but not a cycle in full each time", function()
    local shared = { 1 }
    assert.equal("{ a = { 1 }, b = { 1 } }", pretty.format({ a = shared, b = shared }))
  end)

  it("cuts a long table after max_items with a count of the rest", function()
    local t = {}
    for i = 1, 100 do t[i] = i end
    local text = pretty.format(t, { max_items = 10 })
    assert.equal("{ 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, ... (90 more) }", text)
    local keyed = {}
    for i = 1, 5 do keyed["k" .. i] = i end
    assert.equal("{ k1 = 1, k2 = 2, ... (3 more) }",
      pretty.format(keyed, { max_items = 2 }))
  end)

  it("packs a long list of short items into lines", function()
    local t = {}
    for i = 1, 30 do t[i] = i * 1000 end
    assert.equal([[
{
  1000, 2000, 3000, 4000, 5000, 6000, 7000, 8000, 9000, 10000, 11000,
  12000, 13000, 14000, 15000, 16000, 17000, 18000, 19000, 20000, 21000,
  22000, 23000, 24000, 25000, 26000, 27000, 28000, 29000, 30000
}]], pretty.format(t, { width = 72 }))
  end)

  it("stops at max_depth with a count of what is below", function()
    local t = { a = { b = { c = { 1, 2 } } } }
    assert.equal("{ a = { b = {...} (1 entry) } }", pretty.format(t, { max_depth = 2 }))
  end)

  it("uses __tostring where a value has one, and survives one that fails", function()
    local t = setmetatable({}, { __tostring = function() return "<point 1,2>" end })
    assert.equal("{ p = <point 1,2> }", pretty.format({ p = t }))
    local bad = setmetatable({}, { __tostring = function() error("no") end })
    assert.equal("<table: __tostring failed>", pretty.format(bad))
  end)

  it("prints functions by their address", function()
    assert.matches("^function: 0x%x+$", pretty.format(print))
  end)
end)
